"""Paillier keys with fast encryption: this party's key pair and its peers' public keys.

:class:`PaillierOwnKey` holds this party's key pair: it encrypts with CRT and
DJN-style short random exponents (factors precomputed by a
:class:`~ftl.crypto.pool.RandomnessPool` when work runs in parallel) and decrypts
what peers send back masked. :class:`PaillierPeerKey` holds another party's
public key: it computes the masked cross terms ``[[X.T @ v + r]]`` on the peer's
ciphertexts, masks and packs per-row values, and re-randomises what it sends.
:mod:`ftl.crypto.plain` implements the same two interfaces in the clear.
"""

from __future__ import annotations

import secrets
from functools import partial

import gmpy2
import numpy as np
from gmpy2 import mpz

from ftl.crypto import fixedpoint, pool
from ftl.crypto.arrays import CiphertextArray, object_array
from ftl.crypto.engine import CRTEncryptor, djn_generator, encrypt_with_factors
from ftl.crypto.keys import MIN_SECURE_KEY_SIZE, generate_keypair, key_id
from ftl.crypto.masking import (
    FEATURE_FRAC_BITS,
    MASK_SLACK_BITS,
    VALUE_FRAC_BITS,
    VALUE_INT_BITS,
    MaskState,
    encode_features,
    expected_margin_slot_bits,
    expected_slot_bits,
)
from ftl.crypto.workers import (
    decrypt_chunk,
    encrypt_in_worker,
    local_joblib_backend,
    parallel_columns,
    random_factors_in_worker,
    rerandomize_chunk,
    run_chunks,
    split_work,
)

__all__ = ["PaillierOwnKey", "PaillierPeerKey"]


class PaillierOwnKey:
    """This party's Paillier key pair with fast CRT/DJN encryption.

    Parameters
    ----------
    key_size : int
        Modulus bits (:data:`~ftl.crypto.keys.DEFAULT_KEY_SIZE` by default elsewhere;
        below :data:`~ftl.crypto.keys.MIN_SECURE_KEY_SIZE` needs ``insecure_for_tests``).
    insecure_for_tests : bool
        Allow keys below :data:`~ftl.crypto.keys.MIN_SECURE_KEY_SIZE` bits.
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
            produce = partial(random_factors_in_worker, int(self.n), sk.p, sk.q, int(self.hs))
            self._pool = pool.RandomnessPool(produce, capacity)
        self._pool.capacity = capacity
        return self._pool

    def _pool_capacity(self) -> int:
        if self.pool_capacity is not None:
            return max(0, int(self.pool_capacity))
        parallel = self.n_jobs not in (None, 1) and local_joblib_backend()
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
        chunks = split_work(plain, self.n_jobs)
        if len(chunks) > 1:
            sk = self.private_key
            return run_chunks(encrypt_in_worker, chunks, self.n_jobs, self.n, sk.p, sk.q, self.hs)
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
        chunks = split_work(values, self.n_jobs)
        if len(chunks) > 1:
            plain = run_chunks(decrypt_chunk, chunks, self.n_jobs, self.private_key)
        else:
            plain = decrypt_chunk(self.private_key, values)
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
        min_key_size: int = MIN_SECURE_KEY_SIZE,
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
        chunks = split_work(list(cts), self.n_jobs, min_size=4)
        if len(chunks) > 1:
            return run_chunks(rerandomize_chunk, chunks, self.n_jobs, self.n)
        return rerandomize_chunk(self.n, list(cts))

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
