"""Input scaling of the feature vectors: off by default (the released code used the features as given).

Why it exists: with the released numerics, features whose values are tiny (e.g. L1-normalised
histograms, values about 0.008) leave the model at chance, while the same features rescaled to a
norm of about sqrt(dimension) train. Statistics, where a mode needs any, come from seen classes only.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np

MODES = ("none", "l2_sqrt_dim", "seen_rms")


def l2_sqrt_dim(x: np.ndarray) -> np.ndarray:
    """Each row rescaled to L2 norm sqrt(dim); all-zero rows stay zero."""
    norms = np.linalg.norm(x, axis=1, keepdims=True)
    return (x * (np.sqrt(x.shape[1]) / np.where(norms > 0, norms, 1.0))).astype(np.float32)


def seen_rms_factor(per_class: dict, seen: Sequence[int]) -> float:
    """One factor that brings the seen classes' root-mean-square row norm to sqrt(dim)."""
    rows = np.concatenate([per_class[c] for c in seen])
    rms = float(np.sqrt(np.mean(np.sum(np.square(rows, dtype=np.float64), axis=1))))
    return float(np.sqrt(rows.shape[1]) / rms) if rms > 0 else 1.0


def scale_modality(per_class: dict, seen: Sequence[int], mode: str) -> dict:
    """Return a new dict class -> scaled array for one modality (images or texts)."""
    if mode == "none":
        return per_class
    if mode == "l2_sqrt_dim":
        return {c: l2_sqrt_dim(x) for c, x in per_class.items()}
    if mode == "seen_rms":
        factor = seen_rms_factor(per_class, seen)
        return {c: (x * factor).astype(np.float32) for c, x in per_class.items()}
    raise ValueError(f"unknown input scaling {mode!r}; expected one of {MODES}")
