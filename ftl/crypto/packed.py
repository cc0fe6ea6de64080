"""Row-packed Paillier vectors: the transfer protocol's encrypted arithmetic.

A party encrypts a matrix ``V`` (``r x dim``) under its own key with each row's
``dim`` fixed-point values packed side by side into ``ceil(dim / per_ct)``
plaintexts of ``per_ct`` slots (``slot_bits`` each). Another party then computes,
without decrypting, linear combinations of the rows with its own plaintext
coefficients ``E`` (``r x m``)::

    [[ V.T @ E + C ]]    (dim x m: one packed vector per column of E)

with a multi-exponentiation per output ciphertext (``ftl.crypto.engine``), adds
its own plaintext term ``C``, masks every slot and re-randomises. The key owner
decrypts ``m * ceil(dim / per_ct)`` ciphertexts instead of ``dim * m`` and never
sees an unmasked value; the computing party removes its masks.

Packing whole rows (not one value per ciphertext) is what makes the transfer
protocol cheap: a 32-dimensional representation costs two encryptions per row at
2048 bits, and a weight gradient ``sum_i a_i h_i'`` costs one multi-exponentiation
per hidden unit and ciphertext column instead of one per weight.

Slots hold signed values: the packed plaintext is the integer
``sum_j v_j 2**(j * slot_bits)``, so every linear combination computed on it is
the same combination of the slots, carried exactly as long as the *final* slot
contents (value plus mask, or value plus a public offset) lie in
``[0, 2**slot_bits)``. :func:`slot_bits` bounds every value from public
quantities (row count, dimension) and the range checks below, never from data.
"""

from __future__ import annotations

import secrets

import numpy as np
from gmpy2 import mpz

from ftl.crypto import fixedpoint
from ftl.crypto.arrays import CiphertextArray, PlainArray, object_array
from ftl.crypto.masking import MASK_SLACK_BITS, MaskState
from ftl.crypto.paillier import PaillierOwnKey, PaillierPeerKey
from ftl.crypto.workers import parallel_columns

__all__ = [
    "EXP_FRAC_BITS",
    "EXP_INT_BITS",
    "VALUE_FRAC_BITS",
    "VALUE_INT_BITS",
    "decrypt_combination",
    "encrypt_rows",
    "layout",
    "masked_combination",
    "slot_bits",
    "unmask_combination",
]

#: Packed values: ``|v| < 2**VALUE_INT_BITS``, ``VALUE_FRAC_BITS`` fraction bits.
VALUE_INT_BITS = 16
VALUE_FRAC_BITS = 16
#: Coefficients: per-row ``|e| < 2**EXP_INT_BITS`` ("row" pieces), aggregates
#: ``|e| < n_rows * 2**EXP_INT_BITS`` ("matrix" pieces), ``EXP_FRAC_BITS`` fraction bits.
EXP_INT_BITS = 16
EXP_FRAC_BITS = 16
#: Results carry both scales.
RESULT_FRAC_BITS = VALUE_FRAC_BITS + EXP_FRAC_BITS


def slot_bits(n_rows: int, dim: int) -> int:
    """Public slot width for combinations over ``n_rows`` rows of ``dim``-vectors.

    A "row" piece sums ``n_rows`` products below ``2**(32 + 32)``; a "matrix" piece
    sums ``dim`` products whose coefficient may be ``n_rows`` times larger; one bit
    for adding both kinds, one for a plaintext term, ``MASK_SLACK_BITS`` for the
    mask, one for value plus mask.
    """
    value_bits = (
        VALUE_INT_BITS
        + VALUE_FRAC_BITS
        + EXP_INT_BITS
        + EXP_FRAC_BITS
        + max(1, n_rows).bit_length()
        + max(1, dim).bit_length()
        + 2
    )
    return value_bits + MASK_SLACK_BITS + 1


def _value_bits(width: int) -> int:
    return width - 1 - MASK_SLACK_BITS


def layout(key_bits: int, width: int, dim: int) -> tuple[int, int]:
    """``(slots per ciphertext, ciphertexts per packed vector)``."""
    per_ct = (key_bits - 2) // width
    if per_ct < 1:
        raise fixedpoint.FixedPointOverflowError("key too small for packed vectors")
    return per_ct, -(-dim // per_ct)


def _check_range(values: np.ndarray, bound_bits: float, what: str) -> None:
    if values.size and not np.all(np.isfinite(values)):
        raise fixedpoint.FixedPointOverflowError(f"{what} contain NaN or infinite values")
    if values.size and np.abs(values).max() >= 2.0**bound_bits:
        raise fixedpoint.FixedPointOverflowError(
            f"{what} exceed 2**{bound_bits:g} in magnitude: the representations diverged "
            "(lower the learning rate or standardise the features)"
        )


def _pack(ints: np.ndarray, width: int, per_ct: int, n_ct: int) -> list[int]:
    """Pack each row of signed ints into ``n_ct`` integers of ``per_ct`` slots."""
    out = []
    for row in ints:
        for t in range(n_ct):
            acc = 0
            for j in reversed(range(t * per_ct, min((t + 1) * per_ct, len(row)))):
                acc = (acc << width) + int(row[j])
            out.append(acc)
    return out


def encrypt_rows(own, values: np.ndarray, width: int) -> CiphertextArray | PlainArray:
    """Encrypt each row of ``values`` (``r x dim``) packed, under ``own``'s key.

    Returns ciphertexts of shape ``(r, n_ct)`` (``PlainArray`` in plaintext mode).
    """
    values = np.asarray(values, dtype=np.float64)
    _check_range(values, VALUE_INT_BITS, "encrypted values")
    if not isinstance(own, PaillierOwnKey):
        return own.encrypt(values)
    per_ct, n_ct = layout(own.n.bit_length(), width, values.shape[1])
    ints = fixedpoint.encode(values, VALUE_FRAC_BITS)
    return own.encrypt_integers(_pack(ints, width, per_ct, n_ct), (values.shape[0], n_ct))


def _encode_coefficients(exps: np.ndarray, kind: str, n_rows: int) -> np.ndarray:
    exps = np.asarray(exps, dtype=np.float64)
    if kind == "row":
        _check_range(exps, EXP_INT_BITS, "row coefficients")
    elif kind == "matrix":
        _check_range(exps, EXP_INT_BITS + max(1, n_rows).bit_length() - 1, "aggregate coefficients")
    else:
        raise ValueError(f"unknown piece kind {kind!r}")
    return np.rint(np.ldexp(exps, EXP_FRAC_BITS)).astype(np.int64)


def masked_combination(peer, pieces, plain, width: int, n_rows: int, dim: int):
    """``[[sum_p V_p.T @ E_p + C + r]]`` under the peer's key, packed and masked.

    Parameters
    ----------
    peer : PaillierPeerKey or PlainPeerKey
        The key the ciphertexts are under (the decrypting party's).
    pieces : list of (ciphertexts, coefficients, kind)
        Ciphertexts ``(r_p, n_ct)`` from :func:`encrypt_rows`, plaintext
        coefficients ``(r_p, m)``, kind ``"row"`` or ``"matrix"`` (bounds).
    plain : ndarray (dim, m) or None
        This party's own plaintext term.
    width, n_rows, dim : int
        Public layout: :func:`slot_bits` ``(n_rows, dim)``.

    Returns
    -------
    masked : CiphertextArray of shape (m * n_ct,) or PlainArray (dim, m)
    state : MaskState or None
    """
    m = pieces[0][1].shape[1]
    for ct, exps, _ in pieces:
        if exps.shape[1] != m or ct.values.shape[0] != exps.shape[0]:
            raise ValueError("coefficients do not match the encrypted rows")
    if not isinstance(peer, PaillierPeerKey):
        total = np.zeros((dim, m)) if plain is None else np.array(plain, dtype=np.float64)
        for ct, exps, kind in pieces:
            if not isinstance(ct, PlainArray) or ct.values.shape[1] != dim:
                raise ValueError("expected plaintext-mode rows of the agreed dimension")
            _encode_coefficients(exps, kind, n_rows)  # same range checks as encrypted
            total = total + ct.values.T @ exps
        return PlainArray(total), None
    n2 = peer.nsquare
    per_ct, n_ct = layout(int(peer.n).bit_length(), width, dim)
    acc = [mpz(1)] * (m * n_ct)
    for ct, exps, kind in pieces:
        if ct.key_id != peer.key_id:
            raise ValueError("ciphertexts are not under this peer's key")
        if ct.values.shape[1] != n_ct:
            raise ValueError(f"expected {n_ct} ciphertexts per packed row")
        ints = _encode_coefficients(exps, kind, n_rows)
        for t in range(n_ct):
            cts = [mpz(int(c)) for c in ct.values[:, t]]
            if any(not 0 < c < n2 for c in cts):
                raise ValueError("ciphertext out of range for the peer's key")
            cols = parallel_columns(cts, ints, n2, peer.n_jobs)
            for k in range(m):
                acc[k * n_ct + t] = acc[k * n_ct + t] * cols[k] % n2
    value_bits = _value_bits(width)
    plain_ints = np.zeros((m, dim), dtype=object)
    if plain is not None:
        plain = np.asarray(plain, dtype=np.float64)
        _check_range(plain, value_bits - RESULT_FRAC_BITS - 2, "plaintext terms")
        plain_ints = fixedpoint.encode(plain.T, RESULT_FRAC_BITS)
    masks = [
        (1 << value_bits) + secrets.randbits(value_bits + MASK_SLACK_BITS)
        for _ in range(m * n_ct * per_ct)
    ]
    padded = np.zeros((m, n_ct * per_ct), dtype=object)
    padded[:, :dim] = plain_ints
    padded += np.asarray(masks, dtype=object).reshape(m, n_ct * per_ct)
    packed_plain = _pack(padded, width, per_ct, n_ct)
    n = peer.n
    out = [c * (1 + (p % n) * n) % n2 for c, p in zip(acc, packed_plain, strict=True)]
    out = peer.rerandomize(out)
    return (
        CiphertextArray(object_array(out), peer.key_id, peer.width),
        MaskState(masks, RESULT_FRAC_BITS, width),
    )


def expected_count(key_bits: int, width: int, dim: int, m: int) -> int:
    """Slots the key owner decrypts for ``m`` packed vectors of ``dim`` values."""
    per_ct, n_ct = layout(key_bits, width, dim)
    return m * n_ct * per_ct


def decrypt_combination(own, ct, width: int, dim: int, m: int):
    """Key owner: decrypt a masked combination, checking the public layout."""
    if not isinstance(own, PaillierOwnKey):
        if not isinstance(ct, PlainArray) or ct.values.shape != (dim, m):
            raise ValueError("plaintext-mode combination of the wrong shape")
        return ct
    count = expected_count(own.n.bit_length(), width, dim, m)
    return own.decrypt_packed(ct, width, count)


def unmask_combination(peer, masked, state, dim: int, m: int) -> np.ndarray:
    """Remove the masks: the ``dim x m`` result as floats."""
    if state is None:
        if not isinstance(masked, PlainArray) or masked.values.shape != (dim, m):
            raise ValueError("plaintext-mode combination of the wrong shape")
        return masked.values
    flat = peer.unmask(np.asarray(masked, dtype=object).reshape(-1), state)
    return flat.reshape(m, -1)[:, :dim].T


def offset_combination(peer, ct, exps: np.ndarray, width: int, dim: int):
    """``[[V.T @ E + offset]]`` with a *public* offset, columns packed together.

    For results the key owner may learn (prediction scores): no mask, but every
    slot is shifted by ``2**value_bits`` so that signed values never borrow from
    their neighbours; ``m`` columns of ``dim`` values share ciphertexts. Returns
    ciphertexts re-randomised (their random factors would otherwise depend on
    ``E``).
    """
    m = exps.shape[1]
    if not isinstance(peer, PaillierPeerKey):
        if not isinstance(ct, PlainArray) or ct.values.shape[1] != dim:
            raise ValueError("expected plaintext-mode rows of the agreed dimension")
        _encode_coefficients(exps, "row", 1)
        return PlainArray((ct.values.T @ exps).T)
    n, n2 = peer.n, peer.nsquare
    per_ct, n_ct = layout(int(n).bit_length(), width, dim)
    if n_ct != 1 or ct.values.shape[1] != 1:
        raise ValueError("offset combinations need vectors that fit one ciphertext")
    ints = _encode_coefficients(exps, "row", 1)
    cts = [mpz(int(c)) for c in ct.values[:, 0]]
    if any(not 0 < c < n2 for c in cts):
        raise ValueError("ciphertext out of range for the peer's key")
    cols = parallel_columns(cts, ints, n2, peer.n_jobs)
    group = per_ct // dim
    offset = 1 << _value_bits(width)
    shift = mpz(1) << (width * dim)
    unit = 0
    for _ in range(dim):
        unit = (unit << width) + offset
    packed = []
    for start in range(0, m, group):
        acc, off = mpz(1), 0
        for k in reversed(range(start, min(start + group, m))):
            acc = pow(acc, shift, n2) * cols[k] % n2
            off = (off << (width * dim)) + unit
        packed.append(acc * (1 + off * n) % n2)
    return CiphertextArray(object_array(peer.rerandomize(packed)), peer.key_id, peer.width)


def decrypt_offset(own, ct, width: int, dim: int, m: int) -> np.ndarray:
    """Key owner: decrypt :func:`offset_combination` into an ``m x dim`` float array."""
    if not isinstance(own, PaillierOwnKey):
        if not isinstance(ct, PlainArray) or ct.values.shape != (m, dim):
            raise ValueError("plaintext-mode scores of the wrong shape")
        return ct.values
    per_ct, n_ct = layout(own.n.bit_length(), width, dim)
    group = per_ct // dim
    if ct.values.shape != (-(-m // group),):
        raise ValueError("packed scores do not match their declared count")
    plain = own.decrypt_masked(ct)
    offset = 1 << _value_bits(width)
    slot_mask = (1 << width) - 1
    out = []
    for value in plain:
        value = int(value)
        for _ in range(group * dim):
            out.append((value & slot_mask) - offset)
            value >>= width
    signed = np.array(out[: m * dim], dtype=object)
    return fixedpoint.decode(signed, RESULT_FRAC_BITS).reshape(m, dim)
