"""The roofline of a training step: its matrix multiplies at their measured rates, plus the bytes its
optimiser must stream at the measured memory bandwidth.

A step's matrix multiplies are read from its traced graph (only those whose results something uses:
a custom gradient also builds input gradients nobody needs, which the graph optimiser removes), so
the list follows the code. The optimiser's bytes are the least any implementation must move: each
update reads every weight, its slots and its gradient once and writes the weight and its slots once;
the critic's clipping, fused into its update, adds nothing.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from typing import Iterable, Mapping

import tensorflow as tf

# Words read + written per parameter by one update: RMSProp reads w, ms, g and writes w, ms;
# Adam reads w, m, v, g and writes w, m, v.
UPDATE_WORDS = {"rmsprop": 5, "adam": 7}
WORD_BYTES = 4  # weights and optimiser slots are float32 at every precision


KERNELS = ("MatMul", "BatchMatMulV2")  # TensorFlow's kernels for products of two matrices


@dataclass(frozen=True)
class MatMul:
    """One matrix multiply: an [m, k] by [k, n] product, with TensorFlow's transpose flags, dtype and
    kernel (MatMul, or BatchMatMulV2 on two rank-2 operands; on CPUs their rates differ by shape)."""

    m: int
    k: int
    n: int
    transpose_a: bool = False
    transpose_b: bool = False
    dtype: str = "float32"
    kernel: str = "MatMul"

    @property
    def flops(self) -> int:
        return 2 * self.m * self.k * self.n

    def operand_shapes(self) -> tuple[list[int], list[int]]:
        """Shapes of the two operands as passed to tf.matmul with these transpose flags."""
        a = [self.k, self.m] if self.transpose_a else [self.m, self.k]
        b = [self.n, self.k] if self.transpose_b else [self.k, self.n]
        return a, b


def _live_ops(graph) -> list:
    """Ops of a traced function graph that its outputs or its side effects (variable updates) need."""
    todo = [t.op for t in graph.outputs] + list(graph.control_outputs)
    seen = {op.name: op for op in todo}
    while todo:
        op = todo.pop()
        for dep in [t.op for t in op.inputs] + list(op.control_inputs):
            if dep.name not in seen:
                seen[dep.name] = dep
                todo.append(dep)
    return list(seen.values())


def live_matmuls(concrete_function) -> Counter:
    """Count of each `MatMul` that one call of a traced step computes."""
    out: Counter = Counter()
    for op in _live_ops(concrete_function.graph):
        if op.type not in KERNELS:
            continue
        a, b = (x.shape for x in op.inputs)
        if a.rank != 2 or b.rank != 2:
            raise ValueError(f"{op.name}: {op.type} of operands of rank {a.rank} and {b.rank}, not two matrices")
        flags = ("transpose_a", "transpose_b") if op.type == "MatMul" else ("adj_x", "adj_y")
        ta, tb = (op.get_attr(f) for f in flags)
        dims = (a[1] if ta else a[0], a[0] if ta else a[1], b[0] if tb else b[1])
        if any(d is None for d in dims):
            raise ValueError(f"{op.name}: matmul with a shape unknown at trace time ({a} x {b})")
        out[MatMul(*dims, ta, tb, op.get_attr("T").name, op.type)] += 1
    return out


def update_bytes(kind: str, n_params: int) -> int:
    """Bytes one optimiser update of `n_params` float32 parameters must read and write."""
    return UPDATE_WORDS[kind] * WORD_BYTES * n_params


def step_seconds(matmuls: Mapping[MatMul, int], rates: Mapping[MatMul, float], nbytes: int,
                 bandwidth: float) -> float:
    """Roofline seconds of one step: each matmul at its rate (FLOP/s), the update at `bandwidth` (B/s)."""
    return sum(count * mm.flops / rates[mm] for mm, count in matmuls.items()) + nbytes / bandwidth


def phase_seconds(steps: Iterable[tuple[int, float]]) -> float:
    """Roofline seconds of a phase from (number of steps, roofline seconds of one step) pairs."""
    return sum(n * seconds for n, seconds in steps)
