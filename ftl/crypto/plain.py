"""``encryption=None``: the key interfaces of :mod:`ftl.crypto.paillier`, in the clear.

Protocols run unchanged with these keys; values cross as
:class:`~ftl.crypto.arrays.PlainArray` and the transcript records them as
plaintext. For debugging and for measuring what encryption costs, never the
default.
"""

from __future__ import annotations

import numpy as np

from ftl.crypto.arrays import PlainArray

__all__ = ["PlainOwnKey", "PlainPeerKey"]


class PlainOwnKey:
    """``encryption=None``: the same calls, values in the clear (recorded as such)."""

    scheme = "plain"
    key_id = "plaintext"

    def public(self) -> dict:
        return {"scheme": self.scheme, "n": 0, "hs": 0, "key_id": self.key_id}

    def encrypt(self, values: np.ndarray) -> PlainArray:
        return PlainArray(np.asarray(values, dtype=np.float64))

    def decrypt_masked(self, ct: PlainArray) -> PlainArray:
        if not isinstance(ct, PlainArray):
            raise ValueError("expected plaintext-mode values")
        return ct

    def decrypt_packed(self, ct: PlainArray, slot_bits: int, count: int) -> PlainArray:
        values = self.decrypt_masked(ct)
        if values.values.shape != (count,):
            raise ValueError("plaintext-mode values do not match their declared count")
        return values

    def decrypt_values(self, ct: PlainArray, frac_bits: int = 0) -> np.ndarray:
        return ct.values


class PlainPeerKey:
    """Another party's key with ``encryption=None``: the same calls, nothing masked."""

    scheme = "plain"
    key_id = "plaintext"

    def masked_cross_term(self, features, ct) -> tuple[PlainArray, None]:
        return self.mask_total(self.cross_total(features, ct), 0, 0)

    def cross_total(self, features, ct) -> np.ndarray:
        pieces = list(zip(features, ct, strict=True)) if isinstance(ct, list) else [(features, ct)]
        total = 0.0
        for x, c in pieces:
            if not isinstance(c, PlainArray) or c.values.shape != (x.shape[0],):
                raise ValueError("expected a plaintext-mode vector with one value per row")
            total = total + x.T @ c.values
        return np.asarray(total, dtype=np.float64)

    def add_totals(self, a: np.ndarray, b: np.ndarray) -> np.ndarray:
        return a + b

    def mask_total(self, total: np.ndarray, n_rows: int, n_pieces: int) -> tuple[PlainArray, None]:
        return PlainArray(np.asarray(total, dtype=np.float64)), None

    def masked_vector(self, ct: PlainArray) -> tuple[PlainArray, None]:
        if not isinstance(ct, PlainArray):
            raise ValueError("expected plaintext-mode values")
        return ct, None

    def unmask(self, masked: PlainArray, state: None) -> np.ndarray:
        if not isinstance(masked, PlainArray):
            raise ValueError("expected plaintext-mode values")
        return masked.values
