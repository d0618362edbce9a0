"""Trainer steps update exactly the networks spec/algorithm.md says they do; E-/M-steps run and are seeded."""

import numpy as np
import pytest
import tensorflow as tf
from easydict import EasyDict

from zscrgan.config import load_config
from zscrgan.train import PackedFeatures, Trainer

import reference_model as ref

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


def _rows(packed, cls, img, wrong_cls=None, wrong_img=None):
    """The four index arrays of batches of (class, image-within-class) and their wrong pairs' (class -1:
    a padded row); without wrong pairs, the released shift: each row pairs with the previous row."""
    cls, img = np.asarray(cls), np.asarray(img)
    if wrong_cls is None:
        wrong_cls, wrong_img = np.roll(cls, 1, axis=-1), np.roll(img, 1, axis=-1)
    wrong_cls, wrong_img = np.asarray(wrong_cls), np.asarray(wrong_img)

    def index(c, i):
        return (np.where(c >= 0, packed.class_offsets[np.maximum(c, 0)] + i, packed.image_pad_row),
                np.where(c >= 0, c, packed.text_pad_row))

    return tuple(tf.constant(a, tf.int32) for a in index(cls, img) + index(wrong_cls, wrong_img))


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
    img_rows, txt_rows, _, _ = (a.numpy() for a in _rows(packed, *ONE_BATCH))
    x_r, phi_r = images[img_rows], texts[txt_rows]
    x_w = np.roll(x_r, 1, axis=0)  # row i's wrong image is row i-1's
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


@pytest.mark.slow
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


@pytest.mark.slow
def test_e_step_is_reproducible_for_a_seed(packed):
    first = _weights_after_e_step(3, packed)
    second = _weights_after_e_step(3, packed)
    other = _weights_after_e_step(4, packed)
    for a, b in zip(first, second):
        np.testing.assert_array_equal(a, b)
    assert any(not np.array_equal(a, c) for a, c in zip(first, other))


# --- Steps against the independent numpy model (tests/reference_model.py) ----------------------------
# Batches (classes, images, wrong classes, wrong images) with a zero-padded row (class -1). "shift" has
# the released pairing: row 3's wrong pair is the padded row 2, and row 0's is row 3. Under the shift the
# wrong rows are a permutation of the correct rows, so any loss averaged over one half alone (the
# divergence) is the same on both halves; the other two batches' wrong rows are not: the `distinct`
# pairing on a repeated class, and wrong classes from outside the batch (`random` and the like).
BATCHES = {"shift": ([0, 2, -1, 1], [1, 3, -1, 0], [1, 0, 2, -1], [0, 1, 3, -1]),
           "non_permutation": ([0, 0, -1, 1], [1, 2, -1, 0], [1, 1, 0, -1], [0, 0, 2, -1]),
           "outside_batch": ([0, 2, -1, 1], [1, 3, -1, 0], [4, 3, -1, 4], [2, 1, -1, 0])}


def _fixed_trainer(cfg):
    """A trainer with fixed weights of moderate size (nonzero biases too) and fixed noise.

    Returns the trainer, its weights as float64 arrays, and the noise (eps, z) of 2B rows: a call
    for n rows gets the first n (the correct half first, as the steps stack them).
    """
    trainer = Trainer(cfg, I, T)
    r = np.random.default_rng(11)
    for v in trainer.model.trainable_variables:
        fan_in = v.shape[0] if len(v.shape) == 2 else 4
        v.assign(r.normal(0.0, 1.0 / np.sqrt(fan_in), v.shape).astype(np.float32))
    eps = np.clip(r.standard_normal((2 * B, cfg.embed_dim)), -2.0, 2.0).astype(np.float32)
    z = r.standard_normal((2 * B, cfg.z_dim)).astype(np.float32)
    trainer._noise = lambda n: (tf.constant(eps)[:n], tf.constant(z)[:n])
    return trainer, ref.model_weights(trainer.model), eps.astype(np.float64), z.astype(np.float64)


def _numpy_batch(packed, cls, img, wrong_cls, wrong_img):
    """x_r, phi_r, x_w, phi_w in float64, gathered by hand (padded rows are zeros)."""
    images, texts = packed.images.numpy().astype(np.float64), packed.texts.numpy().astype(np.float64)

    def gather(classes, indices):
        x = [images[packed.class_offsets[c] + i] if c >= 0 else np.zeros(I) for c, i in zip(classes, indices)]
        return np.stack(x), np.stack([texts[c] if c >= 0 else np.zeros(T) for c in classes])

    return gather(cls, img) + gather(wrong_cls, wrong_img)


def _variables(trainer, *nets):
    """The variables of the named networks, keyed like `reference_model.model_weights`."""
    return {k: v for k, v in ref.model_variables(trainer.model).items() if k.split(".")[0] in nets}


def _assert_moved_as(module_vars, w0, expected):
    # Compare displacements, so a wrong step size cannot hide in the weights' rounding.
    assert set(expected) == set(module_vars)
    for name, v in module_vars.items():
        np.testing.assert_allclose(v.numpy() - w0[name], expected[name] - w0[name], rtol=2e-3, atol=2e-7,
                                   err_msg=name)


def test_variable_names_cover_the_model(packed):
    trainer = Trainer(_cfg(), I, T)
    named = {id(v) for v in ref.model_variables(trainer.model).values()}
    assert named == {id(v) for v in trainer.model.trainable_variables}
    assert {id(v) for v in _variables(trainer, "encoder", "generator").values()} == \
        {id(v) for v in trainer.model.generator_side_variables}


@pytest.mark.parametrize("batch", BATCHES)
@pytest.mark.parametrize("coeffs", [{}, dict(mm_reg_coeff=0.7, kl_div_coefficient=1.9, triplet_coeff=0.4,
                                             adv_coeff=1.3), dict(mm_reg_coeff=0.0, triplet_coeff=0.0)])
def test_generator_step_equals_numpy_forward_backward_and_tf1_rmsprop(packed, coeffs, batch):
    cfg = _cfg(generator_lr=0.01, **coeffs)
    trainer, w, eps, z = _fixed_trainer(cfg)
    x_r, phi_r, x_w, phi_w = _numpy_batch(packed, *BATCHES[batch])
    expected_out, grads, _ = ref.generator_side(w, phi_r, phi_w, x_r, x_w, eps, z, **coeffs)
    out = trainer.generator_step(packed.images, packed.texts, *_rows(packed, *BATCHES[batch])).numpy()
    np.testing.assert_allclose(out, expected_out, rtol=1e-4)  # [L_G, R, L_C, divergence]
    expected = {k: ref.rmsprop_tf1(w[k], g, cfg.generator_lr) for k, g in grads.items()}
    _assert_moved_as(_variables(trainer, "encoder", "generator"), w, expected)
    for name, v in _variables(trainer, "critic", "csem").items():
        np.testing.assert_array_equal(v.numpy(), w[name])


@pytest.mark.parametrize("batch", BATCHES)
def test_csem_step_equals_numpy_forward_backward_and_tf1_adam(packed, batch):
    cfg = _cfg(CSEM_lr=0.002)
    trainer, w, eps, z = _fixed_trainer(cfg)
    _, phi_r, _, phi_w = _numpy_batch(packed, *BATCHES[batch])
    expected_loss, grads = ref.csem_side(w, phi_r, phi_w, eps, z)
    loss = float(trainer.csem_step(packed.images, packed.texts, *_rows(packed, *BATCHES[batch])))
    assert loss == pytest.approx(expected_loss, rel=1e-5)
    expected = {k: ref.adam_tf1_first_step(w[k], g, cfg.CSEM_lr) for k, g in grads.items()}
    _assert_moved_as(_variables(trainer, "csem"), w, expected)
    for name, v in _variables(trainer, "encoder", "generator").items():
        np.testing.assert_array_equal(v.numpy(), w[name])


@pytest.mark.parametrize("batch", BATCHES)
def test_critic_step_scores_the_generated_rows(packed, batch):
    # Unlike the test above, the generator's rows are live: L_D's fake term is checked with them.
    cfg = _cfg(discriminator_lr=0.01, clip_val=10.0)  # nothing clipped: the update is seen whole
    trainer, w, eps, z = _fixed_trainer(cfg)
    x_r, phi_r, x_w, _ = _numpy_batch(packed, *BATCHES[batch])
    c_r, _, _, _ = ref.encoder_forward(w, phi_r, eps[:B])
    g_r, _ = ref.generator_forward(w, c_r, z[:B])
    assert np.mean(g_r > 0) > 0.3  # the fake rows are far from zero
    expected_loss, grads = ref.critic_side(w, g_r, x_r, x_w, phi_r)
    _, without_fake = ref.critic_side(w, np.zeros_like(g_r), x_r, x_w, phi_r)
    loss = float(trainer.critic_step(packed.images, packed.texts, *_rows(packed, *BATCHES[batch])))
    # L_D is a difference of mean scores: float32 rounding of the scores bounds its error, not its size.
    assert loss == pytest.approx(expected_loss, rel=1e-5, abs=1e-6)
    expected = {k: ref.rmsprop_tf1(w[k], g, cfg.discriminator_lr) for k, g in grads.items()}
    critic_vars = _variables(trainer, "critic")
    _assert_moved_as(critic_vars, w, expected)
    name = "critic.fc1.kernel"  # the fake term moves the first layer visibly
    assert np.abs(grads[name] - without_fake[name]).max() > 0.01


@pytest.mark.parametrize("training", ["em", "joint"])
def test_e_step_runs_critic_batches_then_the_generator_batch(packed, training):
    cfg = _cfg(critic_steps=3, training=training)
    trainer = Trainer(cfg, I, T)
    iters = 4
    log, calls = tf.Variable(tf.fill([64], -1)), tf.Variable(0)

    def recorder(kind, result):
        # Logs kind * 1000 + the batch's first image row (which names its slot), in call order.
        def step(images, texts, img_rows, *rest):
            log.scatter_nd_update([[calls.read_value()]], [kind * 1000 + img_rows[0]])
            calls.assign_add(1)
            return result(tf.cast(img_rows[0], tf.float32))
        return step

    critic_one = recorder(0, lambda tag: tag)

    def critic_steps(images, texts, *rows):  # one iteration's critic batches, each logged in turn
        return tf.add_n([critic_one(images, texts, *(a[j] for a in rows)) for j in range(cfg.critic_steps)])

    trainer.critic_steps = critic_steps
    # Under joint training the generator side's batch goes to the joint step (which also moves the CSEM).
    setattr(trainer, "joint_step" if training == "joint" else "generator_step", recorder(1, lambda tag: tf.fill([4], tag)))
    shape = (iters, cfg.critic_steps + 1, B)
    slot = 10 * np.arange(iters)[:, None] + np.arange(cfg.critic_steps + 1)[None, :]
    img_rows = np.broadcast_to(slot[..., None], shape)
    out = trainer.e_step(packed.images, packed.texts, *(tf.constant(a, tf.int32) for a in (
        img_rows, np.zeros(shape), np.zeros(shape), np.zeros(shape)))).numpy()

    expected = [kind * 1000 + 10 * i + j for i in range(iters)
                for kind, j in [(0, j) for j in range(cfg.critic_steps)] + [(1, cfg.critic_steps)]]
    assert int(calls.numpy()) == iters * (cfg.critic_steps + 1)
    assert log.numpy()[: len(expected)].tolist() == expected
    # The phase means: L_D over iters x critic_steps critic batches, the rest over iters generator batches.
    np.testing.assert_allclose(out[0], slot[:, :-1].mean(), rtol=1e-6)
    np.testing.assert_allclose(out[1:], slot[:, -1].mean(), rtol=1e-6)


@pytest.mark.parametrize("overrides", [{}, dict(wrong_branch=False), dict(jit_compile=True)])
def test_an_iterations_critic_steps_equal_critic_step_batch_after_batch(packed, overrides):
    cfg = _cfg(critic_steps=3, **overrides)
    stacked, one_by_one = Trainer(cfg, I, T), Trainer(cfg, I, T)
    rows = _schedule(packed, (cfg.critic_steps, B), seed=7)
    total = stacked.critic_steps(packed.images, packed.texts, *rows)
    losses = [one_by_one.critic_step(packed.images, packed.texts, *(a[j] for a in rows)) for j in range(cfg.critic_steps)]
    # The same noise, drawn in the same order: the generators end in the same state.
    np.testing.assert_array_equal(stacked.noise.state.numpy(), one_by_one.noise.state.numpy())
    np.testing.assert_allclose(float(total), float(tf.add_n(losses)), rtol=1e-5, atol=1e-6)
    for a, b in zip(stacked.model.trainable_variables, one_by_one.model.trainable_variables):
        np.testing.assert_allclose(a.numpy(), b.numpy(), rtol=1e-5, atol=1e-7, err_msg=a.name)
    untrained = Trainer(cfg, I, T).model.critic.fc1.kernel.numpy()
    assert not np.array_equal(stacked.model.critic.fc1.kernel.numpy(), untrained)  # the critic did train


def _step_against_numpy(packed, step, batch, **overrides):
    """Run one `step` ("critic", "generator", "csem" or "joint") of a fixed trainer on one batch; check its
    output and the moved weights against the numpy model. Returns the numpy model's output."""
    cfg = _cfg(generator_lr=0.01, discriminator_lr=0.01, clip_val=10.0, **overrides)
    trainer, w, eps, z = _fixed_trainer(cfg)
    x_r, phi_r, x_w, phi_w = _numpy_batch(packed, *BATCHES[batch])
    wrong_branch = cfg.wrong_branch
    expected = {}
    if step == "critic":
        c_r, _, _, _ = ref.encoder_forward(w, phi_r, eps[:B])
        g_r, _ = ref.generator_forward(w, c_r, z[:B])
        out, grads = ref.critic_side(w, g_r, x_r, x_w, phi_r, wrong_branch=wrong_branch)
        expected.update({k: ref.rmsprop_tf1(w[k], g, cfg.discriminator_lr) for k, g in grads.items()})
    elif step == "csem":
        out, grads = ref.csem_side(w, phi_r, phi_w, eps, z, wrong_branch=wrong_branch)
        expected.update({k: ref.adam_tf1_first_step(w[k], g, cfg.CSEM_lr) for k, g in grads.items()})
    else:
        out, grads, csem_grads = ref.generator_side(w, phi_r, phi_w, x_r, x_w, eps, z, wrong_branch=wrong_branch)
        expected.update({k: ref.rmsprop_tf1(w[k], g, cfg.generator_lr) for k, g in grads.items()})
        if step == "joint":  # the CSEM moves on L_C's gradient at the same weights and forward pass
            expected.update({k: ref.adam_tf1_first_step(w[k], g, cfg.CSEM_lr) for k, g in csem_grads.items()})
    got = getattr(trainer, f"{step}_step")(packed.images, packed.texts, *_rows(packed, *BATCHES[batch])).numpy()
    np.testing.assert_allclose(got, out, rtol=1e-4)
    variables = ref.model_variables(trainer.model)
    _assert_moved_as({k: variables[k] for k in expected}, w, expected)
    for name in set(variables) - set(expected):
        np.testing.assert_array_equal(variables[name].numpy(), w[name], err_msg=name)
    return out


@pytest.mark.parametrize("step", ["critic", "generator", "csem"])
def test_steps_without_the_wrong_branch_equal_numpy(packed, step):
    with_branch = _step_against_numpy(packed, step, "outside_batch")
    without = _step_against_numpy(packed, step, "outside_batch", wrong_branch=False)
    assert not np.allclose(with_branch, without, rtol=1e-3)


@pytest.mark.parametrize("batch", ["shift", "outside_batch"])
def test_joint_step_updates_generator_side_and_csem_from_one_forward_pass(packed, batch):
    joint = _step_against_numpy(packed, "joint", batch, training="joint")
    np.testing.assert_allclose(joint, _step_against_numpy(packed, "generator", batch), rtol=1e-6)
