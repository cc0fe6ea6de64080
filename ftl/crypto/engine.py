"""Fast Paillier arithmetic over batches of ciphertexts with gmpy2.

Three techniques make encrypted training cheap without weakening it:

* **DJN randomness** (Damgård, Jurik, Nielsen, "A generalization of Paillier's
  public-key system with applications to electronic voting", IJIS 2010, §4.2):
  the key owner publishes ``hs = h**n mod n**2`` with ``h = -x**2 mod n``; a
  random factor is ``hs**a`` for a fresh secret ``a`` of ``k/2`` bits (``k`` =
  modulus bits), which is ``(h**a)**n`` -- a valid Paillier random factor. With a
  fixed base, ``hs**a`` comes from precomputed comb tables (Lim--Lee: about one
  modular multiplication per 12 bits of ``a``) instead of a full ``r**n``.
  Every ciphertext still gets fresh randomness; factors may also be computed
  ahead of time in a background process (:mod:`ftl.crypto.pool`).
* **CRT** for the key owner: its own encryptions are computed mod ``p**2`` and
  ``q**2`` (four times cheaper multiplications) and recombined.
* **Bucket multi-exponentiation** (Pippenger) for ``X.T @ [[v]]``: per column,
  each window of the fixed-point exponents sorts ciphertexts into buckets, so the
  cost is about ``n * bits / w`` multiplications instead of one full ``powmod``
  per cell. Digits are signed: a window's positive and negative digits fill two
  sets of ``2**(w-1)`` buckets, divided by one inversion, whatever the exponents'
  signs. The window width is chosen per column from the row count and the
  exponents' actual bit length (:func:`bucket_window`).
"""

from __future__ import annotations

import os
import secrets
from collections.abc import Sequence

import gmpy2
import numpy as np
from gmpy2 import mpz

__all__ = [
    "CRTEncryptor",
    "FixedBaseTable",
    "bucket_window",
    "column_multiexp",
    "digit_windows",
    "djn_generator",
    "encrypt_with_factors",
    "signed_digits",
]


class FixedBaseTable:
    """Powers of one fixed base by the Lim--Lee comb, for exponents of ``exp_bits`` bits.

    The exponent's bits are laid out as ``window`` rows of ``cols = ceil(exp_bits /
    window)`` bits; column ``c`` (one bit from each row) is a ``window``-bit digit that
    indexes ``tables[j][d] == base ** (sum_i d_i * 2**(i * cols + j * steps))``, with
    ``steps = ceil(cols / n_tables)`` consecutive columns per table. A power is then
    ``steps - 1`` squarings and one multiplication per non-zero digit (``cols`` of
    them), the table holds ``n_tables * 2**window`` residues (Lim and Lee, "More
    flexible exponentiation with precomputation", CRYPTO 1994).

    The defaults cost 5 squarings and 86 multiplications per 1024-bit exponent from
    15 tables of 4096 residues: about 20 MB for a modulus ``p**2`` of 2048 bits,
    a third of what one 11-bit window per 11 exponent bits (94 multiplications, no
    squarings) needs, and no slower -- a smaller table also stays warmer in cache.
    """

    def __init__(
        self, base: int, modulus: int, exp_bits: int, window: int = 12, n_tables: int = 16
    ):
        self.modulus = m = mpz(modulus)
        self.exp_bits = exp_bits
        self.window = window
        self.cols = -(-exp_bits // window)
        self.steps = -(-self.cols // min(n_tables, self.cols))
        # as few tables as the step count allows (no table of unused columns)
        self.n_tables = -(-self.cols // self.steps)
        # base ** 2**t for the bit positions t that start a row of some table
        starts = {
            i * self.cols + j * self.steps for i in range(window) for j in range(self.n_tables)
        }
        powers = {}
        b = mpz(base) % m
        for t in range(max(starts) + 1):
            if t in starts:
                powers[t] = b
            b = b * b % m
        self.tables = []
        for j in range(self.n_tables):
            table = [mpz(1)]
            for i in range(window):  # entries with bit i set: one multiplication each
                g = powers[i * self.cols + j * self.steps]
                table.extend([x * g % m for x in table])
            self.tables.append(table)

    def digits(self, bits: np.ndarray) -> np.ndarray:
        """Comb digits of exponents given as little-endian bits.

        Parameters
        ----------
        bits : ndarray of shape (count, k), values 0 or 1, ``k <= exp_bits``
            Bit ``t`` of each exponent in column ``t``.

        Returns
        -------
        digits : int64 ndarray of shape (count, steps, n_tables)
            ``digits[e, s, j]`` indexes table ``j`` at step ``s`` (highest column
            first), in the order :meth:`pow_digits` consumes them.
        """
        count, k = bits.shape
        if k > self.exp_bits:
            raise ValueError(f"exponents of {k} bits exceed the table's {self.exp_bits}")
        rows = np.zeros((count, self.window * self.cols), dtype=np.int64)
        rows[:, :k] = bits
        weights = 1 << np.arange(self.window, dtype=np.int64)
        cols = np.zeros((count, self.n_tables * self.steps), dtype=np.int64)
        cols[:, : self.cols] = np.einsum(
            "eic,i->ec", rows.reshape(count, self.window, self.cols), weights
        )
        # column j * steps + s feeds table j at step s; Horner runs from the top step
        return cols.reshape(count, self.n_tables, self.steps).transpose(0, 2, 1)[:, ::-1, :]

    def random_digits(self, count: int) -> np.ndarray:
        """Digits of ``count`` exponents uniform below ``2**exp_bits`` (OS CSPRNG)."""
        return self.digits(_random_bits(count, self.exp_bits))

    def pow_digits(self, digits) -> mpz:
        """``base ** exponent`` from one exponent's :meth:`digits` (nested lists)."""
        m = self.modulus
        acc = mpz(1)
        for s, step in enumerate(digits):
            if s:
                acc = acc * acc % m
            for table, d in zip(self.tables, step, strict=False):
                if d:
                    acc = acc * table[d] % m
        return acc

    def pow(self, exponent: int) -> mpz:
        """``base ** exponent mod modulus`` for one ``0 <= exponent < 2**exp_bits``."""
        if not 0 <= exponent < 1 << self.exp_bits:
            raise ValueError(f"exponent out of range [0, 2**{self.exp_bits})")
        bits = [(exponent >> t) & 1 for t in range(self.exp_bits)]
        return self.pow_digits(self.digits(np.array([bits], dtype=np.int64))[0].tolist())


def _random_bits(count: int, exp_bits: int) -> np.ndarray:
    """The little-endian bits of ``count`` exponents uniform below ``2**exp_bits``.

    One ``os.urandom`` call for all of them; numpy unpacks the bytes, so no Python
    loop runs per exponent.
    """
    n_bytes = (exp_bits + 7) // 8
    raw = np.frombuffer(os.urandom(count * n_bytes), dtype=np.uint8).reshape(count, n_bytes)
    return np.unpackbits(raw, axis=1, bitorder="little")[:, :exp_bits]


def random_unit(n: int) -> mpz:
    """A uniform element of ``Z_n*`` from the OS CSPRNG."""
    n = mpz(n)
    while True:
        x = mpz(secrets.randbelow(int(n) - 2) + 2)
        if gmpy2.gcd(x, n) == 1:
            return x


def djn_generator(n: int, p: int, q: int) -> int:
    """``hs = (-x**2 mod n)**n mod n**2`` for a random unit ``x`` (needs the factors)."""
    n = mpz(n)
    x = random_unit(n)
    h = (-x * x) % n
    # h**n mod n**2 by CRT over p**2 and q**2 (the owner knows the factors)
    p2, q2 = mpz(p) ** 2, mpz(q) ** 2
    hp = gmpy2.powmod(h, n % (p2 - p2 // p), p2)  # order of the group mod p**2 is p(p-1)
    hq = gmpy2.powmod(h, n % (q2 - q2 // q), q2)
    return int(_crt(hp, hq, p2, q2, gmpy2.invert(p2, q2)))


def _crt(xp: mpz, xq: mpz, p2: mpz, q2: mpz, p2_inv_q2: mpz) -> mpz:
    return xp + p2 * ((xq - xp) * p2_inv_q2 % q2)


class CRTEncryptor:
    """The key owner's fast Paillier encryption: DJN randomness, CRT arithmetic.

    Parameters
    ----------
    n, p, q : int
        Public modulus and its prime factors.
    hs : int
        The published DJN base ``h**n mod n**2``.
    """

    def __init__(self, n: int, p: int, q: int, hs: int):
        self.n = mpz(n)
        self.nsquare = self.n * self.n
        self.p2, self.q2 = mpz(p) ** 2, mpz(q) ** 2
        self.p2_inv_q2 = gmpy2.invert(self.p2, self.q2)
        self.exp_bits = self.n.bit_length() // 2
        # Comb tables, about 40 MB for a 2048-bit key (20 MB per prime); built once
        # per key and process. Both use the same exponent, hence the same layout.
        self.table_p = FixedBaseTable(hs % self.p2, self.p2, self.exp_bits)
        self.table_q = FixedBaseTable(hs % self.q2, self.q2, self.exp_bits)

    def random_factors(self, count: int) -> list[mpz]:
        """``count`` fresh factors ``hs**a``, ``a`` uniform below ``2**exp_bits``.

        The exponents come from the OS CSPRNG in one call and are cut into comb
        digits with numpy, so the Python loop does only the table multiplications
        (mod p**2 and q**2), then one CRT recombination per factor.
        """
        digits = self.table_p.random_digits(count)
        tp, tq = self.table_p, self.table_q
        p2, q2, inv = self.p2, self.q2, self.p2_inv_q2
        return [_crt(tp.pow_digits(d), tq.pow_digits(d), p2, q2, inv) for d in digits.tolist()]

    def encrypt_ints(self, plaintexts: Sequence[int]) -> list[mpz]:
        """Encrypt integers already reduced to ``[0, n)``: ``(1 + m n) * hs**a``."""
        return encrypt_with_factors(plaintexts, self.random_factors(len(plaintexts)), self.n)


def encrypt_with_factors(plaintexts: Sequence[int], factors: Sequence[mpz], n: int) -> list[mpz]:
    """Paillier ciphertexts ``(1 + m n) * r mod n**2``, one random factor ``r`` each.

    Every factor must be fresh (used for no other ciphertext) and a unit ``n``-th
    residue such as ``hs**a``; this function only combines, it never draws.
    """
    if len(plaintexts) != len(factors):
        raise ValueError(f"{len(plaintexts)} plaintexts but {len(factors)} random factors")
    n = mpz(n)
    n2 = n * n
    return [(1 + mpz(m) * n) * r % n2 for m, r in zip(plaintexts, factors, strict=True)]


#: Widest bucket window: two sets of 2**13 buckets of 4096-bit residues, ~8 MB per worker.
MAX_BUCKET_WINDOW = 14


def digit_windows(bits: int, width: int) -> int:
    """Signed digits of ``width`` bits a ``bits``-bit magnitude needs (one more bit
    for the carry the recoding may push out of the top window)."""
    return -(-(bits + 1) // width)


def bucket_window(count: int, bits: int) -> int:
    """The signed-digit window width that makes a bucket multi-exponentiation cheapest.

    With windows of ``w`` bits and digits in ``(-2**(w-1), 2**(w-1)]``, ``count``
    exponents of ``bits`` bits cost ``ceil((bits + 1) / w)`` rounds of one
    multiplication per (non-zero) digit plus ``2**(w+1)`` to add up the two sets of
    ``2**(w-1)`` buckets (positive and negative digits; plus ``bits`` squarings,
    whatever ``w``). For 21 000 rows and 21-bit exponents that is ``w = 11`` (two
    windows).
    """
    if count <= 0 or bits <= 0:
        return 1
    return min(
        range(2, MAX_BUCKET_WINDOW + 1),
        key=lambda w: (digit_windows(bits, w) * (count + 2 ** (w + 1)), -w),
    )


def signed_digits(magnitudes: np.ndarray, width: int, n_windows: int) -> np.ndarray:
    """Signed base-``2**width`` digits of non-negative integers below ``2**63``.

    Returns an int64 array of shape ``(len(magnitudes), n_windows)``, lowest window
    first, digits in ``(-2**(width-1), 2**(width-1)]``, with
    ``sum_k digits[:, k] * 2**(width * k) == magnitudes`` (``n_windows`` from
    :func:`digit_windows`, so the last carry always has a window to land in).
    """
    mag = np.asarray(magnitudes, dtype=np.uint64)
    half, full = 1 << (width - 1), 1 << width
    mask = np.uint64(full - 1)
    out = np.empty((mag.shape[0], n_windows), dtype=np.int64)
    carry = np.zeros(mag.shape[0], dtype=np.int64)
    for k in range(n_windows):
        shift = width * k
        window = ((mag >> np.uint64(shift)) & mask).astype(np.int64) if shift < 64 else 0
        digit = window + carry
        carry = (digit > half).astype(np.int64)
        out[:, k] = digit - carry * full
    if carry.any():
        raise ValueError("exponents wider than the windows given")
    return out


def column_multiexp(ciphertexts: Sequence[mpz], exponents: np.ndarray, modulus: int) -> list[mpz]:
    """``prod_i c_i ** E[i, j] mod modulus`` for every column ``j`` of ``E``.

    Each exponent is cut into signed digits (:func:`signed_digits` of its magnitude,
    negated for a negative exponent). A window's positive and negative digits fill
    two sets of ``2**(w-1)`` buckets, and the window's product is the first set's
    total times the inverse of the second's (one inversion per window). Unsigned
    digits would need ``2**w`` buckets for the positive exponents' rows and as many
    again for the negative ones'.

    Parameters
    ----------
    ciphertexts : sequence of mpz, length n
    exponents : int64 ndarray of shape (n, p)
        Signed fixed-point integers (``|e| <= 2**62``).
    modulus : int
        ``n**2`` of the key the ciphertexts are under.

    Raises
    ------
    ValueError
        If a ciphertext that a negative digit needs is not a unit modulo
        ``modulus`` (only a party knowing a factor of the key can make one).
    """
    m = mpz(modulus)
    n_rows, n_cols = exponents.shape
    if n_rows != len(ciphertexts):
        raise ValueError("one exponent row per ciphertext required")
    cts = list(ciphertexts)
    out = []
    for j in range(n_cols):
        col = exponents[:, j]
        rows = np.flatnonzero(col)
        acc = mpz(1)
        if rows.size:
            signed = col[rows]
            mag = np.abs(signed).astype(np.uint64)
            bits = int(mag.max()).bit_length()
            width = bucket_window(rows.size, bits)
            digits = signed_digits(mag, width, digit_windows(bits, width))
            digits[signed < 0] *= -1
            for k in range(digits.shape[1] - 1, -1, -1):
                # Horner over windows: acc = acc ** (2**width) * window_product_k
                if acc != 1:
                    for _ in range(width):
                        acc = acc * acc % m
                acc = acc * _window_product(cts, rows, digits[:, k], width, m) % m
        out.append(acc)
    return out


def _window_product(cts: list[mpz], rows: np.ndarray, digits: np.ndarray, width: int, m):
    """``prod_i c_rows[i] ** digits[i]``: one multiplication per non-zero digit, then
    ``2**width`` per sign to add up the buckets, and one inversion if any digit is
    negative."""
    nz = np.flatnonzero(digits)
    result = mpz(1)
    for sign in (1, -1):
        picked = nz[digits[nz] * sign > 0]
        if not picked.size:
            continue
        buckets = [mpz(1)] * ((1 << (width - 1)) + 1)
        for i, d in zip(rows[picked].tolist(), (digits[picked] * sign).tolist(), strict=True):
            buckets[d] = buckets[d] * cts[i] % m
        total = _bucket_total(buckets, m)
        result = result * (total if sign > 0 else _invert_unit(total, m)) % m
    return result


def _bucket_total(buckets: list[mpz], m) -> mpz:
    """``prod_d buckets[d] ** d`` by running products (two multiplications a bucket)."""
    running = mpz(1)
    total = mpz(1)
    for d in range(len(buckets) - 1, 0, -1):
        if buckets[d] != 1:
            running = running * buckets[d] % m
        if running != 1:
            total = total * running % m
    return total


def _invert_unit(value: mpz, m) -> mpz:
    """``value**-1 mod m``, or a ValueError saying the ciphertexts were not Paillier's."""
    try:
        return gmpy2.invert(value, m)
    except ZeroDivisionError:
        # only a party knowing a factor of N can make such a ciphertext: refuse, clearly
        msg = "a ciphertext is not a unit modulo N**2 (not a Paillier ciphertext)"
        raise ValueError(msg) from None
