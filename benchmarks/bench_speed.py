"""Training speed against this machine's own limit and against the released structure, in one run.

    python benchmarks/bench_speed.py                  # CUB sizes (configs/demo_cub_sizes.yaml)
    python benchmarks/bench_speed.py --iters 5 --repeats 3 --json bench.json
    python benchmarks/bench_speed.py --methods zscrgan gazsl --repeats 2   # a whole round of each method

On whatever device TensorFlow uses, interleaved and repeated (medians), so that every ratio is
taken under the same conditions even on a shared machine, it measures:
  * the rate of each matrix multiply shape the compiled steps compute, on the kernel they use (read
    from their graphs), and the memory bandwidth (a streaming in-place add), which give each phase's
    roofline (see `benchmarks/roofline.py`): the matmuls at their rates plus the bytes the optimisers
    must read and write at that bandwidth;
  * the compiled E- and M-phases (the config's defaults) and, separately, their units (an
    iteration's critic steps, a generator step, a CSEM step), each beside its own roofline;
  * each variant in `variants()`: the other settings of `jit_compile` and `precision`, and
    TensorFlow's own RMSProp kernel with the critic's clipping after it (what the fused update replaced);
  * a stand-in for the released program's structure (`benchmarks/released_standin.py`);
  * the E-step without the RMSProp updates (gradients still computed) and without the noise draws,
    which measures what those two take of a round.
Reported as JSON: seconds per round (released schedule: 100 x (5 + 1) E-step steps + 100 M-step
steps), achieved / roofline per phase, and each variant's and the stand-in's time over ours.

With `--methods`, instead: one whole round of each named method (`zscrgan.methods`, each with its own
config file's defaults, a round as that method defines it) on the same CUB-sized data, after a round
that compiles it, interleaved and repeated; seconds per round and each over ZSCRGAN's.
"""

from __future__ import annotations

import argparse
import math
import os
import platform
import statistics
import sys
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from zscrgan.tf_start import choose_kernels, onednn_on  # noqa: E402

# The kernels a run uses by default (`deterministic: true`: oneDNN off); TF_ENABLE_ONEDNN_OPTS=1 in the
# environment times oneDNN's (`benchmarks/bench_kernels.py` compares the two).
choose_kernels()

import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402
from easydict import EasyDict  # noqa: E402

from benchmarks.output import print_json  # noqa: E402
from benchmarks.released_standin import ReleasedStandIn  # noqa: E402
from benchmarks.roofline import MatMul, live_matmuls, step_seconds, update_bytes  # noqa: E402
from zscrgan.config import CHOICES, CONFIG_DIR, load_config  # noqa: E402
from zscrgan.data.sampler import ClassBatchSampler, text_rows, to_rows  # noqa: E402
from zscrgan.optimizers import RMSPropTF1  # noqa: E402
from zscrgan.train import PackedFeatures, Trainer  # noqa: E402

CACHE_BYTES = 64 << 20  # matmul operands are cycled through at least this much memory, beyond the L3 caches
TARGET_FLOP = 2e10      # work per timed matmul call on a CPU (ten times more on a GPU)
BANDWIDTH_FLOATS = 16 << 20


def machine() -> dict:
    """CPU model, cores, AVX-512, TensorFlow version and the device TensorFlow computes on."""
    cpu = platform.processor() or "unknown"
    flags = ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name") and cpu in ("unknown", "x86_64", ""):
                cpu = line.split(":", 1)[1].strip()
            if line.startswith("flags"):
                flags = line
    except OSError:
        pass
    gpus = tf.config.list_physical_devices("GPU")
    device = "GPU: " + tf.config.experimental.get_device_details(gpus[0]).get("device_name", gpus[0].name) if gpus else "CPU"
    return {"cpu": cpu, "cores": os.cpu_count(), "avx512": "avx512f" in flags.split(),
            "tensorflow": tf.__version__, "device": device, "onednn": onednn_on()}


def matmul_timer(mm: MatMul):
    """A callable computing `mm` repeatedly on its kernel, cycling operands through CACHE_BYTES; and its FLOP."""
    a_shape, b_shape = mm.operand_shapes()
    dtype = tf.as_dtype(mm.dtype)
    pair_bytes = (math.prod(a_shape) + math.prod(b_shape)) * dtype.size
    pool = max(1, min(8, math.ceil(CACHE_BYTES / pair_bytes)))
    target = TARGET_FLOP * (10 if tf.config.list_physical_devices("GPU") else 1)
    reps = max(1, round(target / (pool * mm.flops)))
    rng = tf.random.Generator.from_seed(0)
    pairs = [(tf.Variable(tf.cast(rng.normal(a_shape), dtype)), tf.Variable(tf.cast(rng.normal(b_shape), dtype)))
             for _ in range(pool)]

    @tf.function
    def run():
        total = tf.constant(0.0, dtype)
        for _ in tf.range(reps):
            for a, b in pairs:  # variable reads are stateful: no product is merged or hoisted
                if mm.kernel == "MatMul":
                    product = tf.matmul(a, b, transpose_a=mm.transpose_a, transpose_b=mm.transpose_b)
                else:
                    product = tf.raw_ops.BatchMatMulV2(x=a, y=b, adj_x=mm.transpose_a, adj_y=mm.transpose_b)
                total += product[0, 0]
        return total

    return (lambda: run().numpy()), reps * pool * mm.flops


def bandwidth_timer():
    """A callable streaming v += x over BANDWIDTH_FLOATS floats ten times; and the bytes it moves."""
    v = tf.Variable(tf.zeros([BANDWIDTH_FLOATS]))
    x = tf.ones([BANDWIDTH_FLOATS])

    @tf.function
    def run():
        for _ in tf.range(10):
            v.assign_add(x)
        return v[0]

    return (lambda: run().numpy()), 10 * 3 * 4 * BANDWIDTH_FLOATS


class KernelThenClip(RMSPropTF1):
    """The update before fusion: TensorFlow's RMSProp kernel (three passes, a momentum buffer), then
    clipping as a separate pass."""

    def __init__(self, fused: RMSPropTF1):
        super().__init__(fused._targets, fused.learning_rate, fused.rho, fused.epsilon, clip=fused.clip)
        self.mom = [tf.Variable(tf.zeros(v.shape), trainable=False) for v in self._targets]

    def apply(self, grads):
        for g, v, ms, mom in zip(grads, self._targets, self.ms, self.mom):
            tf.raw_ops.ResourceApplyRMSProp(var=v.handle, ms=ms.handle, mom=mom.handle, lr=self.learning_rate,
                                            rho=self.rho, momentum=0.0, epsilon=self.epsilon, grad=g)
            if self.clip is not None:
                v.assign(tf.clip_by_value(v, -self.clip, self.clip))


def variants(cfg, image_dim: int, text_dim: int, gpu: bool) -> dict:
    """Trainers differing from the config's in one respect each, by name."""
    out = {}
    other_jit = not cfg.jit_compile
    out[f"jit_compile_{str(other_jit).lower()}"] = Trainer(EasyDict(cfg, jit_compile=other_jit), image_dim, text_dim)
    # float16 matmuls have no fast CPU kernel; bfloat16 ones do on CPUs with AVX-512 BF16.
    for precision in ("mixed_bfloat16", "mixed_float16") if gpu else ("mixed_bfloat16",):
        if precision != cfg.precision:
            out[precision] = Trainer(EasyDict(cfg, precision=precision), image_dim, text_dim)
    unfused = Trainer(cfg, image_dim, text_dim)
    unfused.opt_critic, unfused.opt_generator = KernelThenClip(unfused.opt_critic), KernelThenClip(unfused.opt_generator)
    out["rmsprop_kernel_then_clip"] = unfused
    return out


class GradientsOnly(RMSPropTF1):
    """A diagnostic stand-in for an RMSProp optimiser: it takes the gradients (so they are still
    computed) but moves nothing in memory besides one number per variable."""

    def __init__(self, opt: RMSPropTF1):
        super().__init__(opt._targets, opt.learning_rate, opt.rho, opt.epsilon, clip=opt.clip)
        self.sink = tf.Variable(0.0, trainable=False)

    def apply(self, grads):
        self.sink.assign_add(tf.add_n([tf.reshape(g, [-1])[0] for g in grads]))


def diagnostics(cfg, image_dim: int, text_dim: int) -> dict:
    """Trainers that leave out one cost of the E-step, to measure what it takes in the phase:
    the RMSProp updates (gradients still computed), and the noise draws (zeros instead)."""
    no_updates = Trainer(cfg, image_dim, text_dim)
    no_updates.opt_critic, no_updates.opt_generator = (GradientsOnly(no_updates.opt_critic),
                                                       GradientsOnly(no_updates.opt_generator))
    no_noise = Trainer(cfg, image_dim, text_dim)
    no_noise._noise = lambda n: (tf.zeros([n, cfg.embed_dim]), tf.zeros([n, cfg.z_dim]))
    return {"without_rmsprop_updates": no_updates, "without_noise_draws": no_noise}


def label(mm: MatMul) -> str:
    """E.g. "4096x2048x64 tB bmm": m x k x n, transpose flags, and the batched kernel where used."""
    flags = (" tA" if mm.transpose_a else "") + (" tB" if mm.transpose_b else "")
    return f"{mm.m}x{mm.k}x{mm.n}{flags}{' bmm' if mm.kernel == 'BatchMatMulV2' else ''}"


def unit_timer(fn, feats, batches):
    """A callable running `fn` (a step, or an iteration's critic steps) once per leading row of `batches`."""
    @tf.function
    def run(images, texts, *rows):
        total = tf.constant(0.0)
        for i in tf.range(tf.shape(rows[0])[0]):
            total += tf.reduce_sum(fn(images, texts, *(a[i] for a in rows)))
        return total

    return lambda: run(*feats, *batches).numpy()


def interleaved_medians(fns: dict, repeats: int) -> dict:
    """Median seconds of each callable over `repeats` rounds, each round calling every one in turn."""
    for fn in fns.values():
        fn()  # tracing, allocation
    times = {name: [] for name in fns}
    for _ in range(repeats):
        for name, fn in fns.items():
            t0 = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - t0)
    return {name: statistics.median(t) for name, t in times.items()}


class _NoStop:
    """The Ctrl-C flag a method's phases consult: never raised in a benchmark."""

    requested = False

    def between_chunks(self, phase, total):
        return lambda done: False


def method_rounds(config: Path, names: list[str], repeats: int) -> dict:
    """Seconds of one training round of each method on synthetic data of the config's demo sizes."""
    from zscrgan.methods import build_method
    from zscrgan.methods.base import Phases, TrainingData

    base = load_config("DEMO", config)
    d = base.demo
    rng = np.random.default_rng(0)
    classes = list(range(d.n_seen))
    data = TrainingData(classes, {c: rng.random((d.images_per_class, d.image_dim), dtype=np.float32) for c in classes},
                        {c: rng.standard_normal((d.texts_per_class, d.text_dim), dtype=np.float32) for c in classes},
                        d.image_dim, d.text_dim)
    phases = Phases(_NoStop(), base.deterministic)
    timers = {}
    for name in names:
        method = build_method(load_config("DEMO", config, {"method": name}), d.image_dim, d.text_dim)
        method.attach(data)
        timers[name] = lambda m=method: m.train_round(phases)
    t = interleaved_medians(timers, repeats)
    out = {"machine": machine(), "sizes": {"seen_classes": d.n_seen, "images_per_class": d.images_per_class,
                                           "texts_per_class": d.texts_per_class, "image_dim": d.image_dim,
                                           "text_dim": d.text_dim},
           "repeats": repeats, "seconds_per_round": {n: round(v, 2) for n, v in t.items()}}
    if "zscrgan" in t:
        out["over_zscrgan"] = {n: round(v / t["zscrgan"], 3) for n, v in t.items()}
    return out


def phase_inputs(cfg, iters: int):
    """Synthetic seen features of the config's demo sizes, packed, and the schedules of an E-phase and
    an M-phase of `iters` iterations: (packed, (images, texts), (e, m) as numpy, (e, m) as tensors)."""
    rng = np.random.default_rng(0)
    images = [rng.random((cfg.demo.images_per_class, cfg.demo.image_dim), dtype=np.float32)
              for _ in range(cfg.demo.n_seen)]
    texts = [rng.standard_normal((1, cfg.demo.text_dim), dtype=np.float32) for _ in range(cfg.demo.n_seen)]
    packed = PackedFeatures.from_classes(images, texts)
    sampler = ClassBatchSampler(packed.images_per_class.tolist(), cfg.batch_size, 0)

    def schedule(shape):
        cls, img = sampler.schedule(math.prod(shape[:-1]))
        wrong_cls, wrong_img = sampler.wrong_pairs(cls, img)
        return [a.reshape(shape).astype(np.int32) for a in (
            to_rows(cls, img, packed.class_offsets, packed.image_pad_row), text_rows(cls, packed.text_pad_row),
            to_rows(wrong_cls, wrong_img, packed.class_offsets, packed.image_pad_row),
            text_rows(wrong_cls, packed.text_pad_row))]

    e_np, m_np = schedule((iters, cfg.critic_steps + 1, cfg.batch_size)), schedule((iters, cfg.batch_size))
    return (packed, (packed.images, packed.texts), (e_np, m_np),
            ([tf.constant(a) for a in e_np], [tf.constant(a) for a in m_np]))


def main(argv=None) -> int:
    p = argparse.ArgumentParser(allow_abbrev=False, description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config", type=Path, default=CONFIG_DIR / "demo_cub_sizes.yaml",
                   help="network and data sizes (default: the CUB-sized demo)")
    p.add_argument("--iters", type=int, default=10, help="E-step iterations and M-step steps per timed phase")
    p.add_argument("--repeats", type=int, default=5, help="interleaved timing rounds (medians are reported)")
    p.add_argument("--json", type=Path, help="also write the results here")
    p.add_argument("--methods", nargs="+", choices=CHOICES["method"], metavar="METHOD",
                   help=f"time a whole round of each of these methods instead ({', '.join(CHOICES['method'])})")
    args = p.parse_args(argv)
    if args.methods:
        result = method_rounds(args.config, args.methods, args.repeats)
        print_json(result, args.json)
        return 0

    cfg = load_config("DEMO", args.config)
    sizes = {"seen_classes": cfg.demo.n_seen, "images_per_class": cfg.demo.images_per_class,
             "image_dim": cfg.demo.image_dim, "text_dim": cfg.demo.text_dim, "batch_size": cfg.batch_size,
             "gf_dim": cfg.gf_dim, "df_dim": cfg.df_dim, "embed_dim": cfg.embed_dim, "z_dim": cfg.z_dim}
    packed, feats, (e_np, m_np), (e_batch, m_batch) = phase_inputs(cfg, args.iters)
    k, it = cfg.critic_steps, args.iters

    ours = Trainer(cfg, cfg.demo.image_dim, cfg.demo.text_dim)
    # The units of a phase: an E-step iteration's critic steps, its generator step, and a CSEM step.
    units = {"critic_steps": (ours.critic_steps, [x[0, :k] for x in e_batch]),
             "generator": (ours.generator_step, [x[0, k] for x in e_batch]),
             "csem": (ours.csem_step, [x[0] for x in m_batch])}
    steps = {name: live_matmuls(tf.function(fn).get_concrete_function(*feats, *one)) for name, (fn, one) in units.items()}
    n_params = {name: sum(int(np.prod(v.shape)) for v in variables) for name, variables in (
        ("critic", ours.model.critic.trainable_variables), ("generator", ours.model.generator_side_variables),
        ("csem", ours.model.csem.trainable_variables))}
    nbytes = {"critic_steps": k * update_bytes("rmsprop", n_params["critic"]),
              "generator": update_bytes("rmsprop", n_params["generator"]),
              "csem": update_bytes("adam", n_params["csem"])}

    shapes = sorted(set().union(*steps.values()), key=lambda mm: -mm.flops)
    timers, work = {}, {}
    for i, mm in enumerate(shapes):
        timers[f"mm{i}"], work[f"mm{i}"] = matmul_timer(mm)
    timers["bandwidth"], work["bandwidth"] = bandwidth_timer()
    timers["ours_e"] = lambda: ours.e_step(*feats, *e_batch).numpy()
    timers["ours_m"] = lambda: ours.m_step(*feats, *m_batch).numpy()
    unit_batches = {"critic_steps": [x[:, :k] for x in e_batch], "generator": [x[:, k] for x in e_batch],
                    "csem": m_batch}
    for name, (fn, _) in units.items():
        timers[f"unit_{name}"] = unit_timer(fn, feats, unit_batches[name])
    others = variants(cfg, cfg.demo.image_dim, cfg.demo.text_dim, bool(tf.config.list_physical_devices("GPU")))
    for name, trainer in others.items():
        timers[f"{name}_e"] = lambda t=trainer: t.e_step(*feats, *e_batch).numpy()
        timers[f"{name}_m"] = lambda t=trainer: t.m_step(*feats, *m_batch).numpy()
    probes = diagnostics(cfg, cfg.demo.image_dim, cfg.demo.text_dim)
    for name, trainer in probes.items():
        timers[f"{name}_e"] = lambda t=trainer: t.e_step(*feats, *e_batch).numpy()
    host_images, host_texts = packed.images.numpy(), packed.texts.numpy()
    standin = ReleasedStandIn(cfg, host_images, host_texts)
    timers["standin_e"] = lambda: standin.e_step(*e_np)
    timers["standin_m"] = lambda: standin.m_step(*m_np)

    t = interleaved_medians(timers, args.repeats)
    rates = {mm: work[f"mm{i}"] / t[f"mm{i}"] for i, mm in enumerate(shapes)}
    bandwidth = work["bandwidth"] / t["bandwidth"]
    roof = {name: step_seconds(steps[name], rates, nbytes[name], bandwidth) for name in steps}
    roof_e, roof_m = it * (roof["critic_steps"] + roof["generator"]), it * roof["csem"]
    e_scale, m_scale = cfg.e_step_iters / it, cfg.m_step_iters / it
    ours_round = t["ours_e"] * e_scale + t["ours_m"] * m_scale
    standin_round = t["standin_e"] * e_scale + t["standin_m"] * m_scale
    step_flop = {name: sum(n * mm.flops for mm, n in mms.items()) for name, mms in steps.items()}
    round_flop = cfg.e_step_iters * (step_flop["critic_steps"] + step_flop["generator"]) + cfg.m_step_iters * step_flop["csem"]
    result = {
        "machine": machine(), "sizes": sizes, "iters": it, "repeats": args.repeats,
        "matmul_gflops": {label(mm): round(rates[mm] / 1e9, 1) for mm in shapes},
        "bandwidth_gbs": round(bandwidth / 1e9, 1),
        "unit_gflop": {name: round(v / 1e9, 3) for name, v in step_flop.items()},
        "unit_update_mb": {name: round(v / 1e6, 1) for name, v in nbytes.items()},
        "round_tflop": round(round_flop / 1e12, 3),
        "round_update_gb": round((cfg.e_step_iters * (nbytes["critic_steps"] + nbytes["generator"])
                                  + cfg.m_step_iters * nbytes["csem"]) / 1e9, 1),
        "seconds_per_round": {"ours": round(ours_round, 2), "released_standin": round(standin_round, 2),
                              "roofline": round(roof_e * e_scale + roof_m * m_scale, 2)},
        "achieved_over_roofline": {"e_step": round(roof_e / t["ours_e"], 3), "m_step": round(roof_m / t["ours_m"], 3),
                                   "round": round((roof_e * e_scale + roof_m * m_scale) / ours_round, 3)},
        "unit_ms": {name: {"ours": round(t[f"unit_{name}"] / it * 1e3, 2), "roofline": round(roof[name] * 1e3, 2)}
                    for name in units},
        "standin_over_ours": round(standin_round / ours_round, 2),
        # Seconds per round the E-step spends on a cost, measured by leaving it out, beside its share
        # of the roofline (the RMSProp updates' bytes at the measured bandwidth; the noise: none).
        "e_step_cost_seconds_per_round": {
            "rmsprop_updates": {"measured": round((t["ours_e"] - t["without_rmsprop_updates_e"]) * e_scale, 2),
                                "roofline": round(cfg.e_step_iters * (nbytes["critic_steps"] + nbytes["generator"])
                                                  / bandwidth, 2)},
            "noise_draws": {"measured": round((t["ours_e"] - t["without_noise_draws_e"]) * e_scale, 2),
                            "roofline": 0.0}},
        "variant_over_ours": {name: {"e_step": round(t[f"{name}_e"] / t["ours_e"], 3),
                                     "m_step": round(t[f"{name}_m"] / t["ours_m"], 3)} for name in others},
    }
    print_json(result, args.json)
    return 0


if __name__ == "__main__":
    sys.exit(main())
