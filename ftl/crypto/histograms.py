"""Encrypted gradient histograms: the kernel of SecureBoost's split search.

The key owner (the guest, who holds the labels) encrypts each training row's
gradient ``g`` and hessian ``h`` *packed* into one Paillier plaintext
``g + h * 2**w``. A feature party (a host) multiplies, for each of its features
and bins, the ciphertexts of the node's rows that fall in the bin -- a
homomorphic sum of their ``g`` and ``h`` at once (:func:`encrypted_bin_sums`) --
then packs :attr:`GHLayout.bins_per_ciphertext` bins into each ciphertext it
sends (:func:`compress_bins`); the owner decrypts and splits the slots apart.
This module is the hosts' side. The owner's -- the layout, :func:`encrypt_gh`,
:func:`decrypt_bin_sums`, and how slots and precision work -- is
:mod:`ftl.crypto.gh_packing`, re-exported here.

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

In plaintext mode (``encryption=None``) the same calls sum float64 values: the
sums are then scikit-learn's float64 sums bit for bit. Their kernel,
:func:`bin_sums`, also builds the guest's histograms of its own columns and
counts every party's rows per bin.
"""

from __future__ import annotations

from functools import lru_cache

import numpy as np
from gmpy2 import mpz

from ftl.crypto.arrays import CiphertextArray, PlainArray, object_array
from ftl.crypto.engine import random_unit
from ftl.crypto.gh_packing import (
    DEFAULT_FRAC_BITS,
    GHLayout,
    bins_per_feature,
    check_key_bits,
    decrypt_bin_sums,
    encrypt_gh,
    gh_layout,
)
from ftl.crypto.paillier import PaillierPeerKey
from ftl.crypto.workers import n_workers, run_chunks, split_work

__all__ = [
    "DEFAULT_FRAC_BITS",
    "GHLayout",
    "bin_counts",
    "bin_sums",
    "bins_per_feature",
    "check_key_bits",
    "compress_bins",
    "decrypt_bin_sums",
    "encrypt_gh",
    "encrypted_bin_sums",
    "gh_layout",
]

#: Nodes of fewer (rows x features) are summed in this process: at 2048 bits their
#: sums take about 0.1 s, little more than a parallel call's own overhead.
MIN_PARALLEL_PRODUCTS = 32_768
#: Sliding window of the exponentiation by ``n`` in :func:`pack_in_worker`.
_WINDOW = 5
_ONE = mpz(1)


#: Features are counted together in chunks: one bincount per chunk saves calls
#: on small nodes, while the limits keep a chunk's output (64 KB) and its codes
#: and weights (256 KB each) in the caches. Measured (2026-12-07): on nodes of
#: 10 000 to 21 000 rows, chunks of 2**17 entries took 2 to 4 times as long as
#: 2**15 (their fresh megabyte temporaries cost page faults); below, all alike.
_CHUNK_CELLS = 8192
_CHUNK_ENTRIES = 1 << 15


def _node_rows(binned, n_train: int, rows) -> tuple[np.ndarray, np.ndarray]:
    """Validated ``binned`` (2-d, integer, ``n_train`` rows) and the node's row
    positions (int64, strictly increasing)."""
    binned = np.asarray(binned)
    if binned.ndim != 2 or binned.dtype.kind not in "iu":
        raise ValueError("binned must be a 2-d integer array (n_train, n_features)")
    if binned.shape[0] != n_train:
        raise ValueError(f"{binned.shape[0]} binned rows for {n_train} encrypted rows")
    rows = np.asarray(rows)
    if rows.ndim != 1 or not (rows.size == 0 or rows.dtype.kind in "iu"):
        raise ValueError("rows must be a 1-d integer array of positions")
    rows = rows.astype(np.int64, copy=False)
    # Strictly increasing: no row counted twice (a slot could overflow), and the
    # plaintext mode adds rows in scikit-learn's order.
    if rows.size and (rows[0] < 0 or rows[-1] >= binned.shape[0] or np.any(np.diff(rows) <= 0)):
        raise ValueError("rows must be strictly increasing positions into the training rows")
    return binned, rows


def _check_bins(codes: np.ndarray, n_bins: int) -> None:
    signed = codes.dtype.kind == "i"
    if codes.size and ((signed and codes.min() < 0) or codes.max() >= n_bins):
        raise ValueError(f"bin indices must lie in [0, {n_bins})")


def _node_columns(cts, binned, rows, n_bins_max: int) -> tuple[np.ndarray, np.ndarray]:
    """Validated row positions and the node's bin indices ``(m, n_features)``."""
    binned, rows = _node_rows(binned, cts.shape[0], rows)
    columns = binned[rows]
    _check_bins(columns, n_bins_max)
    return rows, columns


def bin_sums(
    binned: np.ndarray, rows: np.ndarray, n_bins: int, weights=(), counts: bool = True
) -> tuple[np.ndarray, np.ndarray | None]:
    """Per (feature, bin): the sums of the node's rows' weights, and their row count.

    The plaintext kernel of SecureBoost's histograms. scikit-learn adds each
    row's float32 gradient and hessian, converted to float64, to its bin, row
    after row in increasing row order. ``np.bincount`` with weights does the
    same: it adds the float64 weights (exact for float32 values) to their bin in
    input order, and here each feature's bins are counted in the rows' order, so
    the sums are bit for bit scikit-learn's float64 sums of the same values
    (sklearn never sums in float32) -- which is why ``rows`` must be sorted.

    Parameters
    ----------
    binned : ndarray of int (uint8, uint16), shape (n_train, n_features)
        Bin indices of the training rows. Fortran order (each feature's column
        contiguous) is fastest: a node's rows are gathered per feature.
    rows : ndarray of int
        Strictly increasing positions of the node's rows.
    n_bins : int
        Bins per feature in the result (above every bin index).
    weights : sequence of array-like of shape (n_train,)
        Per-row values to sum (gradients and hessians, float32 or float64);
        none: counts only.
    counts : bool, default=True
        Whether to count the rows per bin too.

    Returns
    -------
    sums : ndarray of float64, shape (len(weights), n_features, n_bins)
    counts : ndarray of int64, shape (n_features, n_bins), or None
        None when not asked for.

    Notes
    -----
    One pass per feature (a chunk of features on small nodes): the node's bins
    gathered once, then one ``bincount`` per weight and one for the counts. The
    root's rows are every row, so its bins are not gathered at all. Plain numpy
    on arrays: a caller may run chunks of features in joblib workers.
    """
    binned, rows = _node_rows(binned, np.shape(binned)[0], rows)
    return _bin_sums(binned, rows, n_bins, weights, counts)


def _bin_sums(binned, rows, n_bins: int, weights, counts: bool):
    """:func:`bin_sums` of validated ``binned`` and ``rows``."""
    n_train, n_features = binned.shape
    # (n_features, n_train), C-ordered when ``binned`` is Fortran-ordered
    by_feature = binned.T
    every_row = rows.shape[0] == n_train  # strictly increasing: then all of them
    node_weights = [
        np.ascontiguousarray(w if every_row else np.asarray(w)[rows], dtype=np.float64)
        for w in weights
    ]
    m = rows.shape[0]
    chunk = max(1, min(_CHUNK_CELLS // n_bins, _CHUNK_ENTRIES // max(1, m), n_features))
    if chunk > 1:
        # a chunk's features are counted in one call: the weights once per feature
        node_weights = [np.broadcast_to(w, (chunk, m)).reshape(-1) for w in node_weights]
    sums = np.empty((len(node_weights), n_features, n_bins), dtype=np.float64)
    out_counts = np.empty((n_features, n_bins), dtype=np.int64) if counts else None
    for start in range(0, n_features, chunk):
        stop = min(start + chunk, n_features)
        width, cells = stop - start, (stop - start) * n_bins
        codes = by_feature[start:stop] if every_row else np.take(by_feature[start:stop], rows, 1)
        _check_bins(codes, n_bins)
        # Feature-major codes: within each feature the rows keep their order.
        codes = codes.astype(np.intp)
        if width > 1:
            codes += (np.arange(width, dtype=np.intp) * n_bins)[:, None]
        codes = codes.ravel()
        for k, w in enumerate(node_weights):
            sums[k, start:stop] = np.bincount(codes, w[: codes.shape[0]], minlength=cells).reshape(
                width, n_bins
            )
        if counts:
            out_counts[start:stop] = np.bincount(codes, minlength=cells).reshape(width, n_bins)
    return sums, out_counts


def bin_counts(binned: np.ndarray, rows: np.ndarray, n_bins: int) -> np.ndarray:
    """Rows of the node per (feature, bin), int64 of shape (n_features, n_bins).

    A party's own bin counts (public to it): :func:`bin_sums` without weights.
    """
    return bin_sums(binned, rows, n_bins)[1]


def encrypted_bin_sums(
    peer,
    cts: CiphertextArray | PlainArray,
    binned: np.ndarray,
    rows: np.ndarray,
    n_bins_max: int,
    n_jobs: int | None = None,
    with_counts: bool = False,
):
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
    with_counts : bool, default=False
        Also return the node's rows per (feature, bin), as :func:`bin_counts`; in
        plaintext mode they come from the same pass over the node's bins.

    Returns
    -------
    sums : CiphertextArray or PlainArray
        Shape (n_features, n_bins_max), plaintext (n_features, n_bins_max, slots).
        Unpacked sums, never sent as they are (an empty bin holds the neutral
        element 1): :func:`compress_bins` packs and re-randomises them. The
        plaintext mode's float64 sums add the rows in increasing order.
    counts : ndarray of int64, shape (n_features, n_bins_max)
        Only with ``with_counts``: then ``(sums, counts)`` is returned.

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
    if not isinstance(peer, PaillierPeerKey):
        if not isinstance(cts, PlainArray) or cts.values.ndim != 2:
            raise ValueError("expected plaintext-mode rows of shape (n_train, slots)")
        binned, rows = _node_rows(binned, cts.shape[0], rows)
        sums, counts = _bin_sums(binned, rows, n_bins_max, cts.values.T, counts=with_counts)
        plain = PlainArray(np.moveaxis(sums, 0, -1))
        return (plain, counts) if with_counts else plain
    if with_counts:
        counts = bin_counts(binned, rows, n_bins_max)
        return encrypted_bin_sums(peer, cts, binned, rows, n_bins_max, n_jobs), counts
    rows, columns = _node_columns(cts, binned, rows, n_bins_max)
    n_features = columns.shape[1]
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
    n_bins = bins_per_feature(n_bins, n_features, n_bins_max)
    if not isinstance(peer, PaillierPeerKey):
        if not isinstance(sums, PlainArray) or sums.values.ndim != 3:
            raise ValueError("expected plaintext-mode bin sums (n_features, n_bins, slots)")
        kept = [sums.values[f, : n_bins[f]] for f in range(n_features)]
        return PlainArray(np.concatenate(kept) if kept else np.zeros((0, sums.values.shape[2])))
    if not isinstance(sums, CiphertextArray) or sums.key_id != peer.key_id:
        raise ValueError("bin sums are not under this peer's key")
    check_key_bits(peer.n, layout)
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
