"""Group operations for ECDH PSI: hash-to-curve, blinding and point checks.

All curve arithmetic is libsodium's, reached through pynacl's bindings; nothing
here computes on the curve by hand.

Group choice
------------
PSI needs a prime-order group with a hash onto it. ristretto255 would be the
textbook choice, but pynacl 1.6.2 exposes no ristretto255 functions, so we use
the prime-order subgroup of Ed25519 instead:

* ``crypto_core_ed25519_from_uniform`` maps 32 uniform bytes to a point with
  Elligator 2 and multiplies by the cofactor 8, so every hashed point lies in the
  prime-order subgroup (order ``L = 2**252 + ...``);
* ``crypto_scalarmult_ed25519_noclamp`` multiplies by a full scalar mod ``L``
  without clamping, which keeps ``x -> s*x`` a bijection of that subgroup, so
  ``a*(b*P) == b*(a*P)`` holds byte for byte -- the property PSI relies on;
* ``crypto_core_ed25519_is_valid_point`` accepts only canonical encodings of
  points in the prime-order subgroup that are not of small order. Every point a
  peer sends is checked with it before it is used or compared.

Points travel as numpy ``uint8`` arrays of shape ``(n, 32)``; they are never held
as one Python object per id longer than one batch.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import numpy as np
from nacl import bindings as sodium
from nacl.exceptions import RuntimeError as SodiumError

__all__ = [
    "POINT_BYTES",
    "SALT_BYTES",
    "batches",
    "blind",
    "canonical_ids",
    "check_distinct",
    "check_points",
    "hash_to_curve",
    "point_keys",
    "random_salt",
    "random_scalar",
    "secret_permutation",
]

POINT_BYTES = sodium.crypto_core_ed25519_BYTES  # 32
SALT_BYTES = 32
_SCALAR_BYTES = sodium.crypto_core_ed25519_SCALARBYTES  # 32
# Below this many points per thread the pool costs more than it saves.
_MIN_PER_WORKER = 256


def _workers() -> int:
    # libsodium calls release the GIL (cffi), so threads give real parallelism.
    try:
        cpus = len(os.sched_getaffinity(0))  # respects container CPU limits
    except AttributeError:  # not on Linux
        cpus = os.cpu_count() or 1
    return max(1, min(cpus, 8))


def _parallel(fn: Callable[[list[bytes]], list[bytes]], items: list[bytes]) -> list[bytes]:
    """Apply ``fn`` to contiguous chunks of ``items`` in threads; keep the order."""
    workers = min(_workers(), max(1, len(items) // _MIN_PER_WORKER))
    if workers == 1:
        return fn(items)
    step = -(-len(items) // workers)
    chunks = [items[i : i + step] for i in range(0, len(items), step)]
    with ThreadPoolExecutor(max_workers=len(chunks)) as pool:
        parts = list(pool.map(fn, chunks))
    return [x for part in parts for x in part]


def _split(points: np.ndarray) -> list[bytes]:
    buf = np.ascontiguousarray(points, dtype=np.uint8).tobytes()
    return [buf[i : i + POINT_BYTES] for i in range(0, len(buf), POINT_BYTES)]


def _join(items: list[bytes]) -> np.ndarray:
    out = np.frombuffer(b"".join(items), dtype=np.uint8)
    return out.reshape(-1, POINT_BYTES).copy()


def random_scalar() -> bytes:
    """A fresh secret scalar, uniform modulo the group order ``L``.

    Returns
    -------
    bytes
        32-byte little-endian scalar in ``[1, L)``.

    Notes
    -----
    64 random bytes reduced mod ``L`` give a bias below ``2**-250``.
    """
    while True:
        scalar = sodium.crypto_core_ed25519_scalar_reduce(os.urandom(64))
        if any(scalar):  # zero would map every point to the identity
            return scalar


def random_salt() -> bytes:
    """A fresh public per-run salt of :data:`SALT_BYTES` random bytes."""
    return os.urandom(SALT_BYTES)


def secret_permutation(n: int) -> np.ndarray:
    """A uniformly random permutation of ``range(n)`` from OS randomness.

    numpy's default generator is not cryptographic, and the permutations in PSI
    are secrets, so we sort 64-bit keys from ``os.urandom`` (ties have probability
    about ``n**2 / 2**65``).
    """
    keys = np.frombuffer(os.urandom(8 * n), dtype=np.uint64) if n else np.empty(0, np.uint64)
    return np.argsort(keys, kind="stable").astype(np.int64)


def canonical_ids(ids: Any) -> list[bytes]:
    """Canonical byte form of ids: ``str(id)`` encoded as UTF-8.

    Uses the same ``astype(str)`` rule as :class:`ftl.Party` does for duplicate
    checks, so ``7``, ``np.int64(7)`` and ``"7"`` all become ``b"7"``.
    """
    arr = np.asarray(ids)
    if arr.ndim != 1:
        raise ValueError(f"ids must be one-dimensional, got shape {arr.shape}")
    return [s.encode("utf-8") for s in arr.astype(str).tolist()]


def _hash_one(salt: bytes, ident: bytes) -> bytes:
    # Length prefix keeps (salt, id) -> input injective for any id bytes.
    digest = hashlib.sha512(salt + len(ident).to_bytes(8, "big") + ident).digest()
    return sodium.crypto_core_ed25519_from_uniform(digest[:32])


def hash_to_curve(ids: Sequence[bytes], salt: bytes) -> np.ndarray:
    """Hash canonical ids to points of the prime-order subgroup.

    Parameters
    ----------
    ids : sequence of bytes
        Canonical ids (see :func:`canonical_ids`).
    salt : bytes
        The run's public salt.

    Returns
    -------
    ndarray of uint8, shape (n, 32)
        ``P(id) = from_uniform(SHA-512(salt || len(id) || id)[:32])``.
    """
    if not isinstance(salt, bytes) or len(salt) != SALT_BYTES:
        raise ValueError(f"salt must be {SALT_BYTES} bytes")

    def work(chunk: list[bytes]) -> list[bytes]:
        return [_hash_one(salt, ident) for ident in chunk]

    return _join(_parallel(work, list(ids)))


def blind(points: np.ndarray, scalar: bytes) -> np.ndarray:
    """Multiply every point by a secret scalar (no clamping).

    Parameters
    ----------
    points : ndarray of uint8, shape (n, 32)
        Valid points of the prime-order subgroup (check peers' with
        :func:`check_points` first).
    scalar : bytes
        A scalar from :func:`random_scalar`.

    Returns
    -------
    ndarray of uint8, shape (n, 32)

    Raises
    ------
    ValueError
        If a point is rejected by libsodium (invalid or of small order).
    """
    if len(scalar) != _SCALAR_BYTES:
        raise ValueError("scalar must be 32 bytes")
    mult = sodium.crypto_scalarmult_ed25519_noclamp

    def work(chunk: list[bytes]) -> list[bytes]:
        return [mult(scalar, p) for p in chunk]

    try:
        return _join(_parallel(work, _split(points)))
    except SodiumError as exc:  # libsodium refuses invalid or small-order points
        raise ValueError(f"scalar multiplication refused a point: {exc}") from None


def check_points(points: Any, what: str, expected: int | None = None) -> np.ndarray:
    """Validate points received from a peer.

    Parameters
    ----------
    points : Any
        The received value; must be a ``uint8`` array of shape ``(n, 32)``.
    what : str
        Description used in error messages.
    expected : int, optional
        Required number of points.

    Returns
    -------
    ndarray of uint8, shape (n, 32)

    Raises
    ------
    ValueError
        On a wrong type, shape or count, or if any entry is not a canonical
        point of the prime-order subgroup (``crypto_core_ed25519_is_valid_point``).
    """
    if not isinstance(points, np.ndarray) or points.dtype != np.uint8:
        raise ValueError(f"{what}: expected a uint8 array of points")
    if points.ndim != 2 or points.shape[1] != POINT_BYTES:
        raise ValueError(f"{what}: expected shape (n, {POINT_BYTES}), got {points.shape}")
    if expected is not None and points.shape[0] != expected:
        raise ValueError(f"{what}: expected {expected} points, got {points.shape[0]}")
    is_valid = sodium.crypto_core_ed25519_is_valid_point

    def work(chunk: list[bytes]) -> list[bytes]:
        return [b"\x01" if is_valid(p) else b"\x00" for p in chunk]

    flags = _parallel(work, _split(points))
    if flags and b"\x00" in flags:
        bad = flags.index(b"\x00")
        raise ValueError(f"{what}: entry {bad} is not a valid point of the prime-order group")
    return np.ascontiguousarray(points)


def point_keys(points: np.ndarray) -> np.ndarray:
    """View points as fixed-width byte strings (``S32``) for sorting and matching.

    Sorting these keys orders points by their raw bytes (lexicographic, unsigned).
    """
    return np.ascontiguousarray(points, dtype=np.uint8).view(f"S{POINT_BYTES}").reshape(-1)


def check_distinct(points: np.ndarray, what: str) -> None:
    """Raise ``ValueError`` if a peer's point list repeats a point.

    Distinct ids give distinct points (up to hash collisions), so a repeat means
    the peer misbehaved or sent the same batch twice.
    """
    keys = point_keys(points)
    if len(np.unique(keys)) != len(keys):
        raise ValueError(f"{what}: duplicate points")


def batches(n: int, size: int) -> Iterator[tuple[int, int]]:
    """Consecutive ``(start, stop)`` ranges covering ``range(n)`` in steps of ``size``."""
    if size < 1:
        raise ValueError("batch size must be at least 1")
    for start in range(0, n, size):
        yield start, min(n, start + size)
