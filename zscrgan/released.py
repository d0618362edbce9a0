"""Names the released code gave its outputs, reproduced exactly."""

from __future__ import annotations

import math


def py2_float_str(x: float) -> str:
    """Python 2's `str()` of a float: 12 significant digits (`'%.12g'`), `.0` added when the result
    has neither a point nor an exponent (0.5 -> '0.5', 1.0 -> '1.0', 1e-05 -> '1e-05',
    0.3264000000000001 -> '0.3264', 1e12 -> '1e+12')."""
    if math.isnan(x):
        return "nan"
    if math.isinf(x):
        return "inf" if x > 0 else "-inf"
    text = "%.12g" % x
    if "." not in text and "e" not in text:
        text += ".0"
    return text


def retrieval_file_name(score: float) -> str:
    """`acc<score>.pkl` with the score written as the released Python 2 program wrote it."""
    return f"acc{py2_float_str(score)}.pkl"
