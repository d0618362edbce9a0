"""The benchmark's roofline arithmetic (benchmarks/roofline.py) on a tiny step counted by hand."""

from collections import Counter

import pytest
import tensorflow as tf

from benchmarks.roofline import MatMul, live_matmuls, step_seconds, update_bytes
from test_train_steps import B, I, ONE_BATCH, T, _cfg, _packed, _rows
from zscrgan.train import Trainer

# _cfg(): embed_dim 8, z_dim 4, gf_dim 16, df_dim 8; I = 12 image dims, T = 6 text dims, B = 4 rows.
E, Z, GF, DF = 8, 4, 16, 8
FORWARD_TO_IMAGE = [MatMul(B, T, 2 * E), MatMul(B, E + Z, GF), MatMul(B, GF, 2 * GF), MatMul(B, 2 * GF, I)]
# Critic update: the critic on fake, wrong and real rows (3B); its backward pass: both weight
# gradients x^T dy, and the input gradient of its output layer as (w dy^T)^T on the batched kernel.
# The input gradient of its first layer, which nothing needs, is not computed.
CRITIC_UPDATE = [MatMul(3 * B, I + T, DF), MatMul(3 * B, DF, 1),
                 MatMul(DF, 3 * B, 1, transpose_a=True), MatMul(DF, 1, 3 * B, transpose_b=True, kernel="BatchMatMulV2"),
                 MatMul(I + T, 3 * B, DF, transpose_a=True)]
# Critic step: the generator's forward pass on B rows, then the update.
CRITIC_STEP = Counter(FORWARD_TO_IMAGE + CRITIC_UPDATE)
# An iteration's critic steps (_cfg: 2): one forward pass on the stacked rows of both batches, two updates.
CRITIC_STEPS = Counter([MatMul(2 * mm.m, mm.k, mm.n) for mm in FORWARD_TO_IMAGE] + 2 * CRITIC_UPDATE)
# CSEM step: encoder and generator forward on correct and wrong texts (2B), the CSEM forward and its
# weight gradient; nothing flows back into the frozen generator.
CSEM_STEP = Counter([MatMul(2 * mm.m, mm.k, mm.n) for mm in FORWARD_TO_IMAGE] + [
    MatMul(2 * B, I, E), MatMul(I, 2 * B, E, transpose_a=True)])


@pytest.fixture(scope="module")
def traced():
    packed = _packed()
    cfg = _cfg()
    assert cfg.critic_steps == 2
    trainer = Trainer(cfg, I, T)
    args = (packed.images, packed.texts, *_rows(packed, *ONE_BATCH))
    out = {name: live_matmuls(tf.function(getattr(trainer, f"{name}_step")).get_concrete_function(*args))
           for name in ("critic", "csem")}
    two_batches = [tf.stack([a, a]) for a in args[2:]]
    out["critic_steps"] = live_matmuls(tf.function(trainer.critic_steps).get_concrete_function(*args[:2], *two_batches))
    return trainer, out


def test_live_matmuls_of_a_critic_step_are_those_counted_by_hand(traced):
    assert traced[1]["critic"] == CRITIC_STEP


def test_live_matmuls_of_an_iterations_critic_steps_are_those_counted_by_hand(traced):
    assert traced[1]["critic_steps"] == CRITIC_STEPS


def test_live_matmuls_of_a_csem_step_are_those_counted_by_hand(traced):
    assert traced[1]["csem"] == CSEM_STEP


def test_update_bytes_count_each_weight_slot_and_gradient_once():
    assert update_bytes("rmsprop", 10) == 10 * 4 * (3 + 2)  # reads w, ms, g; writes w, ms
    assert update_bytes("adam", 10) == 10 * 4 * (4 + 3)     # reads w, m, v, g; writes w, m, v


def test_step_roofline_by_hand(traced):
    trainer = traced[0]
    critic_params = (I + T) * DF + DF + DF * 1 + 1
    assert sum(int(tf.size(v)) for v in trainer.model.critic.trainable_variables) == critic_params
    # Every product at 1 GFLOP/s except the critic's first layer forward at 2 GFLOP/s; 1 GB/s memory.
    first = MatMul(3 * B, I + T, DF)
    rates = {mm: 2e9 if mm == first else 1e9 for mm in CRITIC_STEP}
    flop_at_1 = sum(mm.flops for mm in CRITIC_STEP) - first.flops
    expected = flop_at_1 / 1e9 + first.flops / 2e9 + 20 * critic_params / 1e9
    got = step_seconds(CRITIC_STEP, rates, update_bytes("rmsprop", critic_params), 1e9)
    assert got == pytest.approx(expected, rel=1e-12)
    # Counted by hand: 2 * (4*6*16 + 4*12*16 + 4*16*32 + 4*32*12 + 12*18*8 + 12*8*1 + 8*12*1 + 8*1*12 + 18*12*8)
    assert sum(n * mm.flops for mm, n in CRITIC_STEP.items()) == 2 * 8480
