"""ZSCRGAN (Roy et al., CIKM 2020) as released: a round is an E-step (the conditional WGAN's critic and
generator side) then an M-step (the CSEM); queries are CSEM(G(c, z)), the gallery CSEM(x).

The networks, losses and compiled steps are in `zscrgan.train` (Trainer); this module feeds them the
released sampler's batches, phase by phase.
"""

from __future__ import annotations

import numpy as np
import tensorflow as tf

from zscrgan.config import check_model_size
from zscrgan.data.sampler import ClassBatchSampler, text_rows, to_rows
from zscrgan.errors import UserError
from zscrgan.methods.base import CHUNK_STEPS, Method, Phases, TrainingData
from zscrgan.train import PackedFeatures, Trainer

LOSS_NAMES = ("L_D", "L_G", "R", "L_C", "div")


class ZSCRGAN(Method):
    """The released model: the keys of configs/default.yaml (names as in the released code)."""

    loss_names = LOSS_NAMES + ("L_C_M",)
    architecture_keys = ("gf_dim", "df_dim", "embed_dim", "z_dim")

    def __init__(self, cfg, image_dim: int, text_dim: int):
        super().__init__(cfg, image_dim, text_dim, name="zscrgan")
        check_model_size(cfg, image_dim, text_dim)
        if cfg.csem_real_images and cfg.training == "joint":
            raise UserError("config: csem_real_images trains the CSEM in the M-step, which training joint has "
                            "not; use training em or csem_real_images false")
        self.cfg = cfg
        self.trainer = Trainer(cfg, image_dim, text_dim)
        self.packed = None
        self.sampler = None
        # `train_texts: all`: draws each row's text among its class's, apart from the sampler's own stream.
        self.text_rng = np.random.default_rng([cfg.seed, 2]) if cfg.train_texts == "all" else None
        self._e_chunk = max(1, CHUNK_STEPS // (cfg.critic_steps + 1))  # E-step iterations per compiled call

    def attach(self, data: TrainingData) -> None:
        cfg = self.cfg
        self.packed = packed = PackedFeatures.from_classes([data.image[c] for c in data.classes],
                                                           [data.text[c] for c in data.classes],
                                                           all_texts=self.text_rng is not None)
        self.sampler = ClassBatchSampler(packed.images_per_class.tolist(), cfg.batch_size, cfg.seed,
                                         pad_short_batches=cfg.pad_short_batches, wrong_class=cfg.wrong_class,
                                         class_texts=packed.texts.numpy()[packed.text_offsets],
                                         kmeans_clusters=cfg.kmeans_clusters)
        self.trainer.pivots = packed.class_means

    def _schedule(self):
        """The next E-step and M-step batches as index arrays, drawn in the released order.

        Under `training: joint` there is no M-step, and its batches are None.
        """
        cfg, packed = self.cfg, self.packed
        e_shape = (cfg.e_step_iters, cfg.critic_steps + 1, cfg.batch_size)
        steps = [(e_shape, cfg.e_step_iters * (cfg.critic_steps + 1))]
        if cfg.training == "em":
            steps.append(((cfg.m_step_iters, cfg.batch_size), cfg.m_step_iters))
        out = []
        for shape, n in steps:
            cls, img = self.sampler.schedule(n)
            wrong_cls, wrong_img = self.sampler.wrong_pairs(cls, img)
            out.append(tuple(tf.constant(a.reshape(shape), tf.int32) for a in (
                to_rows(cls, img, packed.class_offsets, packed.image_pad_row),
                self._text_rows(cls),
                to_rows(wrong_cls, wrong_img, packed.class_offsets, packed.image_pad_row),
                self._text_rows(wrong_cls))))
        return out if len(out) == 2 else out + [None]

    def _text_rows(self, cls):
        """Text rows of a schedule's classes: each class's first text (released), or under `train_texts: all`
        one of its texts drawn for each row; the zero row for a padded row (class -1)."""
        packed = self.packed
        if self.text_rng is None:
            return text_rows(cls, packed.text_pad_row)
        real = np.maximum(cls, 0)
        pick = self.text_rng.integers(0, 2**62, size=np.shape(cls)) % packed.texts_per_class[real]
        return np.where(cls >= 0, packed.text_offsets[real] + pick, packed.text_pad_row)

    def train_round(self, phases: Phases) -> dict | None:
        cfg, packed = self.cfg, self.packed
        e_batches, m_batches = self._schedule()
        e_out = phases.run("E-step", cfg.e_step_iters, self.trainer.e_step, packed.images, packed.texts,
                           *e_batches, chunk_iters=self._e_chunk)
        if e_out is None:
            return None
        if m_batches is None:  # joint training: the CSEM was updated on L_C within the E-step
            l_c_m = e_out[3]
        elif phases.stopping:
            return None
        else:
            l_c_m = phases.run("M-step", cfg.m_step_iters, self.trainer.m_step, packed.images, packed.texts,
                               *m_batches, chunk_iters=CHUNK_STEPS)
            if l_c_m is None:
                return None
        losses = dict(zip(LOSS_NAMES, e_out.numpy()))
        losses["L_C_M"] = l_c_m
        return losses

    # The checkpoint layout of every earlier version: the trainer (weights, optimisers, noise) for a
    # resume, the model alone for retrieval.
    def checkpoint_objects(self) -> dict:
        return {"trainer": self.trainer}

    def weight_objects(self) -> dict:
        return {"model": self.trainer.model}

    def host_state(self) -> dict:
        out = {"sampler": self.sampler.state_dict()}
        if self.text_rng is not None:
            out["text_rng"] = self.text_rng.bit_generator.state
        return out

    def load_host_state(self, state: dict) -> None:
        if "sampler" not in state:
            raise UserError("no sampler state")
        self.sampler.load_state_dict(state["sampler"])
        if self.text_rng is not None:
            if not isinstance(state.get("text_rng"), dict):
                raise UserError("no text_rng state (train_texts all)")
            self.text_rng.bit_generator.state = state["text_rng"]

    def reset_noise(self, seed: int) -> None:
        self.trainer.noise.reset_from_seed(seed)

    def embed_queries(self, texts, draws=None):
        return self.trainer.embed_queries(texts, draws)

    def embed_gallery(self, images):
        if self.cfg.retrieval_space == "generator":  # the queries are image vectors: the gallery as it is
            return tf.convert_to_tensor(images)
        return self.trainer.embed_gallery(images)

    def generate(self, texts, draws: int = 1):
        return self.trainer.generate(texts, draws)

    def csem(self, vectors):
        """The CSEM's embedding of image-space vectors (real or generated), for the diagnosis."""
        return self.trainer.embed_gallery(vectors)
