"""The same seed gives byte-identical losses, metrics and retrieval files on the CPU, whatever else runs
on the cores: two short runs of main.py, the second beside a busy neighbour, with 2048-d images, 85-d
texts and the released text encoder width (products far larger than the demo's)."""

import os

import pytest
import yaml

from benchmarks import determinism

# Short rounds with 2048-d images, a text size that is no multiple of a vector width (85, as in real
# attribute data) and the released text encoder width; narrower generator and critic keep it short.
CONFIG = {
    "gf_dim": 512, "df_dim": 256, "embed_dim": 1024, "z_dim": 64, "e_step_iters": 6, "m_step_iters": 6,
    "demo": {"n_classes": 50, "n_seen": 40, "images_per_class": 12, "texts_per_class": 2,
             "image_dim": 2048, "text_dim": 85},
}
ROUNDS = 2


@pytest.mark.slow
def test_a_seed_gives_the_same_run_alone_and_beside_a_busy_neighbour(tmp_path):
    config = tmp_path / "sizes.yaml"
    config.write_text(yaml.safe_dump(CONFIG))
    runs = [tmp_path / "alone", tmp_path / "busy"]
    for run_dir, busy in zip(runs, (0, os.cpu_count())):
        determinism.train(run_dir, tmp_path / "datasets", str(config), ROUNDS, [], busy)
    assert (runs[0] / "metrics.jsonl").read_text().count("\n") == ROUNDS
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
