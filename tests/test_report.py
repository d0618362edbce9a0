"""Run reports: per-run lines, mean and sample standard deviation across runs, plots, clear errors."""

import json
import math

import pytest
import yaml

from zscrgan.report import aggregate, main, mean_std, read_run


def fake_run(folder, seed, precs, val=False):
    folder.mkdir(parents=True)
    records = [{"round": i + 1, "test": {"prec": p, "map": p + 0.1, "top1": p + 0.2}} for i, p in enumerate(precs)]
    if val:
        for r in records:
            r["val"] = {"prec": 0.5, "map": 0.5, "top1": 0.5}
    best = max(records, key=lambda r: r["test"]["prec"])
    summary = {"protocol": "released", "rounds_done": len(precs), "selected_round": best["round"],
               "test_at_selected_round": best["test"], "test_at_last_round": records[-1]["test"],
               "best_test_prec_any_round": best["test"]["prec"], "chance_prec": 0.1, "top_k": 50}
    (folder / "summary.json").write_text(json.dumps(summary))
    (folder / "config.yaml").write_text(yaml.safe_dump({"seed": seed}))
    (folder / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    return folder


def test_mean_and_sample_std():
    assert mean_std([1.0, 2.0, 3.0]) == (2.0, 1.0)
    assert mean_std([0.4]) == (0.4, 0.0)


def test_aggregate_over_seeds(tmp_path):
    runs = [read_run(fake_run(tmp_path / f"s{k}", k, precs))
            for k, precs in enumerate([[0.2, 0.4, 0.3], [0.1, 0.5], [0.6, 0.2]])]
    agg = aggregate(runs)
    best = agg["released: best unseen Prec over rounds"]
    assert best["values"] == [0.4, 0.5, 0.6]
    assert best["mean"] == pytest.approx(0.5) and best["std"] == pytest.approx(0.1)
    last = agg["last round: unseen Prec"]
    assert last["values"] == [0.3, 0.5, 0.2]
    assert last["std"] == pytest.approx(math.sqrt(((0.3 - 1 / 3) ** 2 + (0.5 - 1 / 3) ** 2 + (0.2 - 1 / 3) ** 2) / 2))


def test_cli_prints_writes_json_and_plot(tmp_path, capsys):
    a = fake_run(tmp_path / "a", 0, [0.2, 0.3], val=True)
    b = fake_run(tmp_path / "b", 1, [0.25, 0.35], val=True)
    assert main([str(a), str(b), "--plot", str(tmp_path / "p.png"), "--json", str(tmp_path / "agg.json")]) == 0
    out = capsys.readouterr().out
    assert "across 2 run(s)" in out and "0.3250 +- 0.0354" in out
    assert (tmp_path / "p.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert json.loads((tmp_path / "agg.json").read_text())["runs"] == [str(a), str(b)]


def test_unfinished_run_folder_is_one_clear_error(tmp_path, capsys):
    (tmp_path / "half").mkdir()
    assert main([str(tmp_path / "half")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: ") and "summary.json: not found" in err[0]
