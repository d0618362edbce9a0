"""Input scaling of the feature vectors: off by default (the released code used the features as given).

Why it exists: with the released numerics, features whose values are tiny (e.g. L1-normalised
histograms, values about 0.008) leave the model at chance, while the same features rescaled to a
norm of about sqrt(dimension) train. Statistics, where a mode needs any, come from seen classes only.

A mode with statistics (`seen_rms`) is fixed by one factor per modality: `modality_factor` computes
it from a dataset, `scale_rows` applies it to any rows, so a trained run can scale a user's vectors
exactly as its training data was scaled.
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


def modality_factor(per_class: dict, seen: Sequence[int], mode: str) -> float | None:
    """The dataset statistic that `mode` needs for one modality (seen_rms: its factor), else None."""
    _check(mode)
    return seen_rms_factor(per_class, seen) if mode == "seen_rms" else None


def scale_rows(x: np.ndarray, mode: str, factor: float | None = None) -> np.ndarray:
    """Rows [n, dim] scaled by `mode`; `factor` is `modality_factor`'s value (seen_rms only).

    `none` returns `x` itself.
    """
    _check(mode)
    if mode == "l2_sqrt_dim":
        return l2_sqrt_dim(x)
    if mode == "seen_rms":
        return (x * factor).astype(np.float32)
    return x


def scaling_record(image: dict, text: dict, seen: Sequence[int], mode: str) -> dict:
    """What fixes a dataset's scaling: the mode and each modality's `modality_factor` (saved with a run)."""
    return {"input_scaling": mode, "image_factor": modality_factor(image, seen, mode),
            "text_factor": modality_factor(text, seen, mode)}


def scale_modality(per_class: dict, seen: Sequence[int], mode: str) -> dict:
    """Return a new dict class -> scaled array for one modality (images or texts)."""
    if mode == "none":
        return per_class
    factor = modality_factor(per_class, seen, mode)
    return {c: scale_rows(x, mode, factor) for c, x in per_class.items()}


def _check(mode: str) -> None:
    if mode not in MODES:
        raise ValueError(f"unknown input scaling {mode!r}; expected one of {MODES}")
