"""DS-SJE: its loss and one update against a by-hand NumPy version of the released code's gradients,
its learning-rate schedule, and the method inside the harness (run, resume, retrieval)."""

import numpy as np
import pytest
import tensorflow as tf

from tests.method_runs import main_run, records, resume_repeats_uninterrupted, retrieval_of_trained_run
from zscrgan.config import load_config
from zscrgan.methods.dssje import DSSJE, sje_hinge, symmetric_sje_loss

rs = np.random.default_rng(0)


def hinges(scores):
    """Every (row i, other column j) hinge 1 + s_ij - s_ii, by loops."""
    b = len(scores)
    return np.array([[max(0.0, 1 + scores[i, j] - scores[i, i]) if j != i else 0.0 for j in range(b)]
                     for i in range(b)])


def test_loss_sum_and_max_forms_by_hand():
    v, t = rs.normal(size=(5, 3)).astype(np.float32), rs.normal(size=(5, 3)).astype(np.float32)
    s = v @ t.T
    h, h_t = hinges(s), hinges(s.T)
    assert h.sum() > 0 and h_t.sum() > 0
    assert float(sje_hinge(tf.constant(s))) == pytest.approx(h.sum() / 25, rel=1e-6)
    assert float(sje_hinge(tf.constant(s), "max")) == pytest.approx(h.max(axis=1).mean(), rel=1e-6)
    assert float(symmetric_sje_loss(v, t)) == pytest.approx((h.sum() + h_t.sum()) / 25, rel=1e-6)
    assert float(symmetric_sje_loss(v, t, symmetric=False)) == pytest.approx(h.sum() / 25, rel=1e-6)
    # A well-separated batch costs nothing.
    assert float(symmetric_sje_loss(np.eye(3, dtype=np.float32) * 3, np.eye(3, dtype=np.float32))) == 0.0


def released_gradients(v, t):
    """d loss / d v and d loss / d t as train_sje_hybrid.lua accumulates them (symmetric, over B^2)."""
    b = len(v)
    gv, gt = np.zeros_like(v), np.zeros_like(t)
    for i in range(b):
        for j in range(b):
            if j == i:
                continue
            if 1 + v[i] @ t[j] - v[i] @ t[i] > 0:  # image i against class j's text
                gv[i] += t[j] - t[i]
                gt[j] += v[i]
                gt[i] -= v[i]
            if 1 + t[i] @ v[j] - t[i] @ v[i] > 0:  # text i against class j's image
                gt[i] += v[j] - v[i]
                gv[j] += t[i]
                gv[i] -= t[i]
    return gv / b ** 2, gt / b ** 2


def tiny_method(**own):
    cfg = load_config("DEMO", overrides={"method": "dssje", "dssje": own})
    return DSSJE(cfg, image_dim=6, text_dim=4)


def test_one_update_step_equals_released_gradients_and_torch_rmsprop():
    m = tiny_method(learning_rate=0.01)
    assert m.image_map is None and m.text_hidden is None  # released: no-op image encoder; linear text map
    w, b = m.text_map.kernel.numpy().astype(np.float64), m.text_map.bias.numpy().astype(np.float64)
    assert np.abs(w).max() <= 0.08 and np.abs(b).max() <= 0.08 and np.abs(w).max() > 0.04
    r = np.random.default_rng(1)
    images = r.normal(size=(5, 6)).astype(np.float32)
    texts = r.normal(size=(5, 4)).astype(np.float32) * 5
    t = texts @ w + b
    _, gt = released_gradients(images.astype(np.float64), t)
    gw, gb = texts.T @ gt, gt.sum(axis=0)
    loss = m.update(tf.constant(images), tf.constant(texts), 1000)
    assert float(loss) == pytest.approx(float(symmetric_sje_loss(images, t.astype(np.float32))), rel=1e-5)
    for before, g, var in ((w, gw, m.text_map.kernel), (b, gb, m.text_map.bias)):
        ms = 0.01 * g ** 2  # Torch RMSProp: alpha 0.99, the mean square starting at 0
        want = before - 0.01 * g / (np.sqrt(ms) + 1e-8)
        assert np.abs(g).min() > 1e-3  # every weight moves by the gradient, not by rounding noise
        np.testing.assert_allclose(var.numpy(), want, rtol=1e-4, atol=1e-6)


def test_learning_rate_decays_once_per_epoch_of_training_classes():
    m = tiny_method(learning_rate=0.01, lr_decay=0.5)
    images, texts = tf.constant(rs.normal(size=(3, 6)), tf.float32), tf.constant(rs.normal(size=(3, 4)), tf.float32)
    rates = []
    for _ in range(6):
        m.update(images, texts, 3)
        rates.append(float(m.optimizer.learning_rate.numpy()))
    assert rates == pytest.approx([0.01, 0.01, 0.005, 0.005, 0.005, 0.0025])


def test_hidden_text_encoder_and_linear_image_encoder_shapes():
    m = tiny_method(text_encoder="hidden", hidden_dim=5, image_encoder="linear", embed_dim=7)
    assert m.phi(np.ones((2, 4), np.float32)).shape == (2, 7)
    assert m.theta(np.ones((3, 6), np.float32)).shape == (3, 7)
    assert len(m.weights) == 6


OWN = {"steps_per_round": 30, "batch_size": 4}


def test_registered_run_writes_losses_and_retrievals(tmp_path):
    rc, out = main_run(tmp_path, "dssje", OWN)
    assert rc == 0
    recs = records(out)
    assert [r["round"] for r in recs] == [1, 2]
    assert set(recs[0]["losses"]) == {"sje"} and recs[1]["losses"]["sje"] < recs[0]["losses"]["sje"]
    assert list((tmp_path / "res" / "DEMO_res").glob("acc*.pkl"))
    # Retrieval through zscrgan.retrieve ranks as the training-time evaluation did.
    prec, summary = retrieval_of_trained_run(out, tmp_path)
    assert prec == pytest.approx(summary["test_at_selected_round"]["prec"], abs=1e-9)


def test_resume_after_round_one_repeats_the_uninterrupted_run(tmp_path):
    resume_repeats_uninterrupted(tmp_path, "dssje", OWN)


def test_inner_product_score_ranks_as_the_compatibility_does():
    from zscrgan.search import search
    m = tiny_method(score="inner_product")
    m.max_image_norm.assign(10.0)
    texts = rs.normal(size=(4, 4)).astype(np.float32)
    gallery = (rs.normal(size=(30, 6)) * rs.uniform(0.1, 3.0, size=(30, 1))).astype(np.float32)
    want = np.argsort(-(m.phi(texts).numpy() @ gallery.T), axis=1, kind="stable")[:, :10]
    _, rows = search(m.embed_queries(texts), gallery, 10, embed=m.embed_gallery)
    assert np.array_equal(np.asarray(rows), want)
    # Cosine, the default, ignores the gallery norms the inner product rewards: another ranking here.
    cos = tiny_method()
    _, cos_rows = search(cos.embed_queries(texts), gallery, 10, embed=cos.embed_gallery)
    assert not np.array_equal(np.asarray(cos_rows), want)
