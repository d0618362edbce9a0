"""The switches beyond the released model (docs/beyond.md): each loss and update against numpy on tiny
batches with padded rows, the queries they change, the profile flag, and the released default intact."""

import json

import numpy as np
import pytest
import tensorflow as tf

import reference_model as ref
from main import main
from test_train_steps import (BATCHES, B, I, T, _assert_moved_as, _cfg, _fixed_trainer, _numpy_batch, _packed,
                              _rows, _variables)
from zscrgan import losses
from zscrgan.config import PROFILE_DIR, load_config, read_yaml
from zscrgan.errors import UserError
from zscrgan.methods import build_method
from zscrgan.methods.base import TrainingData
from zscrgan.study import STUDY_DIR, load_study
from zscrgan.train import PackedFeatures


@pytest.fixture(scope="module")
def packed():
    return _packed()


def _class_means(packed, classes):
    """Each row's class mean image, by hand; zeros for a padded row (class -1)."""
    images = packed.images.numpy().astype(np.float64)
    means = [images[o:o + n].mean(axis=0) for o, n in zip(packed.class_offsets, packed.images_per_class)]
    return np.stack([means[c] if c >= 0 else np.zeros(I) for c in classes])


# --- the visual pivot -----------------------------------------------------------------------------------
def test_visual_pivot_is_one_minus_cosine_over_the_real_rows():
    r = np.random.default_rng(5)
    g = r.standard_normal((5, 7)).astype(np.float32)
    p = np.abs(r.standard_normal((5, 7))).astype(np.float32)
    p[[1, 3]] = 0.0  # padded rows
    g64, p64 = g.astype(np.float64), p.astype(np.float64)
    real = [0, 2, 4]
    cos = np.sum(g64[real] * p64[real], 1) / (np.linalg.norm(g64[real], axis=1) * np.linalg.norm(p64[real], axis=1))
    np.testing.assert_allclose(float(losses.visual_pivot(tf.constant(g), tf.constant(p))), np.mean(1 - cos), rtol=1e-5)
    # Only padded rows: nothing to pull, a loss of 0 (not 0 / 0).
    assert float(losses.visual_pivot(tf.constant(g), tf.zeros_like(p))) == 0.0
    # It is a cosine: scaling either side changes nothing.
    np.testing.assert_allclose(float(losses.visual_pivot(tf.constant(3 * g), tf.constant(0.1 * p))),
                               np.mean(1 - cos), rtol=1e-5)


def test_generator_loss_adds_the_pivot_only_when_given():
    parts = [tf.constant(v, tf.float32) for v in ([0.5, -0.2], 0.3, 1.5, 0.2, 0.4)]
    released = float(losses.generator_loss(*parts, mm_reg_coeff=2.0, kl_div_coefficient=1.0))
    with_pivot = float(losses.generator_loss(*parts, mm_reg_coeff=2.0, kl_div_coefficient=1.0,
                                             pivot=tf.constant(0.25), pivot_coeff=4.0))
    assert with_pivot == pytest.approx(released + 1.0, rel=1e-6)


def test_packed_class_means_are_the_classes_mean_images_and_a_zero_pad_row(packed):
    means = packed.class_means.numpy()
    assert means.shape == (len(packed.images_per_class) + 1, I)
    np.testing.assert_allclose(means[:-1], _class_means(packed, range(len(packed.images_per_class))), rtol=1e-6)
    assert not means[-1].any()


@pytest.mark.parametrize("batch", ["shift", "outside_batch"])
def test_generator_step_with_the_pivot_equals_numpy(packed, batch):
    coeffs = dict(pivot_coeff=3.0)
    cfg = _cfg(generator_lr=0.01, **coeffs)
    trainer, w, eps, z = _fixed_trainer(cfg)
    trainer.pivots = packed.class_means
    cls, img, wrong_cls, wrong_img = BATCHES[batch]
    assert -1 in cls  # a padded row, whose pivot is left out
    x_r, phi_r, x_w, phi_w = _numpy_batch(packed, *BATCHES[batch])
    pivots = _class_means(packed, cls)
    expected_out, grads, _ = ref.generator_side(w, phi_r, phi_w, x_r, x_w, eps, z, pivots=pivots, **coeffs)
    released_out, released_grads, _ = ref.generator_side(w, phi_r, phi_w, x_r, x_w, eps, z)
    assert expected_out[0] - released_out[0] > 0.1  # the pivot term is there, and visible
    out = trainer.generator_step(packed.images, packed.texts, *_rows(packed, *BATCHES[batch])).numpy()
    np.testing.assert_allclose(out, expected_out, rtol=1e-4)
    expected = {k: ref.rmsprop_tf1(w[k], g, cfg.generator_lr) for k, g in grads.items()}
    _assert_moved_as(_variables(trainer, "encoder", "generator"), w, expected)
    for name, v in _variables(trainer, "critic", "csem").items():
        np.testing.assert_array_equal(v.numpy(), w[name])


# --- the CSEM on real images ------------------------------------------------------------------------------
@pytest.mark.parametrize("wrong_branch", [True, False])
@pytest.mark.parametrize("batch", ["shift", "non_permutation"])
def test_csem_step_with_real_images_equals_numpy(packed, batch, wrong_branch):
    cfg = _cfg(CSEM_lr=0.002, csem_real_images=True, wrong_branch=wrong_branch)
    trainer, w, eps, z = _fixed_trainer(cfg)
    x_r, phi_r, x_w, phi_w = _numpy_batch(packed, *BATCHES[batch])
    expected_loss, grads = ref.csem_side(w, phi_r, phi_w, eps, z, wrong_branch=wrong_branch, x_r=x_r, x_w=x_w)
    generated_only, _ = ref.csem_side(w, phi_r, phi_w, eps, z, wrong_branch=wrong_branch)
    assert expected_loss - generated_only > 0.1
    loss = float(trainer.csem_step(packed.images, packed.texts, *_rows(packed, *BATCHES[batch])))
    assert loss == pytest.approx(expected_loss, rel=1e-5)
    expected = {k: ref.adam_tf1_first_step(w[k], g, cfg.CSEM_lr) for k, g in grads.items()}
    _assert_moved_as(_variables(trainer, "csem"), w, expected)
    for name, v in _variables(trainer, "encoder", "generator", "critic").items():
        np.testing.assert_array_equal(v.numpy(), w[name])


def test_csem_real_images_is_refused_under_joint_training():
    with pytest.raises(UserError, match="csem_real_images"):
        build_method(_cfg(csem_real_images=True, training="joint"), I, T)


# --- queries ---------------------------------------------------------------------------------------------
def _method(packed, **overrides):
    cfg = _cfg(**overrides)
    method = build_method(cfg, I, T)
    classes = list(range(len(packed.images_per_class)))
    images = packed.images.numpy()
    method.attach(TrainingData(classes, {c: images[o:o + n] for c, o, n in zip(classes, packed.class_offsets,
                                                                              packed.images_per_class)},
                               {c: packed.texts.numpy()[c:c + 1] + np.arange(3.0, dtype=np.float32)[:, None]
                                for c in classes}, I, T))
    return method


@pytest.mark.parametrize("space", ["csem", "generator"])
def test_noiseless_queries_are_the_networks_at_mu_and_z_zero(packed, space):
    method = _method(packed, query_noise="mean", retrieval_space=space, eval_draws=5)
    w = ref.model_weights(method.trainer.model)
    texts = np.random.default_rng(3).standard_normal((3, T)).astype(np.float32)
    _, mu, _, _ = ref.encoder_forward(w, texts.astype(np.float64), np.zeros((3, 1)))
    expected, _ = ref.generator_forward(w, mu, np.zeros((3, method.cfg.z_dim)))
    if space == "csem":
        expected, _ = ref.csem_forward(w, expected)
    state = method.trainer.noise.state.numpy().copy()
    got = method.embed_queries(tf.constant(texts)).numpy()
    np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-6)
    np.testing.assert_array_equal(method.trainer.noise.state.numpy(), state)  # no noise drawn


def test_generator_space_queries_are_generated_images_against_raw_images(packed):
    released, ours = _method(packed), _method(packed, retrieval_space="generator")
    texts, images = packed.texts[:2], packed.images[:3]
    np.testing.assert_array_equal(ours.embed_gallery(images).numpy(), images.numpy())
    np.testing.assert_allclose(ours.embed_queries(texts).numpy(), released.generate(texts).numpy(), rtol=1e-6)
    assert released.embed_queries(texts).shape[1] == released.cfg.embed_dim  # the released CSEM space


# --- profile, study and the released default ---------------------------------------------------------------
def test_the_profile_loads_and_layers_between_dataset_file_and_config(tmp_path):
    profiles = sorted(PROFILE_DIR.glob("*.yaml"))
    assert profiles
    for path in profiles:
        cfg = load_config("DEMO", profile=path)
        for key, value in read_yaml(path).items():
            assert cfg[key] == value, key
        assert cfg.gf_dim == 256  # configs/DEMO.yaml still applies under the profile
    mine = tmp_path / "mine.yaml"
    key = next(iter(read_yaml(profiles[0])))
    mine.write_text(f"{key}: {json.dumps(load_config('DEMO')[key])}\n")
    assert load_config("DEMO", mine, profile=profiles[0])[key] == load_config("DEMO")[key]  # --config wins


def test_the_study_measures_the_profile_it_ships(tmp_path):
    study = load_study(STUDY_DIR / "beyond.yaml", tmp_path)
    profile = read_yaml(PROFILE_DIR / "beyond.yaml")
    assert study.protocol == "validated"
    assert study.variants["profile"] == profile
    for key in profile:  # each switch taken out in turn
        without = study.variants[f"without_{key}"]
        assert without[key] == load_config("DEMO")[key]
        assert {k: v for k, v in without.items() if k != key} == {k: v for k, v in profile.items() if k != key}
    assert read_yaml(STUDY_DIR / "beyond_wiki.yaml")["variants"]["profile"] == profile


def test_an_unknown_profile_is_one_line_and_exit_2(tmp_path, capsys):
    assert main(["--profile", "nope", "--output_dir", str(tmp_path / "run")]) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and err.startswith("error: --profile nope:") and "beyond" in err
    assert not (tmp_path / "run").exists()


def _short_run(tmp_path, name, *extra):
    out = tmp_path / name
    args = ["--data_root", str(tmp_path / "datasets"), "--results_root", str(tmp_path / f"results_{name}"),
            "--output_dir", str(out), "--rounds", "2", "--e_step_iters", "5", "--m_step_iters", "5", *extra]
    assert main(args) == 0
    recs = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    files = {p.name: p.read_bytes() for p in sorted((out / "retrieved").glob("*.pkl"))}
    return [{k: v for k, v in r.items() if k not in ("seconds", "retrieval_file")} for r in recs], files


@pytest.mark.slow
def test_the_switches_at_their_defaults_are_the_released_run_bit_for_bit(tmp_path):
    defaults = ["--retrieval_space", "csem", "--query_noise", "sampled", "--pivot_coeff", "0.0",
                "--csem_real_images", "false", "--early_stop_patience", "0"]
    released = _short_run(tmp_path, "released")
    assert released == _short_run(tmp_path, "explicit", *defaults)
    assert released[1]  # retrieval files were written and compared
    assert released != _short_run(tmp_path, "pivot", "--pivot_coeff", "1.0")  # a switch does change the run


@pytest.mark.slow
def test_early_stopping_ends_the_run_after_patience_rounds_without_a_new_selected_round(tmp_path):
    out = tmp_path / "run"
    assert main(["--data_root", str(tmp_path / "datasets"), "--results_root", str(tmp_path / "results"),
                 "--output_dir", str(out), "--rounds", "30", "--e_step_iters", "1", "--m_step_iters", "1",
                 "--early_stop_patience", "2", "--protocol", "validated"]) == 0
    summary = json.loads((out / "summary.json").read_text())
    assert summary["stopped"].startswith("early stop")
    assert summary["rounds_done"] == summary["selected_round"] + 2 < 30


# --- training on every text of a class ---------------------------------------------------------------------
def test_all_texts_are_packed_with_their_class_means():
    r = np.random.default_rng(2)
    images = [np.abs(r.standard_normal((n, I))).astype(np.float32) for n in (3, 2)]
    texts = [r.standard_normal((n, T)).astype(np.float32) for n in (2, 3)]
    first = PackedFeatures.from_classes(images, texts)
    every = PackedFeatures.from_classes(images, texts, all_texts=True)
    np.testing.assert_array_equal(first.texts.numpy()[:-1], np.stack([t[0] for t in texts]))
    np.testing.assert_array_equal(every.texts.numpy()[:-1], np.concatenate(texts))
    assert every.text_offsets.tolist() == [0, 2] and every.texts_per_class.tolist() == [2, 3]
    means = np.stack([x.astype(np.float64).mean(axis=0) for x in images])
    np.testing.assert_allclose(every.class_means.numpy()[:-1], means[[0, 0, 1, 1, 1]], rtol=1e-6)
    assert not every.texts.numpy()[-1].any() and not every.class_means.numpy()[-1].any()


def test_all_texts_draws_each_rows_text_within_its_class_and_resumes(packed):
    method = _method(packed, train_texts="all")
    p = method.packed
    cls = np.array([[0, 4, -1, 2], [1, 1, 3, -1]])
    rows = method._text_rows(cls)
    for c, row in zip(cls.ravel(), rows.ravel()):
        if c < 0:
            assert row == p.text_pad_row
        else:
            assert p.text_offsets[c] <= row < p.text_offsets[c] + p.texts_per_class[c]
    many = method._text_rows(np.zeros(200, np.int64))
    assert len(set(many.tolist())) == p.texts_per_class[0] > 1  # every text of the class is drawn
    state = json.loads(json.dumps(method.host_state()))
    after = method._text_rows(cls)
    other = _method(packed, train_texts="all")
    other.load_host_state(state)
    np.testing.assert_array_equal(other._text_rows(cls), after)
