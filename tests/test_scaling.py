"""Input scaling: off by default; the modes rescale as documented and use seen classes only; a dataset
folder recommends a mode for L1-normalised features, which a run follows unless told otherwise."""

import json

import numpy as np
import pytest
import yaml

from zscrgan.cli import train_main
from zscrgan.config import load_config
from zscrgan.data.release import write_dataset
from zscrgan.data.scaling import (l2_sqrt_dim, looks_l1_normalised, recommend_scaling, recommended_scaling,
                                  scale_modality, seen_rms_factor, unscaled_warning)
from zscrgan.errors import UserError


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


def _histograms(rng, n, dim):
    x = rng.random((n, dim))
    return (x / x.sum(axis=1, keepdims=True)).astype(np.float32)


def test_l1_normalised_rows_are_recognised_and_call_for_scaling():
    rng = np.random.default_rng(0)
    hist = {1: _histograms(rng, 5, 128), 2: _histograms(rng, 3, 128)}
    cnn = {1: rng.random((5, 64)).astype(np.float32) * 3, 2: rng.random((3, 64)).astype(np.float32)}
    signed = {c: x - x.mean() for c, x in hist.items()}
    assert looks_l1_normalised(hist)
    assert not looks_l1_normalised(cnn) and not looks_l1_normalised(signed)
    assert not looks_l1_normalised({1: hist[1] * 1.01})
    assert recommend_scaling(hist, cnn) == recommend_scaling(cnn, hist) == "l2_sqrt_dim"
    assert recommend_scaling(cnn, cnn) == "none"
    assert unscaled_warning(cnn, cnn, "datasets/X") is None
    line = unscaled_warning(hist, cnn, "datasets/X")
    assert line.startswith("warning: datasets/X: image vectors look L1-normalised") and "\n" not in line
    assert "--input_scaling l2_sqrt_dim" in line


def test_recommendation_is_read_from_meta_json(tmp_path):
    assert recommended_scaling(tmp_path) is None  # no meta.json: no recommendation
    meta = tmp_path / "meta.json"
    meta.write_text(json.dumps({"recommended_input_scaling": "l2_sqrt_dim"}))
    assert recommended_scaling(tmp_path) == "l2_sqrt_dim"
    meta.write_text(json.dumps({"converter": "older, without a recommendation"}))
    assert recommended_scaling(tmp_path) is None
    for bad, problem in (("{", "not readable JSON"), ("[" * 100000, "not readable JSON"),
                         (json.dumps({"recommended_input_scaling": "x" * 1000}), "must be one of")):
        meta.write_text(bad)
        with pytest.raises(UserError, match=problem) as err:
            recommended_scaling(tmp_path)
        assert len(str(err.value)) < 200


def test_a_dataset_recommendation_applies_unless_a_file_or_flag_sets_the_key(tmp_path, capsys):
    rng = np.random.default_rng(1)
    image = {c: _histograms(rng, 6, 16) for c in range(1, 9)}
    text = {c: rng.standard_normal((2, 4)).astype(np.float32) for c in range(1, 9)}
    meta = json.dumps({"recommended_input_scaling": recommend_scaling(image, text)})
    write_dataset(tmp_path / "HIST", image, text, [1, 2, 3, 4, 5], [6, 7, 8], extra_files={"meta.json": meta})
    write_dataset(tmp_path / "WIKI", image, text, [1, 2, 3, 4, 5], [6, 7, 8], extra_files={"meta.json": meta})
    user = tmp_path / "user.yaml"
    user.write_text("input_scaling: seen_rms\n")

    def resolved(*flags):
        assert train_main(["--data_root", str(tmp_path), "--print_config", *flags]) == 0
        return yaml.safe_load(capsys.readouterr().out)["input_scaling"]

    assert resolved("--dataset", "HIST") == "l2_sqrt_dim"  # the folder's recommendation
    assert resolved("--dataset", "HIST", "--input_scaling", "none") == "none"  # a flag wins
    assert resolved("--dataset", "HIST", "--config", str(user)) == "seen_rms"  # so does a user's file
    assert load_config("WIKI", recommended={"input_scaling": "seen_rms"}).input_scaling == "l2_sqrt_dim"  # dataset yaml
    assert resolved("--dataset", "DEMO") == "none"  # no meta.json

    from zscrgan.run import prepare_data  # the warning of a run that trains such features unscaled

    prepare_data(load_config("HIST", overrides={"input_scaling": "none"}), tmp_path)
    err = capsys.readouterr().err.splitlines()
    assert len(err) == 1 and err[0].startswith(f"warning: {tmp_path / 'HIST'}: image vectors look L1-normalised")
    prepare_data(load_config("HIST", recommended={"input_scaling": "l2_sqrt_dim"}), tmp_path)
    assert capsys.readouterr().err == ""
