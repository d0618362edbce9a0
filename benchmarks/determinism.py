"""Does the same seed give the same run? Trains one config twice and compares what the runs wrote.

    python benchmarks/determinism.py                                  # configs/demo_cub_sizes.yaml, 3 rounds
    python benchmarks/determinism.py --config configs/DEMO.yaml --rounds 2
    python benchmarks/determinism.py --keep runs/determinism -- --seed 3   # flags after -- go to main.py
    python benchmarks/determinism.py --steps 6                        # the steps, from one state, 6 times
    python benchmarks/determinism.py --runs 4                         # one run alone, three beside the neighbour

The first run trains alone; the second trains while a busy neighbour (one process per core, spinning)
competes for the cores, so that a kernel whose summation order follows thread timing shows. Both are
`python main.py --config FILE --rounds N` into a scratch folder (datasets are made there too). Compared,
round for round: every loss and metric in metrics.jsonl (not the timings) and the retrieval files.
Prints "identical" (exit status 0) or the first round and quantity that differ, with both values (exit
status 1).

With `--steps N`, instead: in this one process (its kernels chosen as a run chooses them), the config's
training steps (an E-phase and an M-phase of `--iters` iterations on synthetic data of the config's
sizes) are repeated N times from one saved state, beside a busy neighbour, and every reported loss and
every variable is compared bit for bit with the first repeat's. A step whose reported losses or
updates depend on timing shows here within minutes, without two whole runs.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SPIN = "while True:\n    pass"
TIMINGS = "seconds"  # the one metrics.jsonl entry that may differ between identical runs


def busy_neighbour(n_processes: int) -> list[subprocess.Popen]:
    """`n_processes` Python processes each spinning on a core, until killed."""
    return [subprocess.Popen([sys.executable, "-c", SPIN]) for _ in range(n_processes)]


def train(run_dir: Path, data_root: Path, config: str, rounds: int, extra: list[str], busy: int) -> None:
    """One run of main.py into `run_dir`, with `busy` spinning processes beside it; stops on failure."""
    cmd = [sys.executable, str(ROOT / "main.py"), "--config", config, "--rounds", str(rounds),
           "--output_dir", str(run_dir), "--data_root", str(data_root), "--results_root", str(data_root / "res"),
           *extra]
    print(f"training {'with' if busy else 'without'} a busy neighbour ({busy} spinning processes): "
          f"{' '.join(cmd[1:])}", flush=True)
    neighbours = busy_neighbour(busy)
    try:
        done = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True)
    finally:
        for p in neighbours:
            p.kill()
            p.wait()
    if done.returncode != 0:
        sys.exit(f"main.py failed (exit status {done.returncode}):\n{done.stderr.strip()[-2000:]}")


def flat(record: dict, prefix: str = "") -> dict:
    """A metrics.jsonl record as {"losses.L_D": value, ...}, timings left out."""
    out = {}
    for key, value in record.items():
        if key == TIMINGS or key == "retrieval_file":
            continue
        name = f"{prefix}{key}"
        out.update(flat(value, name + ".") if isinstance(value, dict) else {name: value})
    return out


def first_difference(a: Path, b: Path) -> str | None:
    """The first round and quantity in which two run folders differ, in words; None when identical."""
    rounds_a = [json.loads(line) for line in (a / "metrics.jsonl").read_text().splitlines() if line.strip()]
    rounds_b = [json.loads(line) for line in (b / "metrics.jsonl").read_text().splitlines() if line.strip()]
    for ra, rb in zip(rounds_a, rounds_b):
        fa, fb = flat(ra), flat(rb)
        for key in sorted(set(fa) | set(fb)):
            if fa.get(key) != fb.get(key):
                return f"round {ra['round']}: {key} differs: {fa.get(key)!r} (alone) vs {fb.get(key)!r} (busy neighbour)"
        files = [Path(r["retrieval_file"]).name if "retrieval_file" in r else None for r in (ra, rb)]
        if files[0] is not None and files[0] == files[1]:
            if (a / "retrieved" / files[0]).read_bytes() != (b / "retrieved" / files[1]).read_bytes():
                return f"round {ra['round']}: the retrieval file {files[0]} differs"
    if len(rounds_a) != len(rounds_b):
        return f"the runs logged {len(rounds_a)} and {len(rounds_b)} rounds"
    return None


def repeated_steps(config: str, repeats: int, iters: int, busy: int) -> str | None:
    """The first repeat (of `repeats`) of an E-phase and an M-phase from one state whose losses or
    variables differ from the first's, in words; None when all are identical."""
    sys.path.insert(0, str(ROOT))
    from zscrgan.config import load_config
    from zscrgan.tf_start import start_tensorflow

    cfg = load_config("DEMO", config)
    start_tensorflow(cfg.deterministic)
    import numpy as np

    from benchmarks.bench_speed import phase_inputs
    from zscrgan.device import set_determinism
    from zscrgan.train import Trainer

    set_determinism(cfg.deterministic)
    _, feats, _, (e_batch, m_batch) = phase_inputs(cfg, iters)
    trainer = Trainer(cfg, cfg.demo.image_dim, cfg.demo.text_dim)
    variables = list(trainer.variables)
    start = [v.numpy() for v in variables]
    first = None
    neighbours = busy_neighbour(busy)
    try:
        for r in range(repeats):
            for v, value in zip(variables, start):
                v.assign(value)
            trainer.noise.reset_from_seed(cfg.seed + 1)
            losses = np.concatenate([trainer.e_step(*feats, *e_batch).numpy(), [trainer.m_step(*feats, *m_batch).numpy()]])
            weights = [v.numpy() for v in variables]
            if first is None:
                first = (losses, weights)
                continue
            names = ("L_D", "L_G", "R", "L_C", "div", "L_C_M")
            for name, a, b in zip(names, first[0], losses):
                if a.tobytes() != b.tobytes():
                    return f"repeat {r + 1}: {name} differs: {a!r} (first) vs {b!r}"
            for v, a, b in zip(variables, first[1], weights):
                if a.tobytes() != b.tobytes():
                    return f"repeat {r + 1}: variable {v.name} differs"
    finally:
        for p in neighbours:
            p.kill()
            p.wait()
    return None


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                epilog="Flags after -- are passed to both main.py runs (e.g. -- --seed 3).")
    p.add_argument("--config", default="configs/demo_cub_sizes.yaml", help="config file (default: %(default)s)")
    p.add_argument("--rounds", type=int, default=3, help="rounds of each run (default: %(default)s)")
    p.add_argument("--busy", type=int, default=os.cpu_count() or 1,
                   help="spinning processes beside the second run (default: one per core, %(default)s)")
    p.add_argument("--runs", type=int, default=2,
                   help="runs in all: the first alone, the others each beside the busy neighbour and compared with "
                        "the first (default: %(default)s; a timing-dependent difference may spare one run, so more "
                        "runs catch more)")
    p.add_argument("--keep", metavar="DIR", help="write the runs into DIR and keep them (default: a removed scratch folder)")
    p.add_argument("--steps", type=int, metavar="N",
                   help="instead of two runs: repeat the training steps N times from one state in this process")
    p.add_argument("--iters", type=int, default=20, help="with --steps: iterations of each phase (default: %(default)s)")
    p.add_argument("extra", nargs="*", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.rounds < 1:
        p.exit(2, "error: --rounds must be at least 1\n")
    if args.runs < 2:
        p.exit(2, "error: --runs must be at least 2\n")
    if args.steps is not None and (args.steps < 2 or args.iters < 1):
        p.exit(2, "error: --steps must be at least 2 and --iters at least 1\n")
    if not (ROOT / args.config).is_file() and not Path(args.config).is_file():
        p.exit(2, f"error: --config {args.config}: no such file\n")
    config = str(Path(args.config).resolve()) if Path(args.config).is_file() else str(ROOT / args.config)
    if args.steps is not None:
        difference = repeated_steps(config, args.steps, args.iters, args.busy)
        print(difference or f"identical: {args.steps} repeats of {args.iters} E-step and M-step iterations "
              f"of {args.config}, every loss and variable")
        return 1 if difference else 0
    with tempfile.TemporaryDirectory(prefix="determinism-") as scratch:
        base = Path(args.keep) if args.keep else Path(scratch)
        runs = [base / "alone"] + [base / ("busy" if k == 1 else f"busy{k}") for k in range(1, args.runs)]
        if any(r.exists() for r in runs):
            p.exit(2, f"error: --keep {args.keep}: holds runs already; give an empty or new folder\n")
        train(runs[0], base / "datasets", config, args.rounds, args.extra, 0)
        difference = None
        for k, run_dir in enumerate(runs[1:], start=2):
            train(run_dir, base / "datasets", config, args.rounds, args.extra, args.busy)
            difference = first_difference(runs[0], run_dir)
            if difference:
                difference = difference if args.runs == 2 else f"run {k}: {difference}"
                break
    print(difference or f"identical: {args.runs} runs of {args.rounds} rounds of {args.config}, losses, metrics "
                        "and retrieval files")
    return 1 if difference else 0


if __name__ == "__main__":
    sys.exit(main())
