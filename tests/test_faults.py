"""Kills at every write point of a round: the resumed run ends with the uninterrupted run's metrics,
every round logged once, and no debris left behind.

A kill is injected in-process: the write operation that publishes a file or folder (a rename) or a
metrics line raises an exception that nothing in the project catches, so the operation and everything
after it in the round never happen, as with SIGKILL at that moment. A metrics line may also be torn
half-way. What a real kill adds (temporary files and staging folders left in place) is planted and
must be cleaned up by the resumed run.
"""

import json
import os
import shutil

from pathlib import Path

import pytest

import zscrgan.run
from zscrgan.config import load_config
from zscrgan.run import Run

SMALL = {"e_step_iters": 2, "m_step_iters": 10, "gf_dim": 32, "df_dim": 32, "embed_dim": 16, "z_dim": 8}
ROUNDS = 3


class Killed(BaseException):
    """The injected kill: a BaseException, so no `except Exception` in the project can absorb it."""


def _records(run_dir):
    lines = (run_dir / "metrics.jsonl").read_text().splitlines()
    return [{k: v for k, v in json.loads(line).items() if k not in ("seconds", "retrieval_file")} for line in lines]


def _run(tmp_path, name):
    cfg = load_config("DEMO", overrides=SMALL)
    return Run(cfg, tmp_path / name, tmp_path / "datasets", tmp_path / name / "results", log=lambda *a: None)


class WritePoints:
    """Counts the run's publishing writes (renames, metrics lines); kills at the n-th, if asked."""

    def __init__(self, monkeypatch, kill_at=None, tear=False):
        self.count, self.kill_at, self.tear = 0, kill_at, tear
        real_replace, real_rename, real_append = os.replace, os.rename, zscrgan.run.append_line

        def point():
            self.count += 1
            return self.count == self.kill_at

        def replace(*args, **kwargs):
            if point():
                raise Killed
            return real_replace(*args, **kwargs)

        def rename(*args, **kwargs):
            if point():
                raise Killed
            return real_rename(*args, **kwargs)

        def append(path, line):
            if point():
                if self.tear:  # the line is half on disk when the process dies
                    with open(path, "a") as f:
                        f.write(line[:len(line) // 2])
                raise Killed
            return real_append(path, line)

        monkeypatch.setattr(os, "replace", replace)
        monkeypatch.setattr(os, "rename", rename)
        monkeypatch.setattr(zscrgan.run, "append_line", append)


def _train_killed(run, monkeypatch, **kill):
    """Train `run`, killed at the write point `kill` names (none: not killed); returns (write points
    reached, whether it was killed)."""
    with monkeypatch.context() as m:
        points = WritePoints(m, **kill)
        try:
            run.train()
        except Killed:
            return points.count, True
    return points.count, False


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    """The uninterrupted run's records, and the round (after the first) that is a new best."""
    tmp = tmp_path_factory.mktemp("ref")
    run = _run(tmp, "ref")
    run.cfg.rounds = ROUNDS
    run.start()
    run.train()
    recs = _records(tmp / "ref")
    files = sorted(p.name for p in (tmp / "ref" / "results" / "DEMO_res").iterdir())
    assert len(json.loads((tmp / "ref" / "summary.json").read_text())["released_copies"]) == len(files)
    return recs, files, tmp


@pytest.mark.slow
def test_a_kill_at_any_write_point_of_a_round_resumes_to_the_same_metrics(reference, tmp_path):
    ref_records, ref_files, ref_tmp = reference
    # Kill in a round with every kind of write: a retrieval file, both checkpoints, a metrics line.
    kill_round = next(r["round"] for r in ref_records if r["new_best"] and r["round"] > 1)
    shutil.copytree(ref_tmp / "datasets", tmp_path / "datasets")
    run = _run(tmp_path, "run")
    out = run.run_dir
    run.cfg.rounds = kill_round - 1
    run.start()
    run.train()
    snapshot = tmp_path / "snapshot"
    shutil.copytree(out, snapshot)

    def round_from_snapshot(monkeypatch, **kill):
        shutil.rmtree(out)
        shutil.copytree(snapshot, out)
        assert run.resume()
        run.cfg.rounds = kill_round
        return _train_killed(run, monkeypatch, **kill)

    with pytest.MonkeyPatch.context() as mp:
        n_points, killed = round_from_snapshot(mp)
    # rows file, retrieval file, best (2 renames), metrics, last (2 renames), summary
    assert not killed and n_points >= 8

    cases = [{"kill_at": n} for n in range(1, n_points + 1)] + [{"kill_at": 5, "tear": True}]
    for kill in cases:
        with pytest.MonkeyPatch.context() as mp:
            count, killed = round_from_snapshot(mp, **kill)
        assert killed and count == kill["kill_at"]
        # What a real kill leaves besides: a staging folder and a temporary file.
        (out / "checkpoints" / ".last.new-0123456789ab").mkdir(exist_ok=True)
        (out / ".summary.json.tmp-0123456789ab").write_text("{")
        assert run.resume()
        run.cfg.rounds = ROUNDS
        run.train()
        assert _records(out) == ref_records, kill
        assert sorted(p.name for p in (out / "results" / "DEMO_res").iterdir()) == ref_files
        leftovers = [p.name for d in (out, out / "checkpoints") for p in d.iterdir() if p.name.startswith(".")]
        assert leftovers == [], kill
        summary = json.loads((out / "summary.json").read_text())
        assert summary["rounds_done"] == ROUNDS and summary["stopped"] == f"completed {ROUNDS} rounds"
        assert sorted(Path(p).name for p in summary["released_copies"]) == ref_files, kill


@pytest.mark.slow
def test_a_run_killed_in_its_first_round_resumes_to_the_same_metrics(reference, tmp_path):
    ref_records, ref_files, ref_tmp = reference
    shutil.copytree(ref_tmp / "datasets", tmp_path / "datasets")
    out = tmp_path / "run"

    def first_round(monkeypatch, **kill):
        shutil.rmtree(out, ignore_errors=True)
        run = _run(tmp_path, "run")
        run.cfg.rounds = 1
        run.start()
        return _train_killed(run, monkeypatch, **kill)

    with pytest.MonkeyPatch.context() as mp:
        n_points, killed = first_round(mp)
    # The rows file, the retrieval file and the best checkpoint (round 1 is a new best), a metrics line,
    # the last checkpoint (a first one: one rename), the summary.
    assert ref_records[0]["new_best"] and not killed and n_points == 6
    # Kills before the first checkpoint leave nothing to restore (the run starts again from round 0);
    # kills after it resume from it.
    for kill in [{"kill_at": n} for n in range(1, n_points + 1)] + [{"kill_at": 4, "tear": True}]:
        with pytest.MonkeyPatch.context() as mp:
            count, killed = first_round(mp, **kill)
        assert killed and count == kill["kill_at"]
        run = _run(tmp_path, "run")  # a new process, as `--resume` makes
        assert run.resume()
        run.cfg.rounds = ROUNDS
        run.start()
        run.train()
        assert _records(out) == ref_records, kill
        assert sorted(p.name for p in (out / "results" / "DEMO_res").iterdir()) == ref_files, kill
        summary = json.loads((out / "summary.json").read_text())
        assert sorted(Path(p).name for p in summary["released_copies"]) == ref_files, kill
        starts = [json.loads(line)["event"] for line in (out / "provenance.jsonl").read_text().splitlines()]
        assert starts == ["start", "resume"], kill


def test_resume_needs_a_run_folder(tmp_path):
    (tmp_path / "datasets").mkdir()
    assert not _run(tmp_path, "empty").resume()


def test_a_full_disk_while_logging_leaves_no_half_line_and_one_error(reference, tmp_path, monkeypatch, capsys):
    import errno

    from main import main

    _, _, ref_tmp = reference
    real_write = os.write

    def write(fd, data):
        if b'"round"' in bytes(data):  # the metrics line: half of it lands, then the disk is full
            real_write(fd, bytes(data)[: len(data) // 2])
            raise OSError(errno.ENOSPC, "No space left on device")
        return real_write(fd, data)

    monkeypatch.setattr(os, "write", write)
    out = tmp_path / "run"
    flags = [f"--{k}={v}" for k, v in SMALL.items()]
    rc = main(["--data_root", str(ref_tmp / "datasets"), "--results_root", str(tmp_path / "res"),
               "--output_dir", str(out), "--rounds", "2", *flags])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and err == [f"error: {out / 'metrics.jsonl'}: No space left on device"]
    assert (out / "metrics.jsonl").read_bytes() == b""  # cut back to its length before the line


def test_a_full_disk_while_checkpointing_is_one_line_without_tensorflows_decorations(reference, tmp_path,
                                                                                  monkeypatch, capsys):
    import tensorflow as tf

    from main import main

    _, _, ref_tmp = reference

    def write(self, prefix, options=None):  # as TensorFlow reports a full disk in its SaveV2 op
        raise tf.errors.ResourceExhaustedError(None, None, (
            "{{function_node __wrapped__SaveV2_dtypes_12_device_/job:localhost/replica:0/task:0/device:CPU:0}} "
            f"{prefix}_temp/part-00000-of-00001.data-00000-of-00001.tempstate5; No space left on device [Op:SaveV2]"))

    monkeypatch.setattr(tf.train.Checkpoint, "write", write)
    out = tmp_path / "run"
    rc = main(["--data_root", str(ref_tmp / "datasets"), "--results_root", str(tmp_path / "res"),
               "--output_dir", str(out), "--rounds", "1", *[f"--{k}={v}" for k, v in SMALL.items()]])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and len(err) == 1, err
    assert "cannot write the checkpoint" in err[0] and err[0].endswith("No space left on device"), err
    assert "function_node" not in err[0] and "[Op:" not in err[0]
    assert not list((out / "checkpoints").glob(".*"))  # no staging folder left


def test_tensorflow_messages_lose_their_decorations_and_keep_their_end():
    from zscrgan.errors import MAX_SHOWN, tf_message

    assert tf_message("{{function_node __wrapped__SaveV2_dtypes_3}} /a/b; No space left on device [Op:SaveV2] name: x") \
        == "/a/b; No space left on device"
    long = tf_message("{{function_node f}} /" + "d/" * 300 + "ckpt; No space left on device [Op:SaveV2]")
    assert len(long) == MAX_SHOWN and long.startswith("...") and long.endswith("; No space left on device")
    assert tf_message("plain\nmessage") == "plain message"


def test_a_failing_clean_up_does_not_hide_the_error_that_stopped_a_write(tmp_path, monkeypatch):
    import errno

    from zscrgan.atomic import write_text_atomic

    def replace(*args):
        raise OSError(errno.ENOSPC, "No space left on device")

    def unlink(self, missing_ok=False):
        raise PermissionError(errno.EROFS, "Read-only file system")

    monkeypatch.setattr(os, "replace", replace)
    monkeypatch.setattr(Path, "unlink", unlink)
    with pytest.raises(OSError) as err:
        write_text_atomic(tmp_path / "summary.json", "{}")
    assert err.value.errno == errno.ENOSPC


def test_ctrl_c_mid_e_step_drops_the_round_and_resume_repeats_it_exactly(reference, tmp_path, monkeypatch):
    ref_records, ref_files, ref_tmp = reference
    shutil.copytree(ref_tmp / "datasets", tmp_path / "datasets")
    # One E-step iteration per compiled call (the reference ran each phase as one call: same numbers).
    monkeypatch.setattr(zscrgan.methods.zscrgan, "CHUNK_STEPS", 1)
    run = _run(tmp_path, "run")
    real = zscrgan.run.StopFlag.between_chunks

    def between_chunks(self, phase, total):
        ask = real(self, phase, total)

        def stop(done):
            if run.round == 1 and phase == "E-step":  # Ctrl-C pressed during round 2's E-step
                self.requested, self.cause = True, "Ctrl-C"
            return ask(done)
        return stop

    monkeypatch.setattr(zscrgan.run.StopFlag, "between_chunks", between_chunks)
    run.cfg.rounds = ROUNDS
    run.start()
    summary = run.train()
    assert summary["stopped"] == ("interrupted (Ctrl-C) in round 2, the E-step after 1 of 2 iterations; "
                                  "that round was not kept")
    assert summary["rounds_done"] == 1 and len(_records(run.run_dir)) == 1
    monkeypatch.setattr(zscrgan.run.StopFlag, "between_chunks", real)
    assert run.resume()
    run.train()
    assert _records(run.run_dir) == ref_records


def test_reports_read_a_log_whose_last_line_a_crash_tore(tmp_path):
    from zscrgan.report import read_run

    (tmp_path / "summary.json").write_text('{"protocol": "released", "rounds_done": 2}')
    (tmp_path / "config.yaml").write_text("seed: 3\n")
    test = '"test": {"prec": 0.1, "map": 0.1, "top1": 0.1}'
    (tmp_path / "metrics.jsonl").write_text(f'{{"round": 1, {test}}}\n{{"round": 2, {test}}}\n{{"round": 3, "los')
    assert [r["round"] for r in read_run(tmp_path)["records"]] == [1, 2]
