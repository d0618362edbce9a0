"""TensorFlow's start-up: its CPU kernels chosen for the config's `deterministic`, its native noise filtered.

With `deterministic: true` (the default) TensorFlow starts with its oneDNN kernels off
(TF_ENABLE_ONEDNN_OPTS=0), so it computes with its Eigen kernels: at the released network sizes oneDNN's
matrix products sum in an order that follows the machine's load, and the same seed then drifts apart
from round 2 (docs/determinism.md has the measurements). `deterministic: false` leaves TensorFlow's
default (oneDNN on, on x86). A TF_ENABLE_ONEDNN_OPTS set in the environment always wins. The choice
takes effect only before TensorFlow is first imported in the process.

Importing TensorFlow and first looking for devices makes its C++ side print lines such as the oneDNN
notice, "Could not find cuda drivers" and "E0000 ... failed call to cuInit" (which reads like an error
on every machine without a GPU). They are written below Python's sys.stderr, so they are caught on file
descriptor 2 while TensorFlow starts; every other line is passed on.
"""

from __future__ import annotations

import os
import re
import sys
import tempfile
from contextlib import contextmanager

NOISE = re.compile(
    r"oneDNN custom operations are on|Could not find cuda drivers|failed call to cuInit"
    r"|All log messages before absl::InitializeLog\(\) is called|Unable to register cu(DNN|FFT|BLAS) factory"
    r"|TF-TRT Warning|This TensorFlow binary is optimized to use available CPU instructions"
    r"|rebuild TensorFlow with the appropriate compiler flags")


@contextmanager
def filtered_stderr(noise: re.Pattern = NOISE):
    """Hold what is written to file descriptor 2 inside the block; afterwards pass on the lines that
    do not match `noise`."""
    sys.stderr.flush()
    saved = os.dup(2)
    with tempfile.TemporaryFile() as capture:
        os.dup2(capture.fileno(), 2)
        try:
            yield
        finally:
            sys.stderr.flush()
            os.dup2(saved, 2)
            os.close(saved)
            capture.seek(0)
            kept = [line for line in capture.read().decode(errors="replace").splitlines(keepends=True)
                    if not noise.search(line)]
            sys.stderr.write("".join(kept))
            sys.stderr.flush()


ONEDNN = "TF_ENABLE_ONEDNN_OPTS"


def choose_kernels(deterministic: bool = True) -> None:
    """Set TF_ENABLE_ONEDNN_OPTS=0 for a deterministic run, unless the environment already sets it or
    TensorFlow is already imported (then nothing can change; `onednn_on` tells what it uses)."""
    if deterministic and ONEDNN not in os.environ and "tensorflow" not in sys.modules:
        os.environ[ONEDNN] = "0"


def onednn_on() -> bool | None:
    """Whether this process's TensorFlow computes with its oneDNN kernels (None: cannot tell)."""
    if "tensorflow" not in sys.modules:
        return None
    try:
        from tensorflow.python.util import _pywrap_util_port
    except ImportError:  # a TensorFlow build without the query
        return None
    return bool(_pywrap_util_port.IsMklEnabled())


def start_tensorflow(deterministic: bool = True):
    """Import TensorFlow with the kernels `deterministic` asks for (see `choose_kernels`) and find its
    devices, start-up noise filtered out; returns the module."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # TensorFlow's own info and warning lines
    choose_kernels(deterministic)
    with filtered_stderr():
        import tensorflow as tf

        tf.config.list_physical_devices()
    return tf
