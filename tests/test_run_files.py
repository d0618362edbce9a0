"""What a run's files and lines say: paths relative to the run folder, floats with the digits a float32
carries, no time estimate from the compiling first round, and one line for the released copies."""

import json
import re
from pathlib import Path

import numpy as np

from main import main
from zscrgan.run import float32_digits

FAST = ["--rounds", "2", "--e_step_iters", "2", "--m_step_iters", "2", "--gf_dim", "32", "--df_dim", "32",
        "--embed_dim", "16", "--z_dim", "8"]


def significant_digits(path: Path) -> list[int]:
    """The number of significant digits of every float written in a JSON (or JSON lines) file."""
    found = []

    def note(number: str) -> float:
        mantissa = re.split("[eE]", number.lstrip("-"))[0].replace(".", "").lstrip("0")
        found.append(len(mantissa))
        return float(number)

    text = path.read_text()
    for document in text.splitlines() if path.suffix == ".jsonl" else [text]:
        json.loads(document, parse_float=note)
    return found


def test_float32_digits_cuts_the_noise_and_keeps_equal_values_equal():
    assert float32_digits(0.5200000000000001) == 0.52 and float32_digits(0.52) == 0.52
    assert float32_digits({"a": [0.1 + 0.2, 3, None, "x"], "b": {"c": 1 / 3}}) == {"a": [0.3, 3, None, "x"],
                                                                                 "b": {"c": 0.33333334}}
    assert float32_digits(1e300) == 1e300  # beyond float32: as it is
    for x in np.random.default_rng(0).normal(size=200).tolist():
        assert np.float32(float32_digits(x)) == np.float32(x)  # the same float32


def test_run_files_use_paths_relative_to_the_run_folder_and_float32_digits(tmp_path, capsys):
    def train(name):
        out = tmp_path / name
        assert main(["--data_root", str(tmp_path / "datasets"), "--results_root", str(tmp_path / "results"),
                     "--output_dir", str(out), *FAST]) == 0
        return out, capsys.readouterr().out

    first, printed = train("a")
    rounds = [line for line in printed.splitlines() if line.startswith("round ")]
    assert "~? left (estimated from the next round on: this one compiled)" in rounds[0] and "~?" not in rounds[1]
    summary = json.loads((first / "summary.json").read_text())
    copies = summary["released_copies"]
    assert copies and printed.count("released layout:") == 1
    assert f"released layout: {len(copies)} retrieval file(s) copied to {tmp_path / 'results' / 'DEMO_res'}" in printed
    for path in copies + summary["retrieval_files"]:
        assert not Path(path).is_absolute() and (first / path).is_file()
    assert Path(summary["run_dir"]) == first.resolve()
    records = [json.loads(line) for line in (first / "metrics.jsonl").read_text().splitlines()]
    assert all((first / r["retrieval_file"]).is_file() for r in records if "retrieval_file" in r)
    for name in ("metrics.jsonl", "summary.json"):  # float64 noise would show as 16-17 digits
        digits = significant_digits(first / name)
        assert digits and max(digits) <= 9, name
    # The same seed again: the same file names, which are another run's now; one line says so.
    second, printed = train("b")
    assert printed.count("released layout:") == 1 and "note:" not in printed
    assert (f"released layout: 0 retrieval file(s) copied to {tmp_path / 'results' / 'DEMO_res'}; {len(copies)} "
            "not copied, as a file of the same name there is another run's and is kept") in printed
