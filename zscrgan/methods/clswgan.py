"""f-CLSWGAN (Xian et al., CVPR 2018, "Feature Generating Networks for Zero-Shot Learning"), as its
released clswgan.py and scripts/reproduce_zsl_cub.sh train it: a conditional WGAN-GP whose generator
maps (noise, class embedding) to an image feature vector and whose critic scores (feature, class
embedding) pairs, the generator also minimising the cross-entropy of a softmax classifier that was
trained on the seen classes' real features beforehand and stays frozen.

The classifier's training is the first part of round 1. A round is then `clswgan.steps_per_round`
generator updates, each after `clswgan.critic_iters` critic updates. Queries are a text's generated
features averaged over noise draws, mapped back to the run's image space; the gallery is the image
vectors as they are (docs/methods/clswgan.md).
"""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import tensorflow as tf

from zscrgan.methods._wgan_gp import (EpochWalk, FeatureNorm, GeneratedFeatures, PackedRows, gradient_penalty,
                                      positive, random_subset)
from zscrgan.methods.base import CHUNK_STEPS, Phases, TrainingData, apply_after, run_steps
from zscrgan.networks import Dense, leaky
from zscrgan.optimizers import AdamTF1

LOSS_NAMES = ("L_D", "wasserstein", "GP", "L_G", "cls", "pretrain_ce")


class Generator(tf.Module):
    """(z, c) -> concat(z, c) -> ngh (LeakyReLU 0.2) -> image features (ReLU), as the released MLP_G."""

    def __init__(self, z_dim, text_dim, ngh, image_dim, rng):
        super().__init__(name="generator")
        self.fc1 = Dense(z_dim + text_dim, ngh, rng, "fc1")
        self.fc2 = Dense(ngh, image_dim, rng, "fc2")

    def __call__(self, z, text):
        return tf.nn.relu(self.fc2(leaky(self.fc1(tf.concat([z, text], axis=1)))))


class Critic(tf.Module):
    """(x, c) -> concat(x, c) -> ndh (LeakyReLU 0.2) -> score [B, 1], as the released MLP_CRITIC."""

    def __init__(self, image_dim, text_dim, ndh, rng):
        super().__init__(name="critic")
        self.fc1 = Dense(image_dim + text_dim, ndh, rng, "fc1")
        self.fc2 = Dense(ndh, 1, rng, "fc2")

    def __call__(self, x, text):
        return self.fc2(leaky(self.fc1(tf.concat([x, text], axis=1))))


def cross_entropy(logits, labels):
    return tf.reduce_mean(tf.nn.sparse_softmax_cross_entropy_with_logits(labels=labels, logits=logits))


def min_max_norm(images: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(shift, scale) of the released preprocessing: scikit-learn's MinMaxScaler fitted on the training
    features (a constant dimension keeps scale 1), then every value divided by the largest scaled
    training value (util.py: `mx = train_feature.max()`)."""
    low, high = images.min(axis=0), images.max(axis=0)
    span = np.where(high - low > 0, high - low, 1.0)
    biggest = ((images - low) / span).max()
    return low, span * (biggest if biggest > 0 else 1.0)


class CLSWGAN(GeneratedFeatures):
    """Keys: the `clswgan` section of configs/methods/clswgan.yaml (clswgan.py and its CUB script)."""

    loss_names = LOSS_NAMES
    architecture_keys = ("clswgan.nz", "clswgan.ngh", "clswgan.ndh")

    def __init__(self, cfg, image_dim: int, text_dim: int):
        super().__init__(cfg, image_dim, text_dim, name="clswgan")
        # A plain namespace: tf.Module would wrap a dict attribute into a tracked container.
        own = self.own = SimpleNamespace(**cfg.clswgan)
        positive(cfg.clswgan, "clswgan", ("steps_per_round", "batch_size", "critic_iters", "ngh", "ndh", "lr",
                                          "classifier_lr", "classifier_epochs", "classifier_batch_size"))
        # nz 0: the condition's size, as every released script sets it (--nz equal to --attSize).
        self.z_dim = own.nz if own.nz > 0 else text_dim
        self.init_rng = tf.random.Generator.from_seed(cfg.seed)
        self.noise = tf.random.Generator.from_seed(cfg.seed + 1)  # batches, conditions, z, GP mixing
        self.query_noise = tf.random.Generator.from_seed(cfg.seed + 2)
        self.generator = Generator(self.z_dim, text_dim, own.ngh, image_dim, self.init_rng)
        self.critic = Critic(image_dim, text_dim, own.ndh, self.init_rng)
        self.norm = FeatureNorm(image_dim)
        self.opt_generator = AdamTF1(self.generator.trainable_variables, own.lr, own.beta1, own.beta2,
                                     epsilon_hat=True, name="opt_generator")
        self.opt_critic = AdamTF1(self.critic.trainable_variables, own.lr, own.beta1, own.beta2,
                                  epsilon_hat=True, name="opt_critic")
        self.pretrained = tf.Variable(False, name="pretrained")
        self.pretrain_ce = tf.Variable(0.0, name="pretrain_ce")  # mean loss of the classifier's last epoch
        self.classifier = self.opt_classifier = self.rows = self.classifier_walk = None

    def attach(self, data: TrainingData) -> None:
        own = self.own
        images = data.stacked()[0].astype(np.float64)
        if own.feature_norm == "released":
            self.norm.fit(*min_max_norm(images))
        self.rows = PackedRows(data, self.norm(tf.constant(images, tf.float32)).numpy(), own.conditioning)
        # classifier.py's LINEAR_LOGSOFTMAX over the seen classes, N(0, 0.02) weights, its own Adam.
        self.classifier = Dense(self.image_dim, self.rows.n_classes, self.init_rng, "classifier")
        self.opt_classifier = AdamTF1(self.classifier.trainable_variables, own.classifier_lr, own.classifier_beta1,
                                      0.999, epsilon_hat=True, name="opt_classifier")
        self.classifier_walk = EpochWalk(self.rows.n_rows, own.classifier_batch_size, self.noise)
        self._gan_chunk = tf.function(self._gan_steps)
        self._classifier_chunk = tf.function(self._classifier_steps)

    @property
    def classifier_steps(self) -> int:
        """The pretraining's updates: classifier_epochs passes of ceil(rows / batch) batches each."""
        return self.own.classifier_epochs * -(-self.rows.n_rows // self.own.classifier_batch_size)

    # --- the pretrained classifier ----------------------------------------------------------------------
    def classifier_step(self):
        rows = self.classifier_walk.next()
        x, y = tf.gather(self.rows.images, rows), tf.gather(self.rows.labels, rows)
        with tf.GradientTape() as tape:
            loss = cross_entropy(self.classifier(x), y)
        apply_after(loss, (self.opt_classifier, tape.gradient(loss, self.classifier.trainable_variables)))
        return loss[None]

    def _classifier_steps(self, n):
        sums = tf.zeros([1])
        for _ in tf.range(n):
            sums += self.classifier_step()
        return sums

    def _pretrain(self, stop):
        epoch = -(-self.rows.n_rows // self.own.classifier_batch_size)
        before = run_steps(self._classifier_chunk, self.classifier_steps - epoch, 1, stop)
        if before is None or (stop is not None and stop(self.classifier_steps - epoch)):
            return None
        return run_steps(self._classifier_chunk, epoch, 1)

    # --- the GAN ----------------------------------------------------------------------------------------
    def critic_loss(self, x, text, fake, alpha):
        """The released critic objective: D(fake, c) - D(x, c) + lambda1 GP, and the Wasserstein estimate."""
        w_dist = tf.reduce_mean(self.critic(x, text)) - tf.reduce_mean(self.critic(fake, text))
        gp = gradient_penalty(lambda v: self.critic(v, text), x, fake, alpha)
        return -w_dist + self.own.lambda1 * gp, w_dist, gp

    def generator_loss(self, y, text, z):
        """The released generator objective: -D(G(z, c), c) + cls_weight x CE(frozen classifier(G(z, c)), y)."""
        fake = self.generator(z, text)
        cls = cross_entropy(self.classifier(fake), y)
        return -tf.reduce_mean(self.critic(fake, text)) + self.own.cls_weight * cls, cls

    def critic_update(self, x, text, fake, alpha):
        """One critic update on a batch (generated rows held fixed); returns [L_D, Wasserstein, GP]."""
        with tf.GradientTape() as tape:
            loss, w_dist, gp = self.critic_loss(x, text, fake, alpha)
        apply_after([loss, w_dist, gp], (self.opt_critic, tape.gradient(loss, self.critic.trainable_variables)))
        return tf.stack([loss, w_dist, gp])

    def generator_update(self, y, text, z):
        """One generator update; returns [L_G, cls]."""
        with tf.GradientTape() as tape:
            loss, cls = self.generator_loss(y, text, z)
        apply_after([loss, cls], (self.opt_generator, tape.gradient(loss, self.generator.trainable_variables)))
        return tf.stack([loss, cls])

    def critic_step(self):
        """One critic update on a fresh batch; returns its losses and the batch's labels and conditions."""
        rows = random_subset(self.rows.n_rows, self.own.batch_size, self.noise)
        x, y = tf.gather(self.rows.images, rows), tf.gather(self.rows.labels, rows)
        text = self.rows.conditions(y, self.noise)
        fake = self.generator(self.noise.normal([tf.shape(rows)[0], self.z_dim]), text)
        return self.critic_update(x, text, fake, self.noise.uniform([tf.shape(rows)[0], 1])), y, text

    def generator_step(self, y, text):
        """One generator update on the last critic batch's labels and conditions, with fresh noise (as
        released: the generator step reuses input_att and input_label)."""
        return self.generator_update(y, text, self.noise.normal([tf.shape(y)[0], self.z_dim]))

    def _gan_steps(self, n):
        sums = tf.zeros([len(LOSS_NAMES) - 1])
        for _ in tf.range(n):
            critic = []
            for _ in range(self.own.critic_iters):
                losses, y, text = self.critic_step()
                critic.append(losses)
            sums += tf.concat([tf.add_n(critic) / self.own.critic_iters, self.generator_step(y, text)], axis=0)
        return sums

    def train_round(self, phases: Phases) -> dict | None:
        if not bool(self.pretrained.numpy()):
            last_epoch = phases.run("classifier", self.classifier_steps, self._pretrain)
            if last_epoch is None or phases.stopping:
                return None
            self.pretrain_ce.assign(last_epoch[0])
            self.pretrained.assign(True)
        chunk = max(1, CHUNK_STEPS // (self.own.critic_iters + 1))
        means = phases.run("GAN", self.own.steps_per_round, lambda stop: run_steps(
            self._gan_chunk, self.own.steps_per_round, len(LOSS_NAMES) - 1, stop, chunk=chunk))
        if means is None:
            return None
        return dict(zip(LOSS_NAMES, means.numpy().tolist() + [float(self.pretrain_ce.numpy())]))
