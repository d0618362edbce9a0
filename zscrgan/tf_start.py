"""TensorFlow's start-up without its native start-up noise on stderr.

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


def start_tensorflow():
    """Import TensorFlow and find its devices, start-up noise filtered out; returns the module."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # TensorFlow's own info and warning lines
    with filtered_stderr():
        import tensorflow as tf

        tf.config.list_physical_devices()
    return tf
