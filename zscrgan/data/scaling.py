"""Input scaling of the feature vectors: off by default (the released code used the features as given).

Why it exists: with the released numerics, features whose values are tiny (e.g. L1-normalised
histograms, values about 0.008) leave the model at chance, while the same features rescaled to a
norm of about sqrt(dimension) train. Statistics, where a mode needs any, come from seen classes only.

A mode with statistics (`seen_rms`) is fixed by one factor per modality: `modality_factor` computes
it from a dataset, `scale_rows` applies it to any rows, so a trained run can scale a user's vectors
exactly as its training data was scaled.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Sequence

import numpy as np

from zscrgan.data.release import META_FILE, read_meta
from zscrgan.errors import UserError

MODES = ("none", "l2_sqrt_dim", "seen_rms")
# How far a row's sum may be from 1 for the row to count as L1-normalised (float32 rounding and
# histograms stored with a few digits).
L1_TOLERANCE = 1e-3
SCALING_REASONS = {
    "none": "no modality looks L1-normalised: the features are used as given, as the released code did",
    "l2_sqrt_dim": "a modality looks L1-normalised (non-negative rows summing to 1, like histograms or topic "
                   "proportions), on which the released model stays at chance",
}


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


def check_scaling_record(record, source) -> dict:
    """`record` if it is a `scaling_record` (a known mode, each factor null or a finite positive
    number), else one clear UserError naming `source`."""
    factors = [record.get(k) for k in ("image_factor", "text_factor")] if isinstance(record, dict) else []
    if not (isinstance(record, dict) and record.get("input_scaling") in MODES and all(
            f is None or (type(f) in (int, float) and math.isfinite(f) and f > 0) for f in factors)):
        raise UserError(f"{source}: not an input scaling record (the mode, one of {', '.join(MODES)}, and its "
                        "factors); the run folder is damaged")
    return record


def scale_modality(per_class: dict, seen: Sequence[int], mode: str) -> dict:
    """Return a new dict class -> scaled array for one modality (images or texts)."""
    if mode == "none":
        return per_class
    factor = modality_factor(per_class, seen, mode)
    return {c: scale_rows(x, mode, factor) for c, x in per_class.items()}


def _check(mode: str) -> None:
    if mode not in MODES:
        raise ValueError(f"unknown input scaling {mode!r}; expected one of {MODES}")


def looks_l1_normalised(per_class: dict) -> bool:
    """Whether every row is non-negative and sums to 1, like L1-normalised histograms."""
    rows = np.concatenate([np.asarray(x, np.float64) for x in per_class.values()])
    return bool(rows.size) and bool((rows >= 0).all()) and bool(
        np.allclose(rows.sum(axis=1), 1.0, rtol=0.0, atol=L1_TOLERANCE))


def recommend_scaling(image: dict, text: dict) -> str:
    """The input scaling a dataset's features call for: l2_sqrt_dim if either modality looks
    L1-normalised (the released model stays at chance on such features), else none."""
    return "l2_sqrt_dim" if looks_l1_normalised(image) or looks_l1_normalised(text) else "none"


def unscaled_warning(image: dict, text: dict, folder) -> str | None:
    """One line for a run under `input_scaling: none` on features that call for scaling, else None."""
    which = [name for name, x in (("image", image), ("text", text)) if looks_l1_normalised(x)]
    if not which:
        return None
    return (f"warning: {folder}: {' and '.join(which)} vectors look L1-normalised (non-negative, rows sum to 1); "
            f"under input_scaling none the released model stays at chance on such features: "
            f"train with --input_scaling l2_sqrt_dim (docs/data.md, Input scaling)")


def recommended_scaling(folder) -> str | None:
    """The input scaling a converted dataset folder's meta.json recommends, or None without one."""
    path = Path(folder) / META_FILE
    value = read_meta(folder).get("recommended_input_scaling")
    if value is not None and value not in MODES:
        raise UserError(f"{path}: recommended_input_scaling must be one of {', '.join(MODES)}, "
                        f"got {str(value)[:40]!r}")
    return value
