"""The ridge reference: text -> image space by ridge regression, fitted in closed form on the seen
classes (scikit-learn's `Ridge`, as `zscrgan baseline` fits it). A query is its text's predicted image
vector, the gallery the image vectors as they are; cosine ranks them. One round fits it; the run
stops there, as more rounds would change nothing.
"""

from __future__ import annotations

import numpy as np
import tensorflow as tf
from sklearn.linear_model import Ridge as SkRidge

from zscrgan.baseline import regression_targets
from zscrgan.methods.base import Method, Phases, TrainingData


class Ridge(Method):
    """Keys: ridge.alpha (penalty), ridge.pairs (class_mean | item regression targets)."""

    loss_names = ("fit_mse",)

    def __init__(self, cfg, image_dim: int, text_dim: int):
        super().__init__(cfg, image_dim, text_dim, name="ridge")
        self.alpha, self.pairs = float(cfg.ridge.alpha), cfg.ridge.pairs
        self.weight = tf.Variable(tf.zeros([text_dim, image_dim]), name="weight")
        self.bias = tf.Variable(tf.zeros([image_dim]), name="bias")
        self.fitted = tf.Variable(False, name="fitted")
        self.data = None

    def attach(self, data: TrainingData) -> None:
        self.data = data

    def train_round(self, phases: Phases) -> dict | None:
        d = self.data
        x = np.concatenate([d.text[c] for c in d.classes]).astype(np.float64)
        y = regression_targets(d.image, d.text, d.classes, self.pairs).astype(np.float64)
        model = SkRidge(alpha=self.alpha).fit(x, y)
        self.weight.assign(model.coef_.T.astype(np.float32))
        self.bias.assign(np.broadcast_to(model.intercept_, [self.image_dim]).astype(np.float32))
        self.fitted.assign(True)
        return {"fit_mse": float(np.mean((model.predict(x) - y) ** 2))}

    def done(self) -> bool:
        return bool(self.fitted.numpy())

    def embed_queries(self, texts, draws=None):
        return self.generate(texts)

    def embed_gallery(self, images):
        return tf.convert_to_tensor(images)

    def generate(self, texts, draws: int = 1):
        return tf.matmul(tf.convert_to_tensor(texts), self.weight) + self.bias
