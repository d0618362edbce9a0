"""The speed settings compute what the plain float32 path computes.

Fused clipping and XLA compilation change only the order of floating-point operations (losses and
weights equal within float32 rounding); float32 itself runs the plain graph; mixed precision computes
in 16 bits but keeps weights, optimiser slots and losses in float32.
"""

import numpy as np
import pytest
import tensorflow as tf

from benchmarks.roofline import live_matmuls
from test_train_steps import B, I, ONE_BATCH, T, _cfg, _packed, _rows, _schedule
from zscrgan.optimizers import DynamicLossScale, RMSPropTF1
from zscrgan.train import Trainer

ITERS = 3


@pytest.fixture(scope="module")
def packed():
    return _packed()


def _phases(packed, **overrides):
    """Phase losses of one E-step and one M-step of ITERS iterations, and the trainer after them."""
    cfg = _cfg(**overrides)
    trainer = Trainer(cfg, I, T)
    e = trainer.e_step(packed.images, packed.texts, *_schedule(packed, (ITERS, cfg.critic_steps + 1, B), seed=1))
    m = trainer.m_step(packed.images, packed.texts, *_schedule(packed, (ITERS, B), seed=2))
    return np.concatenate([e.numpy(), [m.numpy()]]), trainer


@pytest.fixture(scope="module")
def plain(packed):
    return _phases(packed)


def _slots(trainer):
    return trainer.opt_generator.ms + trainer.opt_critic.ms + trainer.opt_csem.m + trainer.opt_csem.v


@pytest.mark.parametrize("in_place", [True, False])
def test_our_rmsprop_updates_equal_tf_rmsprop_kernel_then_clip_within_rounding(in_place):
    r = np.random.default_rng(0)
    w0 = (r.standard_normal((30, 20)) * 0.02).astype(np.float32)
    fused = tf.Variable(w0)
    opt = RMSPropTF1([fused], 2e-4, clip=0.01, in_place=in_place)
    w, ms, mom = tf.Variable(w0), tf.Variable(tf.ones_like(w0)), tf.Variable(tf.zeros_like(w0))
    for scale in (1e-3, 1.0, 30.0):  # gradients small, unit and large against the accumulator
        g = tf.constant((r.standard_normal(w0.shape) * scale).astype(np.float32))
        opt.apply([g])
        tf.raw_ops.ResourceApplyRMSProp(var=w.handle, ms=ms.handle, mom=mom.handle, lr=2e-4, rho=0.9,
                                        momentum=0.0, epsilon=1e-10, grad=g)
        w.assign(tf.clip_by_value(w, -0.01, 0.01))
        np.testing.assert_array_max_ulp(opt.ms[0].numpy(), ms.numpy(), maxulp=2)
        # Weights within a few units in the last place of the clip bound, the weights' scale.
        np.testing.assert_allclose(fused.numpy(), w.numpy(), rtol=0, atol=4 * np.spacing(np.float32(0.01)))
    assert np.mean(np.abs(w.numpy()) == np.float32(0.01)) > 0.1  # the clip was active


def test_float32_runs_the_plain_graph(packed):
    trainer = Trainer(_cfg(), I, T)
    args = (packed.images, packed.texts, *_rows(packed, *ONE_BATCH))
    graph = tf.function(trainer.critic_step).get_concrete_function(*args).graph
    assert [op for op in graph.get_operations() if op.type == "MatMul"]
    assert not [op for op in graph.get_operations()
                if op.type == "Cast" and tf.float32 in (op.get_attr("SrcT"), op.get_attr("DstT"))]


@pytest.mark.slow
def test_jit_compiled_phases_equal_the_plain_ones_within_rounding(packed, plain):
    losses, trainer = _phases(packed, jit_compile=True)
    np.testing.assert_allclose(losses, plain[0], rtol=1e-5, atol=1e-6)
    for a, b in zip(trainer.model.trainable_variables, plain[1].model.trainable_variables):
        np.testing.assert_allclose(a.numpy(), b.numpy(), rtol=1e-4, atol=1e-6, err_msg=a.name)


@pytest.mark.parametrize("precision, dtype, rtol", [("mixed_bfloat16", "bfloat16", 0.05),
                                                    ("mixed_float16", "float16", 0.01)])
@pytest.mark.slow
def test_mixed_precision_computes_in_16_bits_and_keeps_float32_state(packed, plain, precision, dtype, rtol):
    losses, trainer = _phases(packed, precision=precision)
    state = trainer.model.trainable_variables + tuple(_slots(trainer))
    assert {v.dtype for v in state} == {tf.float32}
    assert len(_slots(trainer)) == len(_slots(plain[1]))
    args = (packed.images, packed.texts, *_rows(packed, *ONE_BATCH))
    for step in (trainer.critic_step, trainer.generator_step, trainer.csem_step):
        matmuls = live_matmuls(tf.function(step).get_concrete_function(*args))
        assert {mm.dtype for mm in matmuls} == {dtype}
    # 16-bit products (8 or 11 significant bits) after a few steps: the losses follow float32's.
    np.testing.assert_allclose(losses, plain[0], rtol=rtol, atol=rtol)


def test_float16_loss_scale_skips_overflowing_steps_and_grows_after_good_ones():
    w = tf.Variable([1.0, 2.0])
    opt = RMSPropTF1([w], 0.1)
    scale = DynamicLossScale(initial_scale=8.0, growth_interval=2)
    scale.apply([(opt, [tf.constant([np.inf, 8.0])])])
    np.testing.assert_array_equal(w.numpy(), [1.0, 2.0])  # skipped
    assert float(scale.scale) == 4.0 and int(scale.good_steps) == 0
    scale.apply([(opt, [tf.constant([4.0, -4.0])])])  # unscaled: [1, -1]
    reference = tf.Variable([1.0, 2.0])
    RMSPropTF1([reference], 0.1).apply([tf.constant([1.0, -1.0])])
    np.testing.assert_array_equal(w.numpy(), reference.numpy())
    assert float(scale.scale) == 4.0 and int(scale.good_steps) == 1
    scale.apply([(opt, [tf.constant([4.0, -4.0])])])
    assert float(scale.scale) == 8.0 and int(scale.good_steps) == 0  # two good steps in a row: doubled


@pytest.mark.slow
def test_float16_trainer_checkpoints_its_loss_scale(packed, tmp_path):
    _, trainer = _phases(packed, precision="mixed_float16")
    path = tf.train.Checkpoint(trainer=trainer).write(str(tmp_path / "ckpt"))
    other = Trainer(_cfg(precision="mixed_float16"), I, T)
    other.loss_scale.scale.assign(1.0)
    tf.train.Checkpoint(trainer=other).read(path).assert_consumed()
    assert float(other.loss_scale.scale) == float(trainer.loss_scale.scale)
