"""Fixed-point encoding of real numbers as integers for Paillier.

A real ``x`` is carried as the integer ``round(x * 2**f)``; negatives are stored
mod n (values above ``n // 2`` decode as negative). Products of an encoding with
scale ``2**f1`` and one with ``2**f2`` have scale ``2**(f1 + f2)``, so protocols
track the scale alongside every encrypted vector. Every encoding checks that the
magnitude stays far below ``n / 2``: overflow is an error, never wrapped garbage.
"""

from __future__ import annotations

import numpy as np

from ftl.exceptions import FixedPointOverflowError

__all__ = ["FixedPointOverflowError", "decode", "encode"]


def encode(values: np.ndarray, frac_bits: int) -> np.ndarray:
    """Round ``values * 2**frac_bits`` to Python ints (object array, same shape)."""
    values = np.asarray(values, dtype=np.float64)
    if not np.all(np.isfinite(values)):
        raise FixedPointOverflowError("cannot encode NaN or infinite values")
    scaled = np.rint(np.ldexp(values, frac_bits))
    # float64 holds integers exactly up to 2**53; above that go through Python ints.
    out = np.empty(values.shape, dtype=object)
    flat = out.reshape(-1)
    for i, v in enumerate(scaled.reshape(-1)):
        flat[i] = int(v)
    return out


def decode(values: np.ndarray, frac_bits: int) -> np.ndarray:
    """Inverse of :func:`encode` for signed Python ints (exact division by 2**f)."""
    flat = np.asarray(values, dtype=object).reshape(-1)
    out = np.fromiter((float(int(v)) for v in flat), dtype=np.float64, count=flat.size)
    return np.ldexp(out, -frac_bits).reshape(np.shape(values))
