"""The ridge reference: learns on aligned synthetic data, reads any released folder, refuses bad pairing."""

import numpy as np
import pytest

from zscrgan.baseline import main, rank_by_cosine, ridge_baseline
from zscrgan.data.demo import DemoSpec, make_demo
from zscrgan.data.release import write_dataset
from zscrgan.errors import UserError


def aligned(n_classes=8, per_class=20, seed=0):
    """Images that are an exact linear map of their own text, classes well apart."""
    rng = np.random.default_rng(seed)
    w = rng.standard_normal((6, 12))
    centres = 3 * rng.standard_normal((n_classes, 6))
    text = {c: (centres[c] + 0.3 * rng.standard_normal((per_class, 6))).astype(np.float32) for c in range(n_classes)}
    image = {c: (text[c] @ w).astype(np.float32) for c in range(n_classes)}
    return image, text


def test_item_pairs_recover_an_exact_linear_map():
    image, text = aligned()
    m = ridge_baseline(image, text, seen=list(range(5)), unseen=[5, 6, 7], alpha=1e-6, k=20, pairs="item")
    assert m["prec"] > 0.95 and m["top1"] == pytest.approx(1.0)
    assert m["chance_prec"] == pytest.approx(1 / 3)


def test_class_mean_pairs_beat_chance_on_the_demo():
    image, text, seen, unseen = make_demo(DemoSpec())
    m = ridge_baseline(image, text, seen, unseen)
    assert m["prec"] > 3 * m["chance_prec"]


def test_item_pairs_need_as_many_texts_as_images():
    image, text = aligned()
    text[2] = text[2][:3]
    with pytest.raises(UserError, match="class 2 has 3 texts and 20 images"):
        ridge_baseline(image, text, seen=[0, 1, 2], unseen=[5, 6], pairs="item")


def test_cli_prints_the_reference_and_errors_in_one_line(tmp_path, capsys):
    image, text = aligned()
    write_dataset(tmp_path / "ALIGNED", image, text, [0, 1, 2, 3, 4], [5, 6, 7])
    assert main([str(tmp_path / "ALIGNED"), "--pairs", "item", "--alpha", "1e-6"]) == 0
    assert "ridge baseline on ALIGNED (item targets" in capsys.readouterr().out
    assert main([str(tmp_path / "MISSING")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: ") and "MISSING" in err[0]


def test_numpy_ranking_matches_training_retrieval():
    from zscrgan.evaluate import top_k_cosine  # TensorFlow: training's retrieval

    rng = np.random.default_rng(1)
    q = rng.standard_normal((300, 7)).astype(np.float32)
    g = rng.standard_normal((120, 7)).astype(np.float32)
    g[5] = g[6]  # a tie: both rank it to the lower index
    got, want = rank_by_cosine(q, g, 50), top_k_cosine(q, g, 50)
    assert got.shape == want.shape == (300, 50)
    assert (got == want).mean() > 0.999  # float32 near-ties may swap neighbours
    assert rank_by_cosine(q[:2], g[:3], 50).shape == (2, 3)
