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

    The update runs as TensorFlow's fused RMSProp kernel (the one TF1's optimizer called), one pass
    over each variable instead of several elementwise ops.
    """

    def __init__(self, variables: Sequence[tf.Variable], learning_rate: float, rho: float = 0.9,
                 epsilon: float = 1e-10, initial_accumulator: float = 1.0, name: str = "rmsprop"):
        super().__init__(name=name)
        self._targets = list(variables)
        self.learning_rate, self.rho, self.epsilon = learning_rate, rho, epsilon
        self.ms = [tf.Variable(tf.fill(v.shape, initial_accumulator), trainable=False, name="ms")
                   for v in self._targets]
        # The kernel's momentum buffer; with momentum 0 it holds just the last step.
        self.mom = [tf.Variable(tf.zeros(v.shape), trainable=False, name="mom") for v in self._targets]

    def apply(self, grads: Sequence[tf.Tensor]) -> None:
        for g, v, ms, mom in zip(grads, self._targets, self.ms, self.mom):
            tf.raw_ops.ResourceApplyRMSProp(
                var=v.handle, ms=ms.handle, mom=mom.handle, lr=tf.constant(self.learning_rate, v.dtype),
                rho=tf.constant(self.rho, v.dtype), momentum=tf.constant(0.0, v.dtype),
                epsilon=tf.constant(self.epsilon, v.dtype), grad=g)


class AdamTF1(tf.Module):
    """TF1 Adam: lr_t = lr sqrt(1 - b2^t) / (1 - b1^t);  w -= lr_t m / (sqrt(v) + epsilon).

    The update runs as TensorFlow's fused Adam kernel (the one TF1's optimizer called).
    """

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
        b1_power, b2_power = tf.pow(self.beta1, self.step), tf.pow(self.beta2, self.step)
        for g, w, m, v in zip(grads, self._targets, self.m, self.v):
            tf.raw_ops.ResourceApplyAdam(
                var=w.handle, m=m.handle, v=v.handle, beta1_power=b1_power, beta2_power=b2_power,
                lr=tf.constant(self.learning_rate, w.dtype), beta1=tf.constant(self.beta1, w.dtype),
                beta2=tf.constant(self.beta2, w.dtype), epsilon=tf.constant(self.epsilon, w.dtype), grad=g)
