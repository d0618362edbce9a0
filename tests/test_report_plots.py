"""What the report and study plots draw: each dataset's chance line, the ridge reference, the validation
curve that selects the round under the validated protocol; and a study's trials labelled by variant."""

import matplotlib.axes
import pytest
import yaml

from test_report import fake_run
from zscrgan.report import group_runs, main, plot_curves, plot_ridge, read_run


@pytest.fixture
def drawn(monkeypatch):
    """Every horizontal line and curve the plots draw: [(kind, y or ys, label, linestyle)]."""
    calls = []
    real_axhline, real_plot = matplotlib.axes.Axes.axhline, matplotlib.axes.Axes.plot

    def axhline(self, y=0, *args, **kwargs):
        calls.append(("hline", y, kwargs.get("label"), kwargs.get("ls", "-")))
        return real_axhline(self, y, *args, **kwargs)

    def plot(self, *args, **kwargs):
        calls.append(("curve", list(args[1]), kwargs.get("label"), kwargs.get("ls", "-")))
        return real_plot(self, *args, **kwargs)

    monkeypatch.setattr(matplotlib.axes.Axes, "axhline", axhline)
    monkeypatch.setattr(matplotlib.axes.Axes, "plot", plot)
    return calls


def with_chance(folder, chance):
    import json

    summary = json.loads((folder / "summary.json").read_text())
    (folder / "summary.json").write_text(json.dumps({**summary, "chance_prec": chance}))
    return folder


def test_each_dataset_gets_its_own_chance_line(tmp_path, drawn):
    demo = with_chance(fake_run(tmp_path / "demo", 0, [0.2, 0.3]), 0.1)
    cub = with_chance(fake_run(tmp_path / "cub", 0, [0.05, 0.04], dataset="CUB"), 0.02)
    assert main([str(demo), str(cub), "--plot", str(tmp_path / "p.png"), "--data_root", str(tmp_path / "none")]) == 0
    lines = [(y, label) for kind, y, label, _ in drawn if kind == "hline"]
    assert lines == [(0.1, "chance (DEMO)"), (0.02, "chance (CUB)")]


def test_the_ridge_reference_and_the_validation_curve_are_drawn(tmp_path, drawn):
    runs = [read_run(fake_run(tmp_path / f"s{k}", k, [0.2, 0.3 + k / 10], val=True)) for k in range(2)]
    plot_curves([("released", runs)], tmp_path / "p.png", "t", ridge={"DEMO": 0.27})
    assert ("hline", 0.27, "ridge reference", "-") in drawn and ("hline", 0.1, "chance", "-") in drawn
    curves = {label: (ys, ls) for kind, ys, label, ls in drawn if kind == "curve"}
    assert curves["released (n=2)"] == (pytest.approx([0.2, 0.35]), "-")
    assert curves["released: validation classes (selects the round)"] == ([0.5, 0.5], ":")


def test_plot_ridge_needs_the_dataset_folder(tmp_path):
    runs = [read_run(fake_run(tmp_path / "r", 0, [0.2]))]
    assert plot_ridge(runs, tmp_path / "no_datasets") == {}


def test_a_studys_trials_are_labelled_by_their_variant(tmp_path):
    study = tmp_path / "study"
    study.mkdir()
    (study / "study.yaml").write_text(yaml.safe_dump({"datasets": ["DEMO"]}))
    runs = [read_run(fake_run(study / "DEMO" / variant / f"seed{seed}", seed, [0.2], **config))
            for variant, config in (("released", {}), ("without_R", {"mm_reg_coeff": 0.0})) for seed in (0, 1)]
    outside = read_run(fake_run(tmp_path / "mine" / "seed0", 0, [0.2], mm_reg_coeff=2.0))
    assert [label for _, label, _ in group_runs(runs + [outside])] == ["released", "without_R", "mm_reg_coeff=2.0"]
