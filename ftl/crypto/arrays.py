"""The value types of encrypted (and plaintext-mode) arrays, and their reshaping.

A :class:`CiphertextArray` is what a key produces and what crosses between parties
inside a message; a :class:`PlainArray` stands in for it when a protocol runs with
``encryption=None``. They are plain values: the message codec
(:mod:`ftl.federation.codec`) writes them to bytes, the keys
(:mod:`ftl.crypto.scheme`) compute on them.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

__all__ = ["CiphertextArray", "PlainArray", "column", "object_array", "row", "stack_rows"]


@dataclass(frozen=True)
class CiphertextArray:
    """Paillier ciphertexts as arbitrary-precision integers, tagged with their key.

    Parameters
    ----------
    values : ndarray of object
        Ciphertext integers (Python ``int`` or ``gmpy2.mpz``), any shape.
    key_id : str
        Fingerprint of the public key they were made under.
    width : int
        Bytes per ciphertext on the wire (``ceil(bits(n**2) / 8)``).
    """

    values: np.ndarray
    key_id: str
    width: int

    @property
    def shape(self) -> tuple[int, ...]:
        return tuple(self.values.shape)


@dataclass(frozen=True)
class PlainArray:
    """Stand-in for ciphertexts or masked integers in ``encryption=None`` mode."""

    values: np.ndarray

    @property
    def shape(self) -> tuple[int, ...]:
        return tuple(self.values.shape)


def object_array(values: list) -> np.ndarray:
    """A 1-d object array of Python ints (ciphertexts or decrypted integers)."""
    out = np.empty(len(values), dtype=object)
    out[:] = [int(v) for v in values]
    return out


def column(values: CiphertextArray | PlainArray, k: int) -> CiphertextArray | PlainArray:
    """Column ``k`` of a 2-D encrypted (or plaintext-mode) array."""
    if isinstance(values, PlainArray):
        return PlainArray(values.values[:, k])
    return CiphertextArray(values.values[:, k], values.key_id, values.width)


def stack_rows(rows: list) -> CiphertextArray | PlainArray | np.ndarray:
    """Stack 1-D encrypted arrays, plaintext-mode arrays or int arrays into 2-D."""
    first = rows[0]
    if isinstance(first, PlainArray):
        return PlainArray(np.vstack([r.values for r in rows]))
    if isinstance(first, CiphertextArray):
        out = np.empty((len(rows), len(first.values)), dtype=object)
        for i, r in enumerate(rows):
            out[i, :] = list(r.values)
        return CiphertextArray(out, first.key_id, first.width)
    out = np.empty((len(rows), len(first)), dtype=object)
    for i, r in enumerate(rows):
        out[i, :] = list(r)
    return out


def row(values, i: int):
    """Row ``i`` of what :func:`stack_rows` made (as received over the wire)."""
    if isinstance(values, PlainArray):
        return PlainArray(values.values[i])
    if isinstance(values, CiphertextArray):
        return CiphertextArray(values.values[i], values.key_id, values.width)
    return values[i]
