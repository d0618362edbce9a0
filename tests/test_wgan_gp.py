"""The feature generators' shared pieces: the gradient penalty against a gradient worked out by hand,
the batch walk, the condition texts, and the feature normalisation's inverse."""

import numpy as np
import tensorflow as tf

from zscrgan.methods._wgan_gp import EpochWalk, FeatureNorm, PackedRows, gradient_penalty, random_subset
from zscrgan.methods.base import TrainingData


def _critic(w1, b1, w2, b2):
    """score(x) = leaky_relu_0.2(x W1 + b1) W2 + b2, in TensorFlow."""
    return lambda x: tf.matmul(tf.nn.leaky_relu(tf.matmul(x, w1) + b1, alpha=0.2), w2) + b2


def test_gradient_penalty_equals_the_hand_computed_input_gradient():
    rng = np.random.default_rng(0)
    real, fake = rng.standard_normal((5, 4)), rng.standard_normal((5, 4))
    alpha = rng.uniform(size=(5, 1))
    w1, b1 = rng.standard_normal((4, 6)), rng.standard_normal(6)
    w2, b2 = rng.standard_normal((6, 1)), rng.standard_normal(1)
    # By hand: at x = a r + (1 - a) f, d score / dx = W1 (slope(x W1 + b1) * w2), slope 1 or 0.2.
    x = alpha * real + (1 - alpha) * fake
    slope = np.where(x @ w1 + b1 > 0, 1.0, 0.2)
    grad = (slope * w2[:, 0]) @ w1.T
    expected = np.mean((np.linalg.norm(grad, axis=1) - 1.0) ** 2)
    f32 = lambda a: tf.constant(a, tf.float32)
    got = gradient_penalty(_critic(f32(w1), f32(b1), f32(w2), f32(b2)), f32(real), f32(fake), f32(alpha))
    assert np.isclose(float(got), expected, rtol=1e-5)
    # The penalty is differentiable in the critic's weights, inside a compiled function too.
    w1v = tf.Variable(f32(w1))

    @tf.function
    def weight_grad():
        with tf.GradientTape() as tape:
            gp = gradient_penalty(_critic(w1v, f32(b1), f32(w2), f32(b2)), f32(real), f32(fake), f32(alpha))
        return tape.gradient(gp, w1v)

    g = weight_grad().numpy()
    h = 1e-6  # central differences of the hand formula in float64, for one weight
    def hand(w):
        s = np.where(x @ w + b1 > 0, 1.0, 0.2)
        return np.mean((np.linalg.norm((s * w2[:, 0]) @ w.T, axis=1) - 1.0) ** 2)
    bump = np.zeros_like(w1)
    bump[2, 3] = h
    assert np.isclose(g[2, 3], (hand(w1 + bump) - hand(w1 - bump)) / (2 * h), rtol=1e-3, atol=1e-5)


def test_epoch_walk_covers_every_row_once_per_pass_and_drops_the_short_rest():
    walk = EpochWalk(10, 4, tf.random.Generator.from_seed(0))
    batches = [walk.next().numpy() for _ in range(4)]
    # 10 rows, batches of 4: two batches per pass (the rest of 2 is dropped), then a new shuffle.
    assert all(len(b) == 4 for b in batches)
    assert len(set(np.concatenate(batches[:2]))) == 8 and len(set(np.concatenate(batches[2:]))) == 8
    assert not np.array_equal(np.concatenate(batches[:2]), np.concatenate(batches[2:]))
    assert sorted(random_subset(6, 10, tf.random.Generator.from_seed(1)).numpy()) == list(range(6))


def _data():
    rng = np.random.default_rng(0)
    image = {c: rng.standard_normal((3 + c, 4)).astype(np.float32) for c in (5, 7, 9)}
    text = {c: (c + np.arange(2 + c % 3)[:, None] * 0.1 + np.zeros((1, 3))).astype(np.float32) for c in (5, 7, 9)}
    return TrainingData([5, 7, 9], image, text, 4, 3)


def test_conditions_are_texts_of_the_rows_class():
    data = _data()
    rows = PackedRows(data, data.stacked()[0], "text")
    labels = tf.constant([0, 1, 2, 2, 1, 0] * 20)
    got = rows.conditions(labels, tf.random.Generator.from_seed(0)).numpy()
    classes = np.array(data.classes)[labels.numpy()]
    assert np.all(np.floor(got[:, 0] + 1e-4) == classes)  # every text of class c starts with c + 0.1 k
    assert len(np.unique(got[:, 0])) == sum(len(t) for t in data.text.values())  # every text drawn
    means = PackedRows(data, data.stacked()[0], "class_mean").conditions(labels, None).numpy()
    assert np.allclose(means, np.stack([data.text[c].mean(axis=0) for c in classes]))


def test_feature_norm_inverse_restores_the_vectors():
    norm = FeatureNorm(3)
    norm.fit(np.array([1.0, -2.0, 0.5]), np.array([2.0, 4.0, 0.25]))
    x = tf.constant([[3.0, 2.0, 1.0]])
    assert np.allclose(norm(x).numpy(), [[1.0, 1.0, 2.0]])
    assert np.allclose(norm.inverse(norm(x)).numpy(), x.numpy())


def test_a_row_with_zero_input_gradient_gives_a_finite_weight_gradient():
    # Every hidden unit off for the second row (ReLU critic): its input gradient is zero, norm 0.
    w1 = tf.Variable([[1.0, 1.0]])
    critic = lambda x: tf.matmul(tf.nn.relu(tf.matmul(x, w1)), tf.ones([2, 1]))
    real, fake = tf.constant([[1.0], [-1.0]]), tf.constant([[1.0], [-1.0]])
    with tf.GradientTape() as tape:
        gp = gradient_penalty(critic, real, fake, tf.constant([[0.5], [0.5]]))
    # Row 1: gradient (2,) -> norm 2 -> (2 - 1)^2 = 1; row 2: norm 0 -> 1; mean 1.
    assert np.isclose(float(gp), 1.0)
    assert np.all(np.isfinite(tape.gradient(gp, w1).numpy()))
