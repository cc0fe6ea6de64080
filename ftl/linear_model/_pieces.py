"""A party's per-row residual pieces under its own key, and the cross terms on them.

A party encrypts the ``K`` pieces of its side of the residual per row (the host's
margin polynomials, the guest's coefficients; see ``_sigmoid.py``/``_links.py``)
and its partner computes one cross term per feature, ``sum_k (X * w_k).T @
[[v_k]]``, masked, for the owner to decrypt. With Paillier and ``K >= 2`` the
pieces are packed into one ciphertext a row and the owner returns the middle slot
of each masked diagonal (:mod:`ftl.crypto.diagonal`): up to ``K`` times fewer
encryptions, the same cross terms (the same integers), the same single value per
feature crossing back. A lone piece (Taylor-1, the identity link, a host's
``exp(u_H)``), keys too small for two pieces and plaintext mode keep one
ciphertext, or value, per piece and the cross-term packing of
:meth:`~ftl.crypto.paillier.PaillierPeerKey.mask_total`.

The layout is public and fixed for the whole fit: its slots hold sums over the
fit's training rows (``n_train``), so every batch, and an epoch's loss summed over
batches, use the same slots. Both parties derive it on their own from the scheme,
``K`` and ``n_train``; the owner refuses any other width.
"""

from __future__ import annotations

import numpy as np

from ftl.crypto import diagonal
from ftl.crypto.scheme import column, expected_slot_bits, packing_of

__all__ = [
    "check_columns",
    "cross_total",
    "decrypt_cross",
    "decrypt_term",
    "encrypt_pieces",
    "mask_cross",
    "masked_cross",
    "packs",
]


def packs(key, n_pieces: int, n_train: int) -> bool:
    """Whether pieces under ``key`` (own or peer) travel packed: with Paillier, when
    at least two pieces fit one ciphertext (a 2048-bit key holds five)."""
    if key.scheme != "paillier" or n_pieces < 2:
        return False
    width = diagonal.slot_bits(n_train, n_pieces)
    return diagonal.pieces_per_ciphertext(int(key.n).bit_length(), width) >= 2


def encrypt_pieces(own, values: np.ndarray, n_train: int):
    """The owner's pieces ``(rows, K)``, encrypted (packed with Paillier and K >= 2)."""
    values = np.asarray(values, dtype=np.float64)
    if packs(own, values.shape[1], n_train):
        return diagonal.encrypt_pieces(own, values, rows=n_train)
    return own.encrypt(values)


def check_columns(values, key, n_rows: int, n_pieces: int, n_train: int, who: str) -> None:
    """Refuse pieces of another shape than ``n_rows`` rows of ``n_pieces`` pieces take."""
    n_cols = n_pieces
    if packs(key, n_pieces, n_train):
        n_cols = diagonal.layout(int(key.n).bit_length(), n_train, n_pieces)[2]
    if values.shape != (n_rows, n_cols):
        raise ValueError(f"{who!r} sent residual columns of the wrong shape")


def cross_total(peer, features: list[np.ndarray], values, n_train: int):
    """``[[sum_k X_k.T @ v_k]]`` on the owner's pieces, unmasked (never sent as is)."""
    if packs(peer, len(features), n_train):
        return diagonal.diagonal_total(peer, features, values, rows=n_train)
    return peer.cross_total(features, [column(values, k) for k in range(len(features))])


def mask_cross(peer, total, n_rows: int, n_pieces: int, n_train: int):
    """Mask a :func:`cross_total` (or a sum of them) for the owner to decrypt.

    Returns ``(masked, state, slot_bits, count)``; ``n_rows`` is the rows the total
    sums (the layout of separate pieces depends on it).
    """
    if packs(peer, n_pieces, n_train):
        masked, state = diagonal.mask_diagonal(peer, total, n_train, n_pieces)
    else:
        masked, state = peer.mask_total(total, n_rows, n_pieces)
    return (masked, state, *packing_of(masked, state))


def masked_cross(peer, features: list[np.ndarray], values, n_train: int):
    """:func:`cross_total` of one batch, masked: ``(masked, state, slot_bits, count)``."""
    total = cross_total(peer, features, values, n_train)
    return mask_cross(peer, total, values.shape[0], len(features), n_train)


def decrypt_cross(own, values, slot_bits: int, count: int, n_rows: int, n_pieces: int, n_train):
    """The owner's decryption of a masked cross term: one masked value per feature.

    Checks the declared slot width against the one it derives itself from public
    quantities (``n_rows`` summed rows for separate pieces, ``n_train`` for packed
    ones) and returns only what the protocol calls for -- never a per-row vector,
    never a packed plaintext's other slots.
    """
    if packs(own, n_pieces, n_train):
        return diagonal.decrypt_diagonal(own, values, slot_bits, n_train, n_pieces, count)
    if own.scheme == "paillier" and slot_bits != expected_slot_bits(n_rows, n_pieces):
        raise ValueError("the cross term has the wrong slots")
    return own.decrypt_packed(values, slot_bits, count)


def decrypt_term(own, term, n_rows: int, n_pieces: int, n_train: int):
    """:func:`decrypt_cross` of a cross-term message's ``values``, its declared
    ``slot_bits`` and ``count``."""
    return decrypt_cross(
        own, term["values"], term["slot_bits"], term["count"], n_rows, n_pieces, n_train
    )
