"""What the feature-generator method tests share: tiny runs of a method, float64 central differences of
a NumPy loss, and the check that one update moved exactly the updated network's weights by PyTorch's
first Adam step."""

import json

import numpy as np
import tensorflow as tf

from zscrgan.config import load_config
from zscrgan.methods.base import TrainingData

# A DEMO small enough for runs of seconds (its sizes also make the demo folder under the test's tmp).
TINY_DEMO = {"n_classes": 8, "n_seen": 6, "images_per_class": 12, "texts_per_class": 3, "image_dim": 12,
             "text_dim": 6, "latent_dim": 4, "hidden_dim": 8}


def tiny_config(method: str, own: dict, **shared):
    return load_config("DEMO", overrides={"method": method, method: own, "demo": TINY_DEMO, **shared})


def tiny_data(n_classes=3, image_dim=4, text_dim=3, seed=0) -> TrainingData:
    rng = np.random.default_rng(seed)
    classes = list(range(10, 10 + n_classes))
    image = {c: rng.uniform(0, 2, (4 + j, image_dim)).astype(np.float32) for j, c in enumerate(classes)}
    text = {c: rng.standard_normal((2, text_dim)).astype(np.float32) for c in classes}
    return TrainingData(classes, image, text, image_dim, text_dim)


def numeric_grads(loss, params, h=1e-6):
    """d loss / d p for every entry of every float64 array in `params` (central differences)."""
    grads = []
    for p in params:
        g = np.zeros_like(p)
        for i in np.ndindex(p.shape):
            keep = p[i]
            p[i] = keep + h
            up = loss()
            p[i] = keep - h
            down = loss()
            p[i] = keep
            g[i] = (up - down) / (2 * h)
        grads.append(g)
    return grads


def assert_first_adam_step(before, after, grads, lr, eps=1e-8):
    """PyTorch's Adam, first step: w - lr g / (|g| + eps) (bias-corrected m = g, v = g^2).

    Where |g| is small next to the central differences' error, only |change| <= lr is asserted."""
    for b, a, g in zip(before, after, grads):
        big = np.abs(g) > 1e-3
        expected = b - lr * g / (np.abs(g) + eps)
        assert np.allclose(a[big], expected[big], rtol=0, atol=1e-6), "an update differs from Adam's first step"
        assert np.all(np.abs(a - b) <= lr * (1 + 1e-5))


def values(variables):
    return [v.numpy().astype(np.float64) for v in variables]


def records(run_dir):
    return [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]


def without_times(recs):
    return [{k: v for k, v in r.items() if k not in ("seconds", "retrieval_file")} for r in recs]


def f32(*arrays):
    return [tf.constant(a, tf.float32) for a in arrays]
