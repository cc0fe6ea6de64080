"""Group operations for ECDH PSI: hash to the group, blinding and point checks.

All group arithmetic is libsodium's ristretto255 implementation, reached through
the ``rbcl`` package (which bundles libsodium and wraps its ristretto255
functions); nothing here computes on the curve by hand.

Group choice
------------
PSI needs a prime-order group with a hash onto it in which Diffie-Hellman is hard.
We use ristretto255 (RFC 9496, "The ristretto255 and decaf448 Groups"), the
prime-order group of order ``L = 2**252 + 27742317777372353535851937790883648493``
built on Curve25519/Ed25519. It replaces the prime-order subgroup of Ed25519, used
while pynacl (which has no ristretto255 functions) was the binding: there libsodium
checks subgroup membership of every input point with a full scalar multiplication,
so a blinded and checked point cost about three scalar multiplications instead of
one.

* **Every valid encoding is a group element.** ristretto255's encoding hides the
  cofactor of the underlying Edwards curve, so there is no small-order element other
  than the identity and no separate subgroup check: decoding a 32-byte string (one
  inverse square root) both parses and validates it.
* **Hash to the group** (``crypto_core_ristretto255_from_hash``): 64 uniform bytes
  to an element with the element derivation of RFC 9496 §4.3.4 (two one-way maps,
  each built on Elligator 2, added), so ``P(id)`` is indifferentiable from a random
  element when the 64 bytes come from a random oracle -- here SHA-512 of the salted,
  length-prefixed id.
* **Blinding** (``crypto_scalarmult_ristretto255``): decodes the point (refusing
  invalid encodings), multiplies by a scalar in ``[1, L)`` -- not clamped; libsodium
  only clears bit 255, which is already zero -- and refuses an identity result.
  ``x -> s*x`` is a bijection of the group, so ``a*(b*P) == b*(a*P)`` holds byte
  for byte, the property PSI relies on. This is one scalar multiplication per
  point.
* **Checks** (:func:`check_points`): every point a peer sends must be a canonical
  encoding (RFC 9496 §4.3.1): its bytes, read little-endian, a field element
  below ``p = 2**255 - 19`` that is non-negative (even) and has bit 255 clear --
  checked on the raw bytes of a whole batch at once, because the libsodium that
  rbcl bundles ignores bit 255 when decoding, so that a point and the same point
  with bit 255 set would decode alike and match each other. It must then decode
  (``crypto_core_ristretto255_is_valid_point``), and the identity (32 zero bytes,
  the only encoding of the neutral element, which decodes) is refused, before the
  point is used or compared. Points that are blinded at once go through
  :func:`check_and_blind` instead, which checks the bytes the same way and relies
  on the decoding (and the identity refusal) the scalar multiplication does
  anyway, so each such point is decoded once, not twice.

Points travel as numpy ``uint8`` arrays of shape ``(n, 32)``; they are never held
as one Python object per id longer than one batch.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import tempfile
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import numpy as np
import rbcl

from ftl._docstrings import fill_doc
from ftl.federation.messages import MessageError

__all__ = [
    "POINT_BYTES",
    "SALT_BYTES",
    "batches",
    "blind",
    "canonical_ids",
    "check_and_blind",
    "check_distinct",
    "check_points",
    "hash_to_curve",
    "noncanonical",
    "point_keys",
    "random_salt",
    "random_scalar",
    "secret_permutation",
]

POINT_BYTES = rbcl.crypto_core_ristretto255_BYTES  # 32
SALT_BYTES = 32
_SCALAR_BYTES = rbcl.crypto_core_ristretto255_SCALARBYTES  # 32
# Below this many points per thread the pool costs more than it saves.
_MIN_PER_WORKER = 256
# Chunks per thread in a parallel map (load balancing on a shared machine).
_CHUNKS_PER_WORKER = 16

# Parameters of the functions that check what a peer sent.
_RECEIVED_POINTS = """\
points : Any
    The received value; must be a ``uint8`` array of shape ``(n, 32)``."""
_WHAT_EXPECTED = """\
what : str
    Description used in error messages.
expected : int, optional
    Required number of points."""


def _drop_rbcl_library_file() -> None:
    """Remove the copy of libsodium that ``rbcl`` wrote to the temp dir at import.

    rbcl 1.1 writes its bundled shared library to a new temporary file on every
    import and never deletes it (about 2.7 MB per process). On POSIX the loaded
    library stays mapped after the file is unlinked, so the file can go at once.
    """
    path = getattr(getattr(rbcl, "_sodium", None), "_name", None)
    if os.name != "posix" or not isinstance(path, str):
        return
    if os.path.dirname(path) == tempfile.gettempdir() and os.path.basename(path).startswith("tmp"):
        with contextlib.suppress(OSError):
            os.remove(path)


_drop_rbcl_library_file()


def _workers() -> int:
    # rbcl calls libsodium through ctypes, which releases the GIL during each call,
    # so threads give real parallelism.
    try:
        cpus = len(os.sched_getaffinity(0))  # respects container CPU limits
    except AttributeError:  # not on Linux
        cpus = os.cpu_count() or 1
    return max(1, min(cpus, 8))


def _parallel(fn: Callable[[list[bytes]], list[Any]], items: list[bytes]) -> list[Any]:
    """Apply ``fn`` to contiguous chunks of ``items`` in threads; keep the order.

    The work is cut into several chunks per thread rather than one, so that a
    thread slowed down by other load on the machine leaves little work behind.
    """
    workers = min(_workers(), max(1, len(items) // _MIN_PER_WORKER))
    if workers == 1:
        return fn(items)
    step = max(_MIN_PER_WORKER, -(-len(items) // (workers * _CHUNKS_PER_WORKER)))
    chunks = [items[i : i + step] for i in range(0, len(items), step)]
    with ThreadPoolExecutor(max_workers=workers) as pool:
        parts = list(pool.map(fn, chunks))
    return [x for part in parts for x in part]


def _split(points: np.ndarray) -> list[bytes]:
    buf = np.ascontiguousarray(points, dtype=np.uint8).tobytes()
    return [buf[i : i + POINT_BYTES] for i in range(0, len(buf), POINT_BYTES)]


def _join(items: list[bytes]) -> np.ndarray:
    out = np.frombuffer(b"".join(items), dtype=np.uint8)
    return out.reshape(-1, POINT_BYTES).copy()


def random_scalar() -> bytes:
    """A fresh secret scalar, uniform in ``[1, L)`` for the group order ``L``.

    Returns
    -------
    bytes
        32-byte little-endian scalar in ``[1, L)``.

    Notes
    -----
    ``crypto_core_ristretto255_scalar_random`` draws 253-bit strings from the OS
    generator until one is below ``L`` and non-zero (rejection sampling, no bias).
    """
    while True:
        scalar = rbcl.crypto_core_ristretto255_scalar_random()
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


def hash_to_curve(ids: Sequence[bytes], salt: bytes) -> np.ndarray:
    """Hash canonical ids to elements of the ristretto255 group.

    Parameters
    ----------
    ids : sequence of bytes
        Canonical ids (see :func:`canonical_ids`).
    salt : bytes
        The run's public salt.

    Returns
    -------
    ndarray of uint8, shape (n, 32)
        ``P(id) = from_hash(SHA-512(salt || len(id) || id))``, with ``len(id)`` as
        8 bytes big-endian and ``from_hash`` the 64-byte element derivation of
        RFC 9496 (``crypto_core_ristretto255_from_hash``).
    """
    if not isinstance(salt, bytes) or len(salt) != SALT_BYTES:
        raise ValueError(f"salt must be {SALT_BYTES} bytes")
    from_hash = rbcl.crypto_core_ristretto255_from_hash
    sha512 = hashlib.sha512

    def work(chunk: list[bytes]) -> list[bytes]:
        # The length prefix keeps (salt, id) -> hash input injective for any id bytes.
        return [
            from_hash(sha512(salt + len(ident).to_bytes(8, "big") + ident).digest())
            for ident in chunk
        ]

    return _join(_parallel(work, list(ids)))


def blind(points: np.ndarray, scalar: bytes) -> np.ndarray:
    """Multiply every point by a secret scalar (no clamping).

    Parameters
    ----------
    points : ndarray of uint8, shape (n, 32)
        ristretto255 encodings (check peers' with :func:`check_points` first).
    scalar : bytes
        A scalar from :func:`random_scalar`.

    Returns
    -------
    ndarray of uint8, shape (n, 32)

    Raises
    ------
    ValueError
        If libsodium refuses a point: not a valid ristretto255 encoding, or the
        product is the identity (the point was the identity or the scalar is 0).
    """
    if not isinstance(scalar, bytes) or len(scalar) != _SCALAR_BYTES:
        raise ValueError(f"scalar must be {_SCALAR_BYTES} bytes")
    mult = rbcl.crypto_scalarmult_ristretto255

    def work(chunk: list[bytes]) -> list[bytes]:
        try:
            return [mult(scalar, p) for p in chunk]
        except RuntimeError:  # rbcl's report of libsodium's -1
            raise ValueError(
                "scalar multiplication refused a point: not a valid ristretto255 "
                "encoding, or the product is the identity"
            ) from None

    return _join(_parallel(work, _split(points)))


def _check_shape(points: Any, what: str, expected: int | None) -> np.ndarray:
    if not isinstance(points, np.ndarray) or points.dtype != np.uint8:
        raise MessageError(f"{what}: expected a uint8 array of points")
    if points.ndim != 2 or points.shape[1] != POINT_BYTES:
        raise MessageError(f"{what}: expected shape (n, {POINT_BYTES}), got {points.shape}")
    if expected is not None and points.shape[0] != expected:
        raise MessageError(f"{what}: expected {expected} points, got {points.shape[0]}")
    return np.ascontiguousarray(points)


def noncanonical(points: np.ndarray) -> np.ndarray:
    """Which rows are not canonical field-element encodings (RFC 9496 §4.3.1).

    A canonical encoding, read as a 256-bit little-endian integer, has bit 255
    clear and is below ``p = 2**255 - 19`` and even (non-negative). libsodium's
    decoder checks the last two, but the version rbcl bundles masks bit 255 off
    first, so it would accept a second encoding of every point.

    Parameters
    ----------
    points : ndarray of uint8, shape (n, 32)

    Returns
    -------
    ndarray of bool, shape (n,)
        True where the encoding is not canonical (it may still fail to decode
        where it is).
    """
    low, middle, high = points[:, 0], points[:, 1:-1], points[:, -1]
    top_bit = high >= 0x80
    negative = (low & 1).astype(bool)
    # p = 2**255 - 19 is ed ff .. ff 7f little-endian: with bit 255 clear, the value
    # is >= p exactly when the top byte is 7f, the middle all ff and the low >= ed.
    at_least_p = (high == 0x7F) & (middle == 0xFF).all(axis=1) & (low >= 0xED)
    return top_bit | negative | at_least_p


def _refuse(what: str, ok: np.ndarray, canonical: np.ndarray) -> None:
    """Raise naming the first refused entry and how many there are (if any)."""
    if ok.all():
        return
    bad = np.flatnonzero(~ok)
    first = int(bad[0])
    kind = "not a canonical encoding" if not canonical[first] else "the identity"
    raise MessageError(
        f"{what}: entry {first} is not a valid point of the prime-order group ({kind}); "
        f"{len(bad)} of {len(ok)} points refused"
    )


@fill_doc(received_points=_RECEIVED_POINTS, what_expected=_WHAT_EXPECTED)
def check_points(points: Any, what: str, expected: int | None = None) -> np.ndarray:
    """Validate points received from a peer.

    Parameters
    ----------
    %(received_points)s
    %(what_expected)s

    Returns
    -------
    ndarray of uint8, shape (n, 32)

    Raises
    ------
    MessageError
        On a wrong type, shape or count, if any entry is not a canonical
        ristretto255 encoding (:func:`noncanonical`, then
        ``crypto_core_ristretto255_is_valid_point``) or if any entry is the
        identity element. The message names the first bad entry and the number
        of bad entries. (``MessageError`` is a ``ValueError``.)
    """
    points = _check_shape(points, what, expected)
    is_valid = rbcl.crypto_core_ristretto255_is_valid_point

    def work(chunk: list[bytes]) -> list[bool]:
        return [is_valid(p) for p in chunk]

    decodes = np.fromiter(_parallel(work, _split(points)), dtype=bool, count=len(points))
    canonical = decodes & ~noncanonical(points)
    # 32 zero bytes, the only encoding of the identity, decode fine: refuse them here.
    _refuse(what, canonical & points.any(axis=1), canonical)
    return points


@fill_doc(received_points=_RECEIVED_POINTS, what_expected=_WHAT_EXPECTED)
def check_and_blind(
    points: Any, scalar: bytes, what: str, expected: int | None = None
) -> np.ndarray:
    """Validate points received from a peer and blind them, decoding each once.

    Same checks and errors as :func:`check_points` followed by :func:`blind`, at
    the cost of the multiplication alone: the bytes are checked for canonical
    form at once for the whole batch (:func:`noncanonical`), then
    ``crypto_scalarmult_ristretto255`` decodes every point with the same routine
    as ``crypto_core_ristretto255_is_valid_point`` before multiplying, refuses
    encodings that do not decode, and refuses the identity through its
    (identity) product. Only if it refuses a point are the points checked one by
    one, to name the bad entry.

    Parameters
    ----------
    %(received_points)s
    scalar : bytes
        A scalar from :func:`random_scalar` (never zero).
    %(what_expected)s

    Returns
    -------
    ndarray of uint8, shape (n, 32)
        ``scalar * point`` for every point.

    Raises
    ------
    MessageError
        As :func:`check_points` (wrong type, shape or count; an entry that is not a
        canonical encoding or is the identity).
    ValueError
        If the scalar is malformed or zero.
    """
    points = _check_shape(points, what, expected)
    if noncanonical(points).any():
        check_points(points, what)  # refuses, naming the first and counting every bad entry
    try:
        return blind(points, scalar)
    except ValueError:
        check_points(points, what)  # names the first bad entry
        raise  # every point is valid: the scalar was zero


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
