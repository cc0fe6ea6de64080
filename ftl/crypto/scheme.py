"""What a protocol role needs from encryption, in encrypted and plaintext modes.

Each party holds an :class:`OwnKey` (its private key: encrypt, decrypt) and a
:class:`PeerKey` for every other party (public key only: compute on the other's
ciphertexts, mask, re-randomise). The plaintext mode implements the same two
interfaces with floats, so ``encryption=None`` runs the identical protocol.

The central primitive is the *masked cross term*: party P holds its plaintext
features ``X`` and receives ``[[v]]_Q`` (a per-sample vector encrypted under Q's
key). It computes ``[[X.T @ v + r]]_Q`` with a random mask ``r`` that has at least
:data:`MASK_SLACK_BITS` bits more than any possible value of ``X.T @ v``, adds fresh
randomness, and sends it to Q. Q decrypts and returns the masked integers; P
removes ``r``. Q learns nothing (the mask hides the value statistically); P
learns ``X.T @ v``, which is its own gradient term.
"""

from __future__ import annotations

from ftl.crypto import arrays, masking
from ftl.crypto.arrays import *  # noqa: F403  (protocols take the array types from here)
from ftl.crypto.keys import MIN_SECURE_KEY_SIZE
from ftl.crypto.masking import *  # noqa: F403  (and the widths and slot rules)
from ftl.crypto.paillier import PaillierOwnKey, PaillierPeerKey
from ftl.crypto.plain import PlainOwnKey, PlainPeerKey
from ftl.crypto.workers import parallel_columns
from ftl.exceptions import MessageError, PolicyError

__all__ = [
    *arrays.__all__,
    *masking.__all__,
    "OwnKey",
    "PaillierOwnKey",
    "PaillierPeerKey",
    "PeerKey",
    "PlainOwnKey",
    "PlainPeerKey",
    "make_own_key",
    "parallel_columns",
    "peer_key_from_public",
    "public_key_json",
]

OwnKey = PaillierOwnKey | PlainOwnKey
PeerKey = PaillierPeerKey | PlainPeerKey


def make_own_key(
    encryption: str | None,
    key_size: int,
    insecure_for_tests: bool = False,
    n_jobs: int | None = None,
    pool_capacity: int | None = None,
) -> OwnKey:
    """This party's key for ``encryption`` (``pool_capacity``: see :class:`PaillierOwnKey`)."""
    if encryption is None:
        return PlainOwnKey()
    if encryption == "paillier":
        return PaillierOwnKey(key_size, insecure_for_tests, n_jobs, pool_capacity)
    raise ValueError(f"encryption must be 'paillier' or None, got {encryption!r}")


def public_key_json(own: OwnKey) -> dict:
    """This party's key-exchange fields as JSON (big integers as decimal strings).

    :func:`peer_key_from_public` reads them back on the other side.
    """
    return {k: (str(v) if isinstance(v, int) else v) for k, v in own.public().items()}


def peer_key_from_public(
    public: dict,
    expected_scheme: str,
    insecure_for_tests: bool = False,
    n_jobs: int | None = None,
    *,
    min_bits: int | None = None,
) -> PeerKey:
    """Build and check a peer's key from its key-exchange fields.

    The receiving party checks the key itself, whatever the peer's code did: its
    fields must be integers (or the decimal strings of :func:`public_key_json`) and
    its modulus at least ``min_bits`` bits -- the size this party asked for, so
    that a peer answering with a smaller key than the run's ``key_size`` is refused
    -- and never below 2048 bits unless ``insecure_for_tests``.

    Parameters
    ----------
    public : dict
        The peer's key-exchange fields (``scheme``, and ``n``, ``hs``, ``key_id``
        for Paillier).
    expected_scheme : {"paillier", "plain"}
        The scheme this run uses.
    insecure_for_tests : bool, default=False
        Drop the 2048-bit floor (``min_bits`` still applies).
    n_jobs : int, optional
        Parallelism of the peer key's operations.
    min_bits : int, optional
        Smallest modulus accepted, in bits: pass this party's own ``key_size``.

    Returns
    -------
    PaillierPeerKey or PlainPeerKey

    Raises
    ------
    PolicyError
        If the modulus is smaller than required.
    MessageError
        If a field is missing or not an integer.
    ValueError
        If the scheme differs from this run's.
    """
    if min_bits is not None:
        if isinstance(min_bits, bool) or not hasattr(min_bits, "__index__"):
            raise TypeError(f"min_bits must be an integer, got {type(min_bits).__name__}")
        min_bits = min_bits.__index__()  # numpy integers too; never 2048.0 or "2048"
    if not isinstance(public, dict):
        raise MessageError("peer's public key must be a JSON object")
    scheme = public.get("scheme")
    if scheme != expected_scheme:
        raise ValueError(f"peer uses encryption {scheme!r}, this run expects {expected_scheme!r}")
    if scheme == "plain":
        return PlainPeerKey()

    def integer(name: str) -> int:
        value = public.get(name)
        # ints and decimal strings only: int() would also take 2048.0, True or " 7 "
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        if isinstance(value, str) and value.isascii() and value.isdigit():
            return int(value)
        raise MessageError(f"peer's public key field {name!r} is not an integer")

    n, hs, kid = integer("n"), integer("hs"), public.get("key_id")
    if not isinstance(kid, str):
        raise MessageError("peer's public key has no key id")
    required = max(min_bits or 0, 0 if insecure_for_tests else MIN_SECURE_KEY_SIZE)
    if n.bit_length() < required:
        raise PolicyError(
            f"peer's key has {n.bit_length()} bits; this party requires at least {required} "
            f"(its own key_size, and never below {MIN_SECURE_KEY_SIZE} outside tests): refused"
        )
    return PaillierPeerKey(n, hs, kid, insecure_for_tests=insecure_for_tests, n_jobs=n_jobs)
