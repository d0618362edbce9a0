"""End to end through main(): the demo learns, outputs are written in the released format, runs are
reproducible and resumable, and every way a run can stop is reported."""

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from main import main
from zscrgan.data.safe_pickle import load_pickle
from zscrgan.released import retrieval_file_name

ROOT = Path(__file__).resolve().parents[1]
# Shorter phases than released (100 iterations each) keep these runs to seconds; the schedule
# itself is the released one.
FAST = ["--e_step_iters", "20", "--m_step_iters", "20"]


def run_main(tmp_path, name, *extra):
    out = tmp_path / name
    args = ["--data_root", str(tmp_path / "datasets"), "--results_root", str(tmp_path / "results"),
            "--output_dir", str(out), *extra]
    return main(args), out


def records(run_dir):
    lines = (run_dir / "metrics.jsonl").read_text().splitlines()
    return [json.loads(line) for line in lines]


def without_times(recs):
    return [{k: v for k, v in r.items() if k not in ("seconds", "retrieval_file")} for r in recs]


@pytest.fixture(scope="module")
def demo_run(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("demo")
    rc, out = run_main(tmp, "run", "--rounds", "15")
    return rc, out, tmp


@pytest.mark.slow
def test_demo_learns_far_above_chance(demo_run):
    rc, out, _ = demo_run
    assert rc == 0
    summary = json.loads((out / "summary.json").read_text())
    assert summary["rounds_done"] == 15 and summary["stopped"] == "completed 15 rounds"
    assert summary["chance_prec"] == pytest.approx(0.1, abs=0.01)
    assert summary["test_at_selected_round"]["prec"] > 2.5 * summary["chance_prec"]
    recs = records(out)
    assert [r["round"] for r in recs] == list(range(1, 16))
    assert recs[-1]["test"]["prec"] > recs[0]["test"]["prec"]


@pytest.mark.slow
def test_demo_writes_released_retrieval_file(demo_run):
    _, out, tmp = demo_run
    summary = json.loads((out / "summary.json").read_text())
    best = summary["test_at_selected_round"]["prec"]
    files = sorted((tmp / "results" / "DEMO_res").glob("acc*.pkl"))
    new_bests = [r for r in records(out) if r["new_best"]]
    assert len(files) == len(new_bests)  # one file per new best, as released
    path = tmp / "results" / "DEMO_res" / retrieval_file_name(best)
    assert path.exists()
    content = load_pickle(path)
    assert isinstance(content, list) and len(content) == 50  # 10 unseen classes x 5 texts
    query_classes = [next(iter(e)) for e in content]
    assert query_classes == sorted(query_classes)  # ascending class id order, as released
    for entry in content:
        assert isinstance(entry, dict) and len(entry) == 1
        (cls, retrieved), = entry.items()
        assert type(cls) is int and len(retrieved) == 50 and all(type(c) is int for c in retrieved)
    # The file's retrievals are the ones the best round scored.
    from zscrgan.metrics import retrieval_metrics
    import numpy as np
    q = np.array([next(iter(e)) for e in content])
    r = np.array([next(iter(e.values())) for e in content])
    assert retrieval_metrics(q, r)["prec"] == pytest.approx(best)


@pytest.mark.slow
def test_run_folder_holds_config_log_and_best_weights(demo_run):
    _, out, _ = demo_run
    import yaml
    cfg = yaml.safe_load((out / "config.yaml").read_text())
    assert cfg["dataset"] == "DEMO" and cfg["rounds"] == 15 and cfg["mm_reg_coeff"] == 2.0
    best_state = json.loads((out / "checkpoints" / "best" / "state.json").read_text())
    summary = json.loads((out / "summary.json").read_text())
    assert best_state["round"] == summary["selected_round"]
    assert list((out / "checkpoints" / "best").glob("ckpt.index"))
    assert (out / "checkpoints" / "last" / "state.json").exists()
    assert not [p for p in (out / "checkpoints").iterdir() if p.name.startswith(".")]


@pytest.mark.slow
def test_best_checkpoint_restores_the_best_rounds_retrievals(demo_run, tmp_path):
    """Restoring the best weights reproduces that round's gallery embeddings' retrieval quality."""
    import numpy as np
    import tensorflow as tf
    from zscrgan.config import load_config
    from zscrgan.evaluate import evaluate
    from zscrgan.run import prepare_data
    from zscrgan.train import Trainer
    _, out, tmp = demo_run
    cfg = load_config("DEMO", saved=out / "config.yaml")
    data = prepare_data(cfg, tmp / "datasets")
    trainer = Trainer(cfg, data.image_dim, data.text_dim)
    fresh, _ = evaluate(trainer, data.test, 50)
    tf.train.Checkpoint(model=trainer.model).read(str(out / "checkpoints" / "best" / "ckpt")).assert_consumed()
    restored, _ = evaluate(trainer, data.test, 50)
    best = json.loads((out / "summary.json").read_text())["test_at_selected_round"]["prec"]
    assert restored["prec"] > fresh["prec"] + 0.1
    assert abs(restored["prec"] - best) < 0.1  # one fresh noise draw per query, as released
    assert np.isfinite(restored["map"])


@pytest.mark.slow
def test_same_seed_same_metrics_and_resume_continues_identically(tmp_path):
    rc1, a = run_main(tmp_path, "a", "--rounds", "3", *FAST)
    rc2, b = run_main(tmp_path, "b", "--rounds", "3", *FAST)
    assert rc1 == rc2 == 0
    assert without_times(records(a)) == without_times(records(b))
    rc3, c = run_main(tmp_path, "c", "--rounds", "3", "--seed", "1", *FAST)
    assert without_times(records(c)) != without_times(records(a))
    # Two rounds, then resume for the third: the same numbers as three rounds in one go.
    rc4, d = run_main(tmp_path, "d", "--rounds", "2", *FAST)
    assert main(["--resume", str(d), "--rounds", "3", "--data_root", str(tmp_path / "datasets"),
                 "--results_root", str(tmp_path / "results")]) == 0
    assert without_times(records(d)) == without_times(records(a))


def test_time_budget_stops_and_says_so(tmp_path, capsys):
    rc, out = run_main(tmp_path, "tb", "--rounds", "50", "--time_budget", "0.001", *FAST)
    assert rc == 0
    summary = json.loads((out / "summary.json").read_text())
    assert summary["rounds_done"] == 1 and "time budget" in summary["stopped"]
    assert "stopped: time budget of 0.001 min reached" in capsys.readouterr().out


@pytest.mark.slow
def test_validated_protocol_selects_on_validation_classes(tmp_path):
    rc, out = run_main(tmp_path, "val", "--rounds", "3", "--protocol", "validated", *FAST)
    assert rc == 0
    recs = records(out)
    summary = json.loads((out / "summary.json").read_text())
    best_val = max(recs, key=lambda r: r["val"]["prec"])
    assert summary["selected_round"] == best_val["round"]
    assert summary["test_at_selected_round"] == best_val["test"]
    assert summary["best_test_prec_any_round"] == max(r["test"]["prec"] for r in recs)
    assert summary["val_at_selected_round"] == best_val["val"]


def test_cli_errors_are_one_line_and_non_zero(tmp_path):
    def cli(*args):
        p = subprocess.run([sys.executable, str(ROOT / "main.py"), "--data_root", str(tmp_path), *args],
                           capture_output=True, text=True, timeout=120)
        return p.returncode, p.stderr.strip().splitlines()

    rc, err = cli("--dataset", "CUB", "--mm_reg_coeff", "abc")
    assert rc == 2 and err == ["error: command line: key 'mm_reg_coeff' must be float (like its default 2.0), got 'abc'"]
    rc, err = cli("--config", str(tmp_path / "nope.yaml"))
    assert rc == 2 and re.fullmatch(r"error: --config .*nope\.yaml: no such file, nor one of the names .*", err[-1])
    rc, err = cli("--dataset", "CUB")
    assert rc == 2 and err[-1].startswith("error: ") and "CUB" in err[-1]
    assert "convert" in err[-1]  # says how to get the data
    rc, err = cli("--resume", str(tmp_path / "norun"))
    assert rc == 2 and "config.yaml: not found" in err[-1]
    rc, err = cli("--time_budget", "-1")
    assert rc == 2 and "--time_budget" in err[-1]


@pytest.mark.slow
def test_evaluate_rescores_the_selected_weights(demo_run, capsys):
    _, out, tmp = demo_run
    args = ["--evaluate", str(out), "--eval_draws", "3", "--data_root", str(tmp / "datasets"),
            "--results_root", str(tmp / "results")]
    assert main(args) == 0
    result = json.loads((out / "evaluation-draws3.json").read_text())
    summary = json.loads((out / "summary.json").read_text())
    assert result["round"] == summary["selected_round"] and result["eval_draws"] == 3
    assert result["test"]["prec"] > 2.5 * summary["chance_prec"]
    assert len(result["per_class"]) == 10 and all(v["queries"] == 5 for v in result["per_class"].values())
    assert "3 draw(s) per query" in capsys.readouterr().out


def test_validated_protocol_never_trains_on_validation_classes(tmp_path):
    from zscrgan.config import load_config
    from zscrgan.run import prepare_data

    cfg = load_config("DEMO", overrides={"protocol": "validated"})
    data = prepare_data(cfg, tmp_path / "datasets")
    val_classes = set(data.val.query_labels.tolist())
    assert len(val_classes) == round(0.2 * 30)
    assert not val_classes & set(data.train_classes)
    assert not val_classes & set(data.test.query_labels.tolist())
    assert len(data.training.classes) == len(data.train_classes) == 30 - len(val_classes)
    assert set(data.val.gallery_labels.tolist()) == val_classes


def _bad_dataset_cases():
    import pickle

    import numpy as np

    def img(n=3, d=4):
        return [np.ones(d, np.float32) for _ in range(n)]

    good = {"image_embed_dict.pkl": {1: img(), 2: img(), 3: img()},
            "txt_embed_dict.pkl": {1: img(2, 5), 2: img(2, 5), 3: img(2, 5)},
            "trainids.pkl": [1, 2], "testids.pkl": [3]}

    def nan():
        d = {k: dict(v) if isinstance(v, dict) else v for k, v in good.items()}
        d["image_embed_dict.pkl"][2] = [np.array([np.nan, 1, 1, 1], np.float32)]
        return d

    def override(name, value):
        return lambda: {**good, name: value}

    class Evil:
        def __reduce__(self):
            return (os.system, ("echo pwned",))

    return {
        "nan": (nan, "image_embed_dict.pkl"),
        "seen_and_unseen": (override("testids.pkl", [2, 3]), "testids.pkl"),
        "empty_split": (override("trainids.pkl", []), "trainids.pkl"),
        "no_texts": (override("txt_embed_dict.pkl", {1: img(2, 5), 2: [], 3: img(2, 5)}), "txt_embed_dict.pkl"),
        "ragged_dims": (override("image_embed_dict.pkl", {1: img(), 2: img(d=6), 3: img()}), "image_embed_dict.pkl"),
        "code_running_pickle": (override("trainids.pkl", Evil()), "trainids.pkl"),
        "not_a_pickle": (override("testids.pkl", b"\x00garbage"), "testids.pkl"),
    }, pickle


@pytest.mark.parametrize("case", sorted(_bad_dataset_cases()[0]))
def test_bad_dataset_stops_the_command_with_one_line(tmp_path, capsys, case):
    cases, pickle = _bad_dataset_cases()
    make, culprit = cases[case]
    folder = tmp_path / "datasets" / "BAD"
    folder.mkdir(parents=True)
    for name, obj in make().items():
        with open(folder / name, "wb") as f:
            if isinstance(obj, bytes):
                f.write(obj)
            else:
                pickle.dump(obj, f, protocol=2)
    rc, out = run_main(tmp_path, "run", "--dataset", "BAD")
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and len(err) == 1 and err[0].startswith("error: ") and culprit in err[0]
    assert not out.exists()  # nothing written for a run that never started


def test_validated_protocol_holds_out_at_least_two_classes():
    from zscrgan.errors import UserError
    from zscrgan.run import split_validation

    train, val = split_validation([2, 3, 5, 9, 10], 0.2, seed=0)  # WIKI's seen classes
    assert len(val) == 2 and len(train) == 3 and sorted(train + val) == [2, 3, 5, 9, 10]
    train, val = split_validation(list(range(30)), 0.2, seed=0)
    assert len(val) == 6 and len(train) == 24
    assert len(split_validation(list(range(10)), 0.95, seed=0)[0]) == 2  # at least two to train on
    with pytest.raises(UserError, match=r"--protocol validated: needs at least 4 seen classes .* has 3"):
        split_validation([1, 2, 3], 0.5, seed=0)


@pytest.mark.slow
def test_experiment_switches_run_and_resume_identically(tmp_path):
    # Joint training, the k-means wrong class (its draws are in the sampler state), and the slides'
    # ablations without the wrong-class branch and without R and the triplet loss, all at once.
    switches = ["--training", "joint", "--wrong_class", "kmeans", "--kmeans_clusters", "4", "--wrong_branch",
                "false", "--mm_reg_coeff", "0", "--triplet_coeff", "0"]
    fast = ["--e_step_iters", "5", "--m_step_iters", "5", "--batch_size", "8", *switches]
    rc1, a = run_main(tmp_path, "a", "--rounds", "2", *fast)
    rc2, b = run_main(tmp_path, "b", "--rounds", "1", *fast)
    assert rc1 == rc2 == 0
    assert main(["--resume", str(b), "--rounds", "2", "--data_root", str(tmp_path / "datasets"),
                 "--results_root", str(tmp_path / "results")]) == 0
    recs = records(a)
    assert without_times(records(b)) == without_times(recs)
    for r in recs:
        assert all(np.isfinite(v) for v in r["losses"].values())
    # No M-step: the CSEM's loss is the joint steps' L_C.
    assert all(r["losses"]["L_C_M"] == r["losses"]["L_C"] for r in recs)


@pytest.mark.parametrize("training", ["em", "joint"])
def test_a_rounds_batches_are_critic_batches_then_the_generator_batch_then_the_m_step(tmp_path, training):
    from zscrgan.config import load_config
    from zscrgan.data.sampler import ClassBatchSampler, to_rows
    from zscrgan.run import Run
    b = 8  # 30 seen classes: a walk of slices with a padded last one
    cfg = load_config("DEMO", overrides=dict(e_step_iters=3, critic_steps=2, m_step_iters=4, batch_size=b,
                                             training=training))
    run = Run(cfg, tmp_path / "run", data_root=tmp_path / "datasets", results_root=None)
    e_rows, m_rows = run.method._schedule()
    packed = run.method.packed
    cls, img = ClassBatchSampler(packed.images_per_class.tolist(), b, cfg.seed).schedule(3 * 3 + 4)
    assert np.any(cls < 0)
    images = to_rows(cls, img, packed.class_offsets, packed.image_pad_row)
    wrong_images = np.roll(images, 1, axis=1)  # the released shift: the previous row's image
    # In draw order: per iteration two critic batches, then the generator side's; then the M-step's.
    assert e_rows[0].shape == (3, 3, b)
    np.testing.assert_array_equal(e_rows[0].numpy().reshape(-1, b), images[:9])
    np.testing.assert_array_equal(e_rows[2].numpy().reshape(-1, b), wrong_images[:9])
    if training == "joint":
        assert m_rows is None  # no M-step
    else:
        np.testing.assert_array_equal(m_rows[0].numpy(), images[9:])
        np.testing.assert_array_equal(m_rows[2].numpy(), wrong_images[9:])
