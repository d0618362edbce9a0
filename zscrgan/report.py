"""Summarise finished runs: a table per run, mean and standard deviation across runs (seeds), and a plot.

    python -m zscrgan.report runs/CUB/<run-a> runs/CUB/<run-b> runs/CUB/<run-c> [--plot curves.png]
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import tempfile
from pathlib import Path

from zscrgan.atomic import read_lines, write_text_atomic
from zscrgan.errors import UserError

# (label, where in summary.json) of the figures compared across runs.
FIGURES = (
    ("released: best unseen Prec over rounds", ("best_test_prec_any_round",)),
    ("selected round: unseen Prec", ("test_at_selected_round", "prec")),
    ("selected round: unseen mAP", ("test_at_selected_round", "map")),
    ("selected round: unseen Top-1", ("test_at_selected_round", "top1")),
    ("last round: unseen Prec", ("test_at_last_round", "prec")),
)


def read_run(run_dir: Path) -> dict:
    """A run's summary.json, config.yaml seed and metrics.jsonl records; one clear error if unreadable."""
    import yaml

    run_dir = Path(run_dir)
    try:
        summary = json.loads((run_dir / "summary.json").read_text(encoding="utf-8"))
        cfg = yaml.safe_load((run_dir / "config.yaml").read_text(encoding="utf-8"))
        lines = read_lines(run_dir / "metrics.jsonl")  # without a line torn by a crash
        records = [json.loads(line) for line in lines if line.strip()]
    except FileNotFoundError as e:
        raise UserError(f"{e.filename}: not found; is {run_dir} a finished run folder of main.py?") from None
    except (json.JSONDecodeError, yaml.YAMLError) as e:
        raise UserError(f"{run_dir}: a run file is not valid JSON/YAML ({e})") from None
    return {"dir": str(run_dir), "seed": cfg.get("seed"), "summary": summary, "records": records}


def _figure(summary: dict, path: tuple) -> float | None:
    value = summary
    for key in path:
        if not isinstance(value, dict) or key not in value:
            return None
        value = value[key]
    return value


def mean_std(values: list[float]) -> tuple[float, float]:
    """Mean and sample standard deviation (n - 1); the deviation is 0 for a single value."""
    n = len(values)
    mean = sum(values) / n
    if n < 2:
        return mean, 0.0
    return mean, math.sqrt(sum((v - mean) ** 2 for v in values) / (n - 1))


def aggregate(runs: list[dict]) -> dict:
    """For each figure of FIGURES present in every run: its values, mean and standard deviation."""
    out = {}
    for label, path in FIGURES:
        values = [_figure(r["summary"], path) for r in runs]
        if values and all(v is not None for v in values):
            mean, std = mean_std(values)
            out[label] = {"values": values, "mean": mean, "std": std}
    return out


def format_report(runs: list[dict]) -> str:
    lines = []
    for r in runs:
        s = r["summary"]
        t = s.get("test_at_selected_round") or {}
        lines.append(f"{r['dir']}: seed {r['seed']}, {s['rounds_done']} rounds, protocol {s['protocol']}, "
                     f"selected round {s['selected_round']}, unseen Prec {t.get('prec', float('nan')):.4f}")
    lines.append(f"across {len(runs)} run(s), mean +- std (sample):")
    for label, stats in aggregate(runs).items():
        lines.append(f"  {label}: {stats['mean']:.4f} +- {stats['std']:.4f}")
    return "\n".join(lines)


def plot(runs: list[dict], path: Path) -> None:
    """Prec per round of every run (unseen solid, validation dashed), saved atomically as an image."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4))
    for r in runs:
        rounds = [rec["round"] for rec in r["records"]]
        line, = ax.plot(rounds, [rec["test"]["prec"] for rec in r["records"]], label=f"seed {r['seed']} unseen")
        if r["records"] and "val" in r["records"][0]:
            ax.plot(rounds, [rec["val"]["prec"] for rec in r["records"]], "--", color=line.get_color(),
                    label=f"seed {r['seed']} validation")
    chance = runs[0]["summary"].get("chance_prec")
    if chance is not None:
        ax.axhline(chance, color="grey", lw=0.8, label="chance")
    k = runs[0]["summary"].get("top_k", 50)
    ax.set_xlabel("round")
    ax.set_ylabel(f"Prec@{k}")
    ax.legend(fontsize=7)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, suffix=path.suffix)
    os.close(fd)
    try:
        fig.savefig(tmp)
        os.replace(tmp, path)
    finally:
        plt.close(fig)
        Path(tmp).unlink(missing_ok=True)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m zscrgan.report", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("runs", nargs="+", type=Path, help="run folders written by main.py")
    p.add_argument("--plot", type=Path, help="also save Prec per round of every run to this image file")
    p.add_argument("--json", type=Path, help="also save the aggregate as JSON to this file")
    args = p.parse_args(argv)
    try:
        runs = [read_run(d) for d in args.runs]
    except UserError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(format_report(runs))
    if args.json:
        write_text_atomic(args.json, json.dumps({"runs": [r["dir"] for r in runs], "aggregate": aggregate(runs)},
                                                indent=1))
    if args.plot:
        plot(runs, args.plot)
        print(f"plot: {args.plot}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
