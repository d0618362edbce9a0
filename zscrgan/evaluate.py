"""Retrieval on a set of classes: every text vector is a query, every image vector is the gallery."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np
import tensorflow as tf

from zscrgan.metrics import retrieval_metrics

# Queries are scored against the whole gallery in chunks of this many rows, bounding the similarity
# matrix held at once (e.g. 4096 x 3000 floats = 48 MB).
QUERY_CHUNK = 4096


@dataclass
class RetrievalSet:
    """Queries (text vectors) and gallery (image vectors) of some classes, in class order."""

    texts: np.ndarray           # [Q, T]
    query_labels: np.ndarray    # [Q]
    images: np.ndarray          # [G, I]
    gallery_labels: np.ndarray  # [G]

    @classmethod
    def from_classes(cls, image: dict, text: dict, classes: Sequence[int]) -> "RetrievalSet":
        """Queries: every text of each class in `classes` order; gallery: every image of those classes."""
        texts = np.concatenate([text[c] for c in classes]).astype(np.float32)
        images = np.concatenate([image[c] for c in classes]).astype(np.float32)
        q_labels = np.concatenate([np.full(len(text[c]), c, np.int64) for c in classes])
        g_labels = np.concatenate([np.full(len(image[c]), c, np.int64) for c in classes])
        return cls(texts, q_labels, images, g_labels)


@tf.function(input_signature=[tf.TensorSpec([None, None], tf.float32), tf.TensorSpec([None, None], tf.float32),
                              tf.TensorSpec([], tf.int32)])
def _top_k_chunk(queries, gallery_unit, k):
    sims = tf.matmul(tf.nn.l2_normalize(queries, axis=1), gallery_unit, transpose_b=True)
    return tf.math.top_k(sims, k=k, sorted=True).indices


def top_k_cosine(queries, gallery, k: int) -> np.ndarray:
    """Indices [Q, min(k, G)] of each query's most cosine-similar gallery rows, best first."""
    k = min(int(k), int(gallery.shape[0]))
    gallery_unit = tf.nn.l2_normalize(tf.convert_to_tensor(gallery, tf.float32), axis=1)
    queries = tf.convert_to_tensor(queries, tf.float32)
    parts = [_top_k_chunk(queries[i:i + QUERY_CHUNK], gallery_unit, tf.constant(k)).numpy()
             for i in range(0, int(queries.shape[0]), QUERY_CHUNK)]
    return np.concatenate(parts)


def _in_chunks(fn, x: np.ndarray) -> tf.Tensor:
    """fn over row chunks of x, concatenated: bounds the networks' activations held at once."""
    return tf.concat([fn(tf.constant(x[i:i + QUERY_CHUNK])) for i in range(0, len(x), QUERY_CHUNK)], axis=0)


def evaluate(trainer, rset: RetrievalSet, k: int) -> tuple[dict, np.ndarray]:
    """Embed queries and gallery with the trainer's networks, retrieve the top k, score them.

    Returns (metrics as `retrieval_metrics` gives them, retrieved gallery labels [Q, k]).
    """
    query_emb = _in_chunks(trainer.embed_queries, rset.texts)
    gallery_emb = _in_chunks(trainer.embed_gallery, rset.images)
    retrieved = rset.gallery_labels[top_k_cosine(query_emb, gallery_emb, k)]
    return retrieval_metrics(rset.query_labels, retrieved), retrieved


def retrieval_records(query_labels: np.ndarray, retrieved: np.ndarray) -> list[dict]:
    """The released retrieval-file content: one {query class: [retrieved classes, best first]} per query.

    Class ids are plain Python ints (the released code wrote numpy integers).
    """
    return [{int(q): [int(c) for c in row]} for q, row in zip(query_labels, retrieved)]
