"""Retrieval metrics follow spec/results.md: a hand-worked example and an independent implementation."""

import numpy as np
import pytest
import pytrec_eval

from zscrgan.metrics import chance_prec, retrieval_metrics


def test_hand_worked_example_two_classes_three_queries_k4():
    queries = np.array([0, 0, 1])
    retrieved = np.array(
        [
            [0, 1, 0, 0],  # rel 1 0 1 1: H=3, P=3/4, AP=(1/1 + 2/3 + 3/4)/3 = 29/36, top1=1
            [1, 1, 1, 0],  # rel 0 0 0 1: H=1, P=1/4, AP=(1/4)/1 = 9/36, top1=0
            [1, 0, 1, 0],  # rel 1 0 1 0: H=2, P=2/4, AP=(1/1 + 2/3)/2 = 5/6, top1=1
        ]
    )
    m = retrieval_metrics(queries, retrieved)
    # Class 0: P = (3+1)/8 = 1/2, mAP = (29/36 + 9/36)/2 = 19/36, top1 = 1/2.
    # Class 1: P = 1/2, mAP = 5/6 = 30/36, top1 = 1.
    assert m["per_class"][0] == pytest.approx({"prec": 0.5, "map": 19 / 36, "top1": 0.5, "queries": 2})
    assert m["per_class"][1] == pytest.approx({"prec": 0.5, "map": 5 / 6, "top1": 1.0, "queries": 1})
    # Reported: unweighted class means. (Query means would be mAP 17/27 and top1 2/3.)
    assert m["prec"] == pytest.approx(0.5)
    assert m["map"] == pytest.approx(49 / 72)
    assert m["top1"] == pytest.approx(0.75)
    assert set(m) == {"prec", "map", "top1", "per_class"}
    assert all(type(v) is float for k, v in m.items() if k != "per_class")
    assert all(type(c) is int for c in m["per_class"])


def test_query_without_hits_has_zero_ap():
    m = retrieval_metrics(np.array([1, 1]), np.array([[0, 0, 0], [0, 1, 0]]))
    # Query 0: AP 0 (no hits). Query 1: H=1, AP = (1/2)/1 = 1/2.
    assert m["map"] == pytest.approx(0.25)
    assert m["prec"] == pytest.approx((0 + 1 / 3) / 2)
    assert m["top1"] == 0.0


def test_k1_all_metrics_equal_rel_at_one():
    m = retrieval_metrics(np.array([0, 0, 1]), np.array([[0], [1], [1]]))
    # Class 0: 1/2, class 1: 1 -> 3/4 for every metric.
    assert m["prec"] == m["map"] == m["top1"] == pytest.approx(0.75)


def test_classes_with_different_query_counts_weigh_equally():
    queries = np.array([0, 0, 0, 1])
    retrieved = np.array([[0, 0], [0, 0], [0, 0], [0, 0]])
    m = retrieval_metrics(queries, retrieved)
    # Class 0 perfect (1.0), class 1 nothing (0.0): class mean 0.5, whereas the query mean is 0.75.
    assert m["prec"] == m["map"] == m["top1"] == pytest.approx(0.5)
    assert m["per_class"][0]["queries"] == 3 and m["per_class"][1]["queries"] == 1


def test_bad_shapes_are_rejected():
    with pytest.raises(ValueError):
        retrieval_metrics(np.array([0, 1]), np.array([[0, 1]]))
    with pytest.raises(ValueError):
        retrieval_metrics(np.array([0]), np.zeros((1, 0), dtype=int))


def _naive_ap(query, ranked):
    """AP@K written literally from the definition, one item at a time."""
    hits, total = 0, 0.0
    for k, label in enumerate(ranked, start=1):
        if label == query:
            hits += 1
            total += hits / k
    return total / hits if hits else 0.0


def _class_mean(queries, per_query):
    return np.mean([np.mean(per_query[queries == c]) for c in np.unique(queries)])


@pytest.mark.parametrize("seed,k", [(0, 7), (1, 1), (2, 50)])
def test_agrees_with_pytrec_eval_and_a_naive_loop(seed, k):
    rng = np.random.default_rng(seed)
    n_queries, n_classes = 80, 6
    queries = rng.integers(0, n_classes, size=n_queries)
    retrieved = rng.integers(0, n_classes, size=(n_queries, k))

    # pytrec_eval: each query's K retrieved items are documents with strictly decreasing scores (no
    # ties); the qrels judge exactly those items, so trec's num_rel is H and its AP is AP@K.
    qrels = {
        f"q{q}": {f"d{i}": int(retrieved[q, i] == queries[q]) for i in range(k)} for q in range(n_queries)
    }
    run = {f"q{q}": {f"d{i}": float(k - i) for i in range(k)} for q in range(n_queries)}
    trec = pytrec_eval.RelevanceEvaluator(qrels, {"map", f"P.{k}", "P.1"}).evaluate(run)
    trec_prec = np.array([trec[f"q{q}"][f"P_{k}"] for q in range(n_queries)])
    trec_ap = np.array([trec[f"q{q}"]["map"] for q in range(n_queries)])
    trec_top1 = np.array([trec[f"q{q}"]["P_1"] for q in range(n_queries)])
    naive_ap = np.array([_naive_ap(queries[q], retrieved[q]) for q in range(n_queries)])
    np.testing.assert_allclose(trec_ap, naive_ap, atol=1e-12)

    m = retrieval_metrics(queries, retrieved)
    assert m["prec"] == pytest.approx(_class_mean(queries, trec_prec), abs=1e-9)
    assert m["map"] == pytest.approx(_class_mean(queries, trec_ap), abs=1e-9)
    assert m["top1"] == pytest.approx(_class_mean(queries, trec_top1), abs=1e-9)
    for c, scores in m["per_class"].items():
        mine = queries == c
        assert scores["queries"] == mine.sum()
        assert scores["map"] == pytest.approx(naive_ap[mine].mean(), abs=1e-9)
        assert scores["prec"] == pytest.approx(trec_prec[mine].mean(), abs=1e-9)


def test_chance_prec_balanced_and_unbalanced_gallery():
    assert chance_prec(np.array([0, 0, 1, 1, 2, 2]), np.array([0, 1, 2, 2])) == pytest.approx(1 / 3)
    # Gallery shares: class 0 = 3/4, class 1 = 1/4; unweighted over query classes -> 1/2.
    assert chance_prec(np.array([0, 0, 0, 1]), np.array([0, 1, 1, 1])) == pytest.approx(0.5)
    assert chance_prec(np.array([0, 0, 0, 1]), np.array([1])) == pytest.approx(0.25)


def test_chance_prec_is_the_prec_of_random_full_rankings():
    rng = np.random.default_rng(0)
    gallery = np.repeat(np.arange(4), [10, 3, 5, 2])
    queries = np.array([0, 1, 1, 2, 3, 3, 3])
    # With K = the whole gallery, any ranking's Prec@K equals the class share exactly.
    retrieved = np.stack([rng.permutation(gallery) for _ in queries])
    assert retrieval_metrics(queries, retrieved)["prec"] == pytest.approx(chance_prec(gallery, queries))
