"""A refused `--resume`, `retrieve` or `diagnose` of a damaged run folder is one line, exit status 2,
within seconds, and leaves every file of the folder byte-identical.

One small finished run is made once; each case copies it, damages one thing, and runs the command
in-process. The damages form families (what is put in place of a file x which file), generated below.
"""

import os
import shutil
import threading

import pytest

from helpers import tree_digest
from main import main as train_main

RUN_FLAGS = ["--rounds", "2", "--e_step_iters", "2", "--m_step_iters", "2", "--gf_dim", "16", "--df_dim", "16",
             "--embed_dim", "8", "--z_dim", "4", "--demo.n_classes", "12", "--demo.n_seen", "8",
             "--demo.images_per_class", "20", "--demo.image_dim", "24", "--demo.text_dim", "12"]


@pytest.fixture(scope="module")
def finished(tmp_path_factory):
    root = tmp_path_factory.mktemp("damaged")
    assert train_main(["--data_root", str(root / "datasets"), "--results_root", str(root / "res"),
                       "--output_dir", str(root / "run"), *RUN_FLAGS]) == 0
    return root


def _fifo(path):
    path.unlink()
    os.mkfifo(path)


def _garbage(path):
    path.write_bytes(b"\x00\xff garbage \x80")


def _truncate(path):
    path.write_bytes(path.read_bytes()[: max(1, path.stat().st_size // 3)])


def _empty(path):
    path.write_bytes(b"")


def _directory(path):
    path.unlink()
    path.mkdir()


DAMAGES = {"fifo": _fifo, "garbage": _garbage, "truncated": _truncate, "empty": _empty, "directory": _directory}
FILES = ["config.yaml", "metrics.jsonl", "provenance.jsonl", "input_scaling.json",
         "checkpoints/last/state.json", "checkpoints/last/ckpt.index"]
# Damages a resume can tolerate: the torn or empty log of rounds is rebuilt from the checkpoint.
TOLERATED = {("metrics.jsonl", "truncated"), ("metrics.jsonl", "empty"), ("metrics.jsonl", "garbage"),
             ("provenance.jsonl", "truncated"), ("provenance.jsonl", "empty"), ("provenance.jsonl", "garbage"),
             ("input_scaling.json", "garbage"), ("input_scaling.json", "truncated"), ("input_scaling.json", "empty")}


def _within_seconds(fn, seconds=60):
    """fn() in a thread; fails the test if it has not returned in time (a read blocked on a FIFO)."""
    out = {}
    worker = threading.Thread(target=lambda: out.setdefault("rc", fn()), daemon=True)
    worker.start()
    worker.join(seconds)
    assert not worker.is_alive(), "the command hung"
    return out["rc"]


@pytest.mark.parametrize("name,damage", [(n, d) for n in FILES for d in DAMAGES if (n, d) not in TOLERATED])
def test_a_refused_resume_changes_nothing(finished, tmp_path, capsys, name, damage):
    run = tmp_path / "run"
    shutil.copytree(finished / "run", run)
    DAMAGES[damage](run / name)
    before = tree_digest(run)
    rc = _within_seconds(lambda: train_main(["--resume", str(run), "--data_root", str(finished / "datasets"),
                                             "--results_root", str(tmp_path / "res"), "--rounds", "3"]))
    err = capsys.readouterr().err.strip()
    assert rc == 2, err
    assert len(err.splitlines()) == 1 and err.startswith("error: ")
    assert tree_digest(run) == before


@pytest.mark.parametrize("content", ["[]", "- 1\n- 2\n", "dataset: 3\n", "dataset: null\n", "dataset: [a]\n", ""])
def test_a_config_that_is_not_a_runs_is_refused_by_every_command(finished, tmp_path, capsys, content):
    from zscrgan.diagnose import main as diagnose_main

    run = tmp_path / "run"
    shutil.copytree(finished / "run", run)
    (run / "config.yaml").write_text(content)
    before = tree_digest(run)
    for command in (lambda: train_main(["--resume", str(run), "--data_root", str(finished / "datasets")]),
                    lambda: diagnose_main([str(run), "--data_root", str(finished / "datasets")])):
        assert command() == 2
        err = capsys.readouterr().err.strip()
        assert len(err.splitlines()) == 1 and "config.yaml" in err
    assert tree_digest(run) == before


def test_checkpoints_that_is_a_file_is_refused(finished, tmp_path, capsys):
    run = tmp_path / "run"
    shutil.copytree(finished / "run", run)
    shutil.rmtree(run / "checkpoints")
    (run / "checkpoints").write_text("not a folder")
    before = tree_digest(run)
    assert train_main(["--resume", str(run), "--data_root", str(finished / "datasets")]) == 2
    assert "not a folder" in capsys.readouterr().err
    assert tree_digest(run) == before


@pytest.mark.parametrize("state", ['{"round": "two"}', '{"round": 2, "best": {"score": "high"}}',
                                   '{"round": 2, "best": [], "last_test": {}}', "[1, 2]", "[" * 100000])
def test_a_malformed_saved_state_is_refused(finished, tmp_path, capsys, state):
    run = tmp_path / "run"
    shutil.copytree(finished / "run", run)
    (run / "checkpoints" / "last" / "state.json").write_text(state)
    before = tree_digest(run)
    assert train_main(["--resume", str(run), "--data_root", str(finished / "datasets"), "--rounds", "3"]) == 2
    assert len(capsys.readouterr().err.strip().splitlines()) == 1
    assert tree_digest(run) == before


def test_a_second_resume_of_a_running_folder_is_refused(finished, tmp_path, capsys):
    """While one process holds the run folder (a run in progress), a resume is one line and changes nothing."""
    import subprocess
    import sys
    from pathlib import Path

    run = tmp_path / "run"
    shutil.copytree(finished / "run", run)
    holder = subprocess.Popen([sys.executable, "-c", "import time; from zscrgan.provenance import lock_run_dir; "
                               f"lock_run_dir({str(run)!r}); print('locked', flush=True); time.sleep(60)"],
                              stdout=subprocess.PIPE, text=True, cwd=Path(__file__).resolve().parents[1])
    try:
        assert holder.stdout.readline().strip() == "locked"
        before = tree_digest(run)
        assert train_main(["--resume", str(run), "--data_root", str(finished / "datasets"), "--rounds", "3"]) == 2
        assert "another process is training this run folder" in capsys.readouterr().err
        assert tree_digest(run) == before
    finally:
        holder.kill()
        holder.wait()


@pytest.mark.parametrize("what", ["missing", "truncated", "garbage_state", "scaling_garbage"])
def test_retrieve_of_a_damaged_run_is_one_line(finished, tmp_path, capsys, what):
    import numpy as np

    from zscrgan.retrieve import main as retrieve_main

    run = tmp_path / "run"
    shutil.copytree(finished / "run", run)
    best = run / "checkpoints" / "best"
    if what == "missing":
        (best / "ckpt.index").unlink()
    elif what == "truncated":
        data = next(best.glob("ckpt.data-*"))
        _truncate(data)
    elif what == "garbage_state":
        _garbage(best / "state.json")
    else:
        (run / "input_scaling.json").write_text('{"input_scaling": "sideways"}')
    np.save(tmp_path / "q.npy", np.ones((2, 12), np.float32))
    np.save(tmp_path / "g.npy", np.ones((3, 24), np.float32))
    before = tree_digest(run)
    rc = retrieve_main([str(run), "--queries", str(tmp_path / "q.npy"), "--gallery", str(tmp_path / "g.npy"),
                        "--out", str(tmp_path / "out.npz")])
    err = capsys.readouterr().err.strip()
    assert rc == 2 and len(err.splitlines()) == 1, err
    assert tree_digest(run) == before and not (tmp_path / "out.npz").exists()


@pytest.mark.parametrize("where", ["queries", "gallery", "out_device", "out_folder"])
def test_retrieve_never_reads_a_fifo_nor_writes_through_a_device(finished, tmp_path, capsys, where):
    import numpy as np

    from zscrgan.retrieve import main as retrieve_main

    np.save(tmp_path / "q.npy", np.ones((2, 12), np.float32))
    np.save(tmp_path / "g.npy", np.ones((3, 24), np.float32))
    args = {"queries": tmp_path / "q.npy", "gallery": tmp_path / "g.npy", "out": tmp_path / "out.npz"}
    if where in ("queries", "gallery"):
        os.mkfifo(tmp_path / "fifo.npy")
        args[where] = tmp_path / "fifo.npy"
    elif where == "out_device":
        os.mknod(tmp_path / "device", 0o600 | __import__("stat").S_IFCHR, os.makedev(1, 3))
        args["out"] = tmp_path / "device"
    else:
        (tmp_path / "folder").mkdir()
        args["out"] = tmp_path / "folder"
    before = tree_digest(finished / "run")
    rc = _within_seconds(lambda: retrieve_main([str(finished / "run"), "--queries", str(args["queries"]),
                                                "--gallery", str(args["gallery"]), "--out", str(args["out"])]))
    err = capsys.readouterr().err.strip()
    assert rc == 2 and len(err.splitlines()) == 1, err
    assert tree_digest(finished / "run") == before


def test_retrieve_refuses_more_draws_than_the_limit_at_once(finished, tmp_path, capsys):
    import numpy as np

    from zscrgan.retrieve import main as retrieve_main

    np.save(tmp_path / "q.npy", np.ones((2, 12), np.float32))
    np.save(tmp_path / "g.npy", np.ones((3, 24), np.float32))
    rc = _within_seconds(lambda: retrieve_main([str(finished / "run"), "--queries", str(tmp_path / "q.npy"),
                                                "--gallery", str(tmp_path / "g.npy"), "--out",
                                                str(tmp_path / "o.npz"), "--eval_draws", "1000000000"]), 20)
    assert rc == 2 and "--eval_draws: must be at most" in capsys.readouterr().err
