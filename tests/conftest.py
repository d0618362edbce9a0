"""Tests import the project from the repository root (main.py, zscrgan/, tests/helpers.py)."""

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
for path in (ROOT, ROOT / "tests"):
    if str(path) not in sys.path:
        sys.path.insert(0, str(path))

# In-process runs compute with the kernels a deterministic run chooses (TensorFlow's Eigen kernels, oneDNN
# off: zscrgan/tf_start.py), set before any test imports TensorFlow; a value in the environment wins.
from zscrgan.tf_start import choose_kernels  # noqa: E402

choose_kernels()
