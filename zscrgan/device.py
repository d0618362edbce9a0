"""The device TensorFlow computes on (config `device`) and op determinism there (config `deterministic`).

`auto` leaves TensorFlow's choice (the first GPU it sees, else the CPU); `cpu` hides every GPU from
TensorFlow; `gpu` requires one. With `deterministic: true` TensorFlow's op determinism is on, so a
seed gives the same numbers on the same machine and software; an op with no deterministic kernel on
the device then raises, and `run_deterministic` turns that into one line saying what to do.
"""

from __future__ import annotations

import os
from contextlib import contextmanager

import tensorflow as tf
from tensorflow.python.framework import config as tf_config

from zscrgan.errors import UserError
from zscrgan.tf_start import ONEDNN, onednn_on

# Raw ops TensorFlow documents as having no deterministic GPU kernel: under op determinism they raise
# UnimplementedError on a GPU (TensorFlow's determinism RFC, rfcs/20210119-determinism.md, and the
# "Deterministic Op Functionality" notes of releases 2.7 to 2.10, which also list the ops that
# gained deterministic GPU kernels, e.g. the segment sums behind tf.gather's gradient).
NO_DETERMINISTIC_GPU_KERNEL = frozenset({
    "AdjustContrastv2", "Bincount", "DenseBincount", "RaggedBincount", "SparseBincount",
    "CropAndResizeGradBoxes", "CropAndResizeGradImage", "DebugNumericSummary", "DebugNumericSummaryV2",
    "DepthwiseConv2dNativeBackpropFilter", "Dilation2DBackpropFilter", "Dilation2DBackpropInput",
    "FakeQuantWithMinMaxVarsGradient", "FakeQuantWithMinMaxVarsPerChannelGradient", "FusedBatchNormGradV3",
    "MaxPoolGradWithArgmax", "ResizeNearestNeighborGrad", "ResourceScatterAdd", "ResourceScatterDiv",
    "ResourceScatterMax", "ResourceScatterMin", "ResourceScatterMul", "ResourceScatterSub",
    "ResourceScatterUpdate", "SparseTensorDenseMatMul", "Svd", "Timestamp",
})
XLA_DETERMINISTIC = "--xla_gpu_deterministic_ops=true"


def describe_device() -> str:
    """The device TensorFlow computes on, in words (on the CPU: with or without oneDNN's kernels)."""
    gpus = tf.config.get_visible_devices("GPU")
    if gpus:
        return f"GPU ({len(gpus)} visible: {', '.join(g.name for g in gpus)})"
    kernels = {True: "; oneDNN kernels", False: "; Eigen kernels (oneDNN off)", None: ""}[onednn_on()]
    return f"CPU ({os.cpu_count()} cores; TensorFlow sees no GPU{kernels})"


def kernels_note(deterministic: bool, jit_compile: bool = False) -> str | None:
    """One line when a deterministic run computes with oneDNN's CPU kernels (TensorFlow was imported
    with them, or TF_ENABLE_ONEDNN_OPTS asks for them) or has XLA compile its steps on the CPU: at large
    sizes the same seed may then drift."""
    if not deterministic or tf.config.get_visible_devices("GPU"):
        return None
    if jit_compile:
        return ("note: deterministic: true, but jit_compile: true: XLA then writes each step's updates into the "
                "variables in place, and at large sizes the same seed may not repeat its numbers (docs/determinism.md)")
    if not onednn_on():
        return None
    why = (f"{ONEDNN}={os.environ[ONEDNN]} in the environment" if ONEDNN in os.environ
           else "TensorFlow was imported before zscrgan could choose its kernels")
    return (f"note: deterministic: true, but TensorFlow computes with its oneDNN kernels ({why}): at large "
            f"sizes the same seed may not repeat its numbers; start with {ONEDNN}=0 (docs/determinism.md)")


def select_device(choice: str) -> str:
    """Make TensorFlow compute on `choice` (auto | cpu | gpu); returns `describe_device()`."""
    gpus = tf.config.list_physical_devices("GPU")
    if choice == "gpu" and not gpus:
        raise UserError("device: gpu, but TensorFlow sees no GPU (a GPU needs TensorFlow's CUDA libraries: "
                        "pip install -r requirements-gpu.txt); use --device cpu or auto")
    if choice == "cpu" and gpus:
        try:
            tf.config.set_visible_devices([], "GPU")
        except RuntimeError:
            raise UserError("device: cpu, but TensorFlow has already started on its GPU in this process") from None
    return describe_device()


def set_determinism(enabled: bool) -> None:
    """Switch TensorFlow's op determinism on or off (config `deterministic`).

    On also asks XLA for deterministic GPU kernels (its reductions may otherwise use atomics), which
    takes effect when set before XLA first compiles in this process.
    """
    if enabled:
        tf.config.experimental.enable_op_determinism()
        if XLA_DETERMINISTIC not in os.environ.get("XLA_FLAGS", ""):
            os.environ["XLA_FLAGS"] = f"{os.environ.get('XLA_FLAGS', '')} {XLA_DETERMINISTIC}".strip()
    else:
        tf_config.disable_op_determinism()  # defined beside enable_op_determinism, not exported


@contextmanager
def run_deterministic(enabled: bool):
    """Turn an op's refusal to run deterministically into one line naming the way out."""
    try:
        yield
    except tf.errors.UnimplementedError as e:
        if not enabled:
            raise
        first = e.message.strip().splitlines()[0] if e.message.strip() else type(e).__name__
        raise UserError(f"deterministic: {first}. No deterministic kernel for this op on {describe_device()}; "
                        "set deterministic: false (--deterministic false) to run without op determinism") from None


VARIABLE_WRITES = frozenset({"AssignVariableOp", "AssignAddVariableOp", "AssignSubVariableOp"})


def function_defs(graph_def) -> list:
    """The FunctionDefs a GraphDef carries: the functions its ops call (loops, conditions, compiled steps)."""
    return [f for field, value in graph_def.ListFields()
            if field.message_type is not None and field.message_type.name.startswith("FunctionDef")
            for f in value.function]


def xla_variable_writes(concrete_function) -> dict[str, set[str]]:
    """The functions a traced function's graph has XLA compile (jit_compile=True) that write a variable,
    by name, with the writing op types: XLA writes those variables' buffers in place."""
    out = {}
    for f in function_defs(concrete_function.graph.as_graph_def()):
        if f.attr["_XlaMustCompile"].b:
            writes = {n.op for n in f.node_def if n.op in VARIABLE_WRITES or n.op.startswith("ResourceApply")}
            if writes:
                out[f.signature.name] = writes
    return out


def op_types(concrete_function) -> set[str]:
    """Every op type in a traced function's graph and in the functions it calls (loops, conditions)."""
    graph_def = concrete_function.graph.as_graph_def()
    nodes = list(graph_def.node) + [n for f in function_defs(graph_def) for n in f.node_def]
    return {n.op for n in nodes}
