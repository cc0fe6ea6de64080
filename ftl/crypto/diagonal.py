"""Several per-row pieces in one ciphertext, and the one sum a requester may learn.

The default logistic regression (and the transfer and regression links) needs,
per feature ``j`` of the requester, the cross term ``sum_k sum_i x_ij w_ik v_ik``
over ``K`` per-row pieces ``v_ik`` that the key owner encrypted (the host's
polynomial pieces of its margin, or the guest's coefficients). Encrypting each
piece on its own costs ``K`` encryptions a row, and encryption is most of a pass.

Here the owner packs a row's pieces into one plaintext, ``V_i = sum_l v_il
2**(l w)`` (:func:`encrypt_pieces`; groups of :func:`group_size` pieces when ``K``
pieces do not fit one key), so it encrypts once a row. The requester raises the
packed ciphertexts to the exponents of piece ``k`` (``x_ij w_ik``, the same
multi-exponentiation as for a lone piece) and gets all pieces' products in their
slots, ``sum_i x_ij w_ik v_il`` in slot ``l``, of which it wants only ``l = k``.
Shifting result ``k`` up by ``G - 1 - k`` slots puts each wanted product in slot
``G - 1``; the product of the shifted results holds their sum -- the cross term --
in slot ``G - 1`` and *other* sums (``l != k``) in the slots around it
(:func:`masked_diagonal`). The requester masks every slot and re-randomises; the
owner decrypts and returns slot ``G - 1`` only (:func:`decrypt_diagonal`).

What crosses is therefore exactly what crosses when each piece is encrypted on its
own and the pieces' cross terms are summed before masking: one masked value per
feature. The other slots are the owner's to see (masked, they tell it nothing) and
never leave it: returning the whole plaintext would give the requester ``2G - 2``
further linear functions of the owner's pieces per feature. The owner recomputes
the slot width from public quantities (rows and pieces) and refuses a plaintext
wider than the layout, so a requester cannot move other sums into the slot it gets
back beyond what it could ask with its own exponents anyway (any linear function
``sum_i a_i v_ik`` of one piece, as with unpacked pieces).

Slot arithmetic: values are signed fixed-point integers (``VALUE_FRAC_BITS``,
below ``2**(VALUE_INT_BITS + VALUE_FRAC_BITS)``), exponents signed features
(``FEATURE_FRAC_BITS``, below ``2**FEATURE_EXP_BITS``); every slot of a result --
wanted or not -- is a sum of at most ``n_rows * K`` such products, so the slot
width of :func:`~ftl.crypto.masking.expected_slot_bits` holds it with its mask.
Packed signed values borrow from the slot above; the sums stay exact integers
(the packing is linear), and the masks make every slot positive and below
``2**w`` before decryption, so the slots separate without borrows.
"""

from __future__ import annotations

import secrets

import gmpy2
import numpy as np
from gmpy2 import mpz

from ftl.crypto import fixedpoint
from ftl.crypto.arrays import CiphertextArray, object_array
from ftl.crypto.masking import (
    FEATURE_FRAC_BITS,
    MASK_SLACK_BITS,
    VALUE_FRAC_BITS,
    VALUE_INT_BITS,
    MaskState,
    encode_features,
    expected_slot_bits,
)
from ftl.crypto.workers import parallel_columns

__all__ = [
    "decrypt_diagonal",
    "diagonal_total",
    "encrypt_pieces",
    "group_size",
    "layout",
    "mask_diagonal",
    "masked_diagonal",
    "pieces_per_ciphertext",
    "slot_bits",
]


def slot_bits(n_rows: int, n_pieces: int) -> int:
    """Width of one slot, from public quantities (the owner recomputes it)."""
    return expected_slot_bits(n_rows, n_pieces)


def pieces_per_ciphertext(key_bits: int, width: int) -> int:
    """Pieces per ciphertext, 0 if not even one fits: a result of ``G`` pieces spans
    ``2G - 1`` slots, which must stay within ``key_bits - 2`` bits (below ``n / 2``)
    to decode."""
    return ((key_bits - 2) // width + 1) // 2


def group_size(key_bits: int, width: int) -> int:
    """:func:`pieces_per_ciphertext`, refusing a key that cannot hold one."""
    size = pieces_per_ciphertext(key_bits, width)
    if size < 1:
        raise fixedpoint.FixedPointOverflowError(
            f"a {key_bits}-bit key cannot hold one slot of {width} bits"
        )
    return size


def layout(key_bits: int, rows: int, n_pieces: int) -> tuple[int, int, int]:
    """``(slot width, pieces per ciphertext G, ciphertexts per row)`` of pieces whose
    cross terms sum at most ``rows`` rows (public: e.g. the fit's training rows, so
    that every batch and any sum of batches shares one layout)."""
    width = slot_bits(rows, n_pieces)
    size = group_size(key_bits, width)
    return width, size, -(-n_pieces // size)


def encrypt_pieces(own, values: np.ndarray, rows: int | None = None) -> CiphertextArray:
    """Key owner: each row's ``K`` pieces packed into ``ceil(K / G)`` ciphertexts.

    Parameters
    ----------
    own : PaillierOwnKey
    values : ndarray of shape (n_rows, n_pieces)
        Per-row pieces, each below ``2**VALUE_INT_BITS`` in magnitude.
    rows : int, optional
        The most rows any cross term of these pieces sums (:func:`layout`);
        default ``n_rows``.

    Returns
    -------
    CiphertextArray of shape (n_rows, ceil(n_pieces / G))
    """
    values = np.asarray(values, dtype=np.float64)
    if values.ndim != 2 or values.shape[1] < 1:
        raise ValueError(f"pieces must be a 2-d array (rows, pieces), got shape {values.shape}")
    if values.size and not np.abs(values).max() < 2.0**VALUE_INT_BITS:
        raise fixedpoint.FixedPointOverflowError(
            f"per-sample values must stay below 2**{VALUE_INT_BITS} in magnitude "
            "(the model diverged; lower the learning rate or scale the features)"
        )
    n_rows, n_pieces = values.shape
    width, size, n_ct = layout(int(own.n).bit_length(), rows or n_rows, n_pieces)
    ints = fixedpoint.encode(values, VALUE_FRAC_BITS).tolist()
    packed = []
    for row in ints:
        for g in range(n_ct):
            group = row[g * size : (g + 1) * size]
            packed.append(sum(int(v) << (slot * width) for slot, v in enumerate(group)))
    return own.encrypt_integers(packed, (n_rows, n_ct))


def diagonal_total(
    peer, features: list[np.ndarray], ct: CiphertextArray, rows: int | None = None
) -> list[mpz]:
    """Requester: ``[[sum_k X_k.T @ v_k]]`` in slot ``G - 1`` of one ciphertext per
    feature, the other pieces' sums around it; unmasked, it never leaves this party
    as is. Totals of several batches (same layout) may be multiplied together
    before :func:`mask_diagonal`.

    Parameters
    ----------
    peer : PaillierPeerKey
        The owner's public key.
    features : list of K ndarrays of shape (n_rows, p)
        The exponents of each piece (``x_ij w_ik``).
    ct : CiphertextArray of shape (n_rows, ceil(K / G))
        :func:`encrypt_pieces`' output, made with the same ``rows``.
    rows : int, optional
        As given to :func:`encrypt_pieces`; default ``n_rows``.
    """
    n_pieces = len(features)
    if ct.key_id != peer.key_id:
        raise ValueError("ciphertexts are not under this peer's key")
    n_rows = ct.values.shape[0]
    width, size, n_ct = layout(int(peer.n).bit_length(), rows or n_rows, n_pieces)
    if ct.values.shape != (n_rows, n_ct) or any(f.shape[0] != n_rows for f in features):
        raise ValueError(
            f"expected {n_ct} packed ciphertexts a row for {n_pieces} pieces, got {ct.values.shape}"
        )
    n2 = peer.nsquare
    p = features[0].shape[1]
    totals = [mpz(1)] * p
    for g in range(n_ct):
        cts = [mpz(int(c)) for c in ct.values[:, g]]
        if any(not 0 < c < n2 for c in cts):
            raise ValueError("ciphertext out of range for the peer's key")
        group = list(range(g * size, min((g + 1) * size, n_pieces)))
        exps = np.hstack([encode_features(features[k]) for k in group])
        columns = parallel_columns(cts, exps, n2, peer.n_jobs)
        for slot, _ in enumerate(group):
            # piece `slot` of this group sits in slot `slot`: move it to slot size - 1
            shift = mpz(1) << ((size - 1 - slot) * width)
            for j in range(p):
                shifted = gmpy2.powmod(columns[slot * p + j], shift, n2)
                totals[j] = totals[j] * shifted % n2
    return totals


def mask_diagonal(
    peer, totals: list[mpz], rows: int, n_pieces: int
) -> tuple[CiphertextArray, MaskState]:
    """Mask every slot of :func:`diagonal_total`'s ciphertexts and re-randomise them.

    Each slot becomes positive and below ``2**width``, so none borrows from
    another; the state keeps the masks of slot ``G - 1``, the one the owner returns.
    The re-randomisation hides how the ciphertexts were made from the owner's own.
    """
    width, size, _ = layout(int(peer.n).bit_length(), rows, n_pieces)
    mask_bits = width - 1
    value_bits = mask_bits - MASK_SLACK_BITS
    n, n2 = peer.n, peer.nsquare
    masked, kept = [], []
    for total in totals:
        masks = [(1 << value_bits) + secrets.randbits(mask_bits) for _ in range(2 * size - 1)]
        whole = sum(r << (q * width) for q, r in enumerate(masks))
        masked.append(total * (1 + whole * n) % n2)
        kept.append(masks[size - 1])
    out = CiphertextArray(object_array(peer.rerandomize(masked)), peer.key_id, peer.width)
    return out, MaskState(kept, VALUE_FRAC_BITS + FEATURE_FRAC_BITS, width)


def masked_diagonal(
    peer, features: list[np.ndarray], ct: CiphertextArray, rows: int | None = None
) -> tuple[CiphertextArray, MaskState]:
    """Requester: ``[[sum_k X_k.T @ v_k + r]]`` per feature, from packed pieces.

    :func:`diagonal_total` then :func:`mask_diagonal` (same parameters).

    Returns
    -------
    masked : CiphertextArray of shape (p,)
        One re-randomised ciphertext per feature, every slot masked.
    state : MaskState
        The masks of the slot the owner returns (to :meth:`PaillierPeerKey.unmask`).
    """
    totals = diagonal_total(peer, features, ct, rows)
    return mask_diagonal(peer, totals, rows or ct.values.shape[0], len(features))


def decrypt_diagonal(
    own, ct: CiphertextArray, width: int, rows: int, n_pieces: int, count: int
) -> np.ndarray:
    """Key owner: decrypt masked diagonals and return their middle slot only.

    Parameters
    ----------
    own : PaillierOwnKey
    ct : CiphertextArray of shape (count,)
        :func:`masked_diagonal`' output.
    width : int
        The slot width the requester declares; refused unless it is the one the
        owner computes from ``n_rows`` and ``n_pieces`` (public).
    rows, n_pieces : int
        The layout's row bound and pieces per row (public; the owner's own
        knowledge, as given to :func:`encrypt_pieces`).
    count : int
        Values expected (the requester's public weight-block width).

    Returns
    -------
    ndarray of object (Python ints), shape (count,)
        Slot ``G - 1`` of each plaintext, still masked.

    Raises
    ------
    ValueError
        If the width, the count or a plaintext does not match the layout.
    """
    expected, size, _ = layout(int(own.n).bit_length(), rows, n_pieces)
    if width != expected:
        raise ValueError(f"masked diagonals of {width}-bit slots; this layout has {expected}")
    if ct.values.shape != (count,):
        raise ValueError(f"expected {count} masked diagonals, got shape {ct.values.shape}")
    plain = own.decrypt_masked(ct)
    limit = 1 << ((2 * size - 1) * width)
    mask = (1 << width) - 1
    out = []
    for value in plain.tolist():
        value = int(value)
        if value >= limit:
            raise ValueError("a masked diagonal is wider than its layout; refused")
        out.append((value >> ((size - 1) * width)) & mask)
    result = np.empty(count, dtype=object)
    result[:] = out
    return result
