"""SIGTERM (what Slurm, Kubernetes and `timeout` send) is handled as Ctrl-C is: the round in flight is
dropped, every file is complete, summary.json says so, the exit status is 143, and `--resume` ends
with the uninterrupted run's metrics. The signal is real (os.kill of this process); when it arrives
is fixed by the hooks below, so each test interrupts the same point of the same round every time."""

import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import yaml

import zscrgan.methods.zscrgan
import zscrgan.run
from main import main
from zscrgan.atomic import _DEBRIS

ROOT = Path(__file__).resolve().parents[1]
SMALL = ["--e_step_iters", "2", "--m_step_iters", "10", "--gf_dim", "32", "--df_dim", "32", "--embed_dim", "16",
         "--z_dim", "8"]
ROUNDS = 3


def _train(tmp, *extra):
    return main(["--data_root", str(tmp / "datasets"), "--results_root", str(tmp / "results"), *extra])


def _records(run_dir):
    lines = (run_dir / "metrics.jsonl").read_text().splitlines()
    return [{k: v for k, v in json.loads(line).items() if k not in ("seconds", "retrieval_file")} for line in lines]


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    """The uninterrupted run's records (one E-step iteration per compiled call, as the tests below)."""
    tmp = tmp_path_factory.mktemp("sigterm")
    with pytest.MonkeyPatch.context() as m:
        m.setattr(zscrgan.methods.zscrgan, "CHUNK_STEPS", 1)
        assert _train(tmp, "--output_dir", str(tmp / "ref"), "--rounds", str(ROUNDS), *SMALL) == 0
    return _records(tmp / "ref"), tmp


def _sigterm_and_wait(flag) -> None:
    """Send SIGTERM to this process from a phase's worker thread; wait until the main thread handled it."""
    os.kill(os.getpid(), signal.SIGTERM)
    deadline = time.monotonic() + 10
    while not flag.requested and time.monotonic() < deadline:
        time.sleep(0.01)


def _sigterm_in_e_step(monkeypatch, in_round: int) -> None:
    """SIGTERM after the first E-step iteration of round `in_round`."""
    real = zscrgan.run.StopFlag.between_chunks
    rounds_begun = []

    def between_chunks(self, phase, total):
        ask = real(self, phase, total)
        if phase == "E-step":
            rounds_begun.append(phase)

        def stop(done):
            if phase == "E-step" and len(rounds_begun) == in_round and not self.requested:
                _sigterm_and_wait(self)
            return ask(done)
        return stop

    monkeypatch.setattr(zscrgan.run.StopFlag, "between_chunks", between_chunks)


def _sigterm_after_round(monkeypatch, after: int) -> None:
    """SIGTERM once round `after` is written and checkpointed, before the next round begins."""
    real = zscrgan.run.save_checkpoint

    def save(checkpoint, folder, extra):
        real(checkpoint, folder, extra)
        if folder.name == "last" and extra["round"] == after:
            os.kill(os.getpid(), signal.SIGTERM)

    monkeypatch.setattr(zscrgan.run, "save_checkpoint", save)


@pytest.mark.parametrize("point, stopped, rounds_done", [
    ("round 1 E-step", "interrupted (SIGTERM) in round 1, the E-step after 1 of 2 iterations; that round was not kept", 0),
    pytest.param("round 2 E-step", "interrupted (SIGTERM) in round 2, the E-step after 1 of 2 iterations; "
                 "that round was not kept", 1, marks=pytest.mark.slow),
    pytest.param("after round 2", "interrupted (SIGTERM) after round 2", 2, marks=pytest.mark.slow),
])
def test_sigterm_stops_with_143_complete_files_and_resumes_to_the_same_metrics(
        reference, tmp_path, monkeypatch, capsys, point, stopped, rounds_done):
    ref_records, ref_tmp = reference
    out = tmp_path / "run"
    monkeypatch.setattr(zscrgan.methods.zscrgan, "CHUNK_STEPS", 1)
    with monkeypatch.context() as m:
        if point == "after round 2":
            _sigterm_after_round(m, 2)
        else:
            _sigterm_in_e_step(m, int(point.split()[1]))
        assert _train(ref_tmp, "--output_dir", str(out), "--rounds", str(ROUNDS), *SMALL) == 143
    assert signal.getsignal(signal.SIGTERM) is signal.SIG_DFL  # the command gave SIGTERM back as it found it
    assert f"stopped: {stopped}" in capsys.readouterr().out
    summary = json.loads((out / "summary.json").read_text())
    assert summary["stopped"] == stopped and summary["rounds_done"] == rounds_done
    # Every file complete: readable, one line per kept round, no temporary files or staging folders.
    yaml.safe_load((out / "config.yaml").read_text())
    if rounds_done:
        assert _records(out) == ref_records[:rounds_done]
        assert json.loads((out / "checkpoints" / "last" / "state.json").read_text())["round"] == rounds_done
    else:
        assert not (out / "metrics.jsonl").exists() and not (out / "checkpoints" / "last").exists()
    assert not [p for p in out.rglob("*") if _DEBRIS.fullmatch(p.name) or p.name.endswith(".old")]
    assert _train(ref_tmp, "--resume", str(out)) == 0
    assert _records(out) == ref_records


def test_sigterm_before_training_is_exit_status_143(tmp_path, monkeypatch, capsys):
    def start(*args, **kwargs):  # while the run is being set up (data loaded, folder claimed)
        os.kill(os.getpid(), signal.SIGTERM)

    monkeypatch.setattr(zscrgan.run.Run, "start", start)
    assert _train(tmp_path, "--output_dir", str(tmp_path / "run"), "--rounds", "1", *SMALL) == 143
    assert capsys.readouterr().err.strip() == "interrupted (SIGTERM)"


def test_stop_flag_off_the_main_thread_installs_no_handler():
    """A Ray Tune trial runs its run off the main thread, where signal handlers cannot be set."""
    before = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM)}
    seen = []

    def trial():
        with zscrgan.run.StopFlag() as flag:
            seen.append(flag.requested)

    worker = threading.Thread(target=trial)
    worker.start()
    worker.join()
    assert seen == [False] and {s: signal.getsignal(s) for s in before} == before


@pytest.mark.slow
def test_sigterm_from_outside_mid_run(tmp_path):
    """The command as a scheduler sees it: SIGTERM during training, exit status 143, summary written."""
    out = tmp_path / "run"
    proc = subprocess.Popen(
        [sys.executable, str(ROOT / "main.py"), "--data_root", str(tmp_path / "datasets"), "--results_root",
         str(tmp_path / "results"), "--output_dir", str(out), "--rounds", "1000"],
        stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, env=dict(os.environ, PYTHONUNBUFFERED="1"))
    for line in proc.stdout:
        if line.startswith("round "):
            break
    proc.send_signal(signal.SIGTERM)
    stdout, _ = proc.communicate(timeout=120)
    assert proc.returncode == 143
    summary = json.loads((out / "summary.json").read_text())
    assert summary["stopped"].startswith("interrupted (SIGTERM) ") and summary["rounds_done"] >= 1
    assert len(_records(out)) == summary["rounds_done"]
    assert "SIGTERM: stopping within seconds" in stdout
