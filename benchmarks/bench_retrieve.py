"""Searching a large gallery against this machine's own matmul rate and memory, in one run.

    python benchmarks/bench_retrieve.py                      # 1,000 queries x 1,000,000 gallery rows of 2048-d
    python benchmarks/bench_retrieve.py --rows 100000 --json bench.json

The gallery is a float32 .npy file (made once, in chunks, in the system's temporary folder unless
--gallery names one: 8 GB at the default size) that the search memory-maps. The model has the
released sizes (CSEM 2048 -> 1024, text 1024-d) with its initial weights: the arithmetic of a trained
one. Measured, on whatever device TensorFlow uses:
  * the matmul rate: plain float32 products of the search's own shapes (a chunk of gallery rows by
    the CSEM kernel; the queries by a chunk of embeddings), best of several, before and after the search;
  * the search end to end (`Retriever.search`: the queries' embeddings, then every chunk read from
    the memory map, embedded, normalised, scored and merged into the running top K), after one pass
    over the file so that it is in the page cache, as a gallery searched more than once is;
  * the process's anonymous resident memory (RssAnon: memory-mapped file pages excluded), sampled
    during the search of the first tenth of the gallery and of the whole of it.
Reported as JSON: seconds, TFLOP (gallery embedding + scoring), achieved / matmul rate, peak
anonymous memory at both gallery sizes.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import threading
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

from zscrgan.config import load_config  # noqa: E402
from zscrgan.retrieve import Retriever  # noqa: E402
from zscrgan.methods import build_method  # noqa: E402

MAKE_ROWS = 65_536  # rows generated and written at once when making the gallery file


def gallery_file(path: Path, rows: int, dim: int) -> np.ndarray:
    """The memory-mapped gallery at `path`, made first (seeded, non-negative like CNN features) if absent."""
    if path.exists():
        gallery = np.load(path, mmap_mode="r")
        if gallery.shape == (rows, dim) and gallery.dtype == np.float32:
            return gallery
        raise SystemExit(f"error: {path}: holds {gallery.shape} {gallery.dtype}, not ({rows}, {dim}) float32; "
                         "remove it or give another --gallery")
    tmp = path.with_name(path.name + ".partial")
    out = np.lib.format.open_memmap(tmp, mode="w+", dtype=np.float32, shape=(rows, dim))
    rng = np.random.default_rng(0)
    for start in range(0, rows, MAKE_ROWS):
        n = min(MAKE_ROWS, rows - start)
        out[start:start + n] = rng.random((n, dim), np.float32)
    out.flush()
    del out
    os.replace(tmp, path)
    return np.load(path, mmap_mode="r")


def rss_anon() -> int:
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) * 1024 for line in f if line.startswith("RssAnon:"))


class PeakAnon:
    """Samples RssAnon every few milliseconds while in use; `.peak` is the highest value seen (bytes)."""

    def __enter__(self):
        self.peak, self._stop = rss_anon(), threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self._thread.start()
        return self

    def _sample(self):
        while not self._stop.wait(0.005):
            self.peak = max(self.peak, rss_anon())

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, rss_anon())
        return False


def best_time(fn, repeats: int) -> tuple[float, float]:
    """(wall seconds, this process's CPU seconds) of fn, each the best of `repeats` calls after a warm-up."""
    fn()  # warm-up (tracing, allocation)
    wall, cpu = [], []
    for _ in range(repeats):
        t0, c0 = time.perf_counter(), time.process_time()
        fn()
        wall.append(time.perf_counter() - t0)
        cpu.append(time.process_time() - c0)
    return min(wall), min(cpu)


def matmul_rate(chunk: int, image_dim: int, embed_dim: int, queries: int, repeats: int = 5) -> tuple[float, float]:
    """GFLOP per wall second and per CPU second of plain float32 matmuls of the search's shapes,
    one chunk's worth (embedding + scoring)."""
    x = tf.random.uniform([chunk, image_dim])
    w = tf.random.normal([image_dim, embed_dim])
    q = tf.random.normal([queries, embed_dim])
    e = tf.random.normal([chunk, embed_dim])
    embed = best_time(lambda: tf.matmul(x, w).numpy(), repeats)
    score = best_time(lambda: tf.matmul(q, e, transpose_b=True).numpy(), repeats)
    gflop = 2 * chunk * embed_dim * (image_dim + queries) / 1e9
    return gflop / (embed[0] + score[0]), gflop / (embed[1] + score[1])


def main(argv=None) -> int:
    p = argparse.ArgumentParser(allow_abbrev=False, description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--rows", type=int, default=1_000_000, help="gallery rows")
    p.add_argument("--queries", type=int, default=1000)
    p.add_argument("--image_dim", type=int, default=2048)
    p.add_argument("--text_dim", type=int, default=1024)
    p.add_argument("--top_k", type=int, default=50)
    p.add_argument("--chunk_rows", type=int, default=4096)
    p.add_argument("--gallery", type=Path, help="the gallery .npy (default: made in the temporary folder)")
    p.add_argument("--json", type=Path, help="also write the results here")
    args = p.parse_args(argv)
    path = args.gallery or Path(tempfile.gettempdir()) / f"zscrgan_bench_gallery_{args.rows}x{args.image_dim}.npy"

    cfg = load_config("CUB")  # the released network sizes
    retriever = Retriever(build_method(cfg, args.image_dim, args.text_dim),
                          {"input_scaling": "none", "image_factor": None, "text_factor": None}, 1, args.top_k)
    t0 = time.perf_counter()
    gallery = gallery_file(path, args.rows, args.image_dim)
    made_s = time.perf_counter() - t0
    texts = np.random.default_rng(1).standard_normal((args.queries, args.text_dim)).astype(np.float32)
    e = int(retriever.method.trainer.model.csem.fc.kernel.shape[1])

    def search(rows):
        return retriever.search(texts, gallery[:rows], args.top_k, chunk_rows=args.chunk_rows)

    load_before = os.getloadavg()[0]
    rate_before = matmul_rate(args.chunk_rows, args.image_dim, e, args.queries)
    tenth = max(args.rows // 10, 1)
    with PeakAnon() as small:
        search(tenth)  # also traces the compiled functions
    for start in range(0, args.rows, MAKE_ROWS):  # one pass over the file: page cache as for a repeat search
        np.add.reduce(gallery[start:start + MAKE_ROWS, 0])
    with PeakAnon() as full:
        t0, c0 = time.perf_counter(), time.process_time()
        _, indices = search(args.rows)
        seconds, cpu_seconds = time.perf_counter() - t0, time.process_time() - c0
    rate_after = matmul_rate(args.chunk_rows, args.image_dim, e, args.queries)
    rate, cpu_rate = max(rate_before[0], rate_after[0]), max(rate_before[1], rate_after[1])
    tflop = 2 * args.rows * e * (args.image_dim + args.queries) / 1e12
    result = {
        "device": "GPU" if tf.config.list_physical_devices("GPU") else f"CPU ({os.cpu_count()} cores)",
        "gallery": {"rows": args.rows, "dim": args.image_dim, "gb": round(gallery.nbytes / 1e9, 2),
                    "made_seconds": round(made_s, 1)},
        "queries": args.queries, "top_k": args.top_k, "chunk_rows": args.chunk_rows,
        "tflop": round(tflop, 3),
        "seconds": round(seconds, 2),
        "achieved_gflops": round(tflop * 1e3 / seconds, 1),
        "matmul_rate_gflops": {"before": round(rate_before[0], 1), "after": round(rate_after[0], 1)},
        "achieved_over_matmul_rate": round(tflop * 1e3 / seconds / rate, 3),
        # The same ratio in CPU time, which other processes on a shared machine disturb less.
        "cpu_seconds": round(cpu_seconds, 2),
        "matmul_rate_gflop_per_cpu_second": {"before": round(rate_before[1], 1), "after": round(rate_after[1], 1)},
        "achieved_over_matmul_rate_cpu_time": round(tflop * 1e3 / cpu_seconds / cpu_rate, 3),
        "peak_anon_gb": {f"rows_{tenth}": round(small.peak / 1e9, 3), f"rows_{args.rows}": round(full.peak / 1e9, 3)},
        "result_shape": list(indices.shape),
        "load_average_1min": [load_before, os.getloadavg()[0]],  # other processes competing for the cores
    }
    text = json.dumps(result, indent=1)
    print(text)
    if args.json:
        args.json.write_text(text + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
