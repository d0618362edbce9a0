"""The diagnosis: upper bounds and cosines on a tiny case worked out by hand, and the whole command on
a trained run (every space scored, JSON written, nothing else in the run folder changed)."""

import json

import numpy as np
import pytest

from helpers import tree_digest
from zscrgan.diagnose import class_means, main, mean_cosines, upper_bounds
from zscrgan.evaluate import RetrievalSet


def _tiny():
    # Class 1's images at 0 and 40 degrees, class 2's at 50 and 90: the class means point at 20 and 70
    # degrees. With K = 2, the mean of class 1 ranks the images at 0 and 40 degrees first (cosines
    # cos 20 = 0.94 each, against cos 30 = 0.87 for 50 degrees), and class 2's mean likewise its own.
    deg = np.deg2rad
    images = np.array([[np.cos(deg(a)), np.sin(deg(a))] for a in (0, 40, 50, 90)], np.float32)
    return RetrievalSet(texts=np.zeros((2, 3), np.float32), query_labels=np.array([1, 2]), images=images,
                        gallery_labels=np.array([1, 1, 2, 2]))


def test_raw_upper_bound_by_hand():
    rset = _tiny()
    np.testing.assert_allclose(class_means(rset.images, rset.gallery_labels, np.array([1, 2])),
                               rset.images[[0, 2]] / 2 + rset.images[[1, 3]] / 2, atol=1e-7)
    bounds = upper_bounds(rset, 2)
    assert bounds["upper_raw"] == {"prec": 1.0, "map": 1.0, "top1": 1.0}


def test_upper_bound_in_a_gallery_space_that_loses_information():
    """A gallery map that keeps only the first coordinate: every image and class mean lies on one line,
    cosine is 1 for all of them, and ties rank the lower rows first: class 1's images for both queries."""
    import tensorflow as tf

    rset = _tiny()
    keep_first = lambda x: tf.concat([x[:, :1], tf.zeros_like(x[:, :1])], axis=1)  # noqa: E731
    bounds = upper_bounds(rset, 2, keep_first)
    assert bounds["upper_method_space"]["prec"] == pytest.approx(0.5)  # class 1: 2/2, class 2: 0/2
    assert bounds["upper_method_space"]["top1"] == pytest.approx(0.5)


def test_mean_cosines_by_hand():
    rset = _tiny()
    # Class 1: predictions at 0 and 40 degrees average to 20 degrees, its true mean: cosine 1.
    # Class 2: one prediction along the first axis, true mean at 70 degrees: cosine cos 70.
    predicted = np.array([[1, 0], [np.cos(np.deg2rad(40)), np.sin(np.deg2rad(40))], [1, 0]], np.float32)
    cos = mean_cosines(predicted, np.array([1, 1, 2]), rset)
    assert cos[1] == pytest.approx(1.0, abs=1e-6)
    assert cos[2] == pytest.approx(np.cos(np.deg2rad(70)), abs=1e-6)


def test_diagnose_a_trained_run(tmp_path, capsys):
    from zscrgan.config import load_config
    from zscrgan.run import Run

    demo = {"n_classes": 12, "n_seen": 8, "images_per_class": 20, "texts_per_class": 3, "image_dim": 24,
            "text_dim": 12, "latent_dim": 4, "hidden_dim": 16}
    cfg = load_config("DEMO", overrides={"demo": demo, "rounds": 1, "gf_dim": 16, "df_dim": 16, "embed_dim": 8,
                                         "z_dim": 4, "e_step_iters": 2, "m_step_iters": 2})
    run = Run(cfg, tmp_path / "run", data_root=tmp_path / "datasets", results_root=None, log=lambda line: None)
    run.start()
    run.train()
    before = tree_digest(tmp_path / "run")
    assert main([str(tmp_path / "run"), "--data_root", str(tmp_path / "datasets"), "--draws", "3",
                 "--json", str(tmp_path / "d.json")]) == 0
    assert tree_digest(tmp_path / "run") == before
    d = json.loads((tmp_path / "d.json").read_text())
    assert set(d["spaces"]) == {"method, 1 draw(s)", "method, 3 draw(s)", "predicted image vectors, 1 draw(s)",
                                "predicted image vectors, 3 draw(s)", "upper bound, method's gallery space",
                                "upper bound, raw image space", "ridge reference (same split)"}
    assert d["spaces"]["upper bound, raw image space"]["prec"] >= d["spaces"]["method, 1 draw(s)"]["prec"] - 1e-9
    assert -1.0 <= d["mean_cosine_predicted_vs_true_mean"] <= 1.0 and len(d["per_class_cosine"]) == 4
    assert "| upper bound, raw image space |" in capsys.readouterr().out


def test_bad_draws_is_one_line(tmp_path, capsys):
    assert main([str(tmp_path), "--draws", "0"]) == 2
    assert capsys.readouterr().err.count("\n") == 1
