"""Encrypted gradient histograms: the kernel of SecureBoost's split search.

The key owner (the guest, who holds the labels) encrypts each training row's
gradient ``g`` and hessian ``h`` *packed* into one Paillier plaintext
``g + h * 2**w`` (:func:`encrypt_gh`). A feature party (a host) multiplies, for
each of its features and bins, the ciphertexts of the node's rows that fall in
the bin -- a homomorphic sum of their ``g`` and ``h`` at once
(:func:`encrypted_bin_sums`) -- then packs :attr:`GHLayout.bins_per_ciphertext`
bins into each ciphertext it sends (:func:`compress_bins`); the owner decrypts
and splits the slots apart (:func:`decrypt_bin_sums`).

Slots are signed two's-complement fields of :attr:`GHLayout.slot_bits` bits: a
packed plaintext is the integer ``sum_j v_j * 2**(j * w)``, so any sum of packed
plaintexts is the slot-wise sum, carried exactly as long as every slot's total
stays in ``(-2**(w - 1), 2**(w - 1))``; the owner reads the slots from the
bottom and carries a borrow into the next one when a slot is negative. The slot
width follows from public quantities only (:func:`gh_layout`: row count,
fraction bits and the loss's bounds on ``|g|`` and ``h``), and values outside
the bounds are refused at encryption: overflow is an error, never garbage.

Precision: a value is carried as ``round(v * 2**frac_bits)``. A float32 value
with ``|v| >= 2**(23 - frac_bits)`` is a multiple of ``2**-frac_bits`` (24
significant bits), so it is encoded *exactly*, and the integer sums are exact.
With the default :data:`DEFAULT_FRAC_BITS` = 47 every float32 gradient or
hessian of magnitude at least ``2**-24`` (6e-8) is exact, so a bin's decoded
sum is its exact real sum rounded once to float64 -- within the rounding of
scikit-learn's own float64 accumulation. Smaller values are rounded to
``2**-48`` (3.6e-15) each: a bin sum then stays within 1e-9 of its sum of
``|g|`` (relative) as long as the bin's mean ``|g|`` is above 3.6e-6, which
only heavily over-fitted models undercut. 47 bits also keep a slot within 63
bits up to 2**15 rows at ``|g| <= 1`` (16 bins per 2048-bit ciphertext).

Privacy. Every ciphertext the host sends is re-randomised with a fresh, full
random factor ``s**n`` (``s`` uniform in ``Z_n*``): the owner made every input
ciphertext and knows its random factor, so a product of a few of them left as
is would tell it which rows share a bin. Here the re-randomisation is fused
with the packing: the Horner shifts ``c**(2**(j * bin_bits))`` of the bins are
multiplied in at the right steps of the square-and-multiply chain of ``s**n``,
so packing ``k`` bins costs one exponentiation by ``n`` and ``k``
multiplications (in Python: about 1.5 times a bare re-randomisation by gmpy2,
0.6 times Horner followed by a re-randomisation). Empty bins never appear on
their own: they are packed into a re-randomised ciphertext like every other
bin.

``encryption=None`` (:mod:`ftl.crypto.plain` keys) runs the same calls on float64
values: the sums are then scikit-learn's float64 sums bit for bit (the rows'
float32 values added to their bin in increasing row order), with no fixed point.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import lru_cache

import numpy as np
from gmpy2 import mpz

from ftl.crypto import fixedpoint
from ftl.crypto.arrays import CiphertextArray, PlainArray, object_array
from ftl.crypto.engine import random_unit
from ftl.crypto.paillier import PaillierOwnKey, PaillierPeerKey
from ftl.crypto.workers import n_workers, run_chunks, split_work

__all__ = [
    "DEFAULT_FRAC_BITS",
    "GHLayout",
    "compress_bins",
    "decrypt_bin_sums",
    "encrypt_gh",
    "encrypted_bin_sums",
    "gh_layout",
]

#: Fixed-point fraction bits of packed gradients and hessians (see the module notes).
DEFAULT_FRAC_BITS = 47
#: Nodes of fewer (rows x features) are summed in this process: at 2048 bits their
#: sums take about 0.1 s, little more than a parallel call's own overhead.
MIN_PARALLEL_PRODUCTS = 32_768
#: Sliding window of the exponentiation by ``n`` in :func:`pack_in_worker`.
_WINDOW = 5
_ONE = mpz(1)


@dataclass(frozen=True)
class GHLayout:
    """How gradients and hessians are packed into Paillier plaintexts (public).

    Build it with :func:`gh_layout`. Everything here is public: the guest sends it
    to the hosts, which need :attr:`slot_bits` and :attr:`bins_per_ciphertext` to
    pack the bins.

    Parameters
    ----------
    key_bits : int
        Bits of the key owner's modulus ``n``.
    n_rows : int
        Most rows encrypted under the layout (hence most rows in one bin sum).
    g_bound : float
        Power of two with ``|g| <= g_bound`` for every row.
    h_bound : float or None
        Power of two with ``0 <= h <= h_bound``; ``None``: the hessians are
        constant (squared error) and not encrypted -- one slot per bin.
    frac_bits : int
        Fixed-point fraction bits.
    """

    key_bits: int
    n_rows: int
    g_bound: float
    h_bound: float | None
    frac_bits: int = DEFAULT_FRAC_BITS

    def __post_init__(self):
        for name in ("key_bits", "n_rows", "frac_bits"):
            value = getattr(self, name)
            if not isinstance(value, int | np.integer) or isinstance(value, bool) or value < 0:
                raise ValueError(f"{name} must be a non-negative integer, got {value!r}")
        if self.n_rows < 1 or self.frac_bits > 1022:
            raise ValueError("a layout needs n_rows >= 1 and frac_bits <= 1022")
        for name in ("g_bound", "h_bound"):
            value = getattr(self, name)
            if value is None and name == "h_bound":
                continue
            if not (np.isfinite(value) and value > 0 and math.frexp(value)[0] == 0.5):
                raise ValueError(f"{name} must be a positive power of two, got {value!r}")
        if self.bins_per_ciphertext < 1:
            raise fixedpoint.FixedPointOverflowError(
                f"a {self.key_bits}-bit key cannot hold one bin of {self.bin_bits} bits "
                f"({self.n_rows} rows at {self.frac_bits} fraction bits)"
            )

    @property
    def slots_per_bin(self) -> int:
        """2 (``g`` and ``h``), or 1 when the hessians are not encrypted."""
        return 1 if self.h_bound is None else 2

    @property
    def slot_bits(self) -> int:
        """Width of one signed slot: holds a sum of ``n_rows`` encoded values."""
        units = _bound_units(self.g_bound, self.frac_bits)
        if self.h_bound is not None:
            units = max(units, _bound_units(self.h_bound, self.frac_bits))
        return (self.n_rows * units).bit_length() + 1

    @property
    def bin_bits(self) -> int:
        """Bits of one bin (its ``g`` and ``h`` slots)."""
        return self.slots_per_bin * self.slot_bits

    @property
    def bins_per_ciphertext(self) -> int:
        """Bins packed into one ciphertext by :func:`compress_bins`.

        ``k`` bins of ``s`` signed slots of ``w`` bits make a signed integer below
        ``2**(k*s*w - 1)`` in magnitude; it must stay below ``n / 2 >=
        2**(key_bits - 2)`` to decode from its residue mod ``n``.
        """
        return (self.key_bits - 1) // self.bin_bits


def _bound_units(bound: float, frac_bits: int) -> int:
    """Largest encoded magnitude of a value bounded by ``bound`` (a power of two)."""
    exponent = math.frexp(bound)[1] - 1  # bound == 2**exponent
    return 1 << max(0, exponent + frac_bits)


def _power_of_two_at_least(value: float, name: str) -> float:
    value = float(value)
    if not (np.isfinite(value) and value > 0):
        raise ValueError(f"{name} must be positive and finite, got {value!r}")
    mantissa, exponent = math.frexp(value)
    return math.ldexp(1.0, exponent - 1 if mantissa == 0.5 else exponent)


def gh_layout(
    key_bits: int,
    n_rows: int,
    g_bound: float,
    h_bound: float | None,
    frac_bits: int = DEFAULT_FRAC_BITS,
) -> GHLayout:
    """The packing layout for a tree's gradients and hessians, from public bounds.

    Parameters
    ----------
    key_bits : int
        Bits of the key owner's modulus (``own.n.bit_length()``).
    n_rows : int
        Training rows (every node and bin holds at most this many).
    g_bound : float
        Bound on ``|g|``, given by the loss (binary and multinomial log-loss: 1),
        or for squared error a bound the guest checks on its own data. Rounded up
        to a power of two, so the layout reveals at most its binary magnitude.
    h_bound : float or None
        Bound on ``h >= 0`` (log-losses: 0.25), rounded up likewise; ``None`` for
        constant hessians, which are then not encrypted.
    frac_bits : int, default=DEFAULT_FRAC_BITS
        Fixed-point fraction bits (precision: see the module notes).

    Returns
    -------
    GHLayout

    Raises
    ------
    FixedPointOverflowError
        If one bin does not fit the key.
    """
    return GHLayout(
        key_bits=int(key_bits),
        n_rows=int(n_rows),
        g_bound=_power_of_two_at_least(g_bound, "g_bound"),
        h_bound=None if h_bound is None else _power_of_two_at_least(h_bound, "h_bound"),
        frac_bits=int(frac_bits),
    )


def _checked_gh(gradients, hessians, layout: GHLayout) -> list[np.ndarray]:
    """The rows' values as float64 columns (``g``, then ``h``), within the layout."""
    g = np.asarray(gradients, dtype=np.float64)
    if g.ndim != 1:
        raise ValueError(f"gradients must be 1-d, got shape {g.shape}")
    if (hessians is None) != (layout.h_bound is None):
        raise ValueError("pass hessians exactly when the layout has an h_bound")
    columns = [g]
    if hessians is not None:
        h = np.asarray(hessians, dtype=np.float64)
        if h.shape != g.shape:
            raise ValueError(f"hessians of shape {h.shape} for gradients of shape {g.shape}")
        columns.append(h)
    if g.shape[0] > layout.n_rows:
        raise fixedpoint.FixedPointOverflowError(
            f"{g.shape[0]} rows for a layout of at most {layout.n_rows}: its slots could overflow"
        )
    if not all(np.isfinite(c).all() for c in columns):
        raise fixedpoint.FixedPointOverflowError("gradients and hessians must be finite")
    if g.size and np.abs(g).max() > layout.g_bound:
        raise fixedpoint.FixedPointOverflowError(
            f"a gradient of magnitude {np.abs(g).max():g} exceeds the layout's bound "
            f"|g| <= {layout.g_bound:g}"
        )
    if hessians is not None and g.size:
        h = columns[1]
        if h.min() < 0 or h.max() > layout.h_bound:
            raise fixedpoint.FixedPointOverflowError(
                f"hessians in [{h.min():g}, {h.max():g}] leave the layout's bounds "
                f"0 <= h <= {layout.h_bound:g}"
            )
    return columns


def encrypt_gh(own, gradients, hessians, layout: GHLayout) -> CiphertextArray | PlainArray:
    """Key owner: one ciphertext per row holding its ``g`` and ``h`` packed.

    Parameters
    ----------
    own : PaillierOwnKey or PlainOwnKey
        The guest's key; fresh randomness on every call, from the key's pool of
        precomputed factors first, and CRT/DJN encryption (in joblib workers for
        long vectors) for the rest.
    gradients, hessians : array-like of shape (n_rows,)
        Per-row values (float32 from the loss); ``hessians`` is ``None`` exactly
        when ``layout.h_bound`` is.
    layout : GHLayout

    Returns
    -------
    CiphertextArray of shape (n_rows,), or PlainArray of shape (n_rows, slots)
        The plaintext mode keeps the float64 values (no fixed point).

    Raises
    ------
    FixedPointOverflowError
        If a value is not finite or leaves the layout's bounds, or there are more
        rows than ``layout.n_rows``.
    """
    columns = _checked_gh(gradients, hessians, layout)
    if not isinstance(own, PaillierOwnKey):
        return PlainArray(np.column_stack(columns))
    _check_key_bits(own.n, layout)
    ints = [fixedpoint.encode(c, layout.frac_bits).tolist() for c in columns]
    if len(ints) == 2:
        shift = layout.slot_bits
        packed = [g + (h << shift) for g, h in zip(*ints, strict=True)]
    else:
        packed = ints[0]
    return own.encrypt_integers(packed, (len(packed),))


def _check_key_bits(n, layout: GHLayout) -> None:
    if int(n).bit_length() != layout.key_bits:
        raise ValueError(
            f"layout made for a {layout.key_bits}-bit key, used with a "
            f"{int(n).bit_length()}-bit one"
        )


def _node_columns(cts, binned, rows, n_bins_max: int) -> tuple[np.ndarray, np.ndarray]:
    """Validated row positions and the node's bin indices ``(m, n_features)``."""
    binned = np.asarray(binned)
    if binned.ndim != 2 or not np.issubdtype(binned.dtype, np.integer):
        raise ValueError("binned must be a 2-d integer array (n_train, n_features)")
    if binned.shape[0] != cts.shape[0]:
        raise ValueError(f"{binned.shape[0]} binned rows for {cts.shape[0]} encrypted rows")
    rows = np.asarray(rows)
    if rows.ndim != 1 or not (rows.size == 0 or np.issubdtype(rows.dtype, np.integer)):
        raise ValueError("rows must be a 1-d integer array of positions")
    rows = rows.astype(np.int64)
    # Strictly increasing: no row counted twice (a slot could overflow), and the
    # plaintext mode adds rows in scikit-learn's order.
    if rows.size and (rows[0] < 0 or rows[-1] >= binned.shape[0] or np.any(np.diff(rows) <= 0)):
        raise ValueError("rows must be strictly increasing positions into the training rows")
    columns = binned[rows]
    if columns.size and (columns.min() < 0 or columns.max() >= n_bins_max):
        raise ValueError(f"bin indices must lie in [0, {n_bins_max})")
    return rows, columns


def encrypted_bin_sums(
    peer,
    cts: CiphertextArray | PlainArray,
    binned: np.ndarray,
    rows: np.ndarray,
    n_bins_max: int,
    n_jobs: int | None = None,
) -> CiphertextArray | PlainArray:
    """Feature party: the homomorphic sum of the node's rows per feature and bin.

    Parameters
    ----------
    peer : PaillierPeerKey or PlainPeerKey
        The key owner's public key.
    cts : CiphertextArray of shape (n_train,) or PlainArray (n_train, slots)
        :func:`encrypt_gh`'s output, one per training row.
    binned : ndarray of uint8 or uint16, shape (n_train, n_features)
        This party's bin indices of the training rows.
    rows : ndarray of int64
        Strictly increasing positions of the node's rows.
    n_bins_max : int
        Bins per feature in the result (above every bin index).
    n_jobs : int, optional
        joblib workers for the products (any joblib backend, e.g. Dask under
        ``joblib.parallel_config``); ``None``: the peer key's ``n_jobs``.

    Returns
    -------
    CiphertextArray of shape (n_features, n_bins_max), or PlainArray (n_features, n_bins_max, slots)
        Unpacked sums, never sent as they are (an empty bin holds the neutral
        element 1): :func:`compress_bins` packs and re-randomises them. The
        plaintext mode's float64 sums add the rows in increasing order.

    Notes
    -----
    A direct sum costs one multiplication modulo ``n**2`` per row and feature. A
    group of features whose bin *combinations* among the rows are few (``u`` of
    them, e.g. coarse or correlated features on a large node) is summed per
    combination first, then per bin from the combinations: about ``m + (g - 1) *
    u`` multiplications for ``g`` features instead of ``g * m`` (a third to a
    quarter of the direct cost at the root on the default-credit host's
    columns); the groups are chosen from the bin indices (public to this party).

    In parallel, each worker takes a share of the node's rows with all features,
    so every ciphertext is shipped once (shipping one costs about as much as a
    multiplication, and after grouping a row needs only a few), and the
    workers' per-bin products are multiplied together here.
    """
    rows, columns = _node_columns(cts, binned, rows, n_bins_max)
    n_features = columns.shape[1]
    if not isinstance(peer, PaillierPeerKey):
        if not isinstance(cts, PlainArray) or cts.values.ndim != 2:
            raise ValueError("expected plaintext-mode rows of shape (n_train, slots)")
        node = cts.values[rows]
        out = np.zeros((n_features, n_bins_max, node.shape[1]), dtype=np.float64)
        for f in range(n_features):
            for s in range(node.shape[1]):
                out[f, :, s] = np.bincount(columns[:, f], node[:, s], minlength=n_bins_max)
        return PlainArray(out)
    if not isinstance(cts, CiphertextArray) or cts.key_id != peer.key_id:
        raise ValueError("ciphertexts are not under this peer's key")
    if cts.values.ndim != 1:
        raise ValueError(f"expected one ciphertext per row, got shape {cts.values.shape}")
    node_cts = [int(c) for c in cts.values[rows]]
    nsquare = int(peer.nsquare)
    if any(not 0 < c < nsquare for c in node_cts):
        raise ValueError("ciphertext out of range for the peer's key")
    n_jobs = peer.n_jobs if n_jobs is None else n_jobs
    parallel = n_jobs not in (None, 1) and len(node_cts) * n_features >= MIN_PARALLEL_PRODUCTS
    k = n_workers(n_jobs) if parallel else 1
    bounds = np.linspace(0, len(node_cts), k + 1).astype(int)
    chunks = [(node_cts[a:b], columns[a:b]) for a, b in zip(bounds[:-1], bounds[1:], strict=True)]
    if len(chunks) > 1:
        parts = run_chunks(bin_products_in_worker, chunks, n_jobs, int(peer.nsquare), n_bins_max)
    else:
        parts = bin_products_in_worker(int(peer.nsquare), n_bins_max, chunks[0])
    values = np.empty((n_features, n_bins_max), dtype=object)
    values[:] = parts[0]
    for part in parts[1:]:
        for f in range(n_features):
            for b, product in enumerate(part[f]):
                if product != 1:
                    values[f, b] = int(mpz(values[f, b]) * product % peer.nsquare)
    return CiphertextArray(values, peer.key_id, peer.width)


def _merge_plan(columns: np.ndarray, n_bins: int) -> list[tuple]:
    """Group features whose joint bins are few (see ``encrypted_bin_sums``).

    Features are taken from the fewest occupied bins to the most, and the next
    one joins the current group while that costs fewer multiplications than
    summing it alone. Returns ``(features, codes, cell_bins)`` per group:
    ``codes`` (m,) is each row's cell, ``cell_bins`` (cells, len(features)) the
    cells' bins, or ``None`` for a single feature (its codes are its bins). Cost
    model: a first multiplication into an empty cell costs next to nothing, so
    filling ``u`` cells from ``m`` rows costs ``m - u`` and spreading them over
    ``g`` features ``g * u``.
    """
    m = columns.shape[0]
    occupied = [np.count_nonzero(np.bincount(c, minlength=1)) for c in columns.T]
    order = np.argsort(occupied, kind="stable").tolist()
    groups = []
    while order:
        features = [order.pop(0)]
        codes, firsts, cost = columns[:, features[0]].astype(np.int64), None, m
        while order:
            joint = codes * n_bins + columns[:, order[0]]
            cells, first, inverse = np.unique(joint, return_index=True, return_inverse=True)
            merged_cost = m + len(features) * cells.size
            if merged_cost >= cost + m:
                break
            features.append(order.pop(0))
            codes, firsts, cost = inverse.reshape(-1), first, merged_cost
        cell_bins = None if firsts is None else columns[np.ix_(firsts, features)]
        groups.append((features, codes, cell_bins))
    return groups


def _products(items: list, codes: np.ndarray, size: int, modulus: mpz) -> list:
    """``out[k] = prod of items[i] with codes[i] == k`` modulo ``modulus``."""
    out = [_ONE] * size
    for item, code in zip(items, codes.tolist(), strict=True):
        out[code] = out[code] * item % modulus
    return out


def bin_products_in_worker(nsquare: int, n_bins: int, chunk: tuple[list, np.ndarray]) -> list:
    """Per-bin ciphertext products of some rows (a joblib task).

    ``chunk`` holds the rows' ciphertexts (ints) and their bins ``(rows,
    n_features)``. Returns ``[products]`` with ``products[f][b]`` the product
    for feature ``f`` and bin ``b`` as an int (a one-item list, so that
    ``run_chunks`` lists one result per chunk).
    """
    modulus = mpz(nsquare)
    cts = [mpz(c) for c in chunk[0]]
    columns = chunk[1]
    products = [None] * columns.shape[1]
    for features, codes, cell_bins in _merge_plan(columns, n_bins):
        if cell_bins is None:
            products[features[0]] = _products(cts, codes, n_bins, modulus)
            continue
        cells = _products(cts, codes, cell_bins.shape[0], modulus)
        for j, f in enumerate(features):
            products[f] = _products(cells, cell_bins[:, j], n_bins, modulus)
    return [[[int(p) for p in bins] for bins in products]]


def _bins_per_feature(n_bins, n_features: int, n_bins_max: int) -> np.ndarray:
    if n_bins is None:
        return np.full(n_features, n_bins_max, dtype=np.int64)
    n_bins = np.asarray(n_bins)
    if n_bins.shape != (n_features,) or not np.issubdtype(n_bins.dtype, np.integer):
        raise ValueError(f"n_bins must hold one bin count per feature ({n_features})")
    if n_bins.size and (n_bins.min() < 0 or n_bins.max() > n_bins_max):
        raise ValueError(f"bin counts must lie in [0, {n_bins_max}]")
    return n_bins.astype(np.int64)


def compress_bins(
    peer, sums: CiphertextArray | PlainArray, layout: GHLayout, n_bins: np.ndarray | None = None
) -> CiphertextArray | PlainArray:
    """Feature party: pack the bin sums, ``bins_per_ciphertext`` per ciphertext.

    Bins are taken feature by feature (bins ``0 .. n_bins[f] - 1`` of each) and
    bin ``j`` of a group lands at bit ``j * layout.bin_bits``. Every output is
    re-randomised with a fresh full factor ``s**n`` (see the module notes), in
    joblib workers when there are several (the peer key's ``n_jobs``).

    Parameters
    ----------
    peer : PaillierPeerKey or PlainPeerKey
    sums : CiphertextArray or PlainArray
        :func:`encrypted_bin_sums`' output.
    layout : GHLayout
        The layout the rows were encrypted with.
    n_bins : ndarray of int of shape (n_features,), optional
        Bins in use per feature (public, e.g. the binner's non-missing bin
        counts); the others are known empty and not sent. Default: all.

    Returns
    -------
    CiphertextArray of shape (ceil(cells / bins_per_ciphertext),) or PlainArray (cells, slots)
    """
    n_features, n_bins_max = sums.values.shape[:2]
    n_bins = _bins_per_feature(n_bins, n_features, n_bins_max)
    if not isinstance(peer, PaillierPeerKey):
        if not isinstance(sums, PlainArray) or sums.values.ndim != 3:
            raise ValueError("expected plaintext-mode bin sums (n_features, n_bins, slots)")
        kept = [sums.values[f, : n_bins[f]] for f in range(n_features)]
        return PlainArray(np.concatenate(kept) if kept else np.zeros((0, sums.values.shape[2])))
    if not isinstance(sums, CiphertextArray) or sums.key_id != peer.key_id:
        raise ValueError("bin sums are not under this peer's key")
    _check_key_bits(peer.n, layout)
    cells = [sums.values[f, b] for f in range(n_features) for b in range(n_bins[f])]
    k = layout.bins_per_ciphertext
    groups = [cells[i : i + k] for i in range(0, len(cells), k)]
    chunks = split_work(groups, peer.n_jobs, min_size=2)
    args = (int(peer.n), layout.bin_bits)
    if len(chunks) > 1:
        packed = run_chunks(pack_in_worker, chunks, peer.n_jobs, *args)
    else:
        packed = pack_in_worker(*args, groups)
    return CiphertextArray(object_array(packed), peer.key_id, peer.width)


@lru_cache(maxsize=8)
def _window_schedule(n: int) -> tuple[int, ...]:
    """Sliding-window plan of ``s**n``: ``plan[t]`` is the odd power of ``s`` to
    multiply in after the squaring for bit ``t`` (0: none)."""
    plan = [0] * n.bit_length()
    t = n.bit_length() - 1
    while t >= 0:
        if not (n >> t) & 1:
            t -= 1
            continue
        low = max(t - _WINDOW + 1, 0)
        while not (n >> low) & 1:
            low += 1
        plan[low] = (n >> low) & ((1 << (t - low + 1)) - 1)
        t = low - 1
    return tuple(plan)


def pack_in_worker(n: int, shift: int, groups: list[list]) -> list[mpz]:
    """``s**n * prod_j c_j**(2**(j * shift)) mod n**2`` per group, ``s`` fresh each.

    One left-to-right exponentiation by ``n`` (sliding windows over odd powers of
    ``s``): squaring the accumulator once per bit of ``n`` also shifts every
    ciphertext multiplied in earlier, so ``c_j`` multiplied in right after the
    squaring for bit ``j * shift`` ends up raised to ``2**(j * shift)``. Needs
    ``shift * (len(group) - 1) < n.bit_length()``.
    """
    n = mpz(n)
    modulus = n * n
    plan = _window_schedule(int(n))
    out = []
    for group in groups:
        if shift * (len(group) - 1) >= len(plan):
            raise ValueError("too many bins for one ciphertext")
        s = random_unit(n)
        square = s * s % modulus
        powers = {1: s}
        for odd in range(3, 1 << _WINDOW, 2):
            powers[odd] = powers[odd - 2] * square % modulus
        insert = {j * shift: mpz(int(c)) for j, c in enumerate(group)}
        acc = _ONE
        for t in range(len(plan) - 1, -1, -1):
            acc = acc * acc % modulus
            if plan[t]:
                acc = acc * powers[plan[t]] % modulus
            c = insert.get(t)
            if c is not None:
                acc = acc * c % modulus
        out.append(acc)
    return out


def decrypt_bin_sums(
    own,
    packed: CiphertextArray | PlainArray,
    layout: GHLayout,
    n_features: int,
    n_bins_max: int,
    n_bins: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray | None]:
    """Key owner: decrypt packed bin sums and decode their signed slots.

    Parameters
    ----------
    own : PaillierOwnKey or PlainOwnKey
    packed : CiphertextArray or PlainArray
        :func:`compress_bins`' output.
    layout : GHLayout
    n_features, n_bins_max : int
        Shape of the histogram.
    n_bins : ndarray of int of shape (n_features,), optional
        As given to :func:`compress_bins` (bins not sent are zero).

    Returns
    -------
    sum_gradients : ndarray of float64, shape (n_features, n_bins_max)
    sum_hessians : ndarray of float64 of the same shape, or None
        ``None`` when the layout has no hessians.

    Raises
    ------
    ValueError
        If the ciphertexts do not match the layout (count, key, or a plaintext
        wider than the packed slots).
    """
    n_bins = _bins_per_feature(n_bins, n_features, n_bins_max)
    n_cells = int(n_bins.sum())
    slots = layout.slots_per_bin
    if not isinstance(own, PaillierOwnKey):
        if not isinstance(packed, PlainArray) or packed.values.shape != (n_cells, slots):
            raise ValueError("plaintext-mode bin sums of the wrong shape")
        cells = packed.values
    else:
        _check_key_bits(own.n, layout)
        k = layout.bins_per_ciphertext
        if not isinstance(packed, CiphertextArray) or packed.values.shape != (-(-n_cells // k),):
            raise ValueError("packed bin sums do not match the layout")
        plain = own.decrypt_masked(packed)
        ints = _signed_slots(plain, int(own.n), layout.slot_bits, k * slots)
        cells = fixedpoint.decode(ints[: n_cells * slots], layout.frac_bits).reshape(-1, slots)
    out = np.zeros((slots, n_features, n_bins_max), dtype=np.float64)
    mask = np.arange(n_bins_max) < n_bins[:, None]
    for s in range(slots):
        out[s][mask] = cells[:, s]
    return out[0], (out[1] if slots == 2 else None)


def _signed_slots(plain: np.ndarray, n: int, width: int, count: int) -> np.ndarray:
    """Split residues mod ``n`` into ``count`` signed ``width``-bit slots each.

    A residue above ``n / 2`` is negative; each slot is read from the bottom as
    two's complement, and a negative slot borrows one from the slots above it,
    which is added back before reading them. Anything left above the last slot
    means the plaintext was not made with this layout.
    """
    full, half, mask = 1 << width, 1 << (width - 1), (1 << width) - 1
    out = []
    for value in plain.tolist():
        value = int(value)
        if value > n // 2:
            value -= n
        for _ in range(count):
            low = value & mask
            if low >= half:
                low -= full
            out.append(low)
            value = (value - low) >> width
        if value:
            raise ValueError("a decrypted bin sum overflows the layout's slots")
    result = np.empty(len(out), dtype=object)
    result[:] = out
    return result
