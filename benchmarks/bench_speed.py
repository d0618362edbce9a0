"""Training speed against this machine's own limit, all ratios taken in one run.

    python benchmarks/bench_speed.py                 # CUB sizes, released hyperparameters
    python benchmarks/bench_speed.py --iters 20 --json bench.json

It measures, on whatever device TensorFlow uses (GPU if visible, else CPU):
  * the machine's limit: float32 matrix-multiply throughput (a large square matmul, best of several);
  * the achieved throughput of a compiled E-step and M-step at the given sizes, from the exact
    floating-point operation count of each step's graph (TensorFlow's profiler, forward and backward);
  * the same steps run one Python call per step (eager), to show what compiling the phase buys;
  * the E-step with TensorFlow's own MatMul gradient instead of `zscrgan.networks.matmul`'s, to show
    what computing the input gradient as (w dy^T)^T buys on this device.
Reported: seconds per round (released schedule: 100 x (5 + 1) E-step steps + 100 M-step steps),
GFLOP/s, and achieved / limit.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

import zscrgan.networks  # noqa: E402
from zscrgan.config import load_config  # noqa: E402
from zscrgan.data.sampler import ClassBatchSampler, text_rows, to_rows  # noqa: E402
from zscrgan.train import PackedFeatures, Trainer  # noqa: E402


def best_time(fn, repeats: int) -> float:
    fn()  # warm-up (tracing, allocation)
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return min(times)


def matmul_limit(n: int = 2048, reps: int = 10) -> float:
    """Float32 GEMM throughput in GFLOP/s: the best a dense layer could hope for on this device."""
    a = tf.random.normal([n, n])
    b = tf.random.normal([n, n])

    @tf.function
    def many():
        acc = tf.zeros([n, n])
        for _ in tf.range(reps):
            acc += tf.matmul(a, b)
        return acc

    seconds = best_time(lambda: many().numpy(), 3)
    return 2 * n ** 3 * reps / seconds / 1e9


def step_flops(fn, *args) -> float:
    """Floating-point operations of one call of `fn`, counted on its graph by TensorFlow's profiler."""
    graph = tf.function(fn).get_concrete_function(*args).graph
    opts = tf.compat.v1.profiler.ProfileOptionBuilder.float_operation()
    opts["output"] = "none"
    return float(tf.compat.v1.profiler.profile(graph, options=opts).total_float_ops)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--image_dim", type=int, default=2048)
    p.add_argument("--text_dim", type=int, default=1024)
    p.add_argument("--classes", type=int, default=150)
    p.add_argument("--images_per_class", type=int, default=60)
    p.add_argument("--iters", type=int, default=10, help="E-step iterations and M-step steps timed per phase")
    p.add_argument("--json", type=Path, help="also write the results here")
    args = p.parse_args(argv)

    cfg = load_config("CUB")
    gpus = tf.config.list_physical_devices("GPU")
    device = f"GPU: {gpus[0].name}" if gpus else f"CPU: {os.cpu_count()} cores"
    rng = np.random.default_rng(0)
    images = [rng.random((args.images_per_class, args.image_dim), dtype=np.float32) for _ in range(args.classes)]
    texts = [rng.standard_normal((1, args.text_dim), dtype=np.float32) for _ in range(args.classes)]
    packed = PackedFeatures.from_classes(images, texts)
    trainer = Trainer(cfg, args.image_dim, args.text_dim)
    sampler = ClassBatchSampler(packed.images_per_class.tolist(), cfg.batch_size, 0)

    def batches(steps, shape):
        cls, img = sampler.schedule(steps)
        wrong_cls, wrong_img = sampler.wrong_pairs(cls, img)
        return [tf.constant(a.reshape(shape), tf.int32) for a in (
            to_rows(cls, img, packed.class_offsets, packed.image_pad_row), text_rows(cls, packed.text_pad_row),
            to_rows(wrong_cls, wrong_img, packed.class_offsets, packed.image_pad_row),
            text_rows(wrong_cls, packed.text_pad_row))]

    k, b = cfg.critic_steps, cfg.batch_size
    e_batch = batches(args.iters * (k + 1), (args.iters, k + 1, b))
    m_batch = batches(args.iters, (args.iters, b))
    feats = (packed.images, packed.texts)

    # A second trainer whose dense layers use TensorFlow's own MatMul gradient. Its graphs give the
    # operation counts: TF's gradient skips input gradients nobody needs, which a custom gradient
    # builds and the graph optimiser later prunes, so counting on ours would overstate the work.
    ours = zscrgan.networks.matmul
    zscrgan.networks.matmul = tf.matmul
    try:
        plain = Trainer(cfg, args.image_dim, args.text_dim)
        one = [x[0, 0] for x in e_batch]
        flops = {
            "critic": step_flops(plain.critic_step, *feats, *one),
            "generator": step_flops(plain.generator_step, *feats, *one),
            "csem": step_flops(plain.csem_step, *feats, *[x[0] for x in m_batch]),
        }
        plain_time = best_time(lambda: plain.e_step(*feats, *e_batch).numpy(), 3)
    finally:
        zscrgan.networks.matmul = ours
    e_flops = args.iters * (k * flops["critic"] + flops["generator"])
    m_flops = args.iters * flops["csem"]

    limit = matmul_limit()
    e_time = best_time(lambda: trainer.e_step(*feats, *e_batch).numpy(), 3)
    m_time = best_time(lambda: trainer.m_step(*feats, *m_batch).numpy(), 3)

    def eager_e():
        for i in range(args.iters):
            for j in range(k):
                trainer.critic_step(*feats, *[x[i, j] for x in e_batch])
            trainer.generator_step(*feats, *[x[i, k] for x in e_batch]).numpy()

    eager_time = best_time(eager_e, 1)

    scale = cfg.e_step_iters / args.iters  # released phases have 100 iterations each
    round_seconds = (e_time + m_time) * scale
    achieved = (e_flops + m_flops) / (e_time + m_time) / 1e9
    result = {
        "device": device, "sizes": vars(args) | {"json": None},
        "matmul_limit_gflops": round(limit, 1),
        "step_gflop": {name: round(v / 1e9, 3) for name, v in flops.items()},
        "round_tflop": round((e_flops + m_flops) * scale / 1e12, 3),
        "seconds_per_round_compiled": round(round_seconds, 2),
        "achieved_gflops": round(achieved, 1),
        "achieved_over_limit": round(achieved / limit, 3),
        "e_step_eager_over_compiled_time": round(eager_time / e_time, 2),
        "e_step_tf_matmul_grad_over_ours_time": round(plain_time / e_time, 2),
    }
    for key, value in result.items():
        print(f"{key}: {value}")
    if args.json:
        args.json.write_text(json.dumps(result, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
