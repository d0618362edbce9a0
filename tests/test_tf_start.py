"""TensorFlow's native start-up noise is filtered out of stderr; every other line is kept. A training
run's output: one line per round with progress and time left, and nothing from TensorFlow's start-up."""

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from zscrgan.tf_start import NOISE, filtered_stderr

ROOT = Path(__file__).resolve().parents[1]


def test_filtered_stderr_drops_noise_and_keeps_the_rest(capfd):
    with filtered_stderr():
        os.write(2, b"E0000 00:00:1.0  1 cuda_platform.cc:52] failed call to cuInit: INTERNAL: CUDA error\n")
        os.write(2, b"a real problem\n")
        os.write(2, b"I0000 00:00:1.0  1 port.cc:153] oneDNN custom operations are on. You may see ...\n")
        os.write(2, b"and its second line\n")
    assert capfd.readouterr().err == "a real problem\nand its second line\n"


@pytest.mark.slow
def test_a_training_run_prints_progress_and_no_tensorflow_start_up_lines(tmp_path):
    p = subprocess.run(
        [sys.executable, str(ROOT / "main.py"), "--data_root", str(tmp_path), "--results_root", str(tmp_path / "res"),
         "--output_dir", str(tmp_path / "run"), "--rounds", "2", "--e_step_iters", "2", "--m_step_iters", "2",
         "--demo.n_classes", "8", "--demo.n_seen", "5", "--gf_dim", "16", "--df_dim", "16", "--embed_dim", "8",
         "--z_dim", "4"],
        capture_output=True, text=True, timeout=300)
    assert p.returncode == 0, p.stderr
    rounds = [line for line in p.stdout.splitlines() if line.startswith("round ")]
    assert len(rounds) == 2
    for k, line in enumerate(rounds, 1):
        assert re.fullmatch(rf"round +{k}/2 \| L_D .* \| [0-9.]+s, 0:\d\d elapsed, ~(0:\d\d|\?) left.*", line)
    # Round 1 compiles: no estimate from it, and the line says so.
    assert "~? left (estimated from the next round on: this one compiled)" in rounds[0]
    assert "~0:00 left" in rounds[-1]
    noisy = [line for line in p.stderr.splitlines() if NOISE.search(line) or line.startswith(("I0000", "E0000"))]
    assert noisy == []


CHOICE = ("from zscrgan.tf_start import start_tensorflow, onednn_on; import sys; "
          "start_tensorflow(sys.argv[1] == 'true'); print(onednn_on())")


@pytest.mark.slow
@pytest.mark.parametrize("deterministic, environment, expected", [
    ("true", None, "False"),    # the deterministic default: Eigen kernels
    ("false", None, "True"),    # TensorFlow's own default on x86: oneDNN
    ("true", "1", "True"),      # the environment wins
    ("false", "0", "False"),
])
def test_the_cpu_kernels_follow_deterministic_unless_the_environment_chooses(deterministic, environment, expected):
    env = {k: v for k, v in os.environ.items() if k != "TF_ENABLE_ONEDNN_OPTS"}
    if environment is not None:
        env["TF_ENABLE_ONEDNN_OPTS"] = environment
    p = subprocess.run([sys.executable, "-c", CHOICE, deterministic], capture_output=True, text=True, env=env,
                       cwd=ROOT, timeout=300)
    assert p.returncode == 0, p.stderr
    assert p.stdout.strip().splitlines()[-1] == expected


@pytest.mark.slow
def test_a_deterministic_run_on_onednn_kernels_says_its_numbers_may_not_repeat(tmp_path):
    tiny = ["--rounds", "1", "--e_step_iters", "1", "--m_step_iters", "1", "--demo.n_classes", "8", "--demo.n_seen",
            "5", "--gf_dim", "16", "--df_dim", "16", "--embed_dim", "8", "--z_dim", "4"]
    outputs = {}
    for name, env_value, extra in (("onednn", "1", []), ("nondeterministic", None, ["--deterministic", "false"])):
        env = {k: v for k, v in os.environ.items() if k != "TF_ENABLE_ONEDNN_OPTS"}
        if env_value:
            env["TF_ENABLE_ONEDNN_OPTS"] = env_value
        p = subprocess.run([sys.executable, str(ROOT / "main.py"), "--data_root", str(tmp_path), "--results_root",
                            str(tmp_path / "res"), "--output_dir", str(tmp_path / name), *tiny, *extra],
                           capture_output=True, text=True, timeout=300, env=env)
        assert p.returncode == 0, p.stderr
        outputs[name] = p.stdout
    assert "oneDNN kernels" in outputs["onednn"] and "note: deterministic: true, but TensorFlow computes with its " \
        "oneDNN kernels (TF_ENABLE_ONEDNN_OPTS=1 in the environment)" in outputs["onednn"]
    assert "oneDNN kernels" in outputs["nondeterministic"] and "note:" not in outputs["nondeterministic"]
