"""The E-step and the M-step, each a few compiled TensorFlow calls over slices of the phase.

The host builds a phase's batch schedule as index arrays (see `zscrgan.data.sampler`); the seen-class
features live on the device as two packed matrices whose last row is all zeros (the row that padded
batch slots point at). Inside the compiled loop a batch is gathered from those matrices, so Python
is not in the per-step path.
"""

from __future__ import annotations

from dataclasses import dataclass
from types import SimpleNamespace

import numpy as np
import tensorflow as tf

from zscrgan import losses
from zscrgan.methods.base import apply_after, mean_over_draws
from zscrgan.networks import ZSCRGAN
from zscrgan.optimizers import AdamTF1, DynamicLossScale, RMSPropTF1


@dataclass
class PackedFeatures:
    """Seen-class features as device tensors: every image row, and each class's first text vector (released)
    or all its text vectors (`train_texts: all`)."""

    images: tf.Tensor        # [n_images + 1, I]; last row zeros
    texts: tf.Tensor         # [n_text_rows + 1, T]; class j's texts from row text_offsets[j]; last row zeros
    class_means: tf.Tensor   # [n_text_rows + 1, I]; row r = mean image of text row r's class; last row zeros
    class_offsets: np.ndarray  # [n_classes] first image row of each class
    images_per_class: np.ndarray  # [n_classes]
    text_offsets: np.ndarray   # [n_classes] first text row of each class (released: row j = class j)
    texts_per_class: np.ndarray  # [n_classes] (released: 1, the first text)

    @classmethod
    def from_classes(cls, images: list[np.ndarray], texts: list[np.ndarray], all_texts: bool = False) -> "PackedFeatures":
        """`images[j]`, `texts[j]`: arrays of the j-th seen class (in split order); only texts[j][0] is used
        unless `all_texts`."""
        counts = np.array([len(x) for x in images], dtype=np.int64)
        offsets = np.concatenate([[0], np.cumsum(counts)[:-1]]).astype(np.int64)
        image_dim, text_dim = images[0].shape[1], texts[0].shape[1]
        img = np.concatenate(list(images) + [np.zeros((1, image_dim), np.float32)]).astype(np.float32)
        kept = [t if all_texts else t[:1] for t in texts]
        text_counts = np.array([len(t) for t in kept], dtype=np.int64)
        txt = np.concatenate(kept + [np.zeros((1, text_dim), np.float32)]).astype(np.float32)
        means = np.stack([np.asarray(x, np.float64).mean(axis=0) for x in images])
        means = np.concatenate([np.repeat(means, text_counts, axis=0), np.zeros((1, image_dim))]).astype(np.float32)
        text_offsets = np.concatenate([[0], np.cumsum(text_counts)[:-1]]).astype(np.int64)
        return cls(tf.constant(img), tf.constant(txt), tf.constant(means), offsets, counts, text_offsets, text_counts)

    @property
    def image_pad_row(self) -> int:
        return int(self.images.shape[0]) - 1

    @property
    def text_pad_row(self) -> int:
        return int(self.texts.shape[0]) - 1


class Trainer(tf.Module):
    """The model, its three optimizers and the noise generator; runs E-steps, M-steps and embeddings."""

    def __init__(self, cfg, image_dim: int, text_dim: int):
        super().__init__(name="trainer")
        # float32 means float32 on every device: no TensorFloat-32 matmuls (10-bit mantissas) on
        # recent NVIDIA GPUs; `precision` is the way to trade precision for speed.
        tf.config.experimental.enable_tensor_float_32_execution(False)
        # A plain namespace: tf.Module would wrap a dict attribute into a tracked container.
        self.cfg = SimpleNamespace(**{k: v for k, v in cfg.items() if not isinstance(v, dict)})
        init_rng = tf.random.Generator.from_seed(cfg.seed)
        self.model = ZSCRGAN(cfg, image_dim, text_dim, init_rng)
        self.noise = tf.random.Generator.from_seed(cfg.seed + 1)
        # The visual pivots (PackedFeatures.class_means), set by the method when pivot_coeff > 0.
        self.pivots = None
        # Updates written in place into the variables' buffers do not repeat their bits (optimizers.py).
        in_place = not cfg.deterministic
        self.opt_generator = RMSPropTF1(self.model.generator_side_variables, cfg.generator_lr, in_place=in_place,
                                        name="opt_generator")
        self.opt_critic = RMSPropTF1(self.model.critic.trainable_variables, cfg.discriminator_lr,
                                     clip=cfg.clip_val, in_place=in_place, name="opt_critic")
        self.opt_csem = AdamTF1(self.model.csem.trainable_variables, cfg.CSEM_lr, name="opt_csem")
        self.loss_scale = DynamicLossScale() if cfg.precision == "mixed_float16" else None
        self._train_critic = cfg.adv_coeff > 0
        # Each step's arithmetic, XLA-compiled when asked. Batches and noise are drawn outside it:
        # XLA's random-number kernels give other numbers than TensorFlow's for the same generator state.
        compiled = tf.function(jit_compile=True) if cfg.jit_compile else (lambda fn: fn)
        self._critic_update = compiled(self._critic_update_fn)
        self._generator_update = compiled(self._generator_update_fn)
        self._csem_update = compiled(self._csem_update_fn)
        self._joint_update = compiled(self._joint_update_fn)

    # --- one batch ---------------------------------------------------------------------------------
    # A batch is four index arrays of shape [B]: image and text rows of the packed matrices for each
    # row (img_rows, txt_rows) and for its wrong pair (wrong_img_rows, wrong_txt_rows).
    @staticmethod
    def _batch(images, texts, img_rows, txt_rows, wrong_img_rows, wrong_txt_rows):
        """x_r, phi_r, x_w, phi_w: the rows' real images and first texts, and their wrong pairs'."""
        return (tf.gather(images, img_rows), tf.gather(texts, txt_rows),
                tf.gather(images, wrong_img_rows), tf.gather(texts, wrong_txt_rows))

    def _noise(self, n):
        """The text encoder's eps (truncated normal) and the generator's z for n rows."""
        return (self.noise.truncated_normal([n, self.cfg.embed_dim]), self.noise.normal([n, self.cfg.z_dim]))

    def _forward_noise(self, phi_r):
        """The noise `_forward` takes: for the correct and (with the wrong-class branch) the wrong rows."""
        return self._noise((2 if self.cfg.wrong_branch else 1) * tf.shape(phi_r)[0])

    def _forward(self, phi_r, phi_w, eps, z):
        """Conditions and generated image vectors for the correct and the wrong texts.

        Both halves go through the text encoder and the generator as one stacked batch: the same
        per-row computation as two calls, with one weight-gradient product per layer instead of two.
        Without the wrong-class branch only the correct half is computed (the "_w" entries are None).
        """
        wrong = self.cfg.wrong_branch
        phi = tf.concat([phi_r, phi_w], axis=0) if wrong else phi_r
        c, mu, s = self.model.encoder(phi, eps)
        g = self.model.generator(c, z)
        # Halves by tf.split, whose gradient is one concatenation (a slice's pads a zero tensor each).
        halves = (lambda t: tf.split(t, 2)) if wrong else (lambda t: (t, None))
        (c_r, _), (mu_r, mu_w), (s_r, s_w), (g_r, g_w) = (halves(t) for t in (c, mu, s, g))
        return dict(c_r=c_r, mu_r=mu_r, s_r=s_r, mu_w=mu_w, s_w=s_w, g=g, g_r=g_r, g_w=g_w)

    def _csem_loss(self, f):
        theta = self.model.csem(f["g"])  # correct and wrong halves in one call, as in `_forward`
        theta_r, theta_w = tf.split(theta, 2) if self.cfg.wrong_branch else (theta, None)
        return losses.csem_loss(theta_r, theta_w, f["c_r"], per_sample=self.cfg.triplet == "per_sample")

    def _real_csem_loss(self, x_r, x_w, c_r):
        """`csem_real_images`: L_C with the real images of the batch in place of the generated ones."""
        theta = self.model.csem(tf.concat([x_r, x_w], 0) if self.cfg.wrong_branch else x_r)
        theta_r, theta_w = tf.split(theta, 2) if self.cfg.wrong_branch else (theta, None)
        return losses.csem_loss(theta_r, theta_w, c_r, per_sample=self.cfg.triplet == "per_sample")

    def _pivots(self, txt_rows):
        """Each row's visual pivot (its class's mean image; zeros for a padded row), or None without one."""
        return tf.gather(self.pivots, txt_rows) if self.cfg.pivot_coeff > 0 else None

    def _generator_side_loss(self, x_r, phi_r, x_w, phi_w, eps, z, p_r=None):
        """L_G on one batch (run under a tape); p_r: the rows' visual pivots (None: no pivot term).
        Returns L_G, L_C and [L_G, R, L_C, divergence]."""
        cfg = self.cfg
        wrong = cfg.wrong_branch
        textbook_div = cfg.divergence == "kl"
        f = self._forward(phi_r, phi_w, eps, z)
        l_c = self._csem_loss(f)
        r = losses.max_margin(f["g_r"], x_r, x_w if wrong else None, hinge=cfg.r_hinge)
        div_r = losses.divergence(f["mu_r"], f["s_r"], textbook=textbook_div)
        div_w = losses.divergence(f["mu_w"], f["s_w"], textbook=textbook_div) if wrong else None
        loss = losses.generator_loss(self.model.critic(f["g_r"], phi_r), l_c, r, div_r, div_w,
                                     mm_reg_coeff=cfg.mm_reg_coeff, kl_div_coefficient=cfg.kl_div_coefficient,
                                     triplet_coeff=cfg.triplet_coeff, adv_coeff=cfg.adv_coeff,
                                     pivot=None if p_r is None else losses.visual_pivot(f["g_r"], p_r),
                                     pivot_coeff=cfg.pivot_coeff)
        return loss, l_c, tf.stack([loss, r, l_c, losses.mean_divergence(div_r, div_w)])

    def _apply(self, tape, updates, reported=()) -> None:
        """Apply each (optimizer, loss, variables) of `updates`: the gradients of the losses recorded on
        `tape`, all taken before any update, and applied once the losses and the `reported` values are
        computed (`apply_after`). Under float16, gradients of loss * scale, applied all or none.
        """
        if self.loss_scale is None:
            grads = [tape.gradient(loss, variables) for _, loss, variables in updates]
            apply_after([[loss for _, loss, _ in updates], reported],
                        *((optimizer, g) for (optimizer, _, _), g in zip(updates, grads)))
        else:
            scale = self.loss_scale.scale
            scaled = [(optimizer, tape.gradient(loss, variables, output_gradients=scale))
                      for optimizer, loss, variables in updates]
            with tf.control_dependencies(tf.nest.flatten([[loss for _, loss, _ in updates], reported])):
                self.loss_scale.apply(scaled)

    def critic_step(self, images, texts, *rows):
        """One critic update on one batch (`rows`: the four index arrays), its weights clipped in the
        same pass. Returns L_D."""
        x_r, phi_r, x_w, _ = self._batch(images, texts, *rows)
        eps, z = self._noise(tf.shape(phi_r)[0])
        return self._critic_update(x_r, phi_r, x_w, self._generate(phi_r, eps, z))

    def critic_steps(self, images, texts, *rows):
        """The critic updates of one E-step iteration, one per batch (`rows`: four [critic_steps, B]
        index arrays), in order. Returns the sum of their L_D.

        The same updates as `critic_step` batch after batch, with the same noise: each batch's is drawn
        in the order those calls draw it. The text encoder and the generator do not change while the
        critic trains, so the generated rows of all the batches come from one stacked forward pass
        (its products on critic_steps x B rows run faster than critic_steps products on B rows).
        """
        n_batches = self.cfg.critic_steps  # a number at trace time: the batches' loop unrolls
        b = tf.shape(rows[0])[1]
        noise = [self._noise(b) for _ in range(n_batches)]
        phi_all = tf.gather(texts, tf.reshape(rows[1], [-1]))
        g_all = self._generate(phi_all, tf.concat([e for e, _ in noise], 0), tf.concat([z for _, z in noise], 0))
        total = tf.constant(0.0)
        for j, g_r in enumerate(tf.split(g_all, n_batches)):
            x_r, phi_r, x_w, _ = self._batch(images, texts, *(a[j] for a in rows))
            total += self._critic_update(x_r, phi_r, x_w, g_r)
        return total

    def _generate(self, phi, eps, z):
        """Generated image vectors for texts phi (no gradient is taken through them)."""
        c, _, _ = self.model.encoder(phi, eps)
        return self.model.generator(c, z)

    def _critic_update_fn(self, x_r, phi_r, x_w, g_r):
        critic = self.model.critic
        with tf.GradientTape() as tape:
            # Fake, wrong and real rows scored as one stacked batch, all against the correct text.
            if self.cfg.wrong_branch:
                d_fake, d_wrong, d_real = tf.split(critic(tf.concat([g_r, x_w, x_r], 0), tf.tile(phi_r, [3, 1])), 3)
            else:
                d_wrong = None
                d_fake, d_real = tf.split(critic(tf.concat([g_r, x_r], 0), tf.tile(phi_r, [2, 1])), 2)
            loss = losses.critic_loss(d_fake, d_wrong, d_real)
        self._apply(tape, [(self.opt_critic, loss, critic.trainable_variables)])
        return loss

    def generator_step(self, images, texts, *rows):
        """One text encoder + generator update (critic and CSEM frozen). Returns [L_G, R, L_C, divergence]."""
        batch = self._batch(images, texts, *rows)
        return self._generator_update(*batch, *self._forward_noise(batch[1]), self._pivots(rows[1]))

    def _generator_update_fn(self, x_r, phi_r, x_w, phi_w, eps, z, p_r=None):
        with tf.GradientTape() as tape:
            loss, _, parts = self._generator_side_loss(x_r, phi_r, x_w, phi_w, eps, z, p_r)
        self._apply(tape, [(self.opt_generator, loss, self.model.generator_side_variables)], reported=parts)
        return parts

    def csem_step(self, images, texts, *rows):
        """One CSEM update on L_C (text encoder and generator frozen), plus L_C of the real pair under
        `csem_real_images`. Returns that loss."""
        x_r, phi_r, x_w, phi_w = self._batch(images, texts, *rows)
        real = (x_r, x_w) if self.cfg.csem_real_images else (None, None)
        return self._csem_update(phi_r, phi_w, *self._forward_noise(phi_r), *real)

    def _csem_update_fn(self, phi_r, phi_w, eps, z, x_r=None, x_w=None):
        f = self._forward(phi_r, phi_w, eps, z)
        with tf.GradientTape() as tape:
            loss = self._csem_loss(f)
            if x_r is not None:
                loss += self._real_csem_loss(x_r, x_w, f["c_r"])
        self._apply(tape, [(self.opt_csem, loss, self.model.csem.trainable_variables)])
        return loss

    def joint_step(self, images, texts, *rows):
        """`training: joint`: the generator side on L_G and the CSEM on L_C, updated together.

        One batch and one forward pass serve both; both gradients are taken before either update.
        Returns [L_G, R, L_C, divergence].
        """
        batch = self._batch(images, texts, *rows)
        return self._joint_update(*batch, *self._forward_noise(batch[1]), self._pivots(rows[1]))

    def _joint_update_fn(self, x_r, phi_r, x_w, phi_w, eps, z, p_r=None):
        with tf.GradientTape(persistent=True) as tape:
            loss, l_c, parts = self._generator_side_loss(x_r, phi_r, x_w, phi_w, eps, z, p_r)
        self._apply(tape, [(self.opt_generator, loss, self.model.generator_side_variables),
                           (self.opt_csem, l_c, self.model.csem.trainable_variables)], reported=parts)
        del tape
        return parts

    # --- whole phases, compiled in chunks -------------------------------------------------------------
    def e_step(self, images, texts, img_rows, txt_rows, wrong_img_rows, wrong_txt_rows, chunk_iters=None, stop=None):
        """One E-step. images, texts: packed seen features (`PackedFeatures`).

        The index arrays: [iters, critic_steps + 1, B]; the last slot is the generator side's batch
        (under `training: joint` the generator side's and the CSEM's, see `joint_step`).
        The phase runs as compiled calls of `chunk_iters` iterations each (the whole phase in one call
        by default); between calls `stop(iterations done)` may end it early. The loss sums run on
        from chunk to chunk, so any chunking gives the same numbers as one call.

        Returns the phase means of [L_D, L_G, R, L_C, divergence], or None when `stop` ended the phase.
        """
        sums = _run_chunked(self._e_step_chunk, images, texts, (img_rows, txt_rows, wrong_img_rows, wrong_txt_rows),
                            tf.zeros([5]), chunk_iters, stop)
        if sums is None:
            return None
        n = float(img_rows.shape[0])
        return sums / tf.constant([n * self.cfg.critic_steps, n, n, n, n])

    def m_step(self, images, texts, img_rows, txt_rows, wrong_img_rows, wrong_txt_rows, chunk_iters=None, stop=None):
        """The index arrays: [iters, B]; chunked as in `e_step`.

        Returns the phase mean of L_C, or None when `stop` ended the phase.
        """
        total = _run_chunked(self._m_step_chunk, images, texts, (img_rows, txt_rows, wrong_img_rows, wrong_txt_rows),
                             tf.constant(0.0), chunk_iters, stop)
        return None if total is None else total / float(img_rows.shape[0])

    @tf.function(reduce_retracing=True)
    def _e_step_chunk(self, images, texts, img_rows, txt_rows, wrong_img_rows, wrong_txt_rows, sums):
        """E-step iterations over the given schedule rows; adds their losses to `sums` [5] and returns it."""
        rows = (img_rows, txt_rows, wrong_img_rows, wrong_txt_rows)
        generator_side = self.joint_step if self.cfg.training == "joint" else self.generator_step
        n_critic = self.cfg.critic_steps
        d_sum, g_sum = sums[0], sums[1:]
        for i in tf.range(tf.shape(img_rows)[0]):
            if self._train_critic:
                d_sum += self.critic_steps(images, texts, *(a[i, :n_critic] for a in rows))
            g_sum += generator_side(images, texts, *(a[i, n_critic] for a in rows))
        return tf.concat([[d_sum], g_sum], axis=0)

    @tf.function(reduce_retracing=True)
    def _m_step_chunk(self, images, texts, img_rows, txt_rows, wrong_img_rows, wrong_txt_rows, total):
        """CSEM steps over the given schedule rows; adds their losses to `total` and returns it."""
        rows = (img_rows, txt_rows, wrong_img_rows, wrong_txt_rows)
        for i in tf.range(tf.shape(img_rows)[0]):
            total += self.csem_step(images, texts, *(a[i] for a in rows))
        return total

    # --- embeddings for retrieval --------------------------------------------------------------------
    def embed_queries(self, texts: tf.Tensor, draws: int | None = None) -> tf.Tensor:
        """Queries in the retrieval space: CSEM(G(c, z)) per text vector (released), or G(c, z) under
        `retrieval_space: generator`. c and z are freshly drawn and averaged over `draws` draws (default:
        the config's eval_draws); under `query_noise: mean`, c = mu and z = 0, once."""
        once = self._embed_query_once if self.cfg.retrieval_space == "csem" else self._generate_once
        if self.cfg.query_noise == "mean":
            return once(texts, noiseless=True)
        return mean_over_draws(once, texts, draws or self.cfg.eval_draws)

    def generate(self, texts: tf.Tensor, draws: int = 1) -> tf.Tensor:
        """G(c, z) per text vector, c and z freshly drawn; averaged over `draws` draws."""
        return mean_over_draws(self._generate_once, texts, draws)

    def _query_noise(self, n, noiseless: bool):
        """eps and z of n queries: drawn (eps first, then z), or their means (zeros) when `noiseless`."""
        if noiseless:
            return tf.zeros([n, self.cfg.embed_dim]), tf.zeros([n, self.cfg.z_dim])
        eps = self.noise.truncated_normal([n, self.cfg.embed_dim])
        return eps, self.noise.normal([n, self.cfg.z_dim])

    @tf.function(reduce_retracing=True)
    def _generate_once(self, texts, noiseless=False):
        eps, z = self._query_noise(tf.shape(texts)[0], noiseless)
        c, _, _ = self.model.encoder(texts, eps)
        return self.model.generator(c, z)

    @tf.function(reduce_retracing=True)
    def _embed_query_once(self, texts, noiseless=False):
        return self.model.csem(self._generate_once(texts, noiseless))

    @tf.function(reduce_retracing=True)
    def embed_gallery(self, images):
        return self.model.csem(images)


def _run_chunked(chunk_fn, images, texts, schedule, totals, chunk_iters, stop):
    """Feed a phase's schedule to `chunk_fn` in slices of `chunk_iters` iterations, carrying the loss
    totals through; None when `stop(iterations done)` asks to end the phase between two slices."""
    iters = int(schedule[0].shape[0])
    step = chunk_iters or iters
    for start in range(0, iters, step):
        if start and stop is not None and stop(start):
            return None
        totals = chunk_fn(images, texts, *(a[start:start + step] for a in schedule), totals)
    return totals
