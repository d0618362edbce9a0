"""The same seed gives byte-identical losses, metrics and retrieval files on the CPU, whatever else runs
on the cores (docs/determinism.md).

Two checks at the released network widths with 2048-d images: the training steps repeated in a fresh
process from one state beside a busy neighbour (`benchmarks/determinism.py --steps`), and two short runs
of main.py, the second beside a busy neighbour, compared file by file. docs/determinism.md says what
they measured before the fix and how often a check like them catches it."""

import os
import subprocess
import sys
from pathlib import Path

import pytest
import tensorflow as tf
import yaml

from benchmarks import determinism

# A text size that is no multiple of a vector width (85, as in real attribute data), 2048-d images and the
# released widths; few classes and images keep it short.
SIZES = {"gf_dim": 2048, "df_dim": 1024, "embed_dim": 1024, "z_dim": 256}
DEMO = {"n_classes": 50, "n_seen": 40, "images_per_class": 12, "texts_per_class": 2, "image_dim": 2048, "text_dim": 85}
ROUNDS = 2
ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.slow
def test_repeated_steps_from_one_state_report_the_same_losses_beside_a_busy_neighbour(tmp_path):
    config = tmp_path / "sizes.yaml"
    config.write_text(yaml.safe_dump({**SIZES, "demo": DEMO}))
    # A fresh process: its kernels are chosen as a run chooses them (this one's TensorFlow is started).
    done = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "determinism.py"), "--config", str(config),
                           "--steps", "6", "--iters", "20"], capture_output=True, text=True, cwd=ROOT)
    assert done.returncode == 0 and done.stdout.strip().startswith("identical: 6 repeats"), \
        done.stdout + done.stderr[-2000:]


@pytest.mark.slow
def test_a_seed_gives_the_same_run_alone_and_beside_a_busy_neighbour(tmp_path):
    config = tmp_path / "sizes.yaml"
    config.write_text(yaml.safe_dump({**SIZES, "e_step_iters": 6, "m_step_iters": 6, "demo": DEMO}))
    runs = [tmp_path / "alone", tmp_path / "busy"]
    for run_dir, busy in zip(runs, (0, os.cpu_count())):
        determinism.train(run_dir, tmp_path / "datasets", str(config), ROUNDS, [], busy)
    assert (runs[0] / "metrics.jsonl").read_text().count("\n") == ROUNDS
    assert "Eigen kernels (oneDNN off)" in (runs[0] / "provenance.jsonl").read_text()  # the deterministic default
    assert determinism.first_difference(*runs) is None


def test_the_comparison_names_the_first_round_and_quantity_that_differ(tmp_path):
    lines = ['{"round": 1, "losses": {"L_D": -1.5}, "test": {"prec": 0.25}, "seconds": {"train": 1.0}}',
             '{"round": 2, "losses": {"L_D": -2.5}, "test": {"prec": 0.5}, "seconds": {"train": 1.0}}']
    for name, second in (("a", lines[1]), ("b", lines[1].replace("0.5", "0.5000001")), ("c", lines[1])):
        (tmp_path / name).mkdir()
        # Timings differ between identical runs and are not compared.
        first = lines[0].replace("1.0", "9.0") if name == "c" else lines[0]
        (tmp_path / name / "metrics.jsonl").write_text(first + "\n" + second + "\n")
    assert determinism.first_difference(tmp_path / "a", tmp_path / "c") is None
    assert determinism.first_difference(tmp_path / "a", tmp_path / "b") == \
        "round 2: test.prec differs: 0.5 (alone) vs 0.5000001 (busy neighbour)"


@pytest.mark.parametrize("deterministic", [True, False])
def test_deterministic_steps_write_no_variable_in_place_from_xla(deterministic):
    """Updates written in place into the variables' buffers (the XLA-compiled RMSProp update, or
    TensorFlow's RMSProp kernel) were the last timing-dependent piece at the released sizes: a
    deterministic run's compiled updates return new values that are assigned afterwards;
    `deterministic: false` keeps the in-place update."""
    from easydict import EasyDict

    from benchmarks.bench_speed import phase_inputs
    from zscrgan.config import load_config
    from zscrgan.device import xla_variable_writes
    from zscrgan.train import Trainer

    cfg = EasyDict(load_config("DEMO"), deterministic=deterministic)
    _, feats, _, (e_batch, m_batch) = phase_inputs(cfg, 1)
    trainer = Trainer(cfg, cfg.demo.image_dim, cfg.demo.text_dim)
    writes = {}
    for chunk, batch, totals in ((trainer._e_step_chunk, e_batch, tf.zeros([5])),
                                 (trainer._m_step_chunk, m_batch, tf.constant(0.0))):
        writes.update(xla_variable_writes(chunk.get_concrete_function(*feats, *batch, totals)))
    assert (writes == {}) == deterministic, writes


@pytest.mark.parametrize("argv, words", [(["--runs", "1"], "--runs must be at least 2"),
                                         (["--rounds", "0"], "--rounds must be at least 1"),
                                         (["--steps", "1"], "--steps must be at least 2")])
def test_the_check_refuses_bad_counts_in_one_line(argv, words, capsys):
    with pytest.raises(SystemExit) as exit_info:
        determinism.main(argv)
    assert exit_info.value.code == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith(f"error: {words}") and "\n" not in err, err
