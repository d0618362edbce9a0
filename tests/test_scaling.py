"""Input scaling: off by default; the modes rescale as documented and use seen classes only."""

import numpy as np
import pytest

from zscrgan.data.scaling import l2_sqrt_dim, scale_modality, seen_rms_factor


def test_none_returns_the_features_unchanged():
    feats = {1: np.ones((2, 3), np.float32)}
    assert scale_modality(feats, [1], "none") is feats


def test_l2_sqrt_dim_sets_every_row_norm_and_keeps_zero_rows():
    x = np.array([[0.01, 0.02, 0.0, 0.0], [0.0, 0.0, 0.0, 0.0], [3.0, 4.0, 0.0, 0.0]], np.float32)
    y = l2_sqrt_dim(x)
    assert np.allclose(np.linalg.norm(y, axis=1), [2.0, 0.0, 2.0])  # sqrt(4) = 2
    assert np.allclose(y[0] / np.linalg.norm(y[0]), x[0] / np.linalg.norm(x[0]))  # direction kept
    assert y.dtype == np.float32


def test_seen_rms_uses_seen_classes_only():
    rng = np.random.default_rng(0)
    feats = {1: rng.random((5, 8)), 2: rng.random((4, 8)), 9: 1000 * rng.random((6, 8))}
    seen_rows = np.concatenate([feats[1], feats[2]])
    expected = np.sqrt(8) / np.sqrt(np.mean(np.sum(seen_rows ** 2, axis=1)))
    assert seen_rms_factor(feats, [1, 2]) == pytest.approx(expected)
    out = scale_modality(feats, [1, 2], "seen_rms")
    # One factor for every class, unseen ones included, so relative norms survive.
    for c in feats:
        assert np.allclose(out[c], feats[c] * expected, rtol=1e-6)
    scaled_seen = np.concatenate([out[1], out[2]])
    assert np.sqrt(np.mean(np.sum(scaled_seen.astype(np.float64) ** 2, axis=1))) == pytest.approx(np.sqrt(8), rel=1e-5)


def test_unknown_mode_is_refused():
    with pytest.raises(ValueError, match="unknown input scaling"):
        scale_modality({1: np.ones((1, 2))}, [1], "zscore")
