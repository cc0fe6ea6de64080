"""Fixed-point widths, masks and packed slots of the masked values keys exchange.

Encrypted per-sample values and features used as exponents are fixed-point
integers of the widths set here. A party that sends ciphertexts under another
party's key for decryption adds a mask of :data:`MASK_SLACK_BITS` bits more than
any possible value (statistical hiding) and packs several masked values into one
plaintext; the slot width follows from public quantities only
(:func:`expected_slot_bits`), so the key owner recomputes it and refuses any
other width.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ftl.crypto import fixedpoint

__all__ = [
    "FEATURE_EXP_BITS",
    "FEATURE_FRAC_BITS",
    "MASK_SLACK_BITS",
    "VALUE_FRAC_BITS",
    "VALUE_INT_BITS",
    "MaskState",
    "encode_features",
    "expected_margin_slot_bits",
    "expected_slot_bits",
    "packing_of",
]

#: Statistical hiding: masks are this many bits longer than the masked value.
MASK_SLACK_BITS = 40
#: Fixed-point fraction bits of encrypted per-sample values (margins, residuals).
VALUE_FRAC_BITS = 32
#: Encrypted per-sample values must be below 2**VALUE_INT_BITS in magnitude.
VALUE_INT_BITS = 32
#: Fixed-point fraction bits of features used as exponents in ``X.T @ [[v]]``.
FEATURE_FRAC_BITS = 20
#: Encoded features (exponents) must stay below 2**FEATURE_EXP_BITS in magnitude.
FEATURE_EXP_BITS = 62


@dataclass
class MaskState:
    """What the masking party keeps to remove its mask later.

    ``slot_bits`` is the width of each packed slot (0 when values are not packed);
    it is public and travels with the ciphertexts so the key owner can unpack.
    """

    masks: list[int]
    frac_bits: int
    slot_bits: int = 0

    @property
    def count(self) -> int:
        return len(self.masks)


def encode_features(features: np.ndarray) -> np.ndarray:
    """Features as signed int64 fixed-point exponents (error if they overflow)."""
    features = np.asarray(features, dtype=np.float64)
    if features.size and np.abs(features).max() >= 2.0 ** (FEATURE_EXP_BITS - FEATURE_FRAC_BITS):
        raise fixedpoint.FixedPointOverflowError(
            "feature values too large for fixed-point exponents; standardise them first"
        )
    return np.rint(np.ldexp(features, FEATURE_FRAC_BITS)).astype(np.int64)


def expected_slot_bits(n_rows: int, n_pieces: int) -> int:
    """Slot width of a packed masked cross term, from public quantities only.

    ``|X.T @ v| < 2**value_bits`` with encoded features below
    ``2**FEATURE_EXP_BITS``, values below ``2**(VALUE_INT_BITS + VALUE_FRAC_BITS)``
    and ``n_rows * n_pieces`` terms; masks add ``MASK_SLACK_BITS``; one more bit
    holds ``v + r``. The key owner recomputes it and refuses any other width, so
    a requester cannot pack raw per-row values into wide slots.
    """
    value_bits = (
        FEATURE_EXP_BITS + max(1, n_rows * n_pieces).bit_length() + VALUE_FRAC_BITS + VALUE_INT_BITS
    )
    return value_bits + MASK_SLACK_BITS + 1


def expected_margin_slot_bits() -> int:
    """Slot width of packed masked per-row values (prediction margins), public."""
    return VALUE_INT_BITS + VALUE_FRAC_BITS + 1 + MASK_SLACK_BITS + 1


def packing_of(masked, state: MaskState | None) -> tuple[int, int]:
    """``(slot_bits, count)`` to send along with a masked cross term."""
    if state is None:  # plaintext mode: one value per entry, no packing
        return 0, int(masked.values.shape[0])
    return state.slot_bits, state.count
