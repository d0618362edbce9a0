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
    """ms = rho ms + (1 - rho) g^2;  w -= lr g / sqrt(ms + epsilon), with ms starting at 1.0 (momentum 0)."""

    def __init__(self, variables: Sequence[tf.Variable], learning_rate: float, rho: float = 0.9,
                 epsilon: float = 1e-10, initial_accumulator: float = 1.0, name: str = "rmsprop"):
        super().__init__(name=name)
        self._targets = list(variables)
        self.learning_rate, self.rho, self.epsilon = learning_rate, rho, epsilon
        self.ms = [tf.Variable(tf.fill(v.shape, initial_accumulator), trainable=False, name="ms")
                   for v in self._targets]

    def apply(self, grads: Sequence[tf.Tensor]) -> None:
        for g, v, ms in zip(grads, self._targets, self.ms):
            ms.assign(self.rho * ms + (1.0 - self.rho) * tf.square(g))
            v.assign_sub(self.learning_rate * g / tf.sqrt(ms + self.epsilon))


class AdamTF1(tf.Module):
    """TF1 Adam: lr_t = lr sqrt(1 - b2^t) / (1 - b1^t);  w -= lr_t m / (sqrt(v) + epsilon)."""

    def __init__(self, variables: Sequence[tf.Variable], learning_rate: float, beta1: float = 0.5,
                 beta2: float = 0.999, epsilon: float = 1e-8, name: str = "adam"):
        super().__init__(name=name)
        self._targets = list(variables)
        self.learning_rate, self.beta1, self.beta2, self.epsilon = learning_rate, beta1, beta2, epsilon
        self.step = tf.Variable(0.0, trainable=False, name="step")
        self.m = [tf.Variable(tf.zeros(v.shape), trainable=False, name="m") for v in self._targets]
        self.v = [tf.Variable(tf.zeros(v.shape), trainable=False, name="v") for v in self._targets]

    def apply(self, grads: Sequence[tf.Tensor]) -> None:
        self.step.assign_add(1.0)
        t = self.step
        lr_t = self.learning_rate * tf.sqrt(1.0 - tf.pow(self.beta2, t)) / (1.0 - tf.pow(self.beta1, t))
        for g, w, m, v in zip(grads, self._targets, self.m, self.v):
            m.assign(self.beta1 * m + (1.0 - self.beta1) * g)
            v.assign(self.beta2 * v + (1.0 - self.beta2) * tf.square(g))
            w.assign_sub(lr_t * m / (tf.sqrt(v) + self.epsilon))
