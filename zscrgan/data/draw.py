"""Training rows drawn inside compiled steps: the seen classes' image and text vectors packed as device
tensors, and draws from a method's own `tf.random.Generator` (so a checkpoint holds the position of
every draw and a resume repeats them)."""

from __future__ import annotations

import numpy as np
import tensorflow as tf

from zscrgan.methods.base import TrainingData


class PackedClasses(tf.Module):
    """Every image and text row of the training classes, grouped by class (the order of `data.classes`)."""

    def __init__(self, data: TrainingData):
        super().__init__(name="packed_classes")
        images, image_labels, texts, text_labels = data.stacked()
        self.n_classes = len(data.classes)
        self.images, self.texts = tf.constant(images), tf.constant(texts)
        self.image_labels, self.text_labels = tf.constant(image_labels), tf.constant(text_labels)
        self.image_offsets, self.image_counts = _groups(image_labels, self.n_classes)
        self.text_offsets, self.text_counts = _groups(text_labels, self.n_classes)

    def distinct_classes(self, rng: tf.random.Generator, n: int) -> tf.Tensor:
        """`n` different classes [n] (positions), in random order: the first n of a random permutation."""
        keys = rng.uniform([self.n_classes])
        return tf.argsort(keys)[:n]

    def image_of(self, rng: tf.random.Generator, classes: tf.Tensor) -> tf.Tensor:
        """One image vector [n, I] of each class in `classes`, each drawn uniformly within its class."""
        return tf.gather(self.images, _row_in(rng, classes, self.image_offsets, self.image_counts))

    def text_of(self, rng: tf.random.Generator, classes: tf.Tensor) -> tf.Tensor:
        """One text vector [n, T] of each class in `classes`, each drawn uniformly within its class."""
        return tf.gather(self.texts, _row_in(rng, classes, self.text_offsets, self.text_counts))

    def image_rows(self, rng: tf.random.Generator, n: int) -> tf.Tensor:
        """`n` image row indices drawn uniformly from all training images (with replacement)."""
        total = tf.shape(self.images)[0]
        return tf.minimum(tf.cast(rng.uniform([n]) * tf.cast(total, tf.float32), tf.int32), total - 1)


def _groups(labels: np.ndarray, n: int) -> tuple[tf.Tensor, tf.Tensor]:
    """First row and row count of each class, for rows sorted by class."""
    counts = np.bincount(labels, minlength=n).astype(np.int32)
    offsets = np.concatenate([[0], np.cumsum(counts)[:-1]]).astype(np.int32)
    return tf.constant(offsets), tf.constant(counts)


def _row_in(rng, classes, offsets, counts) -> tf.Tensor:
    count = tf.gather(counts, classes)
    within = tf.minimum(tf.cast(rng.uniform(tf.shape(classes)) * tf.cast(count, tf.float32), tf.int32), count - 1)
    return tf.gather(offsets, classes) + within
