"""ZSCRGAN: train on a dataset's seen classes, retrieve unseen-class images from their text.

    python main.py                          # the built-in demo dataset (made on first use)
    python main.py --dataset CUB            # configs/default.yaml + configs/CUB.yaml, datasets/CUB/
    python main.py --dataset CUB --mm_reg_coeff 1.0 --rounds 300 --time_budget 60
    python main.py --resume runs/CUB/<run>  # continue a run from its last checkpoint
    python main.py --dataset CUB --protocol validated --seeds 0 1 2   # mean +- std over seeds
    python main.py --evaluate runs/CUB/<run> --eval_draws 10          # re-score the selected weights

Every key of configs/default.yaml is also a flag (--key value).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # keep TensorFlow's start-up chatter out of the log

ROOT = Path(__file__).resolve().parent


def build_parser(config_keys) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--dataset", default="DEMO", help="dataset folder name under --data_root (default: DEMO)")
    p.add_argument("--config", help="a YAML file of config keys, applied over configs/<DATASET>.yaml")
    p.add_argument("--time_budget", type=float, help="stop before a round would end past this many minutes")
    p.add_argument("--data_root", default=str(ROOT / "datasets"), help="folder holding the dataset folders")
    p.add_argument("--results_root", default=str(ROOT / "retrieved_res"),
                   help="where <DATASET>_res/acc<score>.pkl files go")
    p.add_argument("--output_dir", help="run folder (default: runs/<DATASET>/<time>-seed<seed>)")
    p.add_argument("--resume", metavar="RUN_DIR", help="continue the run in RUN_DIR from its last checkpoint")
    p.add_argument("--evaluate", metavar="RUN_DIR",
                   help="evaluate the selected round's weights of RUN_DIR (with --eval_draws N per query)")
    p.add_argument("--seeds", type=int, nargs="+", metavar="SEED",
                   help="one run per seed (folders seed<k> under the output folder), then mean +- std")
    group = p.add_argument_group("config keys (override the YAML files)")
    for key in config_keys:
        group.add_argument(f"--{key}", dest=f"cfg_{key}", metavar="VALUE")
    return p


def train_one(cfg, run_dir: Path, args, resume: bool = False) -> dict:
    """One run (new, or resumed from run_dir); prints its outcome and returns its summary."""
    from zscrgan.errors import UserError
    from zscrgan.run import Run  # imports TensorFlow: only once the arguments are known to be good

    run = Run(cfg, run_dir, Path(args.data_root), Path(args.results_root))
    if resume and not run.resume():
        raise UserError(f"{run_dir}: no checkpoint to resume from (checkpoints/last is missing)")
    run.start()
    summary = run.train(args.time_budget)
    k = cfg.top_k
    test = summary["test_at_selected_round"]
    print(f"stopped: {summary['stopped']}")
    if test:
        label = "best round" if cfg.protocol == "released" else "round selected on validation classes"
        print(f"{label}: {summary['selected_round']} | unseen Prec@{k} {test['prec']:.4f} mAP@{k} {test['map']:.4f} "
              f"Top-1 {test['top1']:.4f} | chance Prec@{k} {summary['chance_prec']:.4f}")
    print(f"run folder: {summary['run_dir']}")
    return summary


def evaluate_one(cfg, run_dir: Path, args) -> None:
    """Re-evaluate a run's selected weights (e.g. with more noise draws per query) and print the metrics."""
    from zscrgan.run import Run

    out = Run(cfg, run_dir, Path(args.data_root), Path(args.results_root)).evaluate_best()
    k, t = cfg.top_k, out["test"]
    line = (f"round {out['round']} weights, {out['eval_draws']} draw(s) per query | unseen Prec@{k} {t['prec']:.4f} "
            f"mAP@{k} {t['map']:.4f} Top-1 {t['top1']:.4f}")
    if "val" in out:
        line += f" | val Prec@{k} {out['val']['prec']:.4f}"
    print(line)
    print(f"written: {run_dir / ('evaluation-draws%d.json' % out['eval_draws'])}")


def train_seeds(cfg, base: Path, seeds, args) -> None:
    """One run per seed under base/seed<k>, then mean and standard deviation across them."""
    from zscrgan.atomic import write_text_atomic
    from zscrgan.report import aggregate, format_report, read_run

    done = []
    for seed in seeds:
        cfg.seed = seed
        summary = train_one(cfg, base / f"seed{seed}", args)
        done.append(read_run(base / f"seed{seed}"))
        if summary["stopped"].startswith("interrupted"):
            break
    print(format_report(done))
    write_text_atomic(base / "seeds_summary.json",
                      json.dumps({"seeds": [r["seed"] for r in done], "aggregate": aggregate(done)}, indent=1))
    return summary


# Exit status of a run stopped by Ctrl-C (128 + SIGINT, as a shell reports it).
EXIT_INTERRUPTED = 130


def main(argv=None) -> int:
    """Run the command; returns the exit status: 0 done, 2 bad input (one line on stderr), 130 Ctrl-C."""
    from zscrgan.errors import UserError, one_line

    try:
        summary = _main(argv)
    except UserError as e:
        print(f"error: {one_line(e)}", file=sys.stderr)
        return 2
    except OSError as e:  # a disk problem the writers did not name themselves (a full or read-only disk)
        where = e.filename or "output"
        print(f"error: {one_line(f'{where}: {e.strerror or e}')}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted (Ctrl-C)", file=sys.stderr)
        return EXIT_INTERRUPTED
    if summary and summary["stopped"].startswith("interrupted"):
        return EXIT_INTERRUPTED
    return 0


def _main(argv):
    """Parse the arguments and do what they ask; returns the last run's summary (None if none ran)."""
    from zscrgan.config import DEFAULT_FILE, load_config, parse_flag_value, read_yaml
    from zscrgan.errors import UserError

    keys = [k for k, v in read_yaml(DEFAULT_FILE).items() if not isinstance(v, dict)]
    args = build_parser(keys).parse_args(argv)
    overrides = {k: parse_flag_value(getattr(args, f"cfg_{k}")) for k in keys
                 if getattr(args, f"cfg_{k}") is not None}
    if args.time_budget is not None and args.time_budget <= 0:
        raise UserError(f"--time_budget must be a positive number of minutes, got {args.time_budget}")
    if args.resume or args.evaluate:
        if args.resume and args.evaluate:
            raise UserError("give either --resume or --evaluate, not both")
        if args.seeds:
            raise UserError("--resume and --evaluate take one run folder; --seeds starts new runs")
        run_dir = Path(args.resume or args.evaluate)
        saved = run_dir / "config.yaml"
        if not saved.exists():
            raise UserError(f"{saved}: not found; --resume and --evaluate need a run folder written by main.py")
        cfg = load_config(read_yaml(saved).get("dataset", args.dataset), overrides=overrides, saved=saved)
        if args.resume:
            return train_one(cfg, run_dir, args, resume=True)
        evaluate_one(cfg, run_dir, args)
        return None
    cfg = load_config(args.dataset, args.config, overrides)
    stamp = time.strftime("%Y%m%d-%H%M%S")
    if args.seeds:
        base = Path(args.output_dir) if args.output_dir else ROOT / "runs" / cfg.dataset / f"{stamp}-seeds"
        return train_seeds(cfg, base, args.seeds, args)
    run_dir = Path(args.output_dir) if args.output_dir else ROOT / "runs" / cfg.dataset / f"{stamp}-seed{cfg.seed}"
    return train_one(cfg, run_dir, args)


if __name__ == "__main__":
    sys.exit(main())
