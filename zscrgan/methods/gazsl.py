"""GAZSL / ZSL-GAN (Zhu et al., CVPR 2018, "A Generative Adversarial Approach for Zero-Shot Learning
from Noisy Texts"), as its released training script for CUB trains it: a generator that first reduces
the text vector by one linear layer (its weights held sparse per text dimension, the paper's noise
suppression) and maps it with noise to an image feature vector; a WGAN-GP critic on image features
alone with an auxiliary classification head over the seen classes; and the visual pivot regulariser,
which pulls the mean of each class's generated features in a batch to that class's real centroid.

A round is `gazsl.steps_per_round` generator updates, each after `gazsl.critic_iters` critic
updates. Queries are a text's generated features averaged over noise draws, mapped back to the run's
image space; the gallery is the image vectors as they are (docs/methods/gazsl.md).
"""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import tensorflow as tf

from zscrgan.methods._wgan_gp import (EpochWalk, FeatureNorm, GeneratedFeatures, PackedRows, gradient_penalty,
                                      positive, xavier_stddev)
from zscrgan.methods.base import Phases, TrainingData, apply_after, run_steps
from zscrgan.networks import Dense
from zscrgan.optimizers import AdamTF1

LEAK = 0.01  # the slope of PyTorch's nn.LeakyReLU() default, which the released generator uses
LOSS_NAMES = ("L_D", "wasserstein", "GP", "L_G", "aux_cls", "pivot", "reg")


class Generator(tf.Module):
    """(z, text) -> concat(z, text W_z + b) -> hidden (LeakyReLU 0.01) -> image features (tanh)."""

    def __init__(self, text_dim, reduced_dim, z_dim, hidden_dim, image_dim, rng):
        super().__init__(name="generator")
        dense = lambda n_in, n_out, name: Dense(n_in, n_out, rng, name, stddev=xavier_stddev(n_in, n_out))
        self.reduce = dense(text_dim, reduced_dim, "reduce_text")
        self.fc1 = dense(z_dim + reduced_dim, hidden_dim, "fc1")
        self.fc2 = dense(hidden_dim, image_dim, "fc2")

    def __call__(self, z, text):
        h = tf.nn.leaky_relu(self.fc1(tf.concat([z, self.reduce(text)], axis=1)), alpha=LEAK)
        return tf.tanh(self.fc2(h))

    @property
    def kernels(self):
        return [self.reduce.kernel, self.fc1.kernel, self.fc2.kernel]


class Critic(tf.Module):
    """Image features -> hidden (ReLU) -> (WGAN score [B, 1], seen-class logits [B, C])."""

    def __init__(self, image_dim, hidden_dim, n_classes, rng):
        super().__init__(name="critic")
        dense = lambda n_in, n_out, name: Dense(n_in, n_out, rng, name, stddev=xavier_stddev(n_in, n_out))
        self.shared = dense(image_dim, hidden_dim, "shared")
        self.score = dense(hidden_dim, 1, "score")
        self.classify = dense(hidden_dim, n_classes, "classify")

    def __call__(self, x):
        h = tf.nn.relu(self.shared(x))
        return self.score(h), self.classify(h)


def visual_pivot_loss(generated: tf.Tensor, labels: tf.Tensor, centroids: tf.Tensor) -> tf.Tensor:
    """Sum over the classes present in the batch of ||mean of their generated rows - real centroid||_2
    (not squared), divided by the number of seen classes (all of them, present or not), as released."""
    n_classes = tf.shape(centroids)[0]
    sums = tf.math.unsorted_segment_sum(generated, labels, n_classes)
    counts = tf.math.unsorted_segment_sum(tf.ones_like(labels, tf.float32), labels, n_classes)
    present = counts > 0
    means = sums / tf.maximum(counts, 1.0)[:, None]
    squared = tf.reduce_sum(tf.square(means - centroids), axis=1)
    # Absent classes contribute nothing; the where keeps sqrt's gradient away from their zeros.
    dist = tf.sqrt(tf.where(present, squared, 1.0))
    return tf.reduce_sum(tf.where(present, dist, 0.0)) / tf.cast(n_classes, tf.float32)


def cross_entropy(logits, labels):
    return tf.reduce_mean(tf.nn.sparse_softmax_cross_entropy_with_logits(labels=labels, logits=logits))


class GAZSL(GeneratedFeatures):
    """Keys: the `gazsl` section of configs/methods/gazsl.yaml (the released train_CUB.py's values)."""

    loss_names = LOSS_NAMES
    architecture_keys = ("gazsl.z_dim", "gazsl.text_reduction_dim", "gazsl.hidden_dim")

    def __init__(self, cfg, image_dim: int, text_dim: int):
        super().__init__(cfg, image_dim, text_dim, name="gazsl")
        # A plain namespace: tf.Module would wrap a dict attribute into a tracked container.
        own = self.own = SimpleNamespace(**cfg.gazsl)
        positive(cfg.gazsl, "gazsl", ("steps_per_round", "batch_size", "z_dim", "text_reduction_dim",
                                      "hidden_dim", "critic_iters", "lr"))
        self.z_dim = own.z_dim
        self.init_rng = tf.random.Generator.from_seed(cfg.seed)
        self.noise = tf.random.Generator.from_seed(cfg.seed + 1)  # batches, conditions, z, GP mixing
        self.query_noise = tf.random.Generator.from_seed(cfg.seed + 2)
        self.generator = Generator(text_dim, own.text_reduction_dim, own.z_dim, own.hidden_dim, image_dim,
                                   self.init_rng)
        self.norm = FeatureNorm(image_dim)
        self.opt_generator = AdamTF1(self.generator.trainable_variables, own.lr, own.beta1, own.beta2,
                                     epsilon_hat=True, name="opt_generator")
        self.critic = self.opt_critic = self.walk = None
        self.rows = self.centroids = None

    def attach(self, data: TrainingData) -> None:
        own = self.own
        images = data.stacked()[0].astype(np.float64)
        if own.feature_norm == "released":  # dataset.py: one mean and one variance over all values
            self.norm.fit(images.mean(), images.var())
        normed = self.norm(tf.constant(images, tf.float32)).numpy()
        self.rows = PackedRows(data, normed, own.conditioning)
        labels = self.rows.labels.numpy()
        self.centroids = tf.constant(np.stack([normed[labels == j].mean(axis=0)
                                               for j in range(self.rows.n_classes)]))
        self.critic = Critic(self.image_dim, own.hidden_dim, self.rows.n_classes, self.init_rng)
        self.opt_critic = AdamTF1(self.critic.trainable_variables, own.lr, own.beta1, own.beta2,
                                  epsilon_hat=True, name="opt_critic")
        self.walk = EpochWalk(self.rows.n_rows, own.batch_size, self.noise)
        self._chunk = tf.function(self._steps)

    # --- training ------------------------------------------------------------------------------------
    def _batch(self):
        rows = self.walk.next()
        x, y = tf.gather(self.rows.images, rows), tf.gather(self.rows.labels, rows)
        z = self.noise.normal([tf.shape(rows)[0], self.own.z_dim])
        return x, y, self.rows.conditions(y, self.noise), z

    def critic_loss(self, x, y, fake, alpha):
        """The released critic objective and its parts: -D(x) + CE(C(x)) + D(fake) + CE(C(fake)) + lambda GP."""
        d_real, c_real = self.critic(x)
        d_fake, c_fake = self.critic(fake)
        gp = gradient_penalty(lambda v: self.critic(v)[0], x, fake, alpha)
        loss = (-tf.reduce_mean(d_real) + cross_entropy(c_real, y) + tf.reduce_mean(d_fake)
                + cross_entropy(c_fake, y) + self.own.gp_weight * gp)
        return loss, tf.reduce_mean(d_real) - tf.reduce_mean(d_fake), gp

    def generator_loss(self, x, y, text, z):
        """The released generator objective and its parts: -D(G) + (CE(C(x)) + CE(C(G))) / 2 + pivot
        weight x visual pivot + weight decay x sum W^2 + text sparsity x ||W_z||_2,1 (over text dimensions)."""
        fake = self.generator(z, text)
        d_fake, c_fake = self.critic(fake)
        _, c_real = self.critic(x)
        aux = (cross_entropy(c_real, y) + cross_entropy(c_fake, y)) / 2.0
        pivot = self.own.pivot_weight * visual_pivot_loss(fake, y, self.centroids)
        reg = (self.own.weight_decay * tf.add_n([tf.reduce_sum(tf.square(k)) for k in self.generator.kernels])
               + self.own.text_sparsity * tf.reduce_sum(tf.norm(self.generator.reduce.kernel, axis=1)))
        return -tf.reduce_mean(d_fake) + aux + pivot + reg, aux, pivot, reg

    def critic_update(self, x, y, fake, alpha):
        """One critic update on a batch (generated rows held fixed); returns [L_D, Wasserstein, GP]."""
        with tf.GradientTape() as tape:
            loss, w_dist, gp = self.critic_loss(x, y, fake, alpha)
        apply_after([loss, w_dist, gp], (self.opt_critic, tape.gradient(loss, self.critic.trainable_variables)))
        return tf.stack([loss, w_dist, gp])

    def generator_update(self, x, y, text, z):
        """One generator update on a batch; returns [L_G, aux_cls, pivot, reg]."""
        with tf.GradientTape() as tape:
            loss, aux, pivot, reg = self.generator_loss(x, y, text, z)
        apply_after([loss, aux, pivot, reg], (self.opt_generator, tape.gradient(loss, self.generator.trainable_variables)))
        return tf.stack([loss, aux, pivot, reg])

    def critic_step(self):
        x, y, text, z = self._batch()
        return self.critic_update(x, y, self.generator(z, text), self.noise.uniform([tf.shape(x)[0], 1]))

    def generator_step(self):
        return self.generator_update(*self._batch())

    def _steps(self, n):
        sums = tf.zeros([len(LOSS_NAMES)])
        for _ in tf.range(n):
            critic = tf.add_n([self.critic_step() for _ in range(self.own.critic_iters)]) / self.own.critic_iters
            sums += tf.concat([critic, self.generator_step()], axis=0)
        return sums

    def train_round(self, phases: Phases) -> dict | None:
        means = phases.run("GAN", self.own.steps_per_round, self._run_steps)
        return None if means is None else dict(zip(LOSS_NAMES, means.numpy().tolist()))

    def _run_steps(self, stop):
        # One generator update (after its critic updates) per compiled call: at CUB sizes each takes
        # seconds, so a stop request is acted on between two of them.
        return run_steps(self._chunk, self.own.steps_per_round, len(LOSS_NAMES), stop, chunk=1)
