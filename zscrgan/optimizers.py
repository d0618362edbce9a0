"""RMSProp and Adam with TensorFlow 1 semantics, which the released model was trained with.

Keras' optimizers differ in ways that change training: Keras RMSProp starts its mean-square
accumulator at 0 (TF1: 1.0; from 0 the first step is sqrt(10) times larger for |g| = 1 and about
3/|g| times larger for small gradients) and puts epsilon outside the square root; Keras Adam's epsilon defaults to 1e-7 (TF1: 1e-8). One optimizer serves one list of
variables; its slots are tf.Variables, so a tf.train.Checkpoint saves and restores them.
"""

from __future__ import annotations

from typing import Sequence

import tensorflow as tf


class RMSPropTF1(tf.Module):
    """ms = rho ms + (1 - rho) g^2;  w -= lr g / sqrt(ms + epsilon), with ms starting at 1.0 (momentum 0).

    `clip`, if given, then clips the weights to [-clip, clip] (the WGAN critic's weight clipping).
    The arithmetic is one XLA-compiled pass over each variable that reads weight, mean square and
    gradient, the clipping folded in; TensorFlow's own RMSProp kernel makes three passes and keeps a
    momentum buffer besides, and clipping after it two more (about twice the memory traffic; see
    benchmarks/). The new values reach the variables in one of two ways (`in_place`):
    - False: the compiled pass returns new tensors, which then become the mean squares and the weights
      (no buffer a variable holds is written). The default of deterministic runs: measured at the
      released sizes, runs of one seed repeat their numbers bit for bit with it.
    - True: the compiled pass writes the variables' buffers in place. Measured at the released sizes,
      runs of one seed with it (as with TensorFlow's RMSProp kernel, also in place) differed in the
      last bits of a few of the text encoder's weights or mean squares at a random step, and from
      there on (docs/determinism.md). Used under `deterministic: false`.
    """

    def __init__(self, variables: Sequence[tf.Variable], learning_rate: float, rho: float = 0.9,
                 epsilon: float = 1e-10, initial_accumulator: float = 1.0, clip: float | None = None,
                 in_place: bool = False, name: str = "rmsprop"):
        super().__init__(name=name)
        self._targets = list(variables)
        self.learning_rate, self.rho, self.epsilon, self.clip = learning_rate, rho, epsilon, clip
        self.in_place = in_place
        self.ms = [tf.Variable(tf.fill(v.shape, initial_accumulator), trainable=False, name="ms")
                   for v in self._targets]
        self._new_values = tf.function(self._compute, jit_compile=True)
        self._update = tf.function(self._apply_in_place, jit_compile=True) if in_place else self._assign

    def apply(self, grads: Sequence[tf.Tensor]) -> None:
        self._update(list(grads))

    def _compute(self, grads):
        """[(new mean square, new weight)] for each variable; reads the variables, writes none."""
        decay = 1.0 - tf.constant(self.rho)  # in float32, as TF1's kernel computes it
        out = []
        for g, v, ms in zip(grads, self._targets, self.ms):
            ms_new = ms + (tf.square(g) - ms) * decay
            w = v - (g * self.learning_rate) / tf.sqrt(ms_new + self.epsilon)
            out.append((ms_new, w if self.clip is None else tf.clip_by_value(w, -self.clip, self.clip)))
        return out

    def _assign(self, grads):
        for (ms_new, w), v, ms in zip(self._new_values(grads), self._targets, self.ms):
            ms.assign(ms_new)
            v.assign(w)

    def _apply_in_place(self, grads):
        for (ms_new, w), v, ms in zip(self._compute(grads), self._targets, self.ms):
            ms.assign(ms_new)
            v.assign(w)


class AdamTF1(tf.Module):
    """TF1 Adam: lr_t = lr sqrt(1 - b2^t) / (1 - b1^t);  w -= lr_t m / (sqrt(v) + epsilon).

    `epsilon_hat`: epsilon is added to the bias-corrected sqrt(v / (1 - b2^t)) instead, as PyTorch's
    Adam adds it (the same update with epsilon sqrt(1 - b2^t) in TF1's place).

    The update runs as TensorFlow's fused Adam kernel (the one TF1's optimizer called), which on
    CPUs already makes one pass over each variable (an XLA-compiled update measured slower).
    """

    def __init__(self, variables: Sequence[tf.Variable], learning_rate: float, beta1: float = 0.5,
                 beta2: float = 0.999, epsilon: float = 1e-8, epsilon_hat: bool = False, name: str = "adam"):
        super().__init__(name=name)
        self._targets = list(variables)
        self.learning_rate, self.beta1, self.beta2, self.epsilon = learning_rate, beta1, beta2, epsilon
        self.epsilon_hat = epsilon_hat
        self.step = tf.Variable(0.0, trainable=False, name="step")
        self.m = [tf.Variable(tf.zeros(v.shape), trainable=False, name="m") for v in self._targets]
        self.v = [tf.Variable(tf.zeros(v.shape), trainable=False, name="v") for v in self._targets]

    def apply(self, grads: Sequence[tf.Tensor]) -> None:
        self.step.assign_add(1.0)
        b1_power, b2_power = tf.pow(self.beta1, self.step), tf.pow(self.beta2, self.step)
        epsilon = self.epsilon * tf.sqrt(1.0 - b2_power) if self.epsilon_hat else tf.constant(self.epsilon)
        for g, w, m, v in zip(grads, self._targets, self.m, self.v):
            tf.raw_ops.ResourceApplyAdam(
                var=w.handle, m=m.handle, v=v.handle, beta1_power=b1_power, beta2_power=b2_power,
                lr=tf.constant(self.learning_rate, w.dtype), beta1=tf.constant(self.beta1, w.dtype),
                beta2=tf.constant(self.beta2, w.dtype), epsilon=tf.cast(epsilon, w.dtype), grad=g)


class DynamicLossScale(tf.Module):
    """Loss scaling for float16 compute: gradients come as those of loss * scale, are divided by it,
    and applied only when all are finite. An overflow halves the scale (that step is skipped); every
    `growth_interval` finite steps in a row double it. The scale and the count are checkpointed.
    """

    def __init__(self, initial_scale: float = 2.0 ** 15, growth_interval: int = 2000, name: str = "loss_scale"):
        super().__init__(name=name)
        self.growth_interval = growth_interval
        self.scale = tf.Variable(initial_scale, trainable=False, name="scale")
        self.good_steps = tf.Variable(0, trainable=False, name="good_steps")

    def apply(self, updates) -> None:
        """`updates`: (optimizer, scaled gradients) pairs; all applied, unscaled, if every gradient is
        finite, none otherwise. Then the scale is adjusted."""
        unscaled = [(optimizer, [g / self.scale for g in grads]) for optimizer, grads in updates]
        finite = tf.reduce_all([tf.reduce_all(tf.math.is_finite(g)) for _, grads in unscaled for g in grads])

        def step():
            for optimizer, grads in unscaled:
                optimizer.apply(grads)
            grow = self.good_steps + 1 >= self.growth_interval
            self.scale.assign(tf.where(grow, self.scale * 2.0, self.scale))
            self.good_steps.assign(tf.where(grow, 0, self.good_steps + 1))

        def skip():
            self.scale.assign(tf.maximum(self.scale / 2.0, 1.0))
            self.good_steps.assign(0)

        tf.cond(finite, step, skip)


class RMSPropTorch(tf.Module):
    """Torch7's optim.rmsprop: m = alpha m + (1 - alpha) g^2;  w -= lr g / (sqrt(m) + epsilon), m from 0.

    The learning rate is a variable (checkpointed with the slots), so a schedule can decay it in place.
    """

    def __init__(self, variables: Sequence[tf.Variable], learning_rate: float, alpha: float = 0.99,
                 epsilon: float = 1e-8, name: str = "rmsprop_torch"):
        super().__init__(name=name)
        self._targets = list(variables)
        self.alpha, self.epsilon = alpha, epsilon
        self.learning_rate = tf.Variable(learning_rate, trainable=False, name="learning_rate")
        self.m = [tf.Variable(tf.zeros(v.shape), trainable=False, name="m") for v in self._targets]

    def apply(self, grads: Sequence[tf.Tensor]) -> None:
        for g, w, m in zip(grads, self._targets, self.m):
            m.assign(self.alpha * m + (1.0 - self.alpha) * tf.square(g))
            w.assign_sub(self.learning_rate * g / (tf.sqrt(m) + self.epsilon))
