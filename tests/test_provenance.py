"""Run identity and provenance: run folders never collide, retrieval files are never overwritten, a run
records what made it, and a resume appends to that history and refuses an architecture change."""

import hashlib
import importlib.metadata
import json
import multiprocessing
from pathlib import Path

import pytest

from main import main
from zscrgan import provenance
from zscrgan.provenance import RECORDED_PACKAGES, architecture_change, claim_run_dir

FAST = ["--e_step_iters", "10", "--m_step_iters", "10", "--rounds", "2"]


def common(tmp_path):
    return ["--data_root", str(tmp_path / "datasets"), "--results_root", str(tmp_path / "results")]


def _claim(args):
    folder, barrier = args
    barrier.wait()
    return str(claim_run_dir(Path(folder), numbered=True))


def test_claims_at_the_same_moment_get_different_folders(tmp_path):
    with multiprocessing.Manager() as manager:
        barrier = manager.Barrier(4)
        with multiprocessing.Pool(4) as pool:
            got = pool.map(_claim, [(tmp_path / "run", barrier)] * 4)
    assert sorted(got) == sorted(str(tmp_path / n) for n in ("run", "run-2", "run-3", "run-4"))


def test_named_folder_holding_a_run_is_refused_and_an_empty_one_accepted(tmp_path):
    (tmp_path / "empty").mkdir()
    assert claim_run_dir(tmp_path / "empty", numbered=False) == tmp_path / "empty"
    from zscrgan.errors import UserError
    (tmp_path / "empty" / "provenance.jsonl").write_text('{"event": "start"}\n')
    with pytest.raises(UserError, match="already holds a run; continue it with --resume"):
        claim_run_dir(tmp_path / "empty", numbered=False)


def test_a_claim_killed_before_its_first_record_is_reused_and_other_files_are_refused(tmp_path):
    """A start killed between the claim and its history record leaves an empty history file: the folder
    can be named again. A folder of the user's own files is never taken for a run folder."""
    import subprocess
    import sys

    from zscrgan.errors import UserError
    folder = tmp_path / "killed"
    folder.mkdir()
    (folder / "provenance.jsonl").write_text("")
    assert claim_run_dir(folder, numbered=False) == folder
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "notes.txt").write_text("my notes")
    with pytest.raises(UserError, match="holds other files \\(notes.txt\\), not a run"):
        claim_run_dir(mine, numbered=False)
    assert sorted(p.name for p in mine.iterdir()) == ["notes.txt"]
    # A claim that another live process holds is not taken over.
    other = tmp_path / "other"
    other.mkdir()
    (other / "provenance.jsonl").write_text("")
    holder = subprocess.Popen([sys.executable, "-c", "import sys, time; from zscrgan.provenance import lock_run_dir; "
                               f"lock_run_dir({str(other)!r}); print('locked', flush=True); time.sleep(60)"],
                              stdout=subprocess.PIPE, text=True, cwd=Path(__file__).resolve().parents[1])
    try:
        assert holder.stdout.readline().strip() == "locked"
        with pytest.raises(UserError, match="another process is training this run folder"):
            claim_run_dir(other, numbered=False)
    finally:
        holder.kill()
        holder.wait()


@pytest.fixture(scope="module")
def twin_runs(tmp_path_factory):
    """Two runs of the same config and seed whose default folder names fall in the same second."""
    tmp = tmp_path_factory.mktemp("twins")
    patch = pytest.MonkeyPatch()
    patch.chdir(tmp)  # default run folders go under runs/ in the current folder
    patch.setattr(provenance.time, "strftime", lambda fmt, *a: "20260101-000000")
    try:
        codes = [main([*common(tmp), *FAST, "--mm_reg_coeff", "1.0"]) for _ in range(2)]
    finally:
        patch.undo()
    return codes, tmp


@pytest.mark.slow
def test_same_moment_same_seed_two_folders_and_two_sets_of_retrieval_files(twin_runs, capsys):
    codes, tmp = twin_runs
    assert codes == [0, 0]
    folders = sorted((tmp / "runs" / "DEMO").iterdir())
    assert [f.name for f in folders] == [folders[0].name, folders[0].name + "-2"]
    assert folders[0].name.startswith("20260101-000000-cfg") and folders[0].name.endswith("-seed0")
    summaries = [json.loads((f / "summary.json").read_text()) for f in folders]
    for folder, summary in zip(folders, summaries):
        written = sorted(f"retrieved/{p.name}" for p in (folder / "retrieved").glob("acc*.pkl"))
        assert written and sorted(summary["retrieval_files"]) == written
        assert [json.loads(line)["round"] for line in (folder / "metrics.jsonl").read_text().splitlines()] == [1, 2]
    # The same seed gives the same scores: the released copies are the first run's, never replaced.
    first, second = summaries
    assert [Path(p).name for p in first["retrieval_files"]] == [Path(p).name for p in second["retrieval_files"]]
    released = sorted((tmp / "results" / "DEMO_res").glob("acc*.pkl"))
    # Relative to the run folder, as every path in a run's files.
    assert sorted(str((folders[0] / p).resolve()) for p in first["released_copies"]) == [str(p.resolve()) for p in released]
    assert second["released_copies"] == [] and not any(Path(p).is_absolute() for p in first["released_copies"])
    for p in released:
        assert p.read_bytes() == (folders[0] / "retrieved" / p.name).read_bytes()


def test_output_dir_of_an_existing_run_without_resume_is_refused(twin_runs, capsys):
    _, tmp = twin_runs
    run = sorted((tmp / "runs" / "DEMO").iterdir())[0]
    before = (run / "metrics.jsonl").read_text()
    assert main([*common(tmp), *FAST, "--output_dir", str(run)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [f"error: {run}: already holds a run; continue it with --resume {run}, or choose another --output_dir"]
    assert (run / "metrics.jsonl").read_text() == before


def test_provenance_records_the_start_and_a_resume_appends(twin_runs, capsys):
    _, tmp = twin_runs
    run = sorted((tmp / "runs" / "DEMO").iterdir())[0]
    assert main([*common(tmp), "--resume", str(run), "--rounds", "3"]) == 0
    history = [json.loads(line) for line in (run / "provenance.jsonl").read_text().splitlines()]
    assert [h["event"] for h in history] == ["start", "resume"]
    start, resume = history
    assert start["overrides"] == {"e_step_iters": 10, "m_step_iters": 10, "rounds": 2, "mm_reg_coeff": 1.0}
    assert "--mm_reg_coeff" in start["command"] and start["config"]["mm_reg_coeff"] == 1.0
    assert resume["overrides"] == {"rounds": 3} and resume["config"]["rounds"] == 3
    import numpy
    import tensorflow
    assert set(start["versions"]) == {"zscrgan", "python", *RECORDED_PACKAGES}
    assert start["versions"]["tensorflow"] == tensorflow.__version__ and start["versions"]["numpy"] == numpy.__version__
    assert start["versions"]["scikit-learn"] == importlib.metadata.version("scikit-learn")
    assert start["device"].startswith(("CPU", "GPU"))
    data = tmp / "datasets" / "DEMO"
    assert start["dataset"]["sha256"]["trainids.pkl"] == hashlib.sha256((data / "trainids.pkl").read_bytes()).hexdigest()
    assert set(start["dataset"]["sha256"]) >= {"image_embed_dict.pkl", "txt_embed_dict.pkl", "testids.pkl"}


def test_resume_that_changes_an_architecture_key_stops_with_one_line(twin_runs, capsys):
    _, tmp = twin_runs
    run = sorted((tmp / "runs" / "DEMO").iterdir())[1]
    assert main([*common(tmp), "--resume", str(run), "--z_dim", "16"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: --z_dim: a resume cannot change an architecture key")
    assert len((run / "provenance.jsonl").read_text().splitlines()) == 1


def test_architecture_change_names_the_first_differing_key():
    saved = {"gf_dim": 8, "z_dim": 4, "demo": {"seed": 0}, "rounds": 3}
    assert architecture_change(saved, {**saved, "rounds": 9}) is None
    assert architecture_change(saved, {**saved, "demo": {"seed": 1}}) == "demo"
    assert architecture_change(saved, {**saved, "gf_dim": 16}) == "gf_dim"
    assert architecture_change(saved, {**saved, "method": "ridge"}) == "method"
    assert architecture_change({**saved, "method": "gazsl", "gazsl": {"hidden": 8}},
                               {**saved, "method": "gazsl", "gazsl": {"hidden": 9}}, ("gazsl.hidden",)) == "gazsl.hidden"
