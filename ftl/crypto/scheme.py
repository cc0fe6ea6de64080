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

import secrets
from collections import OrderedDict
from dataclasses import dataclass
from functools import partial

import gmpy2
import numpy as np
from gmpy2 import mpz
from joblib import Parallel, delayed, effective_n_jobs
from joblib.parallel import BACKENDS, get_active_backend

from ftl.crypto import fixedpoint, pool
from ftl.crypto.engine import (
    CRTEncryptor,
    column_multiexp,
    djn_generator,
    encrypt_with_factors,
    random_unit,
)
from ftl.crypto.keys import generate_keypair, key_id
from ftl.federation.messages import CiphertextArray, PlainArray

__all__ = [
    "MASK_SLACK_BITS",
    "MaskState",
    "OwnKey",
    "PaillierOwnKey",
    "PaillierPeerKey",
    "PeerKey",
    "PlainOwnKey",
    "PlainPeerKey",
    "make_own_key",
    "object_array",
    "parallel_columns",
    "peer_key_from_public",
    "public_key_json",
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
_CHUNK = 256


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


# -------------------------------------------------------------------- encrypted
class PaillierOwnKey:
    """This party's Paillier key pair with fast CRT/DJN encryption.

    Parameters
    ----------
    key_size : int
        Modulus bits (2048 by default elsewhere; smaller needs ``insecure_for_tests``).
    insecure_for_tests : bool
        Allow keys below 2048 bits.
    n_jobs : int or None
        joblib workers for encrypting long vectors.
    pool_capacity : int or None, default=None
        Random factors precomputed in a background process
        (:class:`~ftl.crypto.pool.RandomnessPool`); 0 switches the pool off. ``None``:
        :data:`ftl.crypto.pool.DEFAULT_CAPACITY` when ``n_jobs`` asks for parallel
        work (not ``None`` or 1) under a local joblib backend (loky, threading,
        multiprocessing), else off -- under ``parallel_config(backend="dask")`` the
        encryptions go to the cluster as before.
    """

    scheme = "paillier"
    # Class-level defaults: a key restored by ``ftl.persistence`` is made without
    # ``__init__``.
    pool_capacity: int | None = None
    _pool: pool.RandomnessPool | None = None
    _encryptor: CRTEncryptor | None = None

    def __init__(
        self,
        key_size: int,
        insecure_for_tests: bool = False,
        n_jobs: int | None = None,
        pool_capacity: int | None = None,
    ):
        self.public_key, self.private_key = generate_keypair(key_size, insecure_for_tests)
        self.n = self.public_key.n
        self.hs = djn_generator(self.n, self.private_key.p, self.private_key.q)
        self.key_id = key_id(self.public_key)
        self.width = (2 * self.n.bit_length() + 7) // 8
        self.n_jobs = n_jobs
        self.pool_capacity = pool_capacity
        self._encryptor = None
        self._pool = None
        # the first factors are made while the parties exchange keys and set up
        if self.randomness_pool is not None:
            self.randomness_pool.refill()

    def __getstate__(self) -> dict:
        # Never pickle (or copy) pooled factors: two copies could use the same one.
        # The tables are rebuilt where they are needed.
        state = dict(self.__dict__)
        state.pop("_pool", None)
        state.pop("_encryptor", None)
        return state

    @property
    def encryptor(self) -> CRTEncryptor:
        if self._encryptor is None:
            self._encryptor = CRTEncryptor(self.n, self.private_key.p, self.private_key.q, self.hs)
        return self._encryptor

    @property
    def randomness_pool(self) -> pool.RandomnessPool | None:
        """This key's pool of precomputed random factors, or ``None`` when off.

        Whether it is on may change with the active joblib backend (see
        ``pool_capacity``); a pool switched off keeps its factors for later.
        """
        capacity = self._pool_capacity()
        if capacity <= 0:
            return None
        if self._pool is None or self._pool.closed:
            sk = self.private_key
            produce = partial(_random_factors_in_worker, int(self.n), sk.p, sk.q, int(self.hs))
            self._pool = pool.RandomnessPool(produce, capacity)
        self._pool.capacity = capacity
        return self._pool

    def _pool_capacity(self) -> int:
        if self.pool_capacity is not None:
            return max(0, int(self.pool_capacity))
        parallel = self.n_jobs not in (None, 1) and _local_joblib_backend()
        return pool.DEFAULT_CAPACITY if parallel else 0

    def public(self) -> dict:
        """Public key material for the key exchange message."""
        return {"scheme": self.scheme, "n": self.n, "hs": self.hs, "key_id": self.key_id}

    def encrypt(self, values: np.ndarray) -> CiphertextArray:
        """Encrypt a float vector at :data:`VALUE_FRAC_BITS` with fresh randomness."""
        values = np.asarray(values, dtype=np.float64)
        if values.size and not np.abs(values).max() < 2.0**VALUE_INT_BITS:
            raise fixedpoint.FixedPointOverflowError(
                f"per-sample values must stay below 2**{VALUE_INT_BITS} in magnitude "
                "(the model diverged; lower the learning rate or scale the features)"
            )
        ints = fixedpoint.encode(values, VALUE_FRAC_BITS)
        self._check_headroom(VALUE_INT_BITS + VALUE_FRAC_BITS + 64)
        return self.encrypt_integers(list(ints.reshape(-1)), values.shape)

    def encrypt_integers(self, ints: list[int], shape: tuple[int, ...]) -> CiphertextArray:
        """Encrypt signed integers (already encoded and range-checked by the caller).

        Random factors come from the key's pool first (each used once), and the
        pool starts refilling for the next call at once (in a background process at
        the lowest CPU priority, so it only uses cores left idle); the factors it
        lacked are computed now, in joblib workers for long vectors.
        """
        plain = [int(v) % self.n for v in ints]
        randomness = self.randomness_pool
        factors = []
        if randomness is not None:
            factors = randomness.take(len(plain))
            randomness.refill()
        cts = encrypt_with_factors(plain[: len(factors)], factors, self.n)
        cts += self._encrypt_on_demand(plain[len(factors) :])
        return CiphertextArray(object_array(cts).reshape(shape), self.key_id, self.width)

    def _encrypt_on_demand(self, plain: list[int]) -> list[mpz]:
        if not plain:
            return []  # never build the tables for nothing
        chunks = _chunks(plain, self.n_jobs)
        if len(chunks) > 1:
            sk = self.private_key
            parts = Parallel(n_jobs=self.n_jobs)(
                delayed(_encrypt_in_worker)(self.n, sk.p, sk.q, self.hs, c) for c in chunks
            )
            return [x for part in parts for x in part]
        return self.encryptor.encrypt_ints(plain)

    def _check_headroom(self, bits: int) -> None:
        if bits + MASK_SLACK_BITS + 2 >= self.n.bit_length():
            raise fixedpoint.FixedPointOverflowError(
                f"values of {bits} bits do not fit a {self.n.bit_length()}-bit key with masks"
            )

    def decrypt_packed(self, ct: CiphertextArray, slot_bits: int, count: int) -> np.ndarray:
        """Decrypt packed masked values and split them into ``count`` slots (1-d ints)."""
        if not 64 <= slot_bits <= self.n.bit_length() - 2:
            raise ValueError("packed ciphertexts do not match their declared slots")
        per_ct = (self.n.bit_length() - 2) // slot_bits
        if ct.values.shape != (-(-count // per_ct),):
            raise ValueError("packed ciphertexts do not match their declared slots")
        plain = self.decrypt_masked(ct)
        mask = (1 << slot_bits) - 1
        out = []
        for value in plain:
            value = int(value)
            for _ in range(per_ct):
                out.append(value & mask)
                value >>= slot_bits
        result = np.empty(count, dtype=object)
        result[:] = out[:count]
        return result

    def decrypt_masked(self, ct: CiphertextArray) -> np.ndarray:
        """Decrypt masked values sent for decryption; returns Python ints (object array)."""
        self._check_owner(ct)
        values = [int(c) for c in ct.values.reshape(-1)]
        n2 = self.n * self.n
        if any(not 0 < c < n2 for c in values):
            raise ValueError("ciphertext out of range for this key")
        chunks = _chunks(values, self.n_jobs)
        if len(chunks) > 1:
            parts = Parallel(n_jobs=self.n_jobs)(
                delayed(_decrypt_chunk)(self.private_key, c) for c in chunks
            )
            plain = [x for part in parts for x in part]
        else:
            plain = _decrypt_chunk(self.private_key, values)
        out = np.empty(len(plain), dtype=object)
        out[:] = plain
        return out.reshape(ct.values.shape)

    def decrypt_values(self, ct: CiphertextArray, frac_bits: int) -> np.ndarray:
        """Decrypt signed fixed-point values (only for values this party may learn)."""
        ints = self.decrypt_masked(ct)
        half = self.n // 2
        signed = np.array([v - self.n if v > half else v for v in ints.reshape(-1)], dtype=object)
        return fixedpoint.decode(signed, frac_bits).reshape(ints.shape)

    def _check_owner(self, ct: CiphertextArray) -> None:
        if ct.key_id != self.key_id:
            raise ValueError(f"ciphertexts under key {ct.key_id}, not this party's {self.key_id}")


class PaillierPeerKey:
    """Another party's public key: compute on its ciphertexts, mask, re-randomise."""

    scheme = "paillier"

    def __init__(
        self,
        n: int,
        hs: int,
        key_id_: str,
        *,
        min_key_size: int = 2048,
        insecure_for_tests: bool = False,
        n_jobs: int | None = None,
    ):
        if n.bit_length() < min_key_size and not insecure_for_tests:
            raise ValueError(
                f"peer key of {n.bit_length()} bits is below the minimum {min_key_size}"
            )
        self.n = mpz(n)
        self.nsquare = self.n * self.n
        if not 1 < hs < self.nsquare or gmpy2.gcd(hs, self.n) != 1:
            raise ValueError("peer's DJN base is not a unit mod n^2")
        self.hs = mpz(hs)
        self.key_id = key_id_
        self.width = (2 * int(self.n).bit_length() + 7) // 8
        self.n_jobs = n_jobs

    def rerandomize(self, cts: list[mpz]) -> list[mpz]:
        """Multiply by fresh full random factors ``s**n`` (``s`` uniform in ``Z_n*``).

        Results computed from the key owner's own ciphertexts carry a random factor
        the owner could recover and relate to its own; a uniform ``s**n`` makes it
        independent of how the result was made. (DJN's short ``hs**a`` would not:
        the owner knows the factorisation, and ``<h>`` is a proper subgroup.) Only
        a few ciphertexts per batch need this, so the full exponentiation is cheap.
        """
        chunks = _chunks(list(cts), self.n_jobs, min_size=4)
        if len(chunks) > 1:
            parts = Parallel(n_jobs=self.n_jobs)(
                delayed(_rerandomize_chunk)(self.n, c) for c in chunks
            )
            return [x for part in parts for x in part]
        return _rerandomize_chunk(self.n, list(cts))

    def masked_cross_term(
        self, features: np.ndarray | list[np.ndarray], ct: CiphertextArray | list[CiphertextArray]
    ) -> tuple[CiphertextArray, MaskState]:
        """``[[sum_k X_k.T @ v_k + r]]`` for plaintext ``X_k`` (n, p), ``[[v_k]]`` (n,).

        Several pieces (lists) are summed homomorphically *before* masking, so the
        key owner decrypts, and the caller learns, only the total -- never the
        individual pieces.
        """
        pieces = list(zip(features, ct, strict=True)) if isinstance(ct, list) else [(features, ct)]
        return self.mask_total(self.cross_total(features, ct), pieces[0][0].shape[0], len(pieces))

    def cross_total(
        self, features: np.ndarray | list[np.ndarray], ct: CiphertextArray | list[CiphertextArray]
    ) -> list[mpz]:
        """``[[sum_k X_k.T @ v_k]]``, unmasked: it never leaves this party as is.

        Totals of several calls (over batches) may be combined with
        :meth:`add_totals` before :meth:`mask_total` sends them for decryption.
        """
        pieces = list(zip(features, ct, strict=True)) if isinstance(ct, list) else [(features, ct)]
        total = None
        for x, c in pieces:
            cols = self._cross_columns(x, c)
            total = cols if total is None else self.add_totals(total, cols)
        return total

    def add_totals(self, a: list[mpz], b: list[mpz]) -> list[mpz]:
        """Homomorphic sum of two unmasked totals."""
        return [x * y % self.nsquare for x, y in zip(a, b, strict=True)]

    def mask_total(
        self, total: list[mpz], n_rows: int, n_pieces: int
    ) -> tuple[CiphertextArray, MaskState]:
        """Mask, pack and re-randomise a total over ``n_rows * n_pieces`` terms."""
        # A public bound on |X.T @ v| (never the data's own maximum, which the key
        # owner could read off the mask length): |x| < 2**FEATURE_EXP_BITS after
        # encoding, |v| < 2**VALUE_INT_BITS, one term per row and piece.
        slot_bits = expected_slot_bits(n_rows, n_pieces)
        mask_bits = slot_bits - 1
        value_bits = mask_bits - MASK_SLACK_BITS
        # r = 2**value_bits + (uniform below 2**mask_bits) and |v| < 2**value_bits, so
        # every masked value v + r lies in (0, 2**(mask_bits + 1)): it fits a slot of
        # mask_bits + 1 bits with no borrow or carry into its neighbours. Packing
        # several slots into one plaintext makes the key owner's decryptions and our
        # re-randomisations per ciphertext, not per value (about 11 slots at 2048 bits).
        per_ct = (int(self.n).bit_length() - 2) // slot_bits
        if per_ct < 1:
            raise fixedpoint.FixedPointOverflowError("key too small for the masked gradient")
        masks = [(1 << value_bits) + secrets.randbits(mask_bits) for _ in total]
        packed = self.rerandomize(self._pack_masked(total, masks, slot_bits, per_ct))
        out = CiphertextArray(object_array(packed), self.key_id, self.width)
        return out, MaskState(masks, VALUE_FRAC_BITS + FEATURE_FRAC_BITS, slot_bits)

    def _cross_columns(self, features: np.ndarray, ct: CiphertextArray) -> list[mpz]:
        """``[[X.T @ v]]`` column by column (unmasked; never leaves this party)."""
        if ct.key_id != self.key_id:
            raise ValueError("ciphertexts are not under this peer's key")
        if ct.values.shape != (features.shape[0],):
            raise ValueError(f"expected {features.shape[0]} ciphertexts, got {ct.values.shape}")
        cts = [mpz(int(c)) for c in ct.values]
        for c in cts:
            if not 0 < c < self.nsquare:
                raise ValueError("ciphertext out of range for the peer's key")
        return parallel_columns(cts, encode_features(features), self.nsquare, self.n_jobs)

    def masked_vector(self, ct: CiphertextArray) -> tuple[CiphertextArray, MaskState]:
        """``[[v + r]]`` for the key owner to decrypt (prediction), packed.

        ``|v| < 2**(VALUE_INT_BITS + VALUE_FRAC_BITS)`` (enforced at encryption), so
        with ``r = 2**value_bits + uniform(2**(value_bits + 40))`` every ``v + r``
        fits a slot of :func:`expected_margin_slot_bits` bits; about 19 values share
        one 2048-bit plaintext, so the owner decrypts ~19 times less. No
        re-randomisation is needed: the owner made these ciphertexts, so their
        random factors (and the public powers of them that packing multiplies)
        tell it nothing; the masks are the only secret and sit in the plaintext.
        """
        if ct.key_id != self.key_id:
            raise ValueError("ciphertexts are not under this peer's key")
        flat = [mpz(int(c)) for c in ct.values.reshape(-1)]
        n, n2 = self.n, self.nsquare
        if any(not 0 < c < n2 for c in flat):
            raise ValueError("ciphertext out of range for the peer's key")
        slot_bits = expected_margin_slot_bits()
        value_bits = slot_bits - 1 - MASK_SLACK_BITS
        per_ct = (int(n).bit_length() - 2) // slot_bits
        if per_ct < 1:
            raise fixedpoint.FixedPointOverflowError("key too small for masked margins")
        masks = [(1 << value_bits) + secrets.randbits(value_bits + MASK_SLACK_BITS) for _ in flat]
        packed = self._pack_masked(flat, masks, slot_bits, per_ct)
        out = CiphertextArray(object_array(packed), self.key_id, self.width)
        return out, MaskState(masks, VALUE_FRAC_BITS, slot_bits)

    def _pack_masked(
        self, cts: list[mpz], masks: list[int], slot_bits: int, per_ct: int
    ) -> list[mpz]:
        """``[[sum_j (v_j + r_j) 2**(slot_bits * j)]]`` per group of ``per_ct`` values.

        Horner on ciphertexts (``acc = acc**(2**slot_bits) * c_j``) puts value j of a
        group in slot j; the group's masks are added as one plaintext.
        """
        n, n2 = self.n, self.nsquare
        shift = mpz(1) << slot_bits
        packed = []
        for start in range(0, len(cts), per_ct):
            acc, mask = mpz(1), mpz(0)
            for j in reversed(range(start, min(start + per_ct, len(cts)))):
                acc = gmpy2.powmod(acc, shift, n2) * cts[j] % n2
                mask = (mask << slot_bits) + masks[j]
            packed.append(acc * (1 + mask * n) % n2)
        return packed

    def unmask(self, masked: np.ndarray, state: MaskState) -> np.ndarray:
        """Remove the mask from decrypted values returned by the key owner."""
        if not isinstance(masked, np.ndarray) or masked.shape != (len(state.masks),):
            raise ValueError("masked reply has the wrong shape")
        n = int(self.n)
        vals = []
        for v, r in zip(masked.tolist(), state.masks, strict=False):
            x = (int(v) - r) % n
            vals.append(x - n if x > n // 2 else x)
        return fixedpoint.decode(np.array(vals, dtype=object), state.frac_bits)


def encode_features(features: np.ndarray) -> np.ndarray:
    """Features as signed int64 fixed-point exponents (error if they overflow)."""
    features = np.asarray(features, dtype=np.float64)
    if features.size and np.abs(features).max() >= 2.0 ** (FEATURE_EXP_BITS - FEATURE_FRAC_BITS):
        raise fixedpoint.FixedPointOverflowError(
            "feature values too large for fixed-point exponents; standardise them first"
        )
    return np.rint(np.ldexp(features, FEATURE_FRAC_BITS)).astype(np.int64)


# -------------------------------------------------------------------- plaintext
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
    # Imported here: the rest of this module needs neither.
    from ftl.exceptions import PolicyError
    from ftl.federation.messages import MessageError

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
    required = max(min_bits or 0, 0 if insecure_for_tests else 2048)
    if n.bit_length() < required:
        raise PolicyError(
            f"peer's key has {n.bit_length()} bits; this party requires at least {required} "
            "(its own key_size, and never below 2048 outside tests): refused"
        )
    return PaillierPeerKey(n, hs, kid, insecure_for_tests=insecure_for_tests, n_jobs=n_jobs)


# -------------------------------------------------------------------- helpers
def object_array(values: list) -> np.ndarray:
    """A 1-d object array of Python ints (ciphertexts or decrypted integers)."""
    out = np.empty(len(values), dtype=object)
    out[:] = [int(v) for v in values]
    return out


def _chunks(items: list, n_jobs: int | None, min_size: int = _CHUNK) -> list[list]:
    """Split work for joblib: one chunk when serial or small, else 2 per worker."""
    if not n_jobs or n_jobs == 1 or len(items) < 2 * min_size:
        return [items]
    k = 2 * _n_workers(n_jobs)
    size = max(min_size, -(-len(items) // k))
    return [items[i : i + size] for i in range(0, len(items), size)]


def _rerandomize_chunk(n: int, cts: list) -> list[mpz]:
    n = mpz(n)
    n2 = n * n
    return [mpz(c) * gmpy2.powmod(random_unit(n), n, n2) % n2 for c in cts]


def _decrypt_chunk(private_key, values: list[int]) -> list[int]:
    return [int(private_key.raw_decrypt(c)) for c in values]


_WORKER_ENCRYPTORS: OrderedDict[tuple[int, int], CRTEncryptor] = OrderedDict()
#: Keys whose tables a worker keeps, least recently used dropped first. A 2048-bit
#: key's tables take ~40 MB (~60 MB at 3072 bits); a simulated fit alternates
#: between the guest's and the hosts' keys, and every fit makes new ones. Three
#: keys' tables stay far below loky's memory-leak check, which restarts a worker
#: whose memory grew by 300 MB since its first task (the restarted worker would
#: rebuild its tables: seconds per epoch with 2048-bit keys).
_WORKER_KEYS_KEPT = 3


def _worker_encryptor(n: int, p: int, q: int, hs: int) -> CRTEncryptor:
    """This process's encryptor for a key: tables built once, reused across calls."""
    cache_key = (int(n), int(hs))
    enc = _WORKER_ENCRYPTORS.get(cache_key)
    if enc is not None:
        _WORKER_ENCRYPTORS.move_to_end(cache_key)
        return enc
    # drop old tables before building new ones: never more than _WORKER_KEYS_KEPT
    while len(_WORKER_ENCRYPTORS) >= _WORKER_KEYS_KEPT:
        _WORKER_ENCRYPTORS.popitem(last=False)
    enc = _WORKER_ENCRYPTORS[cache_key] = CRTEncryptor(n, p, q, hs)
    return enc


def _encrypt_in_worker(n: int, p: int, q: int, hs: int, chunk: list[int]) -> list[mpz]:
    # Workers are this party's own processes (they hold p and q only in memory).
    return _worker_encryptor(n, p, q, hs).encrypt_ints(chunk)


def _random_factors_in_worker(n: int, p: int, q: int, hs: int, count: int) -> list[mpz]:
    """Fresh DJN factors ``hs**a`` for a key's :class:`~ftl.crypto.pool.RandomnessPool`."""
    return _worker_encryptor(n, p, q, hs).random_factors(count)


def _local_joblib_backend() -> bool:
    """Whether joblib's active backend runs on this machine (not e.g. dask)."""
    backend, _ = get_active_backend()
    local = ("loky", "threading", "multiprocessing", "sequential")
    return isinstance(backend, tuple(BACKENDS[name] for name in local if name in BACKENDS))


def parallel_columns(cts: list[mpz], exps: np.ndarray, modulus: mpz, n_jobs: int | None) -> list:
    """``column_multiexp`` over groups of columns in joblib workers (one call if small)."""
    n_cols = exps.shape[1]
    if not n_jobs or n_jobs == 1 or n_cols < 2 or len(cts) < _CHUNK:
        return column_multiexp(cts, exps, modulus)
    groups = np.array_split(np.arange(n_cols), min(n_cols, _n_workers(n_jobs)))
    parts = Parallel(n_jobs=n_jobs)(
        delayed(column_multiexp)(cts, exps[:, g], modulus) for g in groups if len(g)
    )
    return [x for part in parts for x in part]


def _n_workers(n_jobs: int) -> int:
    """Workers the active joblib backend gives ``n_jobs``: local CPUs with loky,
    the cluster's worker threads under ``parallel_config(backend="dask")``."""
    return max(1, effective_n_jobs(n_jobs))


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
