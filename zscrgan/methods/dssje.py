"""DS-SJE (Reed, Akata, Lee, Schiele, CVPR 2016): a compatibility F(v, t) = theta(v)^T phi(t) trained with
the deep symmetric structured joint embedding loss, as the authors' released Torch code trains it
(train_sje_hybrid.lua): minibatches of distinct classes, one image and one text each; for each image
a hinge against every other class's text, and (symmetric) for each text against every other class's
image; Torch's RMSProp with a per-epoch learning-rate decay; weights uniform in [-0.08, 0.08].

The released text encoder (a character CNN-RNN ending in a linear layer) is not trainable here, as text
vectors are given: a learnable map from the text vector stands in for it (`dssje.text_encoder`). The
image side is the given feature through the released no-op image encoder (`dssje.image_encoder`).
Queries are phi(text), the gallery theta(image); cosine ranks them, or (`dssje.score: inner_product`, the
released retrieval's reading) the compatibility F itself (docs/methods/dssje.md).
"""

from __future__ import annotations

import tensorflow as tf

from zscrgan.data.draw import PackedClasses
from zscrgan.methods.base import Method, Phases, TrainingData, apply_after, run_steps
from zscrgan.optimizers import RMSPropTorch


class Uniform(tf.Module):
    """y = x W + b, W and b uniform in [-r, r] (the released `params:uniform(-0.08, 0.08)`)."""

    def __init__(self, n_in: int, n_out: int, r: float, rng: tf.random.Generator, name: str):
        super().__init__(name=name)
        self.kernel = tf.Variable(rng.uniform([n_in, n_out], -r, r), name="kernel")
        self.bias = tf.Variable(rng.uniform([n_out], -r, r), name="bias")

    def __call__(self, x):
        return tf.matmul(x, self.kernel) + self.bias


def sje_hinge(scores: tf.Tensor, violations: str = "sum") -> tf.Tensor:
    """One direction of the structured joint embedding loss on a square score matrix: row i's matching
    column is i. `sum` (released code): sum over rows and other columns j of max(0, 1 + s_ij - s_ii),
    divided by the number of entries; `max` (the paper's structured loss): per row the largest of those
    hinges, averaged over rows."""
    n = tf.shape(scores)[0]
    hinge = tf.nn.relu(1.0 + scores - tf.linalg.diag_part(scores)[:, None])
    hinge = hinge * (1.0 - tf.eye(n))  # the matching class is no violation
    if violations == "max":
        return tf.reduce_mean(tf.reduce_max(hinge, axis=1))
    return tf.reduce_sum(hinge) / tf.cast(n * n, tf.float32)


def symmetric_sje_loss(v: tf.Tensor, t: tf.Tensor, symmetric: bool = True, violations: str = "sum") -> tf.Tensor:
    """The loss of image embeddings v [B, d] and text embeddings t [B, d], row i of each of class i:
    image -> class texts, plus (symmetric) text -> class images."""
    scores = tf.matmul(v, t, transpose_b=True)  # [i, j] = <theta(v_i), phi(t_j)>
    loss = sje_hinge(scores, violations)
    if symmetric:
        loss += sje_hinge(tf.transpose(scores), violations)
    return loss


# Under `score: inner_product`, gallery vectors up to this many times the largest training image
# embedding's norm (bounded by the current weights) rank exactly as by F; larger ones are clamped.
INNER_PRODUCT_REACH = 1000.0


def lifted_gallery(g: tf.Tensor, radius: tf.Tensor) -> tf.Tensor:
    """[g, sqrt(radius^2 - |g|^2)] (norm `radius` for every row with |g| <= radius): the cosine of a
    unit query [q, 0] with it is <q, g> / radius, so cosine ranks a gallery as the inner product does."""
    rest = tf.sqrt(tf.maximum(tf.square(radius) - tf.reduce_sum(tf.square(g), axis=1, keepdims=True), 0.0))
    return tf.concat([g, rest], axis=1)


class DSSJE(Method):
    """Keys: the `dssje.*` section of configs/methods/dssje.yaml."""

    loss_names = ("sje",)
    architecture_keys = ("dssje.text_encoder", "dssje.image_encoder", "dssje.hidden_dim", "dssje.embed_dim")

    def __init__(self, cfg, image_dim: int, text_dim: int):
        super().__init__(cfg, image_dim, text_dim, name="dssje")
        own = cfg.dssje
        self.batch_size, self.steps_per_round = int(own.batch_size), int(own.steps_per_round)
        self.symmetric, self.violations, self.lr_decay = bool(own.symmetric), own.violations, float(own.lr_decay)
        self.rng = tf.random.Generator.from_seed(int(cfg.seed))
        r = float(own.init_range)
        embed_dim = image_dim if own.image_encoder == "identity" else int(own.embed_dim)
        self.image_map = Uniform(image_dim, embed_dim, r, self.rng, "image_map") if own.image_encoder == "linear" else None
        self.text_hidden = Uniform(text_dim, int(own.hidden_dim), r, self.rng, "text_hidden") \
            if own.text_encoder == "hidden" else None
        self.text_map = Uniform(text_dim if self.text_hidden is None else int(own.hidden_dim), embed_dim, r, self.rng,
                                "text_map")
        self.weights = list(self.trainable_variables)
        self.optimizer = RMSPropTorch(self.weights, float(own.learning_rate),
                                      alpha=float(own.rmsprop_alpha), epsilon=float(own.rmsprop_epsilon))
        self.steps = tf.Variable(0, trainable=False, name="steps")
        self.score = own.score
        self.max_image_norm = tf.Variable(0.0, trainable=False, name="max_image_norm")
        self.packed = None
        self._chunk = tf.function(self._steps, jit_compile=bool(cfg.jit_compile))

    # --- the two encoders --------------------------------------------------------------------------
    def phi(self, texts):
        """The text embedding phi(t) [n, d]."""
        h = tf.convert_to_tensor(texts)
        if self.text_hidden is not None:
            h = tf.nn.relu(self.text_hidden(h))
        return self.text_map(h)

    def theta(self, images):
        """The image embedding theta(v) [n, d] (the given feature itself under the released no-op encoder)."""
        v = tf.convert_to_tensor(images)
        return v if self.image_map is None else self.image_map(v)

    # --- training ----------------------------------------------------------------------------------
    def attach(self, data: TrainingData) -> None:
        self.packed = PackedClasses(data)
        self.max_image_norm.assign(tf.reduce_max(tf.norm(self.packed.images, axis=1)))

    def _step(self):
        packed = self.packed
        classes = packed.distinct_classes(self.rng, min(self.batch_size, packed.n_classes))
        return self.update(packed.image_of(self.rng, classes), packed.text_of(self.rng, classes), packed.n_classes)

    def update(self, images, texts, epoch_steps: int):
        """One optimisation step on a batch (row i of `images` and `texts` of the same class, all classes
        different); the rate decays after every `epoch_steps` steps. Returns the loss before the step."""
        with tf.GradientTape() as tape:
            loss = symmetric_sje_loss(self.theta(images), self.phi(texts), self.symmetric, self.violations)
        apply_after(loss, (self.optimizer, tape.gradient(loss, self.weights)))
        self.steps.assign_add(1)
        # Released schedule: after every epoch (as many steps as training classes) the rate decays.
        if self.steps % epoch_steps == 0:
            self.optimizer.learning_rate.assign(self.optimizer.learning_rate * self.lr_decay)
        return loss

    def _steps(self, n):
        total = tf.zeros([1])
        for _ in tf.range(n):
            total += tf.reshape(self._step(), [1])
        return total

    def train_round(self, phases: Phases) -> dict | None:
        out = phases.run("SJE", self.steps_per_round, lambda stop: run_steps(self._chunk, self.steps_per_round, 1, stop))
        return None if out is None else {"sje": float(out[0])}

    # --- retrieval ---------------------------------------------------------------------------------
    def embed_queries(self, texts, draws=None):
        t = self.phi(texts)
        if self.score == "inner_product":
            t = tf.concat([tf.nn.l2_normalize(t, axis=1), tf.zeros([tf.shape(t)[0], 1])], axis=1)
        return t

    def embed_gallery(self, images):
        g = self.theta(images)
        if self.score == "inner_product":
            g = lifted_gallery(g, INNER_PRODUCT_REACH * self._image_embedding_bound())
        return g

    def _image_embedding_bound(self) -> tf.Tensor:
        """An upper bound of |theta(v)| over the training images (|v| |W|_F + |b| for a linear encoder)."""
        if self.image_map is None:
            return self.max_image_norm
        return self.max_image_norm * tf.norm(self.image_map.kernel) + tf.norm(self.image_map.bias)
