"""RMSPropTF1 and AdamTF1 follow TensorFlow 1's update rules (spec/algorithm.md, "Optimisers"), step by step."""

import numpy as np
import pytest
import tensorflow as tf

from zscrgan.optimizers import AdamTF1, RMSPropTF1

W0 = np.array([[0.5, -1.0, 2.0], [0.0, 0.25, -0.75]])
# A different fixed gradient for each of three steps: small, unit-sized and large entries, one zero.
GRADS = [np.array([[0.1, -0.5, 1.0], [2.0, 0.0, -0.03]]),
         np.array([[-0.2, 0.4, 1.5], [-1.0, 0.3, 0.05]]),
         np.array([[0.3, 0.3, -0.6], [0.5, -2.0, 0.01]])]


def _run(opt_cls, steps, **kwargs):
    """Weights after each of `steps` updates, and the optimizer."""
    w = tf.Variable(W0.astype(np.float32))
    opt = opt_cls([w], **kwargs)
    out = []
    for g in GRADS[:steps]:
        opt.apply([tf.constant(g.astype(np.float32))])
        out.append(w.numpy().astype(np.float64))
    return out, opt, w


def _np_rmsprop_tf1(lr, steps, ms0=1.0):
    """TF1: ms = 0.9 ms + 0.1 g^2 (ms starting at 1.0); w -= lr g / sqrt(ms + 1e-10)."""
    w, ms, out = W0.copy(), np.full_like(W0, ms0), []
    for g in GRADS[:steps]:
        ms = 0.9 * ms + 0.1 * g ** 2
        w = w - lr * g / np.sqrt(ms + 1e-10)
        out.append(w.copy())
    return out


def _np_adam_tf1(lr, steps):
    """TF1: beta1 0.5, beta2 0.999, eps 1e-8; lr_t = lr sqrt(1 - b2^t) / (1 - b1^t); w -= lr_t m / (sqrt(v) + eps)."""
    b1, b2, eps = 0.5, 0.999, 1e-8
    w, m, v, out = W0.copy(), np.zeros_like(W0), np.zeros_like(W0), []
    for t, g in enumerate(GRADS[:steps], start=1):
        m = b1 * m + (1 - b1) * g
        v = b2 * v + (1 - b2) * g ** 2
        lr_t = lr * np.sqrt(1 - b2 ** t) / (1 - b1 ** t)
        w = w - lr_t * m / (np.sqrt(v) + eps)
        out.append(w.copy())
    return out


def _slots(opt):
    """The optimizer's state: RMSProp's mean squares; Adam's moments and step counter."""
    if isinstance(opt, RMSPropTF1):
        return list(opt.ms)
    return list(opt.m) + list(opt.v) + [opt.step]


def _assert_updates_close(got, expected):
    # Compare the displacement from W0 (not the weights), so a wrong step size cannot hide in rounding.
    for g, e in zip(got, expected):
        np.testing.assert_allclose(g - W0, e - W0, rtol=1e-4, atol=1e-7)


@pytest.mark.parametrize("in_place", [False, True])
def test_rmsprop_tf1_first_three_steps(in_place):
    lr = 0.01
    got, _, _ = _run(RMSPropTF1, 3, learning_rate=lr, in_place=in_place)
    _assert_updates_close(got, _np_rmsprop_tf1(lr, 3))


def test_rmsprop_tf1_first_step_by_hand():
    # g = 1: ms = 0.9 * 1 + 0.1 * 1 = 1, so the step is exactly lr.  g = 0.1: lr * 0.1 / sqrt(0.901).
    got, _, _ = _run(RMSPropTF1, 1, learning_rate=0.01)
    step = W0 - got[0]
    assert step[0, 2] == pytest.approx(0.01, rel=1e-5)
    assert step[0, 0] == pytest.approx(0.01 * 0.1 / np.sqrt(0.901), rel=1e-4)
    assert step[1, 1] == 0.0  # zero gradient, no move


def test_rmsprop_accumulator_starting_at_one_makes_first_steps_smaller_than_keras():
    """Why ms0 = 1 matters: with ms0 = 0 the first step is lr g / sqrt(0.1 g^2) = lr sign(g) sqrt(10)."""
    lr = 0.01
    tf1_step = W0 - _run(RMSPropTF1, 1, learning_rate=lr)[0][0]
    zero_start_step = W0 - _np_rmsprop_tf1(lr, 1, ms0=0.0)[0]
    # For g = 1 the ratio is sqrt(10) ~ 3.16 ("about 3x"); for small g it is larger still.
    assert zero_start_step[0, 2] / tf1_step[0, 2] == pytest.approx(np.sqrt(10.0), rel=1e-4)
    assert zero_start_step[0, 0] / tf1_step[0, 0] > 9.0  # g = 0.1
    # Keras' own RMSprop (accumulator at 0, epsilon outside the root) takes the zero-start step.
    import keras
    w = keras.Variable(W0.astype(np.float32))
    keras.optimizers.RMSprop(learning_rate=lr, rho=0.9).apply_gradients([(tf.constant(GRADS[0], tf.float32), w)])
    keras_step = W0 - np.asarray(w.numpy(), np.float64)
    np.testing.assert_allclose(keras_step[0, 2], zero_start_step[0, 2], rtol=1e-3)
    assert keras_step[0, 2] / tf1_step[0, 2] > 3.0


@pytest.mark.parametrize("in_place", [False, True])
def test_rmsprop_respects_its_hyperparameters(in_place):
    lr, rho = 0.05, 0.5
    got, _, _ = _run(RMSPropTF1, 2, learning_rate=lr, rho=rho, initial_accumulator=2.0, in_place=in_place)
    w, ms = W0.copy(), np.full_like(W0, 2.0)
    for g, wg in zip(GRADS[:2], got):
        ms = rho * ms + (1 - rho) * g ** 2
        w = w - lr * g / np.sqrt(ms + 1e-10)
        np.testing.assert_allclose(wg - W0, w - W0, rtol=1e-4, atol=1e-7)


def test_adam_tf1_first_three_steps():
    lr = 0.002
    got, _, _ = _run(AdamTF1, 3, learning_rate=lr)
    _assert_updates_close(got, _np_adam_tf1(lr, 3))


def test_adam_tf1_first_step_is_lr_times_sign():
    # t = 1: m = 0.5 g, v = 0.001 g^2, lr_t = lr sqrt(0.001) / 0.5, so the step is lr g / (|g| + eps/sqrt(.001)).
    got, _, _ = _run(AdamTF1, 1, learning_rate=0.002)
    step = W0 - got[0]
    np.testing.assert_allclose(step[0], 0.002 * np.sign(GRADS[0][0]), rtol=1e-4)
    assert step[1, 1] == 0.0


def test_adam_epsilon_is_tf1s_1e_8():
    # A tiny gradient makes epsilon visible: with g = 1e-7, sqrt(v) = 1e-7 * sqrt(0.001) ~ 3.2e-9, so
    # eps = 1e-8 gives a step of lr * 3.2e-9 / (3.2e-9 + 1e-8) ~ 0.24 lr, and Keras' 1e-7 about 0.03 lr.
    w = tf.Variable([1.0], dtype=tf.float32)
    opt = AdamTF1([w], learning_rate=1.0)
    opt.apply([tf.constant([1e-7])])
    root_v = 1e-7 * np.sqrt(0.001)
    expected = (np.sqrt(0.001) / 0.5) * (0.5 * 1e-7) / (root_v + 1e-8)
    moved = 1.0 - float(w.numpy()[0])
    assert moved == pytest.approx(expected, rel=1e-3)


@pytest.mark.parametrize("opt_cls, kwargs", [(RMSPropTF1, dict(learning_rate=0.01)),
                                              (AdamTF1, dict(learning_rate=0.002))])
def test_slots_are_saved_and_restored_by_a_checkpoint(tmp_path, opt_cls, kwargs):
    _, opt, w = _run(opt_cls, 2, **kwargs)
    path = tf.train.Checkpoint(w=w, opt=opt).write(str(tmp_path / "ckpt"))
    slots = [v.numpy().copy() for v in _slots(opt)]
    assert {id(v) for v in _slots(opt)} <= {id(v) for v in opt.variables}, "slots must be tracked variables"

    w2 = tf.Variable(np.zeros_like(W0, np.float32))
    opt2 = opt_cls([w2], **kwargs)
    assert any(not np.array_equal(a, b.numpy()) for a, b in zip(slots, _slots(opt2)))
    tf.train.Checkpoint(w=w2, opt=opt2).read(path).assert_consumed()
    for a, b in zip(slots, _slots(opt2)):
        np.testing.assert_array_equal(a, b.numpy())
    # The restored optimizer takes the same third step as the original one.
    g3 = tf.constant(GRADS[2].astype(np.float32))
    opt.apply([g3])
    opt2.apply([g3])
    np.testing.assert_array_equal(w.numpy(), w2.numpy())
    expected = (_np_rmsprop_tf1 if opt_cls is RMSPropTF1 else _np_adam_tf1)(kwargs["learning_rate"], 3)[-1]
    np.testing.assert_allclose(w2.numpy() - W0, expected - W0, rtol=1e-4, atol=1e-7)


def test_rmsprop_epsilon_is_inside_the_square_root():
    # With the accumulator starting at 0 and a large epsilon the two placements part clearly:
    # g = 0.1, eps = 0.01: inside, lr g / sqrt(0.001 + 0.01) ~ 0.95 lr; outside, lr g / (0.0316 + 0.01) ~ 2.4 lr.
    lr, eps, g = 1.0, 0.01, 0.1
    w = tf.Variable([0.0], dtype=tf.float32)
    RMSPropTF1([w], learning_rate=lr, epsilon=eps, initial_accumulator=0.0).apply([tf.constant([g])])
    ms = 0.1 * g ** 2
    inside, outside = lr * g / np.sqrt(ms + eps), lr * g / (np.sqrt(ms) + eps)
    assert outside / inside > 2.0
    assert -float(w.numpy()[0]) == pytest.approx(inside, rel=1e-5)


def test_rmsprop_in_place_or_not_computes_the_same_bits_clipping_included():
    """The compiled pass assigned afterwards (in_place=False) or writing the variables in place
    (in_place=True): the same arithmetic, bit for bit, over several steps of a clipped critic-like update."""
    rng = np.random.default_rng(0)
    w0 = rng.uniform(-0.012, 0.012, (64, 33)).astype(np.float32)  # some weights start beyond the clip
    grads = [(rng.standard_normal((64, 33)) * 10.0 ** rng.integers(-4, 1)).astype(np.float32) for _ in range(5)]
    out = {}
    for in_place in (False, True):
        w = tf.Variable(w0)
        opt = RMSPropTF1([w], learning_rate=2e-4, clip=0.01, in_place=in_place)
        for g in grads:
            opt.apply([tf.constant(g)])
        out[in_place] = (w.numpy(), opt.ms[0].numpy())
    assert np.abs(out[False][0]).max() <= 0.01
    np.testing.assert_array_equal(out[False][0], out[True][0])
    np.testing.assert_array_equal(out[False][1], out[True][1])
    assert not np.array_equal(out[False][0], w0)


@pytest.mark.parametrize("write_in_place, read_in_place", [(True, False), (False, True)])
def test_rmsprop_checkpoints_move_between_the_two_updates(tmp_path, write_in_place, read_in_place):
    """Both updates keep the same state (the mean squares), so a run of either resumes one of the other."""
    _, opt, w = _run(RMSPropTF1, 2, learning_rate=0.01, in_place=write_in_place)
    path = tf.train.Checkpoint(w=w, opt=opt).write(str(tmp_path / "ckpt"))
    w2 = tf.Variable(np.zeros_like(W0, np.float32))
    opt2 = RMSPropTF1([w2], learning_rate=0.01, in_place=read_in_place)
    tf.train.Checkpoint(w=w2, opt=opt2).read(path).assert_consumed()
    g3 = tf.constant(GRADS[2].astype(np.float32))
    opt.apply([g3])
    opt2.apply([g3])
    np.testing.assert_array_equal(w2.numpy(), w.numpy())
