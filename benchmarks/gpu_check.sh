#!/usr/bin/env bash
# The GPU check, from the repository root, in under 5 minutes on one GPU (each part has a time limit;
# 7 minutes at the very most); prints one JSON summary and exits 0 when everything passed.
#     python3 -m venv .venv && .venv/bin/pip install -q -r requirements-gpu.txt && bash benchmarks/gpu_check.sh
# 1. TensorFlow sees a GPU; 2. the GPU-relevant tests (steps against NumPy, the speed settings' numerics,
# device choice and op determinism, the roofline arithmetic) pass on it; 3. the demo trains on it,
# twice with the same seed for each of jit_compile false and true, and each pair gives equal metrics
# (op determinism); 4. the speed benchmark (roofline, the stand-in, the variants, float16 included).
# PYTHON (default .venv/bin/python) picks the interpreter; the work folder is removed at the end.
set -uo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-.venv/bin/python}
WORK=$(mktemp -d)
trap 'rm -rf "$WORK"' EXIT
export TF_CPP_MIN_LOG_LEVEL=2

"$PY" -c "import sys, tensorflow as tf; sys.exit(0 if tf.config.list_physical_devices('GPU') else 1)"
gpu=$?
if [ $gpu -eq 0 ]; then
  timeout 120 "$PY" -m pytest -q -p no:cacheprovider tests/test_train_steps.py tests/test_speed.py \
    tests/test_device.py tests/test_roofline.py tests/test_optimizers.py tests/test_networks.py > "$WORK/tests.log" 2>&1
  tests=$?
  for jit in false true; do
    for k in 1 2; do
      timeout 40 "$PY" main.py --device gpu --rounds 3 --jit_compile $jit --data_root "$WORK/data" \
        --results_root "$WORK/res" --output_dir "$WORK/demo-jit$jit-$k" > "$WORK/demo-jit$jit-$k.log" 2>&1
    done
  done
  timeout 120 "$PY" benchmarks/bench_speed.py --iters 5 --repeats 3 --json "$WORK/bench.json" > "$WORK/bench.log" 2>&1
fi
"$PY" - "$WORK" "$gpu" "${tests:-1}" <<'PY'
import json, sys
from pathlib import Path

work, gpu, tests = Path(sys.argv[1]), sys.argv[2] == "0", int(sys.argv[3])
def read(path):
    try:
        return json.loads(Path(path).read_text())
    except (OSError, ValueError):
        return None

def rounds(run):
    """Losses and unseen metrics of every round of a demo run (None if it did not finish)."""
    try:
        lines = (work / run / "metrics.jsonl").read_text().splitlines()
    except OSError:
        return None
    return [{k: json.loads(line)[k] for k in ("losses", "test")} for line in lines] or None

out = {"gpu_visible": gpu}
if gpu:
    out["tests_passed"] = tests == 0
    if tests:
        out["tests_tail"] = (work / "tests.log").read_text()[-2000:]
    for jit in ("false", "true"):
        first, second = rounds(f"demo-jit{jit}-1"), rounds(f"demo-jit{jit}-2")
        out[f"demo_jit_compile_{jit}"] = {
            "rounds": len(first or []), "last_prec": first[-1]["test"]["prec"] if first else None,
            "same_seed_same_numbers": first is not None and first == second}
    out["benchmark"] = read(work / "bench.json")
print(json.dumps(out, indent=1))
sys.exit(0 if gpu and tests == 0 and out["benchmark"] and
         all(out[f"demo_jit_compile_{j}"]["same_seed_same_numbers"] for j in ("false", "true")) else 1)
PY
