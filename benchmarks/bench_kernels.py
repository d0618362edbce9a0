"""What determinism costs on the CPU: a round as `deterministic: true` computes it (TensorFlow's Eigen
kernels, oneDNN off; the compiled RMSProp pass returning new values, then assigned) against
the same round as `deterministic: false` computes it (oneDNN's kernels; the RMSProp pass in place),
in one run.

    python benchmarks/bench_kernels.py                       # CUB sizes (configs/demo_cub_sizes.yaml)
    python benchmarks/bench_kernels.py --iters 5 --repeats 3 --json kernels.json

TensorFlow reads TF_ENABLE_ONEDNN_OPTS once, when it is imported, so each measurement is a fresh
process: for each of `--repeats` rounds, one process of each setting, in turn (so that both see the
same load on a shared machine), each timing the compiled E-phase and M-phase of `--iters` iterations
(after a call that compiles them) on the same synthetic data as `bench_speed.py`. Reported as JSON:
the medians, scaled to the config's round (e_step_iters E-step iterations, m_step_iters M-step
steps), and true / false (above 1: the deterministic setting is slower). `--only-kernels` keeps the
update the same (the config's) and compares the kernels alone.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
# Each setting: TF_ENABLE_ONEDNN_OPTS for the process, and the config's `deterministic` for the Trainer.
SETTINGS = {"deterministic: true": ("0", True), "deterministic: false": ("1", False)}


def child(config: Path, iters: int, deterministic: bool | None) -> dict:
    """In this process (its kernels already chosen by the environment): seconds of one E-phase and one
    M-phase of `iters` iterations, each after a call that compiles it, with the Trainer built for
    `deterministic` (None: the config's)."""
    import time

    sys.path.insert(0, str(ROOT))
    from benchmarks.bench_speed import machine, phase_inputs
    from zscrgan.config import load_config
    from zscrgan.train import Trainer

    cfg = load_config("DEMO", config)
    if deterministic is not None:
        cfg.deterministic = deterministic
    _, feats, _, (e_batch, m_batch) = phase_inputs(cfg, iters)
    trainer = Trainer(cfg, cfg.demo.image_dim, cfg.demo.text_dim)
    out = {"machine": machine()}
    for phase, fn in (("e_step", lambda: trainer.e_step(*feats, *e_batch).numpy()),
                      ("m_step", lambda: trainer.m_step(*feats, *m_batch).numpy())):
        fn()
        t0 = time.perf_counter()
        fn()
        out[phase] = time.perf_counter() - t0
    return out


def measure(config: Path, iters: int, onednn: str, deterministic: bool | None) -> dict:
    env = {**os.environ, "TF_ENABLE_ONEDNN_OPTS": onednn, "TF_CPP_MIN_LOG_LEVEL": "2"}
    flags = [] if deterministic is None else ["--child-deterministic", str(deterministic).lower()]
    done = subprocess.run([sys.executable, __file__, "--child", "--config", str(config), "--iters", str(iters), *flags],
                          env=env, capture_output=True, text=True)
    if done.returncode != 0:
        sys.exit(f"the timing process failed (exit status {done.returncode}):\n{done.stderr.strip()[-2000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def main(argv=None) -> int:
    sys.path.insert(0, str(ROOT))
    from zscrgan.config import CONFIG_DIR

    p = argparse.ArgumentParser(allow_abbrev=False, description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config", type=Path, default=CONFIG_DIR / "demo_cub_sizes.yaml",
                   help="network and data sizes (default: the CUB-sized demo)")
    p.add_argument("--iters", type=int, default=10, help="E-step iterations and M-step steps per timed phase")
    p.add_argument("--repeats", type=int, default=3, help="processes per setting, taken in turn (medians are reported)")
    p.add_argument("--json", type=Path, help="also write the results here")
    p.add_argument("--only-kernels", action="store_true",
                   help="compare oneDNN off and on with the config's RMSProp update in both")
    p.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--child-deterministic", choices=["true", "false"], help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.iters < 1 or args.repeats < 1:
        p.exit(2, "error: --iters and --repeats must be at least 1\n")
    if args.child:
        chosen = None if args.child_deterministic is None else args.child_deterministic == "true"
        print(json.dumps(child(args.config, args.iters, chosen)))
        return 0

    from benchmarks.output import print_json
    from zscrgan.config import load_config

    cfg = load_config("DEMO", args.config)
    times = {name: {"e_step": [], "m_step": []} for name in SETTINGS}
    machines = {}
    for _ in range(args.repeats):
        for name, (onednn, deterministic) in SETTINGS.items():
            got = measure(args.config, args.iters, onednn, None if args.only_kernels else deterministic)
            machines[name] = got["machine"]
            for phase in ("e_step", "m_step"):
                times[name][phase].append(got[phase])
    scale = {"e_step": cfg.e_step_iters / args.iters, "m_step": cfg.m_step_iters / args.iters}
    per_round = {name: sum(statistics.median(t[ph]) * scale[ph] for ph in scale) for name, t in times.items()}
    true, false = SETTINGS
    result = {
        "machine": machines[true], "kernels_seen": {n: m["onednn"] for n, m in machines.items()},
        "compared": "oneDNN off and on, the config's update in both" if args.only_kernels
        else "deterministic true (Eigen kernels, RMSProp pass assigned afterwards) and false (oneDNN, RMSProp pass in place)",
        "iters": args.iters, "repeats": args.repeats,
        "seconds_per_round": {n: round(v, 2) for n, v in per_round.items()},
        "phase_seconds_median": {n: {ph: round(statistics.median(t[ph]), 3) for ph in t} for n, t in times.items()},
        "true_over_false": {
            **{ph: round(statistics.median(times[true][ph]) / statistics.median(times[false][ph]), 3) for ph in scale},
            "round": round(per_round[true] / per_round[false], 3)},
    }
    print_json(result, args.json)
    return 0


if __name__ == "__main__":
    sys.exit(main())
