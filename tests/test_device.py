"""Device choice and op determinism: every op the compiled phases and the evaluation use has a
deterministic GPU kernel, by what TensorFlow documents; a refusal says how to turn determinism off."""

import pytest
import tensorflow as tf
from tensorflow.python.framework import config as tf_config

from test_train_steps import B, I, T, _cfg, _packed, _schedule
from zscrgan import device
from zscrgan.errors import UserError
from zscrgan.search import _merge_chunk, unit_rows
from zscrgan.train import Trainer

# Every op type the phases and the evaluation use, each reviewed: elementwise kernels and reductions,
# matrix multiplies (cuBLAS, plain and batched), gathers (forward only: no gradient flows into the features, so no
# segment sums), stateless random numbers, TF1's Adam kernel, top-K, padding, loops, a condition (the
# float16 loss scale) and calls (among them the XLA-compiled RMSProp update, elementwise only). None
# is in TensorFlow's list of ops without a deterministic GPU kernel. A new op fails this test until
# reviewed and added here.
REVIEWED = {
    "Abs", "AddN", "AddV2", "All", "AssignAddVariableOp", "AssignVariableOp", "BatchMatMulV2", "Bitcast", "Cast",
    "ConcatOffset",
    "ConcatV2", "Const", "Exp", "Fill", "FloorDiv", "FloorMod", "GatherV2", "Greater", "GreaterEqual", "Identity",
    "IdentityN",
    "If", "IsFinite", "LeakyRelu", "LeakyReluGrad", "Less", "MatMul", "Max", "Maximum", "Mean", "Minimum",
    "Mul", "Neg", "NoOp", "NotEqual", "Pack", "PadV2", "Placeholder", "Pow", "Prod", "Range", "ReadVariableOp",
    "RealDiv", "Relu", "ReluGrad", "Reshape", "ResourceApplyAdam", "RngReadAndSkip", "Rsqrt", "RsqrtGrad",
    "SelectV2", "Shape", "Sigmoid", "Sign", "Slice", "Softplus", "Split", "Sqrt", "Square",
    "StatefulPartitionedCall", "StatelessIf", "StatelessRandomNormalV2", "StatelessTruncatedNormalV2",
    "StridedSlice", "StridedSliceGrad", "Sub", "Sum", "Tile", "TopKV2", "Transpose", "While",
}


def _phase_functions(**overrides):
    """Concrete functions of the compiled E- and M-step chunks, the query and gallery embeddings and the search."""
    cfg = _cfg(**overrides)
    trainer = Trainer(cfg, I, T)
    packed = _packed()
    e = _schedule(packed, (2, cfg.critic_steps + 1, B))
    m = _schedule(packed, (2, B))
    texts, images = tf.zeros([3, T]), tf.zeros([5, I])
    return [trainer._e_step_chunk.get_concrete_function(packed.images, packed.texts, *e, tf.zeros([5])),
            trainer._m_step_chunk.get_concrete_function(packed.images, packed.texts, *m, tf.constant(0.0)),
            trainer._embed_query_once.get_concrete_function(texts),
            trainer.embed_gallery.get_concrete_function(images),
            unit_rows.get_concrete_function(), _merge_chunk.get_concrete_function()]


@pytest.mark.parametrize("overrides", [{}, dict(jit_compile=True), dict(precision="mixed_float16", training="joint"),
                                       dict(precision="mixed_bfloat16", adv_coeff=0.0)])
def test_every_op_of_training_and_evaluation_has_a_deterministic_gpu_kernel(overrides):
    ops = set().union(*(device.op_types(f) for f in _phase_functions(**overrides)))
    assert "MatMul" in ops and "ResourceApplyAdam" in ops  # the list reaches into the loops
    assert not ops & device.NO_DETERMINISTIC_GPU_KERNEL
    assert ops <= REVIEWED, f"ops to review for GPU determinism: {sorted(ops - REVIEWED)}"


def test_an_op_refusing_determinism_stops_with_one_line_naming_the_switch():
    def refuse():
        raise tf.errors.UnimplementedError(None, None, "Deterministic GPU implementation of X not available.")

    with pytest.raises(UserError, match="deterministic: false"):
        with device.run_deterministic(True):
            refuse()
    with pytest.raises(tf.errors.UnimplementedError):  # with determinism off it is not about determinism
        with device.run_deterministic(False):
            refuse()


def test_determinism_switch():
    try:
        device.set_determinism(False)
        assert not tf_config.is_op_determinism_enabled()
        device.set_determinism(True)
        assert tf_config.is_op_determinism_enabled()
    finally:
        device.set_determinism(True)  # runs in this process keep it on, as the default config does


def test_gpu_without_a_gpu_is_one_clear_error(monkeypatch):
    monkeypatch.setattr(tf.config, "list_physical_devices", lambda kind=None: [])
    with pytest.raises(UserError, match="device: gpu.*no GPU.*requirements-gpu.txt"):
        device.select_device("gpu")
    assert device.select_device("cpu").startswith("CPU")
    assert device.select_device("auto").startswith("CPU")


def test_cpu_hides_the_gpus_and_gpu_or_auto_keep_them(monkeypatch):
    gpu = tf.config.PhysicalDevice("/physical_device:GPU:0", "GPU")
    hidden = []
    monkeypatch.setattr(tf.config, "list_physical_devices", lambda kind=None: [gpu])
    monkeypatch.setattr(tf.config, "set_visible_devices", lambda devices, kind=None: hidden.append((devices, kind)))
    monkeypatch.setattr(tf.config, "get_visible_devices", lambda kind=None: [] if hidden else [gpu])
    assert device.select_device("gpu").startswith("GPU") and device.select_device("auto").startswith("GPU")
    assert not hidden
    assert device.select_device("cpu").startswith("CPU")
    assert hidden == [([], "GPU")]


def test_a_deterministic_run_is_told_when_its_setup_may_not_repeat_its_numbers():
    """The tests run with the deterministic default kernels (conftest): no note for them; a note when
    the steps are XLA-compiled (their updates then written in place); none when not deterministic."""
    assert device.onednn_on() is False
    assert device.kernels_note(True) is None
    note = device.kernels_note(True, jit_compile=True)
    assert note.startswith("note: deterministic: true, but jit_compile: true") and "\n" not in note
    assert device.kernels_note(False, jit_compile=True) is None
