"""A stand-in for the released program's structure, to time against in the same run.

The released code was a TensorFlow 1 graph driven from Python: one session call per step, with the
batch built on the host (NumPy indexing of the features) and fed in, and the critic step's call also
evaluating the generator-side loss for its log line. This stand-in has that structure and the same
networks, losses, optimiser semantics (TF1's own RMSProp and Adam) and clipping. Written the usual
TF1 way, it also runs the correct and wrong texts through the generator as separate passes and scores
fake, wrong and real rows with separate critic calls, with TensorFlow's own MatMul gradient.
"""

from __future__ import annotations

import numpy as np
import tensorflow as tf

from zscrgan import losses, networks
from zscrgan.networks import ZSCRGAN


class _GraphInit:
    """The `normal` draws `networks.Dense` makes for its kernels, as graph ops (a TF1 initialiser)."""

    def __init__(self, seed: int):
        self.seed, self.calls = seed, 0

    def normal(self, shape, stddev):
        self.calls += 1
        return tf.random.stateless_normal(shape, seed=[self.seed, self.calls], stddev=stddev)


class ReleasedStandIn:
    """The released step structure at the sizes of `cfg`, over host-side packed features."""

    def __init__(self, cfg, images: np.ndarray, texts: np.ndarray):
        self.cfg, self.images, self.texts = cfg, images, texts
        self.graph = tf.Graph()
        ours, networks.matmul = networks.matmul, tf.matmul  # plain layers, as a TF1 program had
        try:
            with self.graph.as_default():
                self._build(cfg, images.shape[1], texts.shape[1])
        finally:
            networks.matmul = ours
        self.session = tf.compat.v1.Session(graph=self.graph)
        self.session.run(self._init)

    def _build(self, cfg, image_dim: int, text_dim: int) -> None:
        v1 = tf.compat.v1
        model = ZSCRGAN(cfg, image_dim, text_dim, _GraphInit(cfg.seed))
        self.x_r, self.x_w = (v1.placeholder(tf.float32, [None, image_dim]) for _ in range(2))
        self.phi_r, self.phi_w = (v1.placeholder(tf.float32, [None, text_dim]) for _ in range(2))
        n = tf.shape(self.phi_r)[0]

        def generate(phi, seed):
            c, mu, s = model.encoder(phi, tf.random.truncated_normal([n, cfg.embed_dim], seed=seed))
            return c, mu, s, model.generator(c, tf.random.normal([n, cfg.z_dim], seed=seed + 1))

        c_r, mu_r, s_r, g_r = generate(self.phi_r, 1)
        _, mu_w, s_w, g_w = generate(self.phi_w, 3)
        d_fake = model.critic(g_r, self.phi_r)
        self.d_loss = losses.critic_loss(d_fake, model.critic(self.x_w, self.phi_r), model.critic(self.x_r, self.phi_r))
        self.l_c = losses.csem_loss(model.csem(g_r), model.csem(g_w), c_r)
        r = losses.max_margin(g_r, self.x_r, self.x_w)
        self.g_loss = losses.generator_loss(d_fake, self.l_c, r, losses.divergence(mu_r, s_r),
                                            losses.divergence(mu_w, s_w), mm_reg_coeff=cfg.mm_reg_coeff,
                                            kl_div_coefficient=cfg.kl_div_coefficient)

        def rmsprop(lr):
            return v1.train.RMSPropOptimizer(lr, decay=0.9, momentum=0.0, epsilon=1e-10)

        critic_vars = list(model.critic.trainable_variables)
        d_train = rmsprop(cfg.discriminator_lr).minimize(self.d_loss, var_list=critic_vars)
        with tf.control_dependencies([d_train]):
            self.d_train = tf.group([v.assign(tf.clip_by_value(v, -cfg.clip_val, cfg.clip_val)) for v in critic_vars])
        self.g_train = rmsprop(cfg.generator_lr).minimize(self.g_loss, var_list=model.generator_side_variables)
        self.c_train = v1.train.AdamOptimizer(cfg.CSEM_lr, beta1=0.5, epsilon=1e-8).minimize(
            self.l_c, var_list=list(model.csem.trainable_variables))
        self._init = v1.global_variables_initializer()

    def _feed(self, img_rows, txt_rows, wrong_img_rows, wrong_txt_rows) -> dict:
        return {self.x_r: self.images[img_rows], self.phi_r: self.texts[txt_rows],
                self.x_w: self.images[wrong_img_rows], self.phi_w: self.texts[wrong_txt_rows]}

    def e_step(self, *rows: np.ndarray) -> None:
        """One E-step over the four index arrays [iters, critic_steps + 1, B], as `Trainer.e_step` takes them."""
        k = self.cfg.critic_steps
        for i in range(rows[0].shape[0]):
            for j in range(k):
                self.session.run([self.d_train, self.d_loss, self.g_loss], self._feed(*(a[i, j] for a in rows)))
            self.session.run([self.g_train, self.g_loss], self._feed(*(a[i, k] for a in rows)))

    def m_step(self, *rows: np.ndarray) -> None:
        """One M-step over the four index arrays [iters, B]."""
        for i in range(rows[0].shape[0]):
            self.session.run([self.c_train, self.l_c], self._feed(*(a[i] for a in rows)))
