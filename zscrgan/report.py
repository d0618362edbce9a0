"""Summarise finished runs: grouped by (dataset, configuration without the seed), mean and standard
deviation over the runs of a group, tables (CSV, markdown) and Prec@K curves.

    python -m zscrgan.report runs/CUB/<run-a> runs/CUB/<run-b> [--plot curves.png] [--csv t.csv] [--md t.md]
    python -m zscrgan.report runs/DEMO/<time>-<label>-seeds       # a --seeds folder
    python -m zscrgan.report runs/studies/demo                     # a study folder

Every figure comes from a run's metrics.jsonl: the released figure (the round with the best unseen
Prec@K), the selected round (summary.json's `selected_round`: the same under the released protocol,
the best validation round under the validated one) and the last round. Runs of different datasets or
configurations are never averaged together; +- is shown only for two or more runs.
"""

from __future__ import annotations

import argparse
import csv
import io
import json
import math
import os
import re
import sys
from pathlib import Path

from zscrgan.atomic import atomic_file, write_text_atomic
from zscrgan.config import config_hash, read_yaml
from zscrgan.errors import UserError, brief, one_line
from zscrgan.files import not_an_output_file, read_text_file
from zscrgan.flags import ArgumentParser

METRICS = (("prec", "Prec"), ("map", "mAP"), ("top1", "Top-1"))
STAGES = (("released", "best unseen round (released figure)"), ("selected", "selected round"),
          ("last", "last round"))


def read_run(run_dir: Path) -> dict:
    """A run's summary.json, config.yaml and metrics.jsonl records; one clear error naming the file if
    one is missing, not a regular file, too large, or not what a run writes.

    A round logged twice (a run killed between logging a round and checkpointing it, then resumed)
    counts once, as its later line.
    """
    run_dir = Path(run_dir)
    summary_path, metrics_path = run_dir / "summary.json", run_dir / "metrics.jsonl"
    summary = _check_summary(_json(read_text_file(summary_path, "run's summary.json"), summary_path), summary_path)
    cfg = _check_config(read_yaml(run_dir / "config.yaml"), run_dir / "config.yaml")
    by_round = {}
    text = read_text_file(metrics_path, "run's metrics.jsonl (JSON lines)")
    for number, line in enumerate(text.split("\n")[:-1], 1):  # without a line torn by a crash
        if line.strip():
            where = f"{metrics_path}: line {number}"
            record = _check_record(_json(line, where), where)
            by_round[record["round"]] = record
    records = [by_round[r] for r in sorted(by_round)]
    return {"dir": str(run_dir), "seed": cfg.get("seed"), "config": cfg, "summary": summary, "records": records}


def _json(text: str, where) -> object:
    """`text` parsed as JSON, or a UserError naming `where`."""
    try:
        return json.loads(text)
    except json.JSONDecodeError as e:
        raise UserError(f"{where}: not valid JSON ({e.msg} at line {e.lineno} column {e.colno})") from None
    except RecursionError:
        raise UserError(f"{where}: nested too deeply to be what a run writes") from None


def _is_number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _is_metrics(value) -> bool:
    return isinstance(value, dict) and all(_is_number(value.get(m)) for m, _ in METRICS)


def _check_summary(summary, path) -> dict:
    """summary.json as a run writes it, as far as reports read it; a UserError naming the key otherwise."""
    if not isinstance(summary, dict):
        raise UserError(f"{path}: not a run summary (a JSON object), got {type(summary).__name__}")
    checks = {"protocol": lambda v: isinstance(v, str),
              "rounds_done": lambda v: type(v) is int and v >= 0,
              "selected_round": lambda v: v is None or type(v) is int,
              "test_at_selected_round": lambda v: v is None or v == {} or _is_metrics(v),
              "chance_prec": lambda v: v is None or _is_number(v),
              "top_k": lambda v: type(v) is int and v > 0}
    optional = {"selected_round", "test_at_selected_round", "chance_prec", "top_k"}
    for key, valid in checks.items():
        if key not in summary and key not in optional:
            raise UserError(f"{path}: no '{key}'; not a finished run's summary")
        if key in summary and not valid(summary[key]):
            raise UserError(f"{path}: '{key}' is {brief(summary[key])}, not what a run writes")
    return summary


def _check_record(record, where) -> dict:
    """One metrics.jsonl line as a run writes it: an integer round and finite unseen (test) metrics."""
    if not isinstance(record, dict):
        raise UserError(f"{where}: not a round's record (a JSON object), got {type(record).__name__}")
    if type(record.get("round")) is not int:
        raise UserError(f"{where}: 'round' is {brief(record.get('round'))}, not a round number")
    for part in ("test", "val"):
        if part == "test" and part not in record:
            raise UserError(f"{where}: no 'test' (the round's unseen metrics)")
        if part in record and not _is_metrics(record[part]):
            raise UserError(f"{where}: '{part}' is {brief(record.get(part))}, not finite prec, map and top1 values")
    return record


def _check_config(cfg: dict, path) -> dict:
    """A run's config.yaml: config keys with plain values (a nested section holds plain values only).

    Anything else (a list, an alias-expanded structure) is not what a run saves, and hashing it to group
    runs could take without bound."""
    plain = (str, int, float, bool, type(None))
    for key, value in cfg.items():
        inner = value.values() if isinstance(value, dict) else [value]
        if not isinstance(key, str) or not all(isinstance(v, plain) for v in inner):
            raise UserError(f"{path}: key {brief(key)} holds {brief(value)}, not a config value")
    return cfg


def find_runs(path: Path) -> list[Path]:
    """`path` if it is a run folder, else every finished run folder below it (a --seeds or study folder)."""
    path = Path(path)
    if (path / "summary.json").exists():
        return [path]
    found = sorted(p.parent for p in path.rglob("summary.json")
                   if not any(part.startswith(".") for part in p.relative_to(path).parts))
    if not found:
        raise UserError(f"{path}: no finished run folder (with summary.json) in it")
    return found


def figures(run: dict) -> dict:
    """{stage: {prec, map, top1}} of one run, from its metrics.jsonl records (see the module doc)."""
    records = run["records"]
    if not records:
        return {}
    released = records[0]
    for r in records:  # the first round reaching the best unseen Prec, as the run selected it
        if r["test"]["prec"] > released["test"]["prec"]:
            released = r
    selected = next((r for r in records if r["round"] == run["summary"].get("selected_round")), None)
    out = {"released": released["test"], "last": records[-1]["test"]}
    if selected is not None:
        out["selected"] = selected["test"]
    return out


def mean_std(values: list[float]) -> tuple[float, float]:
    """Mean and sample standard deviation (n - 1); the deviation is 0 for a single value."""
    n = len(values)
    mean = sum(values) / n
    if n < 2:
        return mean, 0.0
    return mean, math.sqrt(sum((v - mean) ** 2 for v in values) / (n - 1))


def summarize(runs: list[dict]) -> dict:
    """{(stage, metric): (mean, std or None, n)} over `runs`; std is None for fewer than two runs."""
    figs = [figures(r) for r in runs]
    out = {}
    for stage, _ in STAGES:
        for metric, _ in METRICS:
            values = [f[stage][metric] for f in figs if stage in f]
            if values:
                mean, std = mean_std(values)
                out[(stage, metric)] = (mean, std if len(values) > 1 else None, len(values))
    return out


def study_variant(run: dict) -> str | None:
    """The study variant a run folder is a trial of (`<study>/<dataset>/<variant>/seed<k>`, the study
    folder holding study.yaml), or None for a run folder of no study."""
    folder = Path(run["dir"])
    if re.fullmatch(r"seed\d+", folder.name) and folder.parent.parent.name == str(run["config"].get("dataset")) \
            and (folder.parents[2] / "study.yaml").is_file():
        return folder.parent.name
    return None


def group_runs(runs: list[dict]) -> list[tuple[str, str, list[dict]]]:
    """[(dataset, label, runs)], one entry per (dataset, config without the seed), in first-seen order.

    The label is the study's variant name when the runs are a study's trials of one variant (the name
    the study's table shows); otherwise the config keys in which a group differs from the other
    groups of its dataset.
    """
    groups: dict = {}
    for r in runs:
        groups.setdefault((r["config"].get("dataset"), config_hash(r["config"])), []).append(r)
    out = []
    for (dataset, digest), members in groups.items():
        cfg = members[0]["config"]
        others = [m[0]["config"] for (d, h), m in groups.items() if d == dataset and h != digest]
        differing = sorted({k for o in others for k in set(cfg) | set(o) if k != "seed" and o.get(k) != cfg.get(k)})
        variants = {study_variant(m) for m in members}
        label = (variants.pop() if len(variants) == 1 and None not in variants else
                 ", ".join(f"{k}={cfg.get(k)}" for k in differing) or f"cfg{digest}")
        out.append((dataset, label, members))
    return out


def cell(mean: float | None, std: float | None, digits: int = 4) -> str:
    if mean is None:
        return ""
    return f"{mean:.{digits}f}" + ("" if std is None else f" ± {std:.{digits}f}")


def table_rows(entries: list[dict]) -> list[dict]:
    """CSV rows of table entries {dataset, variant, runs, finished, total, paper, notes}."""
    rows = []
    for e in entries:
        row = {"dataset": e["dataset"], "variant": e["variant"], "finished": e.get("finished", len(e["runs"])),
               "total": e.get("total", len(e["runs"]))}
        stats = e.get("stats") or summarize(e["runs"])
        for stage, _ in STAGES:
            for metric, _ in METRICS:
                mean, std, _n = stats.get((stage, metric), (None, None, 0))
                row[f"{stage}_{metric}_mean"], row[f"{stage}_{metric}_std"] = mean, std
        for metric, _ in METRICS:
            row[f"paper_{metric}"] = (e.get("paper") or {}).get(metric)
        row["queries"] = e.get("queries", "")
        row["paper_queries"] = (e.get("paper") or {}).get("queries", "")
        row["notes"] = e.get("notes", "")
        rows.append(row)
    return rows


def to_csv(rows: list[dict]) -> str:
    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=list(rows[0]), lineterminator="\n")
    writer.writeheader()
    writer.writerows([{k: "" if v is None else v for k, v in row.items()} for row in rows])
    return out.getvalue()


def to_markdown(rows: list[dict], k: int = 50) -> str:
    """One markdown table: mean ± sample std over runs (± only with two or more runs)."""
    head = ["dataset", "variant", "runs"]
    for stage, title in STAGES:
        head += [f"{title}: Prec@{k}", "mAP@" + str(k), "Top-1"]
    head += ["queries", "paper Prec@50 / mAP@50 / Top-1 (%)", "paper's queries", "notes"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for row in rows:
        cells = [row["dataset"], row["variant"], f"{row['finished']}/{row['total']}"]
        for stage, _ in STAGES:
            cells += [cell(row[f"{stage}_{m}_mean"], row[f"{stage}_{m}_std"]) for m, _ in METRICS]
        paper = [row[f"paper_{m}"] for m, _ in METRICS]
        cells.append(row["queries"])
        cells.append(" / ".join("–" if p is None else f"{p:g}" for p in paper) if any(p is not None for p in paper) else "")
        cells.append(row["paper_queries"])
        cells.append(row["notes"])
        lines.append("| " + " | ".join(str(c) for c in cells) + " |")
    return "\n".join(lines) + "\n"


def format_report(runs: list[dict]) -> str:
    lines = []
    for r in runs:
        s = r["summary"]
        t = s.get("test_at_selected_round") or {}
        lines.append(f"{r['dir']}: seed {r['seed']}, {s['rounds_done']} rounds, protocol {s['protocol']}, "
                     f"selected round {s['selected_round']}, unseen Prec {t.get('prec', float('nan')):.4f}")
    for dataset, label, members in group_runs(runs):
        lines.append(f"{dataset} [{label}]: {len(members)} run(s), seeds {[m['seed'] for m in members]}"
                     + (", mean +- std (sample):" if len(members) > 1 else ":"))
        for (stage, metric), (mean, std, _n) in summarize(members).items():
            title = dict(STAGES)[stage]
            lines.append(f"  {title}: unseen {dict(METRICS)[metric]} {cell(mean, std)}".replace("±", "+-"))
    return "\n".join(lines)


def aggregate(runs: list[dict]) -> dict:
    """For each (stage, metric): the values over `runs`, their mean and sample standard deviation.

    The caller passes runs of one configuration (group_runs makes such groups)."""
    figs = [figures(r) for r in runs]
    out = {}
    for stage, title in STAGES:
        for metric, name in METRICS:
            values = [f[stage][metric] for f in figs if stage in f]
            if values and len(values) == len(runs):
                mean, std = mean_std(values)
                out[f"{title}: unseen {name}"] = {"values": values, "mean": mean, "std": std}
    return out


# --- plots -------------------------------------------------------------------------------------------
def _mean_curve(runs: list[dict], split: str) -> tuple[list, list]:
    """(rounds, [(mean, std)]) of the runs' `split` ("test" or "val") Prec per round."""
    by_round: dict = {}
    for r in runs:
        for rec in r["records"]:
            if split in rec:
                by_round.setdefault(rec["round"], []).append(rec[split]["prec"])
    rounds = sorted(by_round)
    return rounds, [mean_std(by_round[x]) for x in rounds]


def plot_curves(groups: list[tuple[str, list[dict]]], path: Path, title: str, ridge: dict | None = None) -> None:
    """Per group: mean unseen Prec per round over its runs, a band of +- one std where 2+ runs have the
    round, each run's selected round marked and, for runs selecting on validation classes, the mean
    validation Prec (dotted, the curve the selection reads). Per dataset of the runs: its chance
    line and, where `ridge` ({dataset: Prec}) has it, the ridge reference. Saved atomically."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8, 4.5))
    references: dict = {}  # dataset: chance Prec, in first-seen order
    validated = False
    for label, runs in groups:
        rounds, stats = _mean_curve(runs, "test")
        means = [m for m, _ in stats]
        line, = ax.plot(rounds, means, label=f"{label} (n={len(runs)})")
        if len(runs) > 1:
            ax.fill_between(rounds, [m - s for m, s in stats], [m + s for m, s in stats], color=line.get_color(), alpha=0.2)
        val_rounds, val_stats = _mean_curve(runs, "val")
        if val_rounds:
            validated = True
            ax.plot(val_rounds, [m for m, _ in val_stats], ls=":", color=line.get_color(),
                    label=f"{label}: validation classes (selects the round)")
        selected = [(rec["round"], rec["test"]["prec"]) for r in runs for rec in r["records"]
                    if rec["round"] == r["summary"].get("selected_round")]
        if selected:
            ax.scatter(*zip(*selected), marker="o", s=18, color=line.get_color(), zorder=3)
        for r in runs:
            references.setdefault(r["config"].get("dataset"), r["summary"].get("chance_prec"))
    styles = ("-", "--", "-.", ":")
    for i, (dataset, chance) in enumerate(references.items()):
        name = f" ({dataset})" if len(references) > 1 else ""
        if chance is not None:
            ax.axhline(chance, color="grey", lw=0.8, ls=styles[i % len(styles)], label=f"chance{name}")
        if (ridge or {}).get(dataset) is not None:
            ax.axhline(ridge[dataset], color="black", lw=0.9, ls=styles[i % len(styles)], label=f"ridge reference{name}")
    k = groups[0][1][0]["summary"].get("top_k", 50) if groups and groups[0][1] else 50
    ax.set_title(title, fontsize=10)
    ax.set_xlabel("round")
    ax.set_ylabel(f"unseen Prec@{k} (mean over seeds; dots: selected rounds)"
                  + (f"\ndotted: validation classes' Prec@{k}" if validated else ""))
    ax.legend(fontsize=7)
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        with atomic_file(path, "wb") as f:
            fig.savefig(f, format=path.suffix.lstrip(".").lower() or "png")
    finally:
        plt.close(fig)


# --- study tables ------------------------------------------------------------------------------------
def ridge_entry(dataset: str, data_root: Path, cfg, query_protocol: str = "per_text") -> dict:
    """The ridge reference on the dataset's seen / unseen split, with the study's input scaling."""
    from zscrgan.baseline import ridge_baseline
    from zscrgan.data.release import load_dataset
    from zscrgan.data.scaling import scale_modality

    ds = load_dataset(Path(data_root) / dataset)
    image = scale_modality(ds.image, ds.seen, cfg.input_scaling)
    text = scale_modality(ds.text, ds.seen, cfg.input_scaling)
    m = ridge_baseline(image, text, ds.seen, ds.unseen, k=cfg.top_k, per_class=query_protocol == "per_class")
    stats = {(stage, metric): (m[metric], None, 1) for stage, _ in STAGES for metric, _ in METRICS}
    return {"dataset": dataset, "variant": "ridge reference", "runs": [], "finished": 1, "total": 1, "stats": stats,
            "queries": query_protocol.replace("_", " "),
            "notes": f"one ridge fit on all seen classes (class-mean targets, input_scaling {cfg.input_scaling}); no rounds"}


def plot_ridge(runs: list[dict], data_root: Path) -> dict:
    """{dataset: ridge reference Prec} for the datasets of `runs` found under `data_root`, with each
    dataset's first run's input scaling, top_k and query protocol; a dataset not found is left out."""
    from types import SimpleNamespace

    out = {}
    for r in runs:
        dataset, cfg = r["config"].get("dataset"), r["config"]
        if dataset in out or not (Path(data_root) / str(dataset)).is_dir():
            continue
        settings = SimpleNamespace(input_scaling=cfg.get("input_scaling", "none"), top_k=cfg.get("top_k", 50))
        try:
            entry = ridge_entry(dataset, data_root, settings, cfg.get("query_protocol", "per_text"))
        except UserError as e:
            print(f"note: no ridge reference for {dataset} in the plot: {e}", file=sys.stderr)
            continue
        out[dataset] = entry["stats"][("released", "prec")][0]
    return out


def write_study_tables(study, folder: Path, data_root: Path) -> dict:
    """results.csv, results.md and <dataset>.png of a study folder, from its run folders.

    Returns how many trials are in each status (finished, failed, interrupted, not started).
    """
    from zscrgan.config import load_config
    from zscrgan.study import best_searched, trial_status

    folder = Path(folder)
    entries, counts = [], {}
    for dataset in study.datasets:
        plot_groups = []
        for variant in study.variants:
            runs, notes = [], []
            for trial in (t for t in study.trials(folder) if t.dataset == dataset and t.variant == variant):
                status, detail = trial_status(Path(trial.run_dir))
                counts[status] = counts.get(status, 0) + 1
                if status == "finished":
                    runs.append(read_run(Path(trial.run_dir)))
                else:
                    notes.append(f"seed {trial.seed} {status}" + (f": {detail}" if detail else ""))
            entries.append({"dataset": dataset, "variant": variant, "runs": runs, "total": len(study.seeds),
                            "queries": study.query_protocol.replace("_", " "),
                            "paper": study.paper.get(variant, {}).get(dataset), "notes": "; ".join(notes)})
            if runs:
                plot_groups.append((variant, runs))
        searched = best_searched(folder / dataset / "search")
        if searched:
            n = len(list((folder / dataset / "search").glob("*/summary.json")))
            chosen = ", ".join(f"{k}={searched['overrides'][k]:.4g}" if isinstance(searched['overrides'][k], float)
                               else f"{k}={searched['overrides'][k]}" for k in study.search)
            entries.append({"dataset": dataset, "variant": f"search: best of {n} on validation", "total": 1,
                            "runs": [read_run(Path(searched["run_dir"]))],
                            "notes": f"seed {study.seeds[0]}; validation Prec {searched['val_prec']:.4f}; {chosen}"})
        cfg = load_config(dataset, overrides=study.config)
        ridge = None
        try:
            entries.append(ridge_entry(dataset, data_root, cfg, study.query_protocol))
            ridge = entries[-1]["stats"][("released", "prec")][0]
        except UserError as e:
            entries.append({"dataset": dataset, "variant": "ridge reference", "runs": [], "finished": 0, "total": 1,
                            "notes": f"not computed: {e}"})
        if plot_groups:
            plot_curves(plot_groups, folder / f"{dataset}.png",
                        f"{study.name} on {dataset}: unseen Prec@{cfg.top_k} per round, mean ± std over seeds",
                        ridge={dataset: ridge})
    rows = table_rows(entries)
    write_text_atomic(folder / "results.csv", to_csv(rows))
    header = (f"# Study {study.name}\n\nFrom the run folders under this folder ({study.protocol} protocol; "
              f"seeds {', '.join(map(str, study.seeds))}). Mean ± sample standard deviation over finished seeds "
              "(± only with two or more). 'paper': the authors' slides, in %.\n\n")
    write_text_atomic(folder / "results.md", header + to_markdown(rows))
    return counts


def main(argv=None) -> int:
    p = ArgumentParser(prog="python -m zscrgan.report", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("runs", nargs="+", type=Path, help="run folders, --seeds folders or study folders")
    p.add_argument("--plot", type=Path, help="also save each group's mean Prec per round to this image file")
    p.add_argument("--json", type=Path, help="also save each group's aggregate as JSON to this file")
    p.add_argument("--csv", type=Path, help="also save the table as CSV to this file")
    p.add_argument("--md", type=Path, help="also save the table as markdown to this file")
    p.add_argument("--data_root", type=Path, default=os.environ.get("ZSCRGAN_DATA_ROOT") or "datasets",
                   help="folder holding the dataset folders, for the ridge reference in --plot (default: "
                        "$ZSCRGAN_DATA_ROOT if set, else ./datasets); a dataset not there is plotted without it")
    args = p.parse_args(argv)
    try:
        _check_outputs(args)
        runs = [read_run(d) for path in args.runs for d in find_runs(path)]
    except UserError as e:
        print(f"error: {one_line(e)}", file=sys.stderr)
        return 2
    print(format_report(runs))
    try:
        _write_outputs(args, runs)
    except OSError as e:  # a full or read-only disk
        where = e.filename or "output"
        print(f"error: {one_line(f'{where}: cannot write: {e.strerror or e}')}", file=sys.stderr)
        return 2
    return 0


def _check_outputs(args) -> None:
    """Refuse --json/--csv/--md/--plot paths that cannot take a file, and image formats matplotlib lacks,
    before any run is read."""
    for flag in ("json", "csv", "md", "plot"):
        path = getattr(args, flag)
        problem = path is not None and not_an_output_file(path)
        if problem:
            raise UserError(f"--{flag} {path}: {problem}; give a file path in an existing folder")
    if args.plot is not None:
        from matplotlib.figure import Figure

        formats = Figure().canvas.get_supported_filetypes()
        suffix = args.plot.suffix.lstrip(".").lower() or "png"
        if suffix not in formats:
            raise UserError(f"--plot {args.plot}: unknown image format '{suffix}' (one of {', '.join(sorted(formats))})")


def _write_outputs(args, runs: list[dict]) -> None:
    groups = group_runs(runs)
    if args.json:
        write_text_atomic(args.json, json.dumps([{"dataset": d, "label": label, "runs": [r["dir"] for r in members],
                                                  "aggregate": aggregate(members)} for d, label, members in groups],
                                                indent=1))
    rows = table_rows([{"dataset": d, "variant": label, "runs": members} for d, label, members in groups])
    if args.csv:
        write_text_atomic(args.csv, to_csv(rows))
    if args.md:
        write_text_atomic(args.md, to_markdown(rows))
    if args.plot:
        plot_curves([(f"{d} {label}", members) for d, label, members in groups], args.plot,
                    "unseen Prec per round, mean ± std over the runs of each configuration",
                    ridge=plot_ridge(runs, Path(args.data_root)))
        print(f"plot: {args.plot}")


if __name__ == "__main__":
    sys.exit(main())
