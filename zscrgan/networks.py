"""The four networks of ZSCRGAN, all fully connected: text encoder, generator, critic, CSEM.

Kernels start from N(0, 0.02^2) and biases from 0, as released. Randomness (the text encoder's eps,
the generator's z) is passed in, so every network is a deterministic function of its inputs.

Weights are float32. Under a mixed precision (config `precision`) each network computes its
products and activations in 16 bits and takes and returns float32, so losses stay float32.
"""

from __future__ import annotations

import tensorflow as tf

LEAK = 0.2  # tf.nn.leaky_relu's slope, as released (Keras' LeakyReLU layer would default to 0.3)
COMPUTE_DTYPES = {"float32": tf.float32, "mixed_bfloat16": tf.bfloat16, "mixed_float16": tf.float16}


def leaky(x: tf.Tensor) -> tf.Tensor:
    return tf.nn.leaky_relu(x, alpha=LEAK)


@tf.custom_gradient
def matmul(x: tf.Tensor, w: tf.Tensor) -> tf.Tensor:
    """x @ w, with the input gradient computed as (w @ dy^T)^T by TensorFlow's batched matmul kernel.

    The same products as TensorFlow's own MatMul gradient (dy @ w^T), summed in another order. On CPUs
    the plain MatMul kernel with a transposed right-hand matrix runs 2-3x slower than this form, and
    1.4x slower with the transpose moved to the small matrix (w @ dy^T); the batched kernel
    (BatchMatMulV2, here on rank-2 operands) runs w @ dy^T at the forward products' rate
    (`benchmarks/bench_speed.py` times each step's products in the kernel the step uses).
    """
    def grad(dy):
        dx = tf.transpose(tf.raw_ops.BatchMatMulV2(x=w, y=dy, adj_x=False, adj_y=True))
        return dx, tf.matmul(x, dy, transpose_a=True)

    return tf.matmul(x, w), grad


class Dense(tf.Module):
    """y = x W + b with W ~ N(0, stddev^2) (released: 0.02), b = 0; float32 weights, computed in `dtype`
    (y has that dtype)."""

    def __init__(self, n_in: int, n_out: int, rng: tf.random.Generator, name: str, dtype=tf.float32,
                 stddev: float = 0.02):
        super().__init__(name=name)
        self.dtype = dtype
        self.kernel = tf.Variable(rng.normal([n_in, n_out], stddev=stddev), name="kernel")
        self.bias = tf.Variable(tf.zeros([n_out]), name="bias")

    def __call__(self, x: tf.Tensor) -> tf.Tensor:
        # A cast to the tensor's own dtype is no op: the float32 graph is the plain one.
        return matmul(tf.cast(x, self.dtype), tf.cast(self.kernel, self.dtype)) + tf.cast(self.bias, self.dtype)


class TextEncoder(tf.Module):
    """Conditioning augmentation: phi -> (c, mu, s) with c = mu + exp(s) * eps; s is log sigma."""

    def __init__(self, text_dim: int, embed_dim: int, rng: tf.random.Generator, dtype=tf.float32):
        super().__init__(name="text_encoder")
        self.embed_dim = embed_dim
        self.fc = Dense(text_dim, 2 * embed_dim, rng, "fc", dtype)

    def __call__(self, phi: tf.Tensor, eps: tf.Tensor):
        h = tf.cast(leaky(self.fc(phi)), tf.float32)
        mu, s = tf.split(h, 2, axis=1)
        return mu + tf.exp(s) * eps, mu, s


class Generator(tf.Module):
    """concat(c, z) -> gf_dim -> 2 gf_dim -> image vector (ReLU output: image features are non-negative)."""

    def __init__(self, embed_dim: int, z_dim: int, gf_dim: int, image_dim: int, rng: tf.random.Generator,
                 dtype=tf.float32):
        super().__init__(name="generator")
        self.fc1 = Dense(embed_dim + z_dim, gf_dim, rng, "fc1", dtype)
        self.fc2 = Dense(gf_dim, 2 * gf_dim, rng, "fc2", dtype)
        self.fc3 = Dense(2 * gf_dim, image_dim, rng, "fc3", dtype)

    def __call__(self, c: tf.Tensor, z: tf.Tensor) -> tf.Tensor:
        h = leaky(self.fc1(tf.concat([c, z], axis=1)))
        h = leaky(self.fc2(h))
        return tf.cast(tf.nn.relu(self.fc3(h)), tf.float32)


class Critic(tf.Module):
    """WGAN critic on concat(image vector, raw text vector of the row's class) -> score."""

    def __init__(self, image_dim: int, text_dim: int, df_dim: int, rng: tf.random.Generator, dtype=tf.float32):
        super().__init__(name="critic")
        self.fc1 = Dense(image_dim + text_dim, df_dim, rng, "fc1", dtype)
        self.fc2 = Dense(df_dim, 1, rng, "fc2", dtype)

    def __call__(self, x: tf.Tensor, phi: tf.Tensor) -> tf.Tensor:
        return tf.cast(self.fc2(leaky(self.fc1(tf.concat([x, phi], axis=1)))), tf.float32)


class CSEM(tf.Module):
    """Common space embedding mapper: image vector (real or generated) -> theta in the common space."""

    def __init__(self, image_dim: int, embed_dim: int, rng: tf.random.Generator, dtype=tf.float32):
        super().__init__(name="csem")
        self.fc = Dense(image_dim, embed_dim, rng, "fc", dtype)

    def __call__(self, x: tf.Tensor) -> tf.Tensor:
        return tf.cast(leaky(self.fc(x)), tf.float32)


class ZSCRGAN(tf.Module):
    """The four networks together, built from a config and the data's dimensions."""

    def __init__(self, cfg, image_dim: int, text_dim: int, rng: tf.random.Generator):
        super().__init__(name="zscrgan")
        dtype = COMPUTE_DTYPES[cfg.get("precision", "float32")]
        self.encoder = TextEncoder(text_dim, cfg.embed_dim, rng, dtype)
        self.generator = Generator(cfg.embed_dim, cfg.z_dim, cfg.gf_dim, image_dim, rng, dtype)
        self.critic = Critic(image_dim, text_dim, cfg.df_dim, rng, dtype)
        self.csem = CSEM(image_dim, cfg.embed_dim, rng, dtype)

    @property
    def generator_side_variables(self):
        """Text encoder + generator: trained together by one optimizer in the E-step."""
        return list(self.encoder.trainable_variables) + list(self.generator.trainable_variables)
