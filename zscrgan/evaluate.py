"""Retrieval on a set of classes: every text vector is a query, every image vector is the gallery."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np
import tensorflow as tf

from zscrgan.metrics import retrieval_metrics
from zscrgan.search import search

# Queries are embedded in chunks of this many rows, bounding the networks' activations held at once.
QUERY_CHUNK = 4096


@dataclass
class RetrievalSet:
    """Queries (text vectors) and gallery (image vectors) of some classes, in class order."""

    texts: np.ndarray           # [Q, T]
    query_labels: np.ndarray    # [Q]
    images: np.ndarray          # [G, I]
    gallery_labels: np.ndarray  # [G]

    @classmethod
    def from_classes(cls, image: dict, text: dict, classes: Sequence[int], per_class: bool = False) -> "RetrievalSet":
        """Queries: every text of each class in `classes` order (`per_class`: one query per class, the
        mean of its texts); gallery: every image of those classes."""
        if per_class:
            texts = np.stack([np.asarray(text[c], np.float64).mean(axis=0) for c in classes]).astype(np.float32)
            q_labels = np.asarray(list(classes), np.int64)
        else:
            texts = np.concatenate([text[c] for c in classes]).astype(np.float32)
            q_labels = np.concatenate([np.full(len(text[c]), c, np.int64) for c in classes])
        images = np.concatenate([image[c] for c in classes]).astype(np.float32)
        g_labels = np.concatenate([np.full(len(image[c]), c, np.int64) for c in classes])
        return cls(texts, q_labels, images, g_labels)


def top_k_cosine(queries, gallery, k: int) -> np.ndarray:
    """Indices [Q, min(k, G)] of each query's most cosine-similar gallery rows, best first (`search`)."""
    return search(queries, gallery, k)[1]


def in_chunks(fn, x: np.ndarray) -> tf.Tensor:
    """fn over row chunks of x, concatenated: bounds the networks' activations held at once."""
    return tf.concat([fn(tf.constant(x[i:i + QUERY_CHUNK])) for i in range(0, len(x), QUERY_CHUNK)], axis=0)


def evaluate(method, rset: RetrievalSet, k: int) -> tuple[dict, np.ndarray]:
    """Embed queries (and, chunk by chunk, the gallery) with a method (`zscrgan.methods.base.Method`),
    retrieve the top k, score them.

    Returns (metrics as `retrieval_metrics` gives them, retrieved gallery rows [Q, k], best first;
    `rset.gallery_labels[rows]` are their classes).
    """
    query_emb = in_chunks(method.embed_queries, rset.texts)
    _, rows = search(query_emb, rset.images, k, embed=method.embed_gallery)
    return retrieval_metrics(rset.query_labels, rset.gallery_labels[rows]), rows


def retrieval_records(query_labels: np.ndarray, retrieved: np.ndarray) -> list[dict]:
    """The released retrieval-file content: one {query class: [retrieved classes, best first]} per query.

    Class ids are plain Python ints (the released code wrote numpy integers).
    """
    return [{int(q): [int(c) for c in row]} for q, row in zip(query_labels, retrieved)]
