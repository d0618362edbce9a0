"""Retrieval: vectorised cosine top-K, query/gallery assembly, the released record format, eval draws."""

import numpy as np
import tensorflow as tf
from easydict import EasyDict

from zscrgan.config import load_config
from zscrgan.evaluate import QUERY_CHUNK, RetrievalSet, retrieval_records, top_k_cosine
from zscrgan.train import Trainer


def test_top_k_cosine_matches_a_brute_force_ranking():
    rng = np.random.default_rng(0)
    q = rng.standard_normal((QUERY_CHUNK + 37, 6)).astype(np.float32)  # spans two chunks
    g = rng.standard_normal((90, 6)).astype(np.float32)
    got = top_k_cosine(q, g, 50)
    sims = (q / np.linalg.norm(q, axis=1, keepdims=True)) @ (g / np.linalg.norm(g, axis=1, keepdims=True)).T
    want = np.argsort(-sims, axis=1, kind="stable")[:, :50]
    assert got.shape == (len(q), 50)
    assert (got == want).mean() > 0.999  # float32 near-ties may swap neighbours
    assert np.allclose(np.take_along_axis(sims, got, 1), np.take_along_axis(sims, want, 1), atol=1e-5)


def test_top_k_is_cut_to_a_small_gallery():
    g = np.eye(3, dtype=np.float32)
    assert top_k_cosine(np.array([[0, 1, 0.1]], np.float32), g, 50).tolist() == [[1, 2, 0]]


def test_retrieval_set_orders_queries_and_gallery_by_class():
    image = {5: np.ones((2, 3)), 7: np.zeros((1, 3)), 9: np.ones((4, 3))}
    text = {5: np.ones((3, 2)), 7: np.ones((1, 2)), 9: np.ones((1, 2))}
    r = RetrievalSet.from_classes(image, text, [7, 5])
    assert r.query_labels.tolist() == [7, 5, 5, 5] and r.gallery_labels.tolist() == [7, 5, 5]
    assert r.texts.dtype == np.float32 and r.images.shape == (3, 3)


def test_retrieval_records_are_single_key_dicts_of_plain_ints():
    recs = retrieval_records(np.array([3, 4], np.int64), np.array([[3, 4], [4, 4]], np.int64))
    assert recs == [{3: [3, 4]}, {4: [4, 4]}]
    assert all(type(k) is int and all(type(c) is int for c in v) for r in recs for k, v in r.items())


def test_eval_draws_average_the_query_embeddings():
    cfg = EasyDict(load_config("DEMO"))
    cfg.update(embed_dim=8, z_dim=4, gf_dim=16, df_dim=8, eval_draws=3)
    trainer = Trainer(cfg, 5, 4)
    texts = tf.constant(np.random.default_rng(1).standard_normal((6, 4)), tf.float32)
    trainer.noise.reset_from_seed(11)
    averaged = trainer.embed_queries(texts).numpy()
    trainer.noise.reset_from_seed(11)
    singles = [trainer._embed_query_once(texts).numpy() for _ in range(3)]
    assert np.allclose(averaged, np.mean(singles, axis=0), atol=1e-6)
    assert not np.allclose(singles[0], singles[1])  # each draw is fresh
