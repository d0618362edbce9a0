"""Bad days, generated here: corrupted run folders under `report`, hostile study files and flags,
resources the machine lacks, hostile dataset pickles and source files, and the command line's own
mistakes. Payloads are crossed with the entry points that read them.

Every case must end with exit status 2 and exactly one line on stderr that names the file or flag,
within seconds, leaving every file of the folders involved byte-identical.
"""

import errno
import faulthandler
import json
import os
import pickle
import stat
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import scipy.io
import yaml

from helpers import tree_digest
from zscrgan import report, study
from zscrgan.cli import main as cli_main
from zscrgan.config import MAX_INT
from zscrgan.data.__main__ import main as data_main

# A warning printed before the one line (numpy's overflow in a cast of 1e300, say) fails the case.
pytestmark = pytest.mark.filterwarnings("error::RuntimeWarning")
ROOT = Path(__file__).resolve().parents[1]
# A refusal takes well under a second; the limit allows for a loaded machine, a hang takes forever.
SECONDS = 20
BIG = "9" * 5000


def refuse(capsys, folder, call, *names):
    """Run `call()` (an entry point's main) and check the refusal: status 2, one `error:` line naming
    each of `names`, quickly, and nothing under `folder` changed. Returns the line."""
    before = tree_digest(folder)
    faulthandler.dump_traceback_later(120, exit=True, file=sys.__stderr__)  # a hang ends the tests, loudly
    t0 = time.monotonic()
    try:
        rc = call()
    finally:
        faulthandler.cancel_dump_traceback_later()
    seconds = time.monotonic() - t0
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2, err
    assert len(err) == 1 and "Traceback" not in err[0] and "error:" in err[0], err
    for name in names:
        assert str(name) in err[0], (name, err[0])
    assert seconds < SECONDS
    assert tree_digest(folder) == before
    return err[0]


def make_special(path: Path, kind: str) -> None:
    """A directory, FIFO or character device (a copy of /dev/null's numbers, made in the test's folder) at `path`."""
    if kind == "directory":
        path.mkdir()
    elif kind == "fifo":
        os.mkfifo(path)
    elif kind == "char_device":
        if os.geteuid() != 0:
            pytest.skip("making a character device needs root")
        os.mknod(path, 0o666 | stat.S_IFCHR, os.makedev(1, 3))


# --- report: a run folder's files ----------------------------------------------------------------------
def fake_run(folder: Path) -> Path:
    """A finished run folder as training leaves it, as far as `report` reads it."""
    folder.mkdir(parents=True)
    records = [{"round": r, "test": {"prec": p, "map": p, "top1": p}} for r, p in ((1, 0.2), (2, 0.3))]
    summary = {"protocol": "released", "rounds_done": 2, "selected_round": 2, "stopped": "completed 2 rounds",
               "test_at_selected_round": records[1]["test"], "chance_prec": 0.1, "top_k": 50}
    (folder / "summary.json").write_text(json.dumps(summary))
    (folder / "config.yaml").write_text(yaml.safe_dump({"dataset": "DEMO", "seed": 0, "rounds": 2,
                                                         "demo": {"seed": 0}}))
    (folder / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    return folder


def _alias_bomb(levels=9) -> str:
    lines = ["a0: &a0 [x, x, x, x, x, x, x, x, x]"]
    lines += [f"a{i}: &a{i} [{', '.join([f'*a{i - 1}'] * 9)}]" for i in range(1, levels)]
    return "\n".join(lines) + "\n"


RUN_FILE_PAYLOADS = {
    "summary.json": {"empty": b"", "list": b"[1, 2]", "string": b'"x"', "deep": b"[" * 100000,
                     "binary": bytes(range(256)), "no_rounds_done": b'{"protocol": "released"}',
                     "text_score": b'{"protocol": "released", "rounds_done": 2, "test_at_selected_round": {"prec": "x"}}',
                     "directory": "directory", "fifo": "fifo", "char_device": "char_device"},
    "metrics.jsonl": {"list_line": b"[1]\n", "no_test": b'{"round": 1}\n',
                      "text_score": b'{"round": 1, "test": {"prec": "x", "map": 1, "top1": 1}}\n',
                      "deep": b"[" * 100000 + b"\n", "round_infinity":
                      b'{"round": Infinity, "test": {"prec": 1, "map": 1, "top1": 1}}\n',
                      "round_text": b'{"round": "1", "test": {"prec": 1, "map": 1, "top1": 1}}\n',
                      "score_nan": b'{"round": 1, "test": {"prec": NaN, "map": 1, "top1": 1}}\n',
                      "binary": b"\xff\xfe{\n", "fifo": "fifo", "directory": "directory"},
    "config.yaml": {"alias_bomb": _alias_bomb().encode(), "list": b"[1, 2]\n", "digits_5000": f"seed: {BIG}\n".encode(),
                    "nested_list": b"rounds: [[[1]]]\n", "fifo": "fifo", "directory": "directory"},
}
RUN_FILE_CASES = [(file, payload) for file, payloads in RUN_FILE_PAYLOADS.items() for payload in payloads]


@pytest.mark.parametrize("file,payload", RUN_FILE_CASES, ids=[f"{f}:{p}" for f, p in RUN_FILE_CASES])
def test_report_refuses_a_corrupted_run_file(file, payload, tmp_path, capsys):
    run = fake_run(tmp_path / "run")
    content = RUN_FILE_PAYLOADS[file][payload]
    (run / file).unlink()
    if isinstance(content, bytes):
        (run / file).write_bytes(content)
    else:
        make_special(run / file, content)
    refuse(capsys, tmp_path, lambda: report.main([str(run), "--csv", str(tmp_path / "t.csv")]), run / file)


OUTPUT_PROBLEMS = ("missing_folder", "directory", "fifo", "char_device")


@pytest.mark.parametrize("flag", ("--csv", "--json", "--md", "--plot"))
@pytest.mark.parametrize("problem", OUTPUT_PROBLEMS)
def test_report_refuses_an_output_no_file_can_replace(flag, problem, tmp_path, capsys):
    run = fake_run(tmp_path / "run")
    target = tmp_path / "nope" / "out.png" if problem == "missing_folder" else tmp_path / "out.png"
    if problem != "missing_folder":
        make_special(target, problem)
    refuse(capsys, tmp_path, lambda: report.main([str(run), flag, str(target)]), flag, target)
    assert problem == "missing_folder" or not target.is_file()  # the special file is still what it was


def test_report_refuses_an_unknown_plot_format(tmp_path, capsys):
    run = fake_run(tmp_path / "run")
    line = refuse(capsys, tmp_path, lambda: report.main([str(run), "--plot", str(tmp_path / "p.xyz")]), "--plot")
    assert "xyz" in line and "png" in line


def test_report_on_a_full_disk_is_one_line_and_leaves_no_file(tmp_path, capsys, monkeypatch):
    run = fake_run(tmp_path / "run")

    def full(fd):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(os, "fsync", full)
    assert report.main([str(run), "--csv", str(tmp_path / "t.csv")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "No space left" in err[0], err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["run"]  # no table, no temporary file


def test_report_reads_a_good_run_with_every_output(tmp_path, capsys):
    run = fake_run(tmp_path / "run")
    outs = {flag: tmp_path / f"out.{ext}" for flag, ext in (("--csv", "csv"), ("--json", "json"), ("--md", "md"),
                                                            ("--plot", "svg"))}
    assert report.main([str(run), *[x for flag, path in outs.items() for x in (flag, str(path))]]) == 0
    assert all(path.stat().st_size > 0 for path in outs.values())
    assert "0.3000" in capsys.readouterr().out


# --- the command line ------------------------------------------------------------------------------
def _python(*args, timeout=60):
    return subprocess.run([sys.executable, *args], cwd=ROOT, capture_output=True, text=True, timeout=timeout)


def test_python_m_cli_is_the_zscrgan_command():
    typo = _python("-m", "zscrgan.cli", "train", "--no_such_flag")
    assert typo.returncode == 2
    lines = typo.stderr.strip().splitlines()
    assert len(lines) == 1 and "--no_such_flag" in lines[0] and "zscrgan train --help" in lines[0], lines
    bare = _python("-m", "zscrgan.cli")
    assert bare.returncode == 2 and "usage: zscrgan COMMAND" in bare.stderr
    assert _python("-m", "zscrgan", "--version").stdout.startswith("zscrgan ")


@pytest.mark.parametrize("argv,named", [
    (["report", "--no_such_flag", "x"], "--no_such_flag"),
    (["study", "s.yaml", "--num_cpus", "two"], "--num_cpus"),
    (["convert", "wikipedia", "src", "--out", "o", "--split_seed", "x"], "--split_seed"),
    (["inspect"], "FOLDER"),
    (["train", "--rounds"], "--rounds"),
])
def test_a_usage_mistake_is_one_line_pointing_to_help(argv, named, tmp_path, capsys):
    with pytest.raises(SystemExit) as stopped:
        cli_main(argv)
    assert stopped.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and named in err[0] and "--help" in err[0], err


TRAIN_FLAG_CASES = {
    "rounds_5000_digits": (["--rounds", BIG], "rounds"),
    "seeds_negative": (["--seeds", "-1"], "--seeds"),
    "seeds_repeated": (["--seeds", "0", "0"], "--seeds"),
    "seeds_beyond_limit": (["--seeds", str(MAX_INT + 1)], "--seeds"),
    "seeds_20_digits": (["--seeds", "9" * 20], "--seeds"),
    "name_outside_runs": (["--name", "../../x"], "--name"),
    "name_absolute": (["--name", "/tmp/x"], "--name"),
    "dataset_a_path": (["--dataset", "../x"], "--dataset"),
    "resume_with_missing_config": (["--resume", "{tmp}/run", "--config", "{tmp}/missing.yaml"], "--config"),
    "evaluate_with_config": (["--evaluate", "{tmp}/run", "--config", "{tmp}/garbage.yaml"], "--config"),
    "config_garbage": (["--config", "{tmp}/garbage.yaml"], "garbage.yaml"),
    "config_5000_digits": (["--config", "{tmp}/big.yaml"], "big.yaml"),
}


@pytest.mark.parametrize("case", sorted(TRAIN_FLAG_CASES))
def test_train_refuses_before_anything_starts(case, tmp_path, capsys, monkeypatch):
    flags, named = TRAIN_FLAG_CASES[case]
    monkeypatch.chdir(tmp_path)  # a default run folder would go to ./runs
    fake_run(tmp_path / "run")
    (tmp_path / "garbage.yaml").write_bytes(b"\x00garbage: [")
    (tmp_path / "big.yaml").write_text(f"seed: {BIG}\n")
    argv = ["train", *[f.format(tmp=tmp_path) for f in flags], "--data_root", str(tmp_path / "datasets")]
    refuse(capsys, tmp_path, lambda: cli_main(argv), named)


def _small_dataset(folder: Path) -> Path:
    folder.mkdir(parents=True)
    vecs = lambda n, d: [np.full(d, 0.5, np.float32) for _ in range(n)]  # noqa: E731
    files = {"image_embed_dict.pkl": {c: vecs(3, 6) for c in (1, 2, 3)},
             "txt_embed_dict.pkl": {c: vecs(2, 5) for c in (1, 2, 3)}, "trainids.pkl": [1, 2], "testids.pkl": [3]}
    for name, obj in files.items():
        (folder / name).write_bytes(pickle.dumps(obj, protocol=2))
    return folder


@pytest.fixture
def tensorflow_loaded():
    """TensorFlow imported before a case's clock starts (its import alone takes seconds)."""
    import zscrgan.run  # noqa: F401


@pytest.mark.slow
def test_a_batch_beyond_the_memory_here_is_refused_before_training(tmp_path, capsys, tensorflow_loaded):
    _small_dataset(tmp_path / "datasets" / "SMALL")
    argv = ["train", "--dataset", "SMALL", "--data_root", str(tmp_path / "datasets"), "--output_dir",
            str(tmp_path / "run"), "--results_root", str(tmp_path / "res"), "--batch_size", "4000000",
            "--e_step_iters", "1", "--m_step_iters", "1", "--critic_steps", "1"]
    line = refuse(capsys, tmp_path, lambda: cli_main(argv), "batch_size", "GiB")
    assert not (tmp_path / "run").exists()
    assert line


# --- study: flags and study files, all refused before Ray starts -------------------------------------------
GOOD_STUDY = {"datasets": ["DEMO"], "seeds": [0], "rounds": 1}
STUDY_FILE_CASES = {
    "time_budget_inf": ({"time_budget": float("inf")}, "time_budget"),
    "time_budget_nan": ({"time_budget": float("nan")}, "time_budget"),
    "paper_list": ({"paper": [1, 2]}, "paper"),
    "paper_string": ({"paper": "slides"}, "paper"),
    "paper_figures_list": ({"paper": {"released": {"DEMO": [1]}}}, "paper"),
    "paper_figure_text": ({"paper": {"released": {"DEMO": {"prec": "x"}}}}, "paper"),
    "seeds_beyond_limit": ({"seeds": [99999999999]}, "seeds"),
    "seeds_negative": ({"seeds": [-1]}, "seeds"),
    "rounds_beyond_limit": ({"rounds": 99999999999}, "rounds"),
    "protocol_list": ({"protocol": ["released"]}, "protocol"),
    "search_bound_1e300": ({"protocol": "validated", "search": {"mm_reg_coeff": ["uniform", 0.0, 1.0e300]}},
                           "mm_reg_coeff"),
    "search_loguniform_from_0": ({"protocol": "validated", "search": {"mm_reg_coeff": ["loguniform", 0.0, 1.0]}},
                                 "mm_reg_coeff"),
    "search_int_beyond_limit": ({"protocol": "validated", "search": {"rounds": ["int", 1, 2**40]}}, "rounds"),
}


def _write_study(path: Path, changes: dict) -> Path:
    path.write_text(yaml.safe_dump({**GOOD_STUDY, **changes}))
    return path


@pytest.mark.parametrize("case", sorted(STUDY_FILE_CASES) + ["seeds_5000_digits", "rounds_5000_digits"])
def test_study_refuses_a_bad_study_file(case, tmp_path, capsys):
    if case in STUDY_FILE_CASES:
        changes, named = STUDY_FILE_CASES[case]
        path = _write_study(tmp_path / "s.yaml", changes)
    else:
        key = case.split("_")[0]
        path, named = tmp_path / "s.yaml", "s.yaml"
        path.write_text(yaml.safe_dump({k: v for k, v in GOOD_STUDY.items() if k != key}) + f"{key}: [{BIG}]\n")
    refuse(capsys, tmp_path, lambda: study.main([str(path), "--output_dir", str(tmp_path / "out"),
                                                 "--data_root", str(tmp_path / "datasets")]), path, named)


def _gpus_here() -> int:
    return study._visible_gpus()


STUDY_FLAG_CASES = {
    "num_cpus_negative": (["--num_cpus", "-1"], "--num_cpus"),
    "num_cpus_zero": (["--num_cpus", "0"], "--num_cpus"),
    "max_concurrent_zero": (["--max_concurrent", "0"], "--max_concurrent"),
    "cpus_per_trial_beyond_machine": (["--cpus_per_trial", str(os.cpu_count() + 1)], "--cpus_per_trial"),
    "cpus_per_trial_beyond_num_cpus": (["--num_cpus", "1", "--cpus_per_trial", "2"], "--cpus_per_trial"),
    "cpus_per_trial_zero": (["--cpus_per_trial", "0"], "--cpus_per_trial"),
    "gpus_per_trial_beyond_machine": (["--gpus_per_trial", str(_gpus_here() + 1)], "--gpus_per_trial"),
    "output_dir_a_file": (["--output_dir", "{tmp}/afile"], "--output_dir"),
}


@pytest.mark.parametrize("case", sorted(STUDY_FLAG_CASES))
def test_study_refuses_resources_and_folders_it_cannot_have(case, tmp_path, capsys):
    flags, named = STUDY_FLAG_CASES[case]
    path = _write_study(tmp_path / "s.yaml", {})
    (tmp_path / "afile").write_text("the user's file\n")
    flags = [f.format(tmp=tmp_path) for f in flags]
    if "--output_dir" not in flags:
        flags += ["--output_dir", str(tmp_path / "out")]
    refuse(capsys, tmp_path, lambda: study.main([str(path), *flags, "--data_root", str(tmp_path / "datasets")]),
           named)


@pytest.mark.parametrize("flag,key", [("cpus_per_trial", "CPU"), ("gpus_per_trial", "GPU")])
def test_study_refuses_per_trial_resources_beyond_a_cluster(flag, key, monkeypatch):
    ray = pytest.importorskip("ray", reason="the study extra (Ray) is not installed")
    monkeypatch.setattr(ray, "cluster_resources", lambda: {"CPU": 8.0, "GPU": 1.0})
    args = study.build_parser().parse_args(["s.yaml", "--address", "ray://head:10001", f"--{flag}", "9"])
    with pytest.raises(study.UserError, match=f"--{flag} 9: the cluster at ray://head:10001 has"):
        study._check_cluster(args)
    setattr(args, flag, 1)
    study._check_cluster(args)  # what the cluster has is accepted


@pytest.mark.parametrize("payload", ("fifo", "directory", "not_json", "list"))
def test_study_status_never_blocks_on_a_trial_folder(payload, tmp_path):
    run = tmp_path / "trial"
    run.mkdir()
    if payload in ("fifo", "directory"):
        make_special(run / "summary.json", payload)
        make_special(run / study.ERROR_FILE, payload)
    else:
        (run / "summary.json").write_text("{" if payload == "not_json" else "[1]")
    faulthandler.dump_traceback_later(60, exit=True, file=sys.__stderr__)
    try:
        status, _detail = study.trial_status(run)
    finally:
        faulthandler.cancel_dump_traceback_later()
    assert status == ("failed" if payload in ("fifo", "directory") else "not started")


# --- dataset pickles: crashes, hangs and huge allocations, refused before loading -------------------------
def _nested_tuple_key(depth=200000) -> bytes:
    """Protocol 2: {((...(),...),): 1}, the key a tuple nested `depth` deep."""
    return b"\x80\x02}" + b")" + b"\x85" * depth + b"K\x01s."


def _nested_tuple_in_frozenset(depth=200000) -> bytes:
    """Protocol 4: frozenset({((...),)}) built by the FROZENSET opcode (no global needed)."""
    return b"\x80\x04(" + b")" + b"\x85" * depth + b"\x91."


def _nested_tuple_in_set(depth=200000) -> bytes:
    """Protocol 4: a set holding a deeply nested tuple, built by EMPTY_SET and ADDITEMS."""
    return b"\x80\x04\x8f(" + b")" + b"\x85" * depth + b"\x90."


def _memo_bomb_floats() -> bytes:
    return pickle.dumps({1: [[0.5] * 1000] * 200000, 2: [], 3: []}, protocol=2)  # one list, 200000 references


def _memo_bomb_arrays() -> bytes:
    """A class of one million references to one 6000-d float64 array: np.stack would allocate 48 GB."""
    return pickle.dumps({c: [np.zeros(6000)] * 1000000 for c in (1,)}, protocol=2)


PICKLE_PAYLOADS = {"nested_tuple_key": _nested_tuple_key, "nested_tuple_in_frozenset": _nested_tuple_in_frozenset,
                   "nested_tuple_in_set": _nested_tuple_in_set, "memo_bomb_floats": _memo_bomb_floats,
                   "memo_bomb_arrays": _memo_bomb_arrays}


@pytest.mark.parametrize("payload", sorted(PICKLE_PAYLOADS))
def test_inspect_refuses_a_hostile_pickle_in_its_own_process(payload, tmp_path):
    folder = _small_dataset(tmp_path / "BAD")
    (folder / "image_embed_dict.pkl").write_bytes(PICKLE_PAYLOADS[payload]())
    before = tree_digest(tmp_path)
    done = _python("-m", "zscrgan.data", "inspect", str(folder), timeout=SECONDS)
    lines = done.stderr.strip().splitlines()
    assert done.returncode == 2, (done.returncode, lines[-3:])  # a crash would be -11
    assert len(lines) == 1 and "image_embed_dict.pkl" in lines[0] and "refusing" in lines[0], lines
    assert tree_digest(tmp_path) == before


@pytest.mark.parametrize("payload", sorted(PICKLE_PAYLOADS))
def test_train_refuses_a_hostile_pickle(payload, tmp_path, capsys, tensorflow_loaded):
    folder = _small_dataset(tmp_path / "datasets" / "BAD")
    (folder / "trainids.pkl").write_bytes(PICKLE_PAYLOADS[payload]())
    refuse(capsys, tmp_path, lambda: cli_main([
        "train", "--dataset", "BAD", "--data_root", str(tmp_path / "datasets"), "--output_dir", str(tmp_path / "run"),
        "--results_root", str(tmp_path / "res")]), "trainids.pkl")


# --- convert: hostile source files -------------------------------------------------------------------------
def _wiki_release(folder: Path, huge: bool = False) -> Path:
    """A tiny SVCL Wikipedia release: 6 categories, 12 train and 6 test items."""
    folder.mkdir(parents=True)
    rng = np.random.default_rng(0)
    mat = {"I_tr": rng.random((12, 6)), "I_te": rng.random((6, 6)), "T_tr": rng.random((12, 3)),
           "T_te": rng.random((6, 3))}
    if huge:
        mat["I_tr"][0, 0] = 1e300
    scipy.io.savemat(folder / "raw_features.mat", mat)
    for name, n in (("trainset_txt_img_cat.list", 12), ("testset_txt_img_cat.list", 6)):
        (folder / name).write_text("".join(f"t{i}\ti{i}\t{i % 6 + 1}\n" for i in range(n)))
    return folder


def _gazsl_release(folder: Path, labels) -> Path:
    """A tiny GAZSL CUB folder up to its label files (the features are never reached)."""
    folder.mkdir(parents=True)
    scipy.io.savemat(folder / "train_test_split_easy.mat", {"train_cid": np.array([[1, 2]]), "test_cid": np.array([[3]])})
    scipy.io.savemat(folder / "CUB_Porter_7551D_TFIDF_new.mat", {"PredicateMatrix": np.ones((3, 4))})
    (folder / "labels_train.pkl").write_bytes(labels if isinstance(labels, bytes) else pickle.dumps(labels, protocol=2))
    return folder


def _shared_levels(depth=60):
    x = [1]
    for _ in range(depth):
        x = [x, x]
    return x


CONVERT_CASES = {
    "gazsl_labels_ragged": (lambda t: _gazsl_release(t / "src", [[0, 1], [1]]), ["gazsl"], [], "labels_train.pkl"),
    "gazsl_labels_nested_bomb": (lambda t: _gazsl_release(t / "src", _shared_levels()), ["gazsl"], [],
                                 "labels_train.pkl"),
    "gazsl_labels_text": (lambda t: _gazsl_release(t / "src", ["a", "b"]), ["gazsl"], [], "labels_train.pkl"),
    "gazsl_tfidf_fifo": (lambda t: _fifo_in(t, "CUB_Porter_7551D_TFIDF_new.mat"), ["gazsl"], [], "a FIFO"),
    "wiki_category_huge": (lambda t: _edit_list(_wiki_release(t / "src"), "9" * 30), ["wikipedia"], [], "category"),
    "wiki_category_5000_digits": (lambda t: _edit_list(_wiki_release(t / "src"), BIG), ["wikipedia"], [], "line 1"),
    "wiki_split_seed_negative": (lambda t: _wiki_release(t / "src"), ["wikipedia"], ["--split_seed", "-1"],
                                 "--split_seed"),
    "wiki_mat_fifo": (lambda t: _replace(_wiki_release(t / "src") / "raw_features.mat", "fifo"), ["wikipedia"], [],
                      "a FIFO"),
    "wiki_mat_directory": (lambda t: _replace(_wiki_release(t / "src") / "raw_features.mat", "directory"),
                           ["wikipedia"], [], "a directory"),
    "wiki_list_fifo": (lambda t: _replace(_wiki_release(t / "src") / "trainset_txt_img_cat.list", "fifo"),
                       ["wikipedia"], [], "a FIFO"),
    "wiki_values_1e300": (lambda t: _wiki_release(t / "src", huge=True), ["wikipedia"], [], "infinite"),
}


def _fifo_in(tmp_path, name):
    folder = _gazsl_release(tmp_path / "src", [0, 1])
    _replace(folder / name, "fifo")


def _replace(path: Path, kind: str) -> None:
    path.unlink()
    make_special(path, kind)


def _edit_list(folder: Path, category: str) -> None:
    path = folder / "trainset_txt_img_cat.list"
    lines = path.read_text().splitlines(keepends=True)
    path.write_text(f"t0\ti0\t{category}\n" + "".join(lines[1:]))


@pytest.mark.parametrize("case", sorted(CONVERT_CASES))
def test_convert_refuses_a_hostile_source(case, tmp_path, capsys):
    make, source, flags, named = CONVERT_CASES[case]
    make(tmp_path)
    line = refuse(capsys, tmp_path, lambda: data_main(["convert", *source, str(tmp_path / "src"),
                                                       "--out", str(tmp_path / "out"), *flags]), named)
    assert "no such file" not in line  # a FIFO or folder is called what it is


def test_convert_of_the_tiny_release_works(tmp_path, capsys):
    _wiki_release(tmp_path / "src")
    assert data_main(["convert", "wikipedia", str(tmp_path / "src"), "--out", str(tmp_path / "out")]) == 0
    assert (tmp_path / "out" / "meta.json").is_file()


@pytest.mark.slow
def test_a_study_whose_trial_fails_does_not_exit_0(tmp_path, capsys, monkeypatch, tensorflow_loaded):
    """The dataset folder exists (so the study starts) but a pickle is corrupt, so the trial fails in
    run_trial; the study says so and exits 1. Trials run in this process, one after another, where
    Ray would run them in its workers (test_study covers Ray itself)."""
    def inline_grid(grid, folder, args):
        for t in study.pending(grid, folder):
            spec = study._trial_spec(grid, args, t.dataset, variant=t.variant, seed=t.seed, overrides=t.overrides,
                                     run_dir=t.run_dir)
            with pytest.raises(Exception):  # as Ray would catch it and mark the trial failed
                study.run_trial({"trial": spec})

    monkeypatch.setattr(study, "_start_ray", lambda args: False)
    monkeypatch.setattr(study, "run_grid", inline_grid)
    folder = _small_dataset(tmp_path / "datasets" / "BROKEN")
    (folder / "image_embed_dict.pkl").write_bytes(b"\x80\x02truncated")
    path = _write_study(tmp_path / "s.yaml", {"datasets": ["BROKEN"]})
    rc = study.main([str(path), "--output_dir", str(tmp_path / "out"), "--data_root", str(tmp_path / "datasets")])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 1 and len(err) == 1 and "1 trial(s) failed" in err[0], err
    error = (tmp_path / "out" / "BROKEN" / "released" / "seed0" / study.ERROR_FILE).read_text()
    assert "image_embed_dict.pkl" in error and "not a readable pickle" in error
    assert study.main([str(path), "--output_dir", str(tmp_path / "out"), "--data_root", str(tmp_path / "datasets"),
                       "--report_only"]) == 0  # tables only: nothing ran that could fail
