"""Pieces the feature-generating WGAN-GP methods share (GAZSL, f-CLSWGAN): the gradient penalty, the
seen-class rows packed on the device with a sampler of batches and of each row's condition text, and
the per-dimension feature normalisation each released code applies before training.

Not a method (the leading underscore keeps `zscrgan.methods` from taking it for one).
"""

from __future__ import annotations

import numpy as np
import tensorflow as tf

from zscrgan.errors import UserError
from zscrgan.methods.base import Method, TrainingData, mean_over_draws


def gradient_penalty(critic, real: tf.Tensor, fake: tf.Tensor, alpha: tf.Tensor) -> tf.Tensor:
    """WGAN-GP's penalty (Gulrajani et al. 2017): mean over rows of (||d critic(x) / dx||_2 - 1)^2 at
    x = alpha real + (1 - alpha) fake, `alpha` [B, 1] uniform in [0, 1). `critic(x)` returns the
    scores [B, 1]; the penalty is differentiable in the critic's weights (the tape records the
    input gradient). The weight (lambda) is the caller's."""
    x = alpha * real + (1.0 - alpha) * fake
    with tf.GradientTape() as tape:
        tape.watch(x)
        total = tf.reduce_sum(critic(x))  # rows are independent: row i's gradient is d score_i / d x_i
    squares = tf.reduce_sum(tf.square(tape.gradient(total, x)), axis=1)
    # A row with a zero input gradient (every hidden unit off) gets norm 0 and, as in PyTorch's norm,
    # a zero gradient there (tf.norm's would be NaN).
    norm = tf.where(squares > 0, tf.sqrt(tf.where(squares > 0, squares, 1.0)), 0.0)
    return tf.reduce_mean(tf.square(norm - 1.0))


def xavier_stddev(n_in: int, n_out: int) -> float:
    """The standard deviation of Glorot's normal init (PyTorch's xavier_normal, gain 1)."""
    return float(np.sqrt(2.0 / (n_in + n_out)))


def positive(cfg_section, name: str, keys) -> None:
    """Refuse (UserError) a key of the method's own section that is not positive."""
    for key in keys:
        if cfg_section[key] <= 0:
            raise UserError(f"config: key '{name}.{key}' must be positive, got {cfg_section[key]}")


class FeatureNorm(tf.Module):
    """x -> (x - shift) / scale per image dimension, fitted on the training images; `inverse` maps
    generated vectors back to the run's image space (where the gallery is)."""

    def __init__(self, image_dim: int):
        super().__init__(name="feature_norm")
        self.shift = tf.Variable(tf.zeros([image_dim]), name="shift")
        self.scale = tf.Variable(tf.ones([image_dim]), name="scale")

    def fit(self, shift: np.ndarray, scale: np.ndarray) -> None:
        self.shift.assign(np.broadcast_to(shift, self.shift.shape).astype(np.float32))
        self.scale.assign(np.broadcast_to(scale, self.scale.shape).astype(np.float32))

    def __call__(self, x):
        return (x - self.shift) / self.scale

    def inverse(self, g):
        return g * self.scale + self.shift


class PackedRows:
    """Every training image row with its class, every text row, and per class its text rows' span and
    text mean, as device tensors; batches and conditions are drawn from the method's own generator."""

    def __init__(self, data: TrainingData, images: np.ndarray, conditioning: str):
        _, labels, texts, text_labels = data.stacked()
        counts = np.bincount(text_labels, minlength=len(data.classes))
        self.images = tf.constant(images, tf.float32)
        self.labels = tf.constant(labels, tf.int32)
        self.texts = tf.constant(texts)
        self.text_offsets = tf.constant(np.concatenate([[0], np.cumsum(counts)[:-1]]), tf.int32)
        self.text_counts = tf.constant(counts, tf.int32)
        self.class_texts = tf.constant(np.stack([texts[text_labels == j].mean(axis=0)
                                                 for j in range(len(data.classes))]).astype(np.float32))
        self.conditioning = conditioning
        self.n_rows, self.n_classes = int(images.shape[0]), len(data.classes)

    def conditions(self, labels: tf.Tensor, rng: tf.random.Generator) -> tf.Tensor:
        """Each row's condition text [B, T]: `text` one of its class's text vectors drawn uniformly per
        row, `class_mean` the mean of its class's text vectors."""
        if self.conditioning == "class_mean":
            return tf.gather(self.class_texts, labels)
        counts = tf.gather(self.text_counts, labels)
        pick = tf.minimum(tf.cast(rng.uniform(tf.shape(labels)) * tf.cast(counts, tf.float32), tf.int32), counts - 1)
        return tf.gather(self.texts, tf.gather(self.text_offsets, labels) + pick)


class EpochWalk(tf.Module):
    """Batches of rows without replacement from a shuffled pass over `n` rows; a new shuffle starts
    when the rest of a pass would not exceed one batch (that rest is dropped). The permutation and
    the position are variables, so a resume continues the same walk."""

    def __init__(self, n: int, batch: int, rng: tf.random.Generator):
        super().__init__(name="epoch_walk")
        self.n, self.batch, self.rng = n, min(batch, n), rng
        self.perm = tf.Variable(tf.range(n), name="perm")
        self.cursor = tf.Variable(n, name="cursor")  # at the end: the first batch shuffles

    def next(self) -> tf.Tensor:
        def reshuffle():
            self.perm.assign(tf.argsort(self.rng.uniform([self.n])))
            self.cursor.assign(0)
            return 0

        start = tf.cond(self.cursor + self.batch >= self.n, reshuffle, lambda: tf.identity(self.cursor))
        self.cursor.assign(start + self.batch)
        return self.perm[start:start + self.batch]


def random_subset(n: int, batch: int, rng: tf.random.Generator) -> tf.Tensor:
    """`batch` distinct rows of `n`, drawn afresh (the first rows of a random permutation)."""
    return tf.argsort(rng.uniform([n]))[:min(batch, n)]


class GeneratedFeatures(Method):
    """Retrieval by the project-wide rule for feature generators: a query text's generated features
    (noise drawn from `query_noise`), averaged over draws and mapped back to the run's image space,
    against the image vectors as they are. Subclasses set `generator` (z, text -> normalised
    features), `z_dim`, `norm` (a FeatureNorm) and `query_noise`; retrieval restores only these."""

    def weight_objects(self) -> dict:
        return {"generator": self.generator, "feature_norm": self.norm}

    def reset_noise(self, seed: int) -> None:
        self.query_noise.reset_from_seed(seed)

    @tf.function(reduce_retracing=True)
    def _generate_once(self, texts):
        return self.generator(self.query_noise.normal([tf.shape(texts)[0], self.z_dim]), texts)

    def generate(self, texts, draws: int = 1):
        """Generated features per text, averaged over `draws` noise draws, in the run's image space."""
        return self.norm.inverse(mean_over_draws(self._generate_once, tf.convert_to_tensor(texts), draws))

    def embed_queries(self, texts, draws=None):
        return self.generate(texts, draws or self.eval_draws)

    def embed_gallery(self, images):
        return tf.convert_to_tensor(images)
