"""What running a phase as several compiled calls costs (the chunks that let Ctrl-C act within seconds).

    python benchmarks/bench_chunks.py                  # CUB sizes, released schedule, 100-iteration E-step
    python benchmarks/bench_chunks.py --iters 20 --json chunks.json

Times, in one run and alternating the two so that both see the same machine load, a whole E-step and
M-step as one compiled call each and as the chunks a run uses (`zscrgan.methods.base.CHUNK_STEPS` steps per
call), and reports the ratio chunked / one call (best of --repeats each).
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

from zscrgan.config import load_config  # noqa: E402
from zscrgan.data.sampler import ClassBatchSampler, text_rows, to_rows  # noqa: E402
from zscrgan.methods.base import CHUNK_STEPS  # noqa: E402
from zscrgan.train import PackedFeatures, Trainer  # noqa: E402


def main(argv=None) -> int:
    p = argparse.ArgumentParser(allow_abbrev=False, description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--image_dim", type=int, default=2048)
    p.add_argument("--text_dim", type=int, default=1024)
    p.add_argument("--classes", type=int, default=150)
    p.add_argument("--images_per_class", type=int, default=60)
    p.add_argument("--iters", type=int, default=100, help="E-step iterations and M-step steps per phase")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--json", type=Path, help="also write the results here")
    args = p.parse_args(argv)

    cfg = load_config("CUB")
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
    e_chunk = max(1, CHUNK_STEPS // (k + 1))
    variants = {
        "one_call": lambda: (trainer.e_step(*feats, *e_batch).numpy(), trainer.m_step(*feats, *m_batch).numpy()),
        "chunked": lambda: (trainer.e_step(*feats, *e_batch, chunk_iters=e_chunk, stop=lambda done: False).numpy(),
                            trainer.m_step(*feats, *m_batch, chunk_iters=CHUNK_STEPS,
                                           stop=lambda done: False).numpy()),
    }
    for run in variants.values():
        run()  # warm-up: tracing, allocation
    times = {name: [] for name in variants}
    for _ in range(args.repeats):
        for name, run in variants.items():
            t0 = time.perf_counter()
            run()
            times[name].append(time.perf_counter() - t0)
    gpus = tf.config.list_physical_devices("GPU")
    result = {
        "device": f"GPU: {gpus[0].name}" if gpus else f"CPU: {os.cpu_count()} cores",
        "sizes": vars(args) | {"json": None},
        "e_chunk_iters": e_chunk, "m_chunk_iters": CHUNK_STEPS,
        "seconds_one_call": round(min(times["one_call"]), 3),
        "seconds_chunked": round(min(times["chunked"]), 3),
        "chunked_over_one_call_time": round(min(times["chunked"]) / min(times["one_call"]), 3),
    }
    for key, value in result.items():
        print(f"{key}: {value}")
    if args.json:
        args.json.write_text(json.dumps(result, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
