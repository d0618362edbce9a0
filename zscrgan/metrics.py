"""Retrieval metrics: Prec@K (the released metric), mAP@K and Top-1, as defined in spec/results.md.

Every metric is computed per query, averaged over the queries of each class, and reported as the
unweighted mean over classes, so a class with many queries counts as much as one with few.
"""

from __future__ import annotations

import numpy as np


def retrieval_metrics(query_labels: np.ndarray, retrieved_labels: np.ndarray) -> dict:
    """Score ranked retrieval lists against the query classes.

    `query_labels` [Q] holds each query's class; `retrieved_labels` [Q, K] the class of the k-th
    retrieved gallery item, best first; an item is relevant when its class equals the query's.
    With rel(k) for the k-th item and H the hits in the top K:

    - Prec@K: per class, hits over all its queries / items retrieved for them (= mean of H/K).
    - mAP@K: AP@K(q) = (1/H) * sum over relevant k of (hits in the first k) / k, and 0 when H = 0.
    - Top-1: rel(1).

    Returns ``{"prec", "map", "top1"}`` as floats (unweighted means over the query classes) and
    ``"per_class"``: ``{class: {"prec", "map", "top1", "queries"}}`` with plain Python values, in
    ascending class order; the means over classes are summed in that order (`class_mean`).
    """
    queries = np.asarray(query_labels)
    retrieved = np.asarray(retrieved_labels)
    if queries.ndim != 1 or retrieved.ndim != 2 or retrieved.shape[0] != queries.shape[0]:
        raise ValueError(
            f"expected query_labels [Q] and retrieved_labels [Q, K], got {queries.shape} and {retrieved.shape}"
        )
    if queries.size == 0 or retrieved.shape[1] == 0:
        raise ValueError("need at least one query and at least one retrieved item per query")

    per_query = _per_query_scores(queries[:, None] == retrieved)
    classes, class_of_query = np.unique(queries, return_inverse=True)
    n_queries = np.bincount(class_of_query, minlength=classes.size)
    per_class_means = {
        name: np.bincount(class_of_query, weights=scores, minlength=classes.size) / n_queries
        for name, scores in per_query.items()
    }
    per_class = {
        classes[i].item(): {
            **{name: float(means[i]) for name, means in per_class_means.items()},
            "queries": int(n_queries[i]),
        }
        for i in range(classes.size)
    }
    return {
        **{name: class_mean(means) for name, means in per_class_means.items()},
        "per_class": per_class,
    }


def class_mean(per_class_scores) -> float:
    """The mean over classes as the released code took it: a float sum class by class, in ascending
    class id order, divided by the number of classes (a pairwise sum can differ in the last digit,
    and the released file name shows 12 of them)."""
    total = 0.0
    for score in per_class_scores:
        total += float(score)
    return total / len(per_class_scores)


def _per_query_scores(relevant: np.ndarray) -> dict[str, np.ndarray]:
    """Prec@K, AP@K and Top-1 of each query from its [Q, K] boolean relevance matrix."""
    k = relevant.shape[1]
    hits_so_far = np.cumsum(relevant, axis=1)
    hits = hits_so_far[:, -1]
    precision_at_hits = np.where(relevant, hits_so_far / np.arange(1, k + 1), 0.0)
    # max(H, 1) keeps AP at 0 for a query without hits instead of dividing by zero.
    average_precision = precision_at_hits.sum(axis=1) / np.maximum(hits, 1)
    return {
        "prec": hits / k,
        "map": average_precision,
        "top1": relevant[:, 0].astype(np.float64),
    }


def chance_prec(gallery_labels: np.ndarray, query_labels: np.ndarray) -> float:
    """Expected Prec@K of a uniformly random ranking, aggregated like `retrieval_metrics`.

    A random ranking's expected precision at any K is the gallery share of the query's class, so
    the result is the unweighted mean, over the distinct query classes, of that share.
    """
    gallery = np.asarray(gallery_labels)
    classes = np.unique(np.asarray(query_labels))
    if gallery.size == 0 or classes.size == 0:
        raise ValueError("need a non-empty gallery and at least one query")
    shares = (gallery[None, :] == classes[:, None]).mean(axis=1)
    return float(shares.mean())
