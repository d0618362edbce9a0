"""The four networks match spec/algorithm.md ("Networks"): shapes, activations, initialisation, the text encoder."""

import numpy as np
import pytest
import tensorflow as tf
from easydict import EasyDict

from zscrgan.networks import CSEM, ZSCRGAN, Critic, Dense, Generator, TextEncoder

T, I, N = 7, 12, 5  # text dim, image dim, batch rows
CFG = EasyDict(embed_dim=8, z_dim=4, gf_dim=16, df_dim=10)


def _rng(seed=0):
    return tf.random.Generator.from_seed(seed)


def _np_leaky(x):
    return np.where(x > 0, x, 0.2 * x)


@pytest.fixture
def model():
    return ZSCRGAN(CFG, image_dim=I, text_dim=T, rng=_rng())


def test_output_shapes(model):
    r = np.random.default_rng(0)
    phi = tf.constant(r.standard_normal((N, T)), tf.float32)
    x = tf.constant(r.standard_normal((N, I)), tf.float32)
    c, mu, s = model.encoder(phi, tf.zeros([N, CFG.embed_dim]))
    assert c.shape == mu.shape == s.shape == (N, CFG.embed_dim)
    g = model.generator(c, tf.zeros([N, CFG.z_dim]))
    assert g.shape == (N, I)
    assert model.critic(x, phi).shape == (N, 1)
    assert model.csem(x).shape == model.csem(g).shape == (N, CFG.embed_dim)


def test_layer_sizes(model):
    e, zd, gf, df = CFG.embed_dim, CFG.z_dim, CFG.gf_dim, CFG.df_dim
    m = model

    def shapes(*layers):
        return [(tuple(layer.kernel.shape), tuple(layer.bias.shape)) for layer in layers]

    assert shapes(m.encoder.fc) == [((T, 2 * e), (2 * e,))]
    assert shapes(m.generator.fc1, m.generator.fc2, m.generator.fc3) == [
        ((e + zd, gf), (gf,)), ((gf, 2 * gf), (2 * gf,)), ((2 * gf, I), (I,))]
    assert shapes(m.critic.fc1, m.critic.fc2) == [((I + T, df), (df,)), ((df, 1), (1,))]  # concat(image, raw text)
    assert shapes(m.csem.fc) == [((I, e), (e,))]
    assert len(m.trainable_variables) == 2 * 7


def test_generator_side_variables_are_text_encoder_plus_generator(model):
    ids = {id(v) for v in model.generator_side_variables}
    assert ids == {id(v) for v in model.encoder.trainable_variables + model.generator.trainable_variables}
    assert not ids & {id(v) for v in model.critic.trainable_variables + model.csem.trainable_variables}


def test_leaky_slope_is_0_2():
    # A CSEM (Dense + leaky ReLU) with identity kernel and zero bias is leaky ReLU itself.
    csem = CSEM(4, 4, _rng())
    csem.fc.kernel.assign(tf.eye(4))
    x = np.array([[-5.0, -1.0, 0.0, 3.0]], np.float32)
    np.testing.assert_allclose(csem(x).numpy(), [[-1.0, -0.2, 0.0, 3.0]], rtol=1e-6)


def test_dense_with_set_weights_matches_numpy():
    r = np.random.default_rng(1)
    layer = Dense(3, 2, _rng(), "d")
    w, b, x = r.standard_normal((3, 2)), r.standard_normal(2), r.standard_normal((4, 3))
    layer.kernel.assign(w.astype(np.float32))
    layer.bias.assign(b.astype(np.float32))
    np.testing.assert_allclose(layer(x.astype(np.float32)).numpy(), x @ w + b, rtol=1e-5, atol=1e-6)


def test_generator_output_is_relu_non_negative():
    gen = Generator(8, 4, 16, I, _rng(2))
    for v in gen.trainable_variables:  # large weights, so many final pre-activations are negative
        v.assign(v * 50.0 + (0.3 if "bias" in v.name else 0.0))
    r = np.random.default_rng(2)
    out = gen(tf.constant(r.standard_normal((64, 8)), tf.float32),
              tf.constant(r.standard_normal((64, 4)), tf.float32)).numpy()
    assert out.min() == 0.0
    assert (out == 0.0).mean() > 0.1 and (out > 0.0).mean() > 0.1


def test_generator_matches_numpy_forward():
    gen = Generator(3, 2, 4, 5, _rng(3))
    r = np.random.default_rng(3)
    ws = [r.standard_normal(tuple(v.shape)) for v in (gen.fc1.kernel, gen.fc2.kernel, gen.fc3.kernel)]
    bs = [r.standard_normal(tuple(v.shape)) for v in (gen.fc1.bias, gen.fc2.bias, gen.fc3.bias)]
    for layer, w, b in zip((gen.fc1, gen.fc2, gen.fc3), ws, bs):
        layer.kernel.assign(w.astype(np.float32))
        layer.bias.assign(b.astype(np.float32))
    c, z = r.standard_normal((6, 3)), r.standard_normal((6, 2))
    h = _np_leaky(np.concatenate([c, z], axis=1) @ ws[0] + bs[0])
    h = _np_leaky(h @ ws[1] + bs[1])
    expected = np.maximum(0.0, h @ ws[2] + bs[2])
    np.testing.assert_allclose(gen(c.astype(np.float32), z.astype(np.float32)).numpy(), expected,
                               rtol=1e-4, atol=1e-5)


def test_critic_matches_numpy_forward_on_image_then_raw_text():
    critic = Critic(3, 2, 4, _rng(4))
    r = np.random.default_rng(4)
    w1, b1, w2, b2 = r.standard_normal((5, 4)), r.standard_normal(4), r.standard_normal((4, 1)), r.standard_normal(1)
    for var, val in ((critic.fc1.kernel, w1), (critic.fc1.bias, b1), (critic.fc2.kernel, w2), (critic.fc2.bias, b2)):
        var.assign(val.astype(np.float32))
    x, phi = r.standard_normal((6, 3)), r.standard_normal((6, 2))
    expected = _np_leaky(np.concatenate([x, phi], axis=1) @ w1 + b1) @ w2 + b2  # linear output
    np.testing.assert_allclose(critic(x.astype(np.float32), phi.astype(np.float32)).numpy(), expected,
                               rtol=1e-4, atol=1e-5)


def test_kernel_init_std_0_02_and_zero_biases():
    big = Dense(256, 512, _rng(5), "big")  # 131072 draws: the sample std is within ~0.2% of 0.02
    k = big.kernel.numpy().astype(np.float64)
    assert k.std() == pytest.approx(0.02, rel=0.01)
    assert abs(k.mean()) < 3e-4
    assert np.array_equal(big.bias.numpy(), np.zeros(512))
    # Every network of the model: kernels ~ N(0, 0.02^2) (loosely, they are small), biases exactly 0.
    model = ZSCRGAN(EasyDict(embed_dim=64, z_dim=32, gf_dim=128, df_dim=128), image_dim=64, text_dim=32, rng=_rng(6))
    for v in model.trainable_variables:
        values = v.numpy()
        if "bias" in v.name:
            assert np.all(values == 0.0), v.name
        elif values.size >= 1000:
            assert values.std() == pytest.approx(0.02, rel=0.1), v.name


def test_text_encoder_by_hand():
    e = 3
    enc = TextEncoder(4, e, _rng(7))
    r = np.random.default_rng(7)
    w, b = 0.5 * r.standard_normal((4, 2 * e)), 0.1 * r.standard_normal(2 * e)
    enc.fc.kernel.assign(w.astype(np.float32))
    enc.fc.bias.assign(b.astype(np.float32))
    phi, eps = r.standard_normal((5, 4)), r.standard_normal((5, e))
    h = _np_leaky(phi @ w + b)
    mu, s = h[:, :e], h[:, e:]  # mu: first e units, s (log sigma): last e units, both after leaky ReLU
    c_got, mu_got, s_got = enc(phi.astype(np.float32), eps.astype(np.float32))
    np.testing.assert_allclose(mu_got.numpy(), mu, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(s_got.numpy(), s, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(c_got.numpy(), mu + np.exp(s) * eps, rtol=1e-5, atol=1e-6)
    assert (h < 0).any()  # the leaky branch was exercised


def test_same_rng_seed_gives_same_weights():
    a = ZSCRGAN(CFG, I, T, _rng(11))
    b = ZSCRGAN(CFG, I, T, _rng(11))
    c = ZSCRGAN(CFG, I, T, _rng(12))
    for va, vb in zip(a.trainable_variables, b.trainable_variables):
        np.testing.assert_array_equal(va.numpy(), vb.numpy())
    assert any(not np.array_equal(va.numpy(), vc.numpy())
               for va, vc in zip(a.trainable_variables, c.trainable_variables))


def test_matmul_gradient_equals_tensorflows_own():
    from zscrgan.networks import matmul

    rng = np.random.default_rng(3)
    x = tf.constant(rng.standard_normal((5, 7)), tf.float32)
    w = tf.Variable(rng.standard_normal((7, 4)), dtype=tf.float32)
    dy = tf.constant(rng.standard_normal((5, 4)), tf.float32)
    with tf.GradientTape(persistent=True) as tape:
        tape.watch(x)
        ours = tf.reduce_sum(matmul(x, w) * dy)
        theirs = tf.reduce_sum(tf.matmul(x, w) * dy)
    for a, b in zip(tape.gradient(ours, [x, w]), tape.gradient(theirs, [x, w])):
        np.testing.assert_allclose(a.numpy(), b.numpy(), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(tape.gradient(ours, x).numpy(), dy.numpy() @ w.numpy().T, rtol=1e-5, atol=1e-5)
