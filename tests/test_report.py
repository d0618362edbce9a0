"""Run reports: per-run lines, groups by (dataset, config without the seed), mean and sample standard
deviation within a group only, CSV / markdown tables, plots, clear errors."""

import csv
import json
import math

import pytest
import yaml

from zscrgan.report import aggregate, group_runs, main, mean_std, read_run


def fake_run(folder, seed, precs, val=False, **config):
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
    (folder / "config.yaml").write_text(yaml.safe_dump({"dataset": "DEMO", "seed": seed, "rounds": 9, **config}))
    (folder / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    return folder


def test_mean_and_sample_std():
    assert mean_std([1.0, 2.0, 3.0]) == (2.0, 1.0)
    assert mean_std([0.4]) == (0.4, 0.0)


def test_aggregate_over_seeds(tmp_path):
    runs = [read_run(fake_run(tmp_path / f"s{k}", k, precs))
            for k, precs in enumerate([[0.2, 0.4, 0.3], [0.1, 0.5], [0.6, 0.2]])]
    agg = aggregate(runs)
    best = agg["best unseen round (released figure): unseen Prec"]
    assert best["values"] == [0.4, 0.5, 0.6]
    assert best["mean"] == pytest.approx(0.5) and best["std"] == pytest.approx(0.1)
    assert agg["best unseen round (released figure): unseen mAP"]["values"] == pytest.approx([0.5, 0.6, 0.7])
    last = agg["last round: unseen Prec"]
    assert last["values"] == [0.3, 0.5, 0.2]
    assert last["std"] == pytest.approx(math.sqrt(((0.3 - 1 / 3) ** 2 + (0.5 - 1 / 3) ** 2 + (0.2 - 1 / 3) ** 2) / 2))


def test_cli_prints_writes_json_and_plot(tmp_path, capsys):
    a = fake_run(tmp_path / "a", 0, [0.2, 0.3], val=True)
    b = fake_run(tmp_path / "b", 1, [0.25, 0.35], val=True)
    assert main([str(a), str(b), "--plot", str(tmp_path / "p.png"), "--json", str(tmp_path / "agg.json")]) == 0
    out = capsys.readouterr().out
    assert "DEMO [cfg" in out and "2 run(s), seeds [0, 1]" in out
    assert "best unseen round (released figure): unseen Prec 0.3250 +- 0.0354" in out
    assert (tmp_path / "p.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    groups = json.loads((tmp_path / "agg.json").read_text())
    assert len(groups) == 1 and groups[0]["runs"] == [str(a), str(b)]


def test_unfinished_run_folder_is_one_clear_error(tmp_path, capsys):
    (tmp_path / "half").mkdir()
    assert main([str(tmp_path / "half")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [f"error: {tmp_path / 'half'}: no finished run folder (with summary.json) in it"]


def test_groups_by_dataset_and_config_never_across(tmp_path, capsys):
    """A --seeds folder of two seeds, a run of another config and a run of another dataset: three groups."""
    seeds = tmp_path / "seeds"
    fake_run(seeds / "seed0", 0, [0.2, 0.4])
    fake_run(seeds / "seed1", 1, [0.3, 0.5])
    fake_run(tmp_path / "other_cfg", 0, [0.9], mm_reg_coeff=0.0)
    fake_run(tmp_path / "other_ds", 0, [0.1], dataset="CUB")
    runs = [read_run(p) for p in (seeds / "seed0", seeds / "seed1", tmp_path / "other_cfg", tmp_path / "other_ds")]
    groups = group_runs(runs)
    assert [(d, len(m)) for d, _, m in groups] == [("DEMO", 2), ("DEMO", 1), ("CUB", 1)]
    assert groups[1][1] == "mm_reg_coeff=0.0"
    args = [str(seeds), str(tmp_path / "other_cfg"), str(tmp_path / "other_ds"),
            "--csv", str(tmp_path / "t.csv"), "--md", str(tmp_path / "t.md")]
    assert main(args) == 0
    rows = list(csv.DictReader(open(tmp_path / "t.csv")))
    assert [(r["dataset"], r["finished"], r["released_prec_mean"], r["released_prec_std"]) for r in rows] == [
        ("DEMO", "2", "0.45", str(mean_std([0.4, 0.5])[1])), ("DEMO", "1", "0.9", ""), ("CUB", "1", "0.1", "")]
    md = (tmp_path / "t.md").read_text()
    assert "| DEMO | mm_reg_coeff=0.0 | 1/1 | 0.9000 | 1.0000 | 1.1000 |" in md  # no +- for a single run
    assert "0.4500 ± 0.0707" in md


def test_a_round_logged_twice_counts_once(tmp_path):
    run = fake_run(tmp_path / "r", 0, [0.2, 0.3])
    with open(run / "metrics.jsonl", "a") as f:  # round 2 again, as after a kill and a resume
        f.write(json.dumps({"round": 2, "test": {"prec": 0.25, "map": 0.3, "top1": 0.4}}) + "\n")
    assert [r["test"]["prec"] for r in read_run(run)["records"]] == [0.2, 0.25]
