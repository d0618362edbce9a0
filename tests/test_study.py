"""Studies on Ray Tune: tables recomputed from the trials' own files, a killed driver resumes to the same
table without re-running finished trials, and a bad study file stops before Ray starts."""

import csv
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import yaml

from zscrgan import study as study_module
from zscrgan.study import load_study, main

ROOT = Path(__file__).resolve().parents[1]
# 2 variants x 2 seeds x 2 rounds on a small demo, validated protocol (so the selected round differs
# from the released figure's round).
STUDY = {
    "datasets": ["DEMO"], "seeds": [0, 1], "rounds": 2, "protocol": "validated",
    "config": {"e_step_iters": 4, "m_step_iters": 4, "gf_dim": 64, "df_dim": 64, "embed_dim": 32, "z_dim": 8,
               "demo": {"n_classes": 20, "n_seen": 14, "images_per_class": 30, "image_dim": 32, "text_dim": 16}},
    "variants": {"released": {}, "no_R": {"mm_reg_coeff": 0.0}, "ridge": {"method": "ridge"}},
    "paper": {"released": {"DEMO": {"prec": 52.0}}},
}


def write_study(folder: Path, **changes) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "demo_test.yaml"
    path.write_text(yaml.safe_dump({**STUDY, **changes}, sort_keys=False))
    return path


def study_args(tmp: Path, out: str, *extra):
    return [str(tmp / "demo_test.yaml"), "--output_dir", str(tmp / out), "--data_root", str(tmp / "datasets"),
            "--num_cpus", "2", *extra]


@pytest.fixture(scope="module")
def finished_study(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("study")
    write_study(tmp)
    assert main(study_args(tmp, "a")) == 0
    return tmp


def csv_rows(folder: Path) -> list[dict]:
    with open(folder / "results.csv", newline="") as f:
        return list(csv.DictReader(f))


def recomputed(run_dir: Path) -> dict:
    """The table's figures of one trial, straight from its metrics.jsonl."""
    recs = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    first_max = lambda key: recs[int(np.argmax([r[key]["prec"] for r in recs]))]["test"]  # noqa: E731
    return {"released": first_max("test"), "selected": first_max("val"), "last": recs[-1]["test"]}


@pytest.mark.slow
def test_every_table_cell_is_recomputed_from_the_trials_metrics(finished_study):
    folder = finished_study / "a"
    rows = {r["variant"]: r for r in csv_rows(folder)}
    assert set(rows) == {"released", "no_R", "ridge", "ridge reference"}
    markdown = (folder / "results.md").read_text()
    for variant in ("released", "no_R", "ridge"):
        row = rows[variant]
        assert (row["finished"], row["total"], row["notes"]) == ("2", "2", "")
        figs = [recomputed(folder / "DEMO" / variant / f"seed{s}") for s in (0, 1)]
        md_cells = []
        for stage in ("released", "selected", "last"):
            for metric in ("prec", "map", "top1"):
                values = [f[stage][metric] for f in figs]
                mean, std = np.mean(values), np.std(values, ddof=1)
                assert float(row[f"{stage}_{metric}_mean"]) == pytest.approx(mean, abs=1e-12)
                assert float(row[f"{stage}_{metric}_std"]) == pytest.approx(std, abs=1e-12)
                md_cells.append(f"{mean:.4f} ± {std:.4f}")
        paper = "52 / – / –" if variant == "released" else ""
        assert f"| DEMO | {variant} | 2/2 | " + " | ".join(md_cells) + f" | per text | {paper} |  |  |" in markdown
    assert (folder / "DEMO.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


@pytest.mark.slow
def test_ridge_row_is_the_baseline_on_the_same_split(finished_study):
    from zscrgan.baseline import ridge_baseline
    from zscrgan.data.release import load_dataset

    ds = load_dataset(finished_study / "datasets" / "DEMO")
    m = ridge_baseline(ds.image, ds.text, ds.seen, ds.unseen)
    row = next(r for r in csv_rows(finished_study / "a") if r["variant"] == "ridge reference")
    for stage in ("released", "selected", "last"):
        assert float(row[f"{stage}_prec_mean"]) == pytest.approx(m["prec"], abs=1e-12) and row[f"{stage}_prec_std"] == ""


def test_a_method_variant_is_a_peer_in_the_same_table(finished_study):
    """The ridge method as a variant: its trials are run folders like the others', and its row equals
    the ridge reference computed beside the table (the same model on the same split)."""
    rows = {r["variant"]: r for r in csv_rows(finished_study / "a")}
    run = finished_study / "a" / "DEMO" / "ridge" / "seed0"
    summary = json.loads((run / "summary.json").read_text())
    assert summary["stopped"].startswith("completed: ridge is trained after round 1") and summary["trained"]
    assert yaml.safe_load((run / "config.yaml").read_text())["method"] == "ridge"
    # Validated protocol: the ridge trial fits on the training classes only, the reference on all seen
    # classes, so the two figures are close but need not be equal.
    assert abs(float(rows["ridge"]["last_prec_mean"]) - float(rows["ridge reference"]["last_prec_mean"])) < 0.1


@pytest.mark.slow
def test_trials_are_ordinary_run_folders_with_their_provenance(finished_study):
    run = finished_study / "a" / "DEMO" / "no_R" / "seed1"
    history = [json.loads(line) for line in (run / "provenance.jsonl").read_text().splitlines()]
    assert len(history) == 1 and history[0]["overrides"]["mm_reg_coeff"] == 0.0 and history[0]["overrides"]["seed"] == 1
    assert history[0]["command"][:2] == ["zscrgan", "study"]
    summary = json.loads((run / "summary.json").read_text())
    assert summary["stopped"] == "completed 2 rounds" and summary["retrieval_files"]
    assert all((run / f).exists() for f in summary["retrieval_files"])


@pytest.mark.slow
def test_driver_killed_mid_way_resumes_without_rerunning_finished_trials(finished_study):
    """The study of `finished_study` again, with two of its trials still to run, one at a time: the driver
    is killed once the first of them has finished."""
    tmp = finished_study
    out = tmp / "b"
    shutil.copytree(tmp / "a" / "DEMO" / "released", out / "DEMO" / "released")
    env = dict(os.environ, PYTHONPATH=str(ROOT), PYTHONUNBUFFERED="1")
    proc = subprocess.Popen([sys.executable, "-m", "zscrgan.study", *study_args(tmp, "b", "--max_concurrent", "1")],
                            cwd=tmp, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 240
    while time.time() < deadline and not list(out.glob("DEMO/no_R/*/summary.json")):
        time.sleep(0.1)
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=60)
    finished = {p.parent: (p.parent / "metrics.jsonl").read_text() for p in out.glob("DEMO/*/*/summary.json")}
    assert len(finished) == 3
    assert not (out / "results.csv").exists()

    assert main(study_args(tmp, "b")) == 0
    for run, metrics in finished.items():  # not run again
        assert (run / "metrics.jsonl").read_text() == metrics
        assert len((run / "provenance.jsonl").read_text().splitlines()) == 1
    assert csv_rows(out) == csv_rows(tmp / "a")


@pytest.mark.slow
def test_rerunning_a_finished_study_runs_nothing(finished_study, monkeypatch, capsys):
    monkeypatch.setattr(study_module, "run_trial", None)  # Ray would fail on it if any trial were started
    assert main(study_args(finished_study, "a")) == 0
    assert "6 finished" in capsys.readouterr().out


@pytest.mark.parametrize("change, problem", [
    ({"epochs": 3}, "unknown key 'epochs'"),
    ({"variants": {"bad": {"mm_reg_coef": 1.0}}}, "variant 'bad': unknown config key 'mm_reg_coef'"),
    ({"seeds": []}, "'seeds' must be a non-empty list"),
    ({"datasets": ["NOSUCH"]}, "unknown dataset 'NOSUCH'"),
    ({"variants": {"bad": {"seed": 3}}}, "'seed' is set by the study"),
    ({"search": {"mm_reg_coeff": ["normal", 0, 1]}}, "search key 'mm_reg_coeff'"),
])
def test_bad_study_file_is_one_line_and_exit_2_before_ray_starts(tmp_path, monkeypatch, capsys, change, problem):
    def no_ray(args):
        raise AssertionError("Ray started")
    monkeypatch.setattr(study_module, "_start_ray", no_ray)
    path = write_study(tmp_path, **change)
    assert main([str(path), "--output_dir", str(tmp_path / "out"), "--data_root", str(tmp_path / "datasets")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith(f"error: {path}") and problem in err[0], err
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("failure, hint", [
    (ConnectionError("Failed to connect to Ray cluster at 10.0.0.9:6379"), False),
    (RuntimeError("RPC error: InvalidAuthToken: Authentication token is missing or incorrect.\nmore"), True),
])
def test_an_unreachable_cluster_is_one_line_and_exit_2(tmp_path, monkeypatch, capsys, failure, hint):
    import ray

    def init(**kwargs):
        raise failure
    monkeypatch.setattr(ray, "init", init)
    monkeypatch.setattr(ray, "is_initialized", lambda: False)
    monkeypatch.setattr(study_module, "_check_answers", lambda address: None)  # something answers there
    monkeypatch.delenv("RAY_AUTH_MODE", raising=False)
    write_study(tmp_path)
    assert main(study_args(tmp_path, "out", "--address", "10.0.0.9:6379")) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: --address 10.0.0.9:6379: cannot connect to a Ray cluster"), err
    assert type(failure).__name__ in err[0] and ("RAY_AUTH_MODE=token" in err[0]) == hint, err


def test_an_address_where_nothing_answers_is_one_line_at_once(tmp_path, capsys):
    import socket

    with socket.socket() as probe:  # a port that was free a moment ago: nothing listens there
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    write_study(tmp_path)
    started = time.perf_counter()
    assert main(study_args(tmp_path, "out", "--address", f"127.0.0.1:{port}")) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith(f"error: --address 127.0.0.1:{port}: nothing answers"), err
    assert time.perf_counter() - started < 60  # Ray alone would retry for minutes


def test_every_shipped_study_file_is_valid(tmp_path):
    files = sorted((ROOT / "studies").glob("*.yaml"))
    assert {f.name for f in files} >= {"demo.yaml", "ablations.yaml", "em_vs_joint.yaml", "wrong_class.yaml"}
    for f in files:
        datasets = yaml.safe_load(f.read_text())["datasets"]
        for ds in datasets:  # stand-in folders: the schema is what is checked here
            (tmp_path / ds).mkdir(exist_ok=True)
        assert load_study(f, tmp_path).datasets == datasets


def test_search_chooses_by_validation_prec_never_by_unseen(tmp_path):
    from zscrgan.study import best_searched

    for trial, val, unseen, coeff in (("t1", 0.30, 0.90, 1.0), ("t2", 0.40, 0.10, 2.0), ("t3", 0.35, 0.95, 3.0)):
        run = tmp_path / trial
        run.mkdir()
        (run / "summary.json").write_text(json.dumps({"val_at_selected_round": {"prec": val},
                                                      "test_at_selected_round": {"prec": unseen}}))
        (run / "provenance.jsonl").write_text(json.dumps({"overrides": {"mm_reg_coeff": coeff}}) + "\n")
    chosen = best_searched(tmp_path)
    assert chosen["run_dir"] == str(tmp_path / "t2") and chosen["overrides"] == {"mm_reg_coeff": 2.0}
    assert chosen["test_at_selected_round"] == {"prec": 0.10}


@pytest.mark.slow
def test_optuna_search_runs_through_ray_and_names_the_best_on_validation(tmp_path, capsys):
    write_study(tmp_path, search={"mm_reg_coeff": ["loguniform", 0.1, 10.0]})
    assert main(study_args(tmp_path, "out", "--search", "optuna", "--trials", "2")) == 0
    out = capsys.readouterr().out
    assert "search: done" in out and "without --search" in out and "not every trial has finished" not in out
    folder = tmp_path / "out"
    trials = sorted((folder / "DEMO" / "search").iterdir())
    assert len(trials) == 2
    val = {str(t): json.loads((t / "summary.json").read_text())["val_at_selected_round"]["prec"] for t in trials}
    chosen = json.loads((folder / "search.json").read_text())["DEMO"]
    assert val[chosen["run_dir"]] == chosen["val_prec"] == max(val.values())
    assert 0.1 <= chosen["overrides"]["mm_reg_coeff"] <= 10.0
    assert "search: best of 2 on validation" in (folder / "results.md").read_text()


def test_failed_trial_writes_its_error_and_shows_in_the_table(tmp_path):
    from zscrgan.report import write_study_tables
    from zscrgan.study import run_trial

    study = load_study(write_study(tmp_path, seeds=[0]), tmp_path / "datasets")
    trial = next(t for t in study.trials(tmp_path / "out") if t.variant == "released")
    spec = {"dataset": trial.dataset, "variant": trial.variant, "seed": 0, "run_dir": trial.run_dir,
            "overrides": {**trial.overrides, "no_such_key": 1},  # fails inside the trial
            "data_root": str(tmp_path / "datasets"), "time_budget": None, "cpus": 1, "command": ["zscrgan", "study"]}
    with pytest.raises(Exception):
        run_trial({"trial": spec})
    error = (Path(trial.run_dir) / "error.txt").read_text().strip()
    assert error.startswith("UserError: command line: unknown config key 'no_such_key'") and "\n" not in error
    counts = write_study_tables(study, tmp_path / "out", tmp_path / "no_datasets")
    assert counts == {"failed": 1, "not started": 2}
    rows = {r["variant"]: r for r in csv_rows(tmp_path / "out")}
    assert rows["released"]["finished"] == "0" and rows["released"]["notes"] == f"seed 0 failed: {error}"
    assert rows["no_R"]["notes"] == "seed 0 not started"
    assert rows["ridge reference"]["notes"].startswith("not computed: ")
