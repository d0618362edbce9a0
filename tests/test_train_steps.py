"""Trainer steps update exactly the networks spec/algorithm.md says they do; E-/M-steps run and are seeded."""

import numpy as np
import pytest
import tensorflow as tf
from easydict import EasyDict

from zscrgan.config import load_config
from zscrgan.train import PackedFeatures, Trainer

I, T = 12, 6
B = 4
N_CLASSES = 5


def _cfg(**overrides):
    cfg = EasyDict(load_config("DEMO"))
    cfg.update(embed_dim=8, z_dim=4, gf_dim=16, df_dim=8, batch_size=B, critic_steps=2)
    cfg.update(overrides)
    return cfg


def _packed():
    r = np.random.default_rng(0)
    counts = [3, 1, 4, 2, 3]
    # Non-negative, like real image features; texts arbitrary.
    images = [np.abs(r.standard_normal((n, I))).astype(np.float32) for n in counts]
    texts = [r.standard_normal((2, T)).astype(np.float32) for _ in counts]
    return PackedFeatures.from_classes(images, texts)


def _rows(packed, cls, img):
    """Index arrays for batches of (class, image-within-class); released wrong pairing = previous row."""
    cls, img = np.asarray(cls), np.asarray(img)
    img_rows = np.where(cls >= 0, packed.class_offsets[np.maximum(cls, 0)] + img, packed.image_pad_row)
    txt_rows = np.where(cls >= 0, cls, packed.text_pad_row)
    wrong = np.broadcast_to((np.arange(cls.shape[-1]) - 1) % cls.shape[-1], cls.shape)
    return tuple(tf.constant(a, tf.int32) for a in (img_rows, txt_rows, wrong))


def _schedule(packed, shape, seed=0):
    """A random schedule of the given shape [..., B]; one row per batch is a zero-padded row."""
    r = np.random.default_rng(seed)
    cls = r.integers(0, N_CLASSES, size=shape)
    img = r.integers(0, 1 << 20, size=shape) % packed.images_per_class[cls]
    cls[..., -1] = -1
    return _rows(packed, cls, img)


ONE_BATCH = ([0, 2, 4, 1], [1, 3, 0, 0])


def _snapshot(module):
    return [v.numpy().copy() for v in module.trainable_variables]


def _changed(before, module):
    return [not np.array_equal(b, v.numpy()) for b, v in zip(before, module.trainable_variables)]


def _parts(trainer):
    m = trainer.model
    return {"encoder": m.encoder, "generator": m.generator, "critic": m.critic, "csem": m.csem}


def _run_step(trainer, step, packed):
    parts = _parts(trainer)
    before = {k: _snapshot(p) for k, p in parts.items()}
    out = step(packed.images, packed.texts, *_rows(packed, *ONE_BATCH))
    return out, {k: _changed(before[k], p) for k, p in parts.items()}


@pytest.fixture(scope="module")
def packed():
    return _packed()


def test_critic_step_updates_and_clips_only_the_critic(packed):
    cfg = _cfg()
    trainer = Trainer(cfg, I, T)
    # N(0, 0.02^2) init puts many critic weights outside [-0.01, 0.01]: the clip has work to do.
    assert max(np.abs(v.numpy()).max() for v in trainer.model.critic.trainable_variables) > cfg.clip_val
    loss, changed = _run_step(trainer, trainer.critic_step, packed)
    assert np.isfinite(float(loss))
    critic = trainer.model.critic
    moved = {id(v): c for v, c in zip(critic.trainable_variables, changed["critic"])}
    assert moved[id(critic.fc1.kernel)] and moved[id(critic.fc1.bias)] and moved[id(critic.fc2.kernel)]
    # L_D's batch-mean weights (1/2 + 1/2 - 1) sum to zero, so the output bias gets no gradient.
    assert not moved[id(critic.fc2.bias)]
    assert not any(changed["encoder"] + changed["generator"] + changed["csem"])
    weights = [v.numpy() for v in critic.trainable_variables]
    for v in weights:
        assert np.all(np.abs(v) <= cfg.clip_val)
    assert any(np.any(np.abs(v) == np.float32(cfg.clip_val)) for v in weights)  # some weights hit the bound


def _np_leaky(x):
    return np.where(x > 0, x, 0.2 * x)


def test_critic_step_equals_a_numpy_rmsprop_step_on_l_d(packed):
    # Make g_r exactly 0 whatever the noise (last generator layer: zero kernel, negative bias, ReLU),
    # so L_D = (mean D(0, phi_r) + mean D(x_w, phi_r)) / 2 - mean D(x_r, phi_r) is a function of the batch.
    cfg = _cfg(discriminator_lr=1e-3)
    trainer = Trainer(cfg, I, T)
    gen, critic = trainer.model.generator, trainer.model.critic
    gen.fc3.kernel.assign(tf.zeros_like(gen.fc3.kernel))
    gen.fc3.bias.assign(-tf.ones_like(gen.fc3.bias))
    for v in critic.trainable_variables:  # start inside the clip range, so clipping is not the whole story
        v.assign(0.3 * v + (0.004 if "bias" in v.name else 0.0))
    w1, b1, w2, b2 = (v.numpy().astype(np.float64) for v in (critic.fc1.kernel, critic.fc1.bias,
                                                             critic.fc2.kernel, critic.fc2.bias))
    images, texts = packed.images.numpy().astype(np.float64), packed.texts.numpy().astype(np.float64)
    img_rows, txt_rows, wrong = (a.numpy() for a in _rows(packed, *ONE_BATCH))
    x_r, phi_r = images[img_rows], texts[txt_rows]
    x_w = x_r[wrong]  # row i's wrong image is row i-1's
    u = np.concatenate([np.concatenate([x, phi_r], axis=1) for x in (np.zeros_like(x_r), x_w, x_r)])
    weight = np.concatenate([np.full(B, 0.5 / B), np.full(B, 0.5 / B), np.full(B, -1.0 / B)])
    pre = u @ w1 + b1
    h = _np_leaky(pre)
    expected_loss = weight @ (h @ w2 + b2)[:, 0]
    d_pre = (weight[:, None] @ w2.T) * np.where(pre > 0, 1.0, 0.2)
    grads = [u.T @ d_pre, d_pre.sum(axis=0), h.T @ weight[:, None], np.array([weight.sum()])]

    loss = trainer.critic_step(packed.images, packed.texts, *_rows(packed, *ONE_BATCH))
    np.testing.assert_allclose(float(loss), expected_loss, rtol=1e-4)
    for var, w0, g in zip((critic.fc1.kernel, critic.fc1.bias, critic.fc2.kernel, critic.fc2.bias),
                          (w1, b1, w2, b2), grads):
        expected = np.clip(w0 - cfg.discriminator_lr * g / np.sqrt(0.9 + 0.1 * g ** 2 + 1e-10),
                           -cfg.clip_val, cfg.clip_val)
        np.testing.assert_allclose(var.numpy() - w0, expected - w0, rtol=1e-4, atol=1e-8)
    assert np.mean(np.abs(critic.fc1.kernel.numpy()) == np.float32(cfg.clip_val)) < 0.5


def test_generator_step_updates_text_encoder_and_generator_only(packed):
    trainer = Trainer(_cfg(), I, T)
    out, changed = _run_step(trainer, trainer.generator_step, packed)
    assert out.shape == (4,) and np.all(np.isfinite(out.numpy()))
    assert all(changed["encoder"])
    assert any(changed["generator"])
    assert not any(changed["critic"] + changed["csem"])


def test_csem_step_updates_only_the_csem(packed):
    trainer = Trainer(_cfg(), I, T)
    loss, changed = _run_step(trainer, trainer.csem_step, packed)
    assert np.isfinite(float(loss))
    assert all(changed["csem"])
    assert not any(changed["encoder"] + changed["generator"] + changed["critic"])


def _generator_grad_wrt_c(trainer, n=3):
    # A seeded generator: runs enable op determinism, under which unseeded random ops are refused.
    rng = tf.random.Generator.from_seed(7)
    c = tf.Variable(rng.normal([n, trainer.cfg.embed_dim]))
    with tf.GradientTape() as tape:
        g = trainer.model.generator(c, rng.normal([n, trainer.cfg.z_dim]))
    return tape.gradient(g, c).numpy()


@pytest.mark.parametrize("c_blind_generator", [False, True])
def test_csem_loss_alone_reaches_the_text_encoder(packed, c_blind_generator):
    # Only L_C left in the generator-side loss. With c_blind_generator the generator's c-rows of its
    # first kernel are zeroed, so g_r and g_w carry no gradient to the text encoder: an update of the
    # text encoder can then only come through L_C's anchor c_r.
    cfg = _cfg(mm_reg_coeff=0.0, adv_coeff=0.0, kl_div_coefficient=0.0)
    trainer = Trainer(cfg, I, T)
    if c_blind_generator:
        fc1 = trainer.model.generator.fc1
        fc1.kernel.assign(tf.concat([tf.zeros([cfg.embed_dim, cfg.gf_dim]), fc1.kernel[cfg.embed_dim:]], axis=0))
        assert not np.any(_generator_grad_wrt_c(trainer))
    out, changed = _run_step(trainer, trainer.generator_step, packed)
    loss, _, l_c, _ = out.numpy()
    assert loss == pytest.approx(l_c, rel=1e-6)  # L_G is L_C alone here
    assert all(changed["encoder"])
    assert not any(changed["critic"] + changed["csem"])


def test_e_step_and_m_step_run_on_schedules(packed):
    cfg = _cfg()
    trainer = Trainer(cfg, I, T)
    iters = 3
    e_sched = _schedule(packed, (iters, cfg.critic_steps + 1, B), seed=1)
    m_sched = _schedule(packed, (iters, B), seed=2)
    e_out = trainer.e_step(packed.images, packed.texts, *e_sched).numpy()
    assert e_out.shape == (5,) and np.all(np.isfinite(e_out))  # [L_D, L_G, R, L_C, divergence]
    assert 0.0 <= e_out[3] and e_out[4] >= 0.0  # L_C is a softplus; the divergence is a sum of KLs
    before = _snapshot(trainer.model.csem)
    l_c = float(trainer.m_step(packed.images, packed.texts, *m_sched))
    assert np.isfinite(l_c) and l_c >= 0.0
    assert all(_changed(before, trainer.model.csem))
    for v in trainer.model.critic.trainable_variables:
        assert np.all(np.abs(v.numpy()) <= cfg.clip_val)


def test_e_step_without_adversary_leaves_the_critic_alone(packed):
    cfg = _cfg(adv_coeff=0.0)
    trainer = Trainer(cfg, I, T)
    before = _snapshot(trainer.model.critic)
    out = trainer.e_step(packed.images, packed.texts, *_schedule(packed, (2, cfg.critic_steps + 1, B))).numpy()
    assert np.all(np.isfinite(out)) and out[0] == 0.0
    assert not any(_changed(before, trainer.model.critic))


def _weights_after_e_step(seed, packed):
    cfg = _cfg(seed=seed)
    trainer = Trainer(cfg, I, T)
    trainer.e_step(packed.images, packed.texts, *_schedule(packed, (2, cfg.critic_steps + 1, B), seed=5))
    return [v.numpy() for v in trainer.model.trainable_variables]


def test_e_step_is_reproducible_for_a_seed(packed):
    first = _weights_after_e_step(3, packed)
    second = _weights_after_e_step(3, packed)
    other = _weights_after_e_step(4, packed)
    for a, b in zip(first, second):
        np.testing.assert_array_equal(a, b)
    assert any(not np.array_equal(a, c) for a, c in zip(first, other))
