"""ZSCRGAN: train on a dataset's seen classes, retrieve unseen-class images from their text.

    python main.py                          # the built-in demo dataset (made on first use)
    python main.py --dataset CUB            # configs/default.yaml + configs/CUB.yaml, datasets/CUB/
    python main.py --dataset CUB --mm_reg_coeff 1.0 --rounds 300 --time_budget 60
    python main.py --resume runs/CUB/<run>  # continue a run from its last checkpoint

Every key of configs/default.yaml is also a flag (--key value).
"""

from __future__ import annotations

import argparse
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
    group = p.add_argument_group("config keys (override the YAML files)")
    for key in config_keys:
        group.add_argument(f"--{key}", dest=f"cfg_{key}", metavar="VALUE")
    return p


def main(argv=None) -> int:
    from zscrgan.config import DEFAULT_FILE, load_config, parse_flag_value, read_yaml
    from zscrgan.errors import UserError

    keys = [k for k, v in read_yaml(DEFAULT_FILE).items() if not isinstance(v, dict)]
    args = build_parser(keys).parse_args(argv)
    overrides = {k: parse_flag_value(getattr(args, f"cfg_{k}")) for k in keys
                 if getattr(args, f"cfg_{k}") is not None}
    try:
        if args.resume:
            run_dir = Path(args.resume)
            saved = run_dir / "config.yaml"
            if not saved.exists():
                raise UserError(f"{saved}: not found; --resume needs a run folder written by main.py")
            dataset = read_yaml(saved).get("dataset", args.dataset)
            cfg = load_config(dataset, overrides=overrides, saved=saved)
        else:
            cfg = load_config(args.dataset, args.config, overrides)
            run_dir = Path(args.output_dir) if args.output_dir else (
                ROOT / "runs" / cfg.dataset / f"{time.strftime('%Y%m%d-%H%M%S')}-seed{cfg.seed}")
        if args.time_budget is not None and args.time_budget <= 0:
            raise UserError(f"--time_budget must be a positive number of minutes, got {args.time_budget}")
        from zscrgan.run import Run  # imports TensorFlow: only once the arguments are known to be good

        run = Run(cfg, run_dir, Path(args.data_root), Path(args.results_root))
        if args.resume and not run.resume():
            raise UserError(f"{run_dir}: no checkpoint to resume from (checkpoints/last is missing)")
        run.start()
        summary = run.train(args.time_budget)
    except UserError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    k = cfg.top_k
    test = summary["test_at_selected_round"]
    print(f"stopped: {summary['stopped']}")
    if test:
        label = "best round" if cfg.protocol == "released" else "round selected on validation classes"
        print(f"{label}: {summary['selected_round']} | unseen Prec@{k} {test['prec']:.4f} mAP@{k} {test['map']:.4f} "
              f"Top-1 {test['top1']:.4f} | chance Prec@{k} {summary['chance_prec']:.4f}")
    print(f"run folder: {summary['run_dir']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
