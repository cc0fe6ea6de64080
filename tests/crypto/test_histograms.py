"""The encrypted histogram kernel of SecureBoost (``ftl.crypto.histograms``).

Logic on small insecure keys and in plaintext mode; one round trip on the
default key size. A histogram here is per-(feature, bin) sums of the node's
rows' float32 gradients and hessians, compared with float64 sums in row order
(what scikit-learn computes).
"""

from __future__ import annotations

import numpy as np
import pytest
from gmpy2 import mpz

from ftl.crypto import histograms
from ftl.crypto.histograms import (
    DEFAULT_FRAC_BITS,
    GHLayout,
    compress_bins,
    decrypt_bin_sums,
    encrypt_gh,
    encrypted_bin_sums,
    gh_layout,
)
from ftl.crypto.keys import DEFAULT_KEY_SIZE
from ftl.crypto.scheme import PlainOwnKey, PlainPeerKey, make_own_key, peer_key_from_public
from ftl.exceptions import FixedPointOverflowError

SMALL = 512


def _keys(key_size=SMALL, n_jobs=None):
    own = make_own_key("paillier", key_size, insecure_for_tests=True, pool_capacity=0)
    peer = peer_key_from_public(own.public(), "paillier", insecure_for_tests=True, n_jobs=n_jobs)
    return own, peer


@pytest.fixture(scope="module")
def keys():
    return _keys()


def _gh(n, seed=0):
    """float32 gradients of both signs and log-loss hessians."""
    rng = np.random.default_rng(seed)
    p = rng.uniform(0, 1, n)
    y = rng.integers(0, 2, n)
    return (p - y).astype(np.float32), (p * (1 - p)).astype(np.float32)


def _reference(binned, values, rows, n_bins_max):
    """float64 sums added one row at a time in increasing row order."""
    out = np.zeros((binned.shape[1], n_bins_max))
    for f in range(binned.shape[1]):
        for i in rows:
            out[f, binned[i, f]] += np.float64(values[i])
    return out


def _roundtrip(own, peer, layout, g, h, binned, rows, n_bins_max, n_bins=None, n_jobs=None):
    cts = encrypt_gh(own, g, h, layout)
    sums = encrypted_bin_sums(peer, cts, binned, rows, n_bins_max, n_jobs=n_jobs)
    packed = compress_bins(peer, sums, layout, n_bins=n_bins)
    return packed, decrypt_bin_sums(own, packed, layout, binned.shape[1], n_bins_max, n_bins)


def _assert_close_to_float64(decoded, binned, values, rows, n_bins_max, frac_bits):
    """Within one rounding of a float32 value below 2**(23 - frac_bits) per row
    (none here), plus float64's own rounding of the reference."""
    expected = _reference(binned, values, rows, n_bins_max)
    scale = _reference(binned, np.abs(values), rows, n_bins_max)
    counts = _reference(binned, np.ones(len(values)), rows, n_bins_max)
    tolerance = counts * 2.0 ** -(frac_bits + 1) + 1e-15 * scale
    assert np.all(np.abs(decoded - expected) <= tolerance)


# -- layout ---------------------------------------------------------------------------
def test_layout_follows_from_public_bounds():
    layout = gh_layout(2048, 21_000, 1.0, 0.25)
    assert layout.frac_bits == DEFAULT_FRAC_BITS == 47
    # 21 000 rows of |g| * 2**47 <= 2**47 sum below 2**62: 62 bits and a sign
    assert (layout.slot_bits, layout.slots_per_bin, layout.bins_per_ciphertext) == (63, 2, 16)
    # bounds are rounded up to powers of two (the layout shows only their magnitude)
    regression = gh_layout(2048, 21_000, 3.0, None)
    assert regression.g_bound == 4.0 and regression.h_bound is None
    assert (regression.slot_bits, regression.slots_per_bin) == (65, 1)
    assert regression.bins_per_ciphertext == 2047 // 65
    assert gh_layout(2048, 21_000, 1.0, 0.3).h_bound == 0.5


def test_layout_refuses_what_cannot_be_carried():
    with pytest.raises(FixedPointOverflowError, match="cannot hold one bin"):
        gh_layout(64, 21_000, 1.0, 0.25)
    for bad in (dict(n_rows=0), dict(g_bound=-1.0), dict(g_bound=float("nan"))):
        with pytest.raises(ValueError):
            gh_layout(**{"key_bits": 2048, "n_rows": 10, "g_bound": 1.0, "h_bound": 0.25, **bad})
    with pytest.raises(ValueError, match="power of two"):
        GHLayout(key_bits=2048, n_rows=10, g_bound=3.0, h_bound=0.25)


@pytest.mark.parametrize("own", ["paillier", "plain"])
def test_encryption_refuses_values_outside_the_layout(keys, own):
    own = keys[0] if own == "paillier" else PlainOwnKey()
    layout = gh_layout(SMALL, 10, 1.0, 0.25)
    g, h = np.zeros(4), np.full(4, 0.1)
    cases = [
        (np.array([0.5, -1.5, 0, 0]), h, r"\|g\| <= 1"),
        (g, np.array([0.1, -0.01, 0, 0]), r"0 <= h <= 0.25"),
        (g, np.array([0.1, 0.3, 0, 0]), r"0 <= h <= 0.25"),
        (np.array([np.nan, 0, 0, 0]), h, "finite"),
        (np.zeros(11), np.zeros(11), "at most 10"),
    ]
    for grad, hess, message in cases:
        with pytest.raises(FixedPointOverflowError, match=message):
            encrypt_gh(own, grad, hess, layout)
    with pytest.raises(ValueError, match="h_bound"):
        encrypt_gh(own, g, None, layout)
    # the bounds themselves are allowed
    encrypt_gh(own, np.array([1.0, -1.0, 0, 0]), np.array([0.25, 0, 0, 0]), layout)


# -- sums -----------------------------------------------------------------------------
def test_sums_match_float64_sums_with_negative_gradients(keys):
    own, peer = keys
    n, n_bins_max = 700, 9
    g, h = _gh(n)
    rng = np.random.default_rng(1)
    binned = rng.integers(0, n_bins_max, size=(n, 4)).astype(np.uint8)
    binned[:, 1] = binned[:, 0] // 3  # coarse, tied to feature 0: summed per bin pair
    binned[:, 2] = 4  # every row in one bin: the largest slot values
    rows = np.sort(rng.choice(n, 500, replace=False))
    layout = gh_layout(SMALL, n, 1.0, 0.25)
    _, (sum_g, sum_h) = _roundtrip(own, peer, layout, g, h, binned, rows, n_bins_max)
    _assert_close_to_float64(sum_g, binned, g, rows, n_bins_max, layout.frac_bits)
    _assert_close_to_float64(sum_h, binned, h, rows, n_bins_max, layout.frac_bits)
    assert np.any(sum_g < 0) and np.all(sum_h >= 0)


def test_full_slots_decode_with_their_carries(keys):
    own, peer = keys
    n = 64
    layout = gh_layout(SMALL, n, 1.0, 0.25)
    # bin 0: all rows at g = -1 (a negative slot below a zero hessian slot: the whole
    # plaintext is negative); bin 1: g = +1 and h = 0.25 at every row; bin 2: empty
    binned = np.repeat(np.array([[0], [1]], dtype=np.uint8), n // 2, axis=0)
    g = np.where(binned[:, 0] == 0, -1.0, 1.0)
    h = np.where(binned[:, 0] == 0, 0.0, 0.25)
    _, (sum_g, sum_h) = _roundtrip(own, peer, layout, g, h, binned, np.arange(n), 3)
    np.testing.assert_array_equal(sum_g, [[-n / 2, n / 2, 0]])
    np.testing.assert_array_equal(sum_h, [[0, n / 8, 0]])


def test_bins_straddle_ciphertext_boundaries(keys):
    own, peer = keys
    n = 200
    layout = gh_layout(SMALL, n, 1.0, 0.25)
    k = layout.bins_per_ciphertext
    assert k > 1
    g, h = _gh(n, seed=3)
    binned = np.random.default_rng(3).integers(0, 2 * k + 1, size=(n, 3)).astype(np.uint16)
    rows = np.arange(n)
    for n_bins in ([k - 1, 0, 0], [k, 0, 0], [k, 1, 0], [2 * k + 1, k, 2 * k + 1]):
        n_bins = np.array(n_bins)
        kept = np.arange(2 * k + 1) < n_bins[:, None]
        packed, (sum_g, sum_h) = _roundtrip(
            own, peer, layout, g, h, binned, rows, 2 * k + 1, n_bins
        )
        assert packed.shape == (-(-n_bins.sum() // k),)
        expected = _reference(binned, g, rows, 2 * k + 1)
        np.testing.assert_allclose(sum_g[kept], expected[kept], rtol=0, atol=1e-12)
        assert np.all(sum_g[~kept] == 0) and np.all(sum_h[~kept] == 0)


def test_many_rows_in_parallel_equal_the_serial_sums(monkeypatch):
    monkeypatch.setattr(histograms, "MIN_PARALLEL_PRODUCTS", 1000)  # small keys, fast sums
    tasks = []

    def run_chunks(function, chunks, *args):
        tasks.append((function.__name__, len(chunks)))
        return histograms_run_chunks(function, chunks, *args)

    histograms_run_chunks = histograms.run_chunks
    monkeypatch.setattr(histograms, "run_chunks", run_chunks)
    own, peer = _keys(n_jobs=2)
    n, n_bins_max = 4000, 16
    g, h = _gh(n, seed=5)
    binned = np.random.default_rng(5).integers(0, n_bins_max, size=(n, 4)).astype(np.uint8)
    layout = gh_layout(SMALL, n, 1.0, 0.25)
    rows = np.arange(n)
    _, parallel = _roundtrip(own, peer, layout, g, h, binned, rows, n_bins_max, n_jobs=2)
    # the rows were split between the workers, and so were the packed ciphertexts
    assert [name for name, count in tasks if count > 1] == [
        "bin_products_in_worker",
        "pack_in_worker",
    ]
    serial_peer = peer_key_from_public(own.public(), "paillier", insecure_for_tests=True)
    _, serial = _roundtrip(own, serial_peer, layout, g, h, binned, rows, n_bins_max)
    np.testing.assert_array_equal(parallel[0], serial[0])
    np.testing.assert_array_equal(parallel[1], serial[1])
    _assert_close_to_float64(parallel[0], binned, g, rows, n_bins_max, layout.frac_bits)


def test_gradients_only_layout(keys):
    own, peer = keys
    n = 300
    g = np.random.default_rng(7).normal(scale=2.0, size=n).astype(np.float32)
    layout = gh_layout(SMALL, n, np.abs(g).max(), None)
    binned = np.random.default_rng(7).integers(0, 5, size=(n, 2)).astype(np.uint8)
    _, (sum_g, sum_h) = _roundtrip(own, peer, layout, g, None, binned, np.arange(n), 5)
    assert sum_h is None
    _assert_close_to_float64(sum_g, binned, g, np.arange(n), 5, layout.frac_bits)


def test_plaintext_mode_is_exact_in_row_order():
    n, n_bins_max = 500, 7
    g, h = _gh(n, seed=11)
    binned = np.random.default_rng(11).integers(0, n_bins_max, size=(n, 3)).astype(np.uint8)
    rows = np.sort(np.random.default_rng(12).choice(n, 321, replace=False))
    layout = gh_layout(SMALL, n, 1.0, 0.25)
    own, peer = PlainOwnKey(), PlainPeerKey()
    n_bins = np.array([7, 3, 6])
    _, (sum_g, sum_h) = _roundtrip(own, peer, layout, g, h, binned, rows, n_bins_max, n_bins)
    kept = np.arange(n_bins_max) < n_bins[:, None]
    # bit for bit, no fixed point
    np.testing.assert_array_equal(sum_g[kept], _reference(binned, g, rows, n_bins_max)[kept])
    np.testing.assert_array_equal(sum_h[kept], _reference(binned, h, rows, n_bins_max)[kept])
    assert np.all(sum_g[~kept] == 0)


def test_node_rows_and_bins_are_checked(keys):
    own, peer = keys
    layout = gh_layout(SMALL, 10, 1.0, 0.25)
    cts = encrypt_gh(own, np.zeros(10), np.zeros(10), layout)
    binned = np.zeros((10, 2), dtype=np.uint8)
    for rows in ([3, 3, 4], [4, 3], [-1, 2], [2, 10]):
        with pytest.raises(ValueError, match="strictly increasing"):
            encrypted_bin_sums(peer, cts, binned, np.array(rows), 4)
    binned[2, 1] = 4
    with pytest.raises(ValueError, match="bin indices"):
        encrypted_bin_sums(peer, cts, binned, np.arange(10), 4)
    other_own, other_peer = _keys()
    with pytest.raises(ValueError, match="not under this peer's key"):
        encrypted_bin_sums(other_peer, cts, binned, np.arange(2), 5)


# -- what is sent ---------------------------------------------------------------------
def test_rows_are_encrypted_with_fresh_randomness(keys):
    own, _ = keys
    layout = gh_layout(SMALL, 8, 1.0, 0.25)
    g, h = np.zeros(8), np.zeros(8)  # equal plaintexts: only the randomness differs
    first, second = encrypt_gh(own, g, h, layout), encrypt_gh(own, g, h, layout)
    values = [int(c) for c in first.values] + [int(c) for c in second.values]
    assert len(set(values)) == 16 and 1 not in values  # 1 = deterministic encryption of 0


def test_every_packed_ciphertext_is_freshly_rerandomised(keys):
    own, peer = keys
    n = 40
    layout = gh_layout(SMALL, n, 1.0, 0.25)
    g, h = _gh(n, seed=13)
    binned = (np.arange(n) % 3).astype(np.uint8)[:, None]
    cts = encrypt_gh(own, g, h, layout)
    rows = np.arange(0, n, 2)
    sums = encrypted_bin_sums(peer, cts, binned, rows, 3)
    first, second = compress_bins(peer, sums, layout), compress_bins(peer, sums, layout)
    assert first.shape == second.shape == (1,)
    assert int(first.values[0]) != int(second.values[0])
    # not the bare Horner product of the guest's own ciphertexts: that would tell
    # the guest which of its ciphertexts were multiplied into which bin
    n2 = peer.nsquare
    bare = mpz(1)
    for c in reversed(sums.values[0]):
        bare = pow(bare, mpz(1) << layout.bin_bits, n2) * mpz(c) % n2
    assert int(first.values[0]) != int(bare)
    plain = int(own.decrypt_masked(first)[0])
    assert plain == own.private_key.raw_decrypt(int(bare))
    assert int(first.values[0]) != (1 + plain * own.n) % n2  # never the deterministic form
    np.testing.assert_array_equal(
        decrypt_bin_sums(own, first, layout, 1, 3)[0],
        decrypt_bin_sums(own, second, layout, 1, 3)[0],
    )


def test_an_empty_node_sends_nothing_recognisable(keys):
    own, peer = keys
    layout = gh_layout(SMALL, 20, 1.0, 0.25)
    cts = encrypt_gh(own, *_gh(20), layout)
    binned = np.zeros((20, 3), dtype=np.uint8)
    packed = compress_bins(
        peer, encrypted_bin_sums(peer, cts, binned, np.array([], dtype=np.int64), 4), layout
    )
    n2 = own.n**2
    assert len({int(c) for c in packed.values}) == packed.shape[0]
    assert all(int(c) not in (0, 1) for c in packed.values)
    sum_g, sum_h = decrypt_bin_sums(own, packed, layout, 3, 4)
    assert not sum_g.any() and not sum_h.any()
    assert all(int(c) != (1 + 0 * own.n) % n2 for c in packed.values)


def test_decryption_checks_the_layout(keys):
    own, peer = keys
    layout = gh_layout(SMALL, 20, 1.0, 0.25)
    cts = encrypt_gh(own, *_gh(20), layout)
    binned = np.zeros((20, 2), dtype=np.uint8)
    packed = compress_bins(peer, encrypted_bin_sums(peer, cts, binned, np.arange(20), 3), layout)
    with pytest.raises(ValueError, match="do not match the layout"):
        decrypt_bin_sums(own, packed, layout, 4, 3)
    with pytest.raises(ValueError, match="bit key"):
        decrypt_bin_sums(own, packed, gh_layout(SMALL + 64, 20, 1.0, 0.25), 2, 3)
    # a plaintext wider than the slots (not made with this layout) is refused
    wide = own.encrypt_integers([1 << (SMALL - 2)], (1,))
    with pytest.raises(ValueError, match="overflows the layout"):
        decrypt_bin_sums(own, wide, gh_layout(SMALL, 2, 1.0, 0.25, frac_bits=2), 1, 1)


def test_round_trip_on_the_default_key_size():
    own, peer = _keys(DEFAULT_KEY_SIZE)
    n = 24
    g, h = _gh(n, seed=17)
    binned = np.random.default_rng(17).integers(0, 5, size=(n, 3)).astype(np.uint8)
    layout = gh_layout(DEFAULT_KEY_SIZE, 21_000, 1.0, 0.25)
    rows = np.arange(1, n, 2)
    packed, (sum_g, sum_h) = _roundtrip(own, peer, layout, g, h, binned, rows, 5)
    assert packed.shape == (1,)  # 15 bins, 16 fit one ciphertext
    _assert_close_to_float64(sum_g, binned, g, rows, 5, layout.frac_bits)
    _assert_close_to_float64(sum_h, binned, h, rows, 5, layout.frac_bits)


def test_sums_and_packing_run_on_a_dask_cluster(monkeypatch):
    """As the LR path (tests/crypto/test_dask.py): under joblib's dask backend the
    products and the packing run as tasks on the cluster's worker processes."""
    distributed = pytest.importorskip("distributed")
    import joblib

    monkeypatch.setattr(histograms, "MIN_PARALLEL_PRODUCTS", 1000)
    own, peer = _keys(n_jobs=-1)
    n, n_bins_max = 3000, 64
    g, h = _gh(n, seed=19)
    binned = np.random.default_rng(19).integers(0, n_bins_max, size=(n, 4)).astype(np.uint8)
    layout = gh_layout(SMALL, n, 1.0, 0.25)
    with (
        distributed.LocalCluster(
            n_workers=2, threads_per_worker=1, processes=True, dashboard_address="127.0.0.1:0"
        ) as cluster,
        distributed.Client(cluster) as client,
    ):
        with joblib.parallel_config(backend="dask"), distributed.get_task_stream(client) as ts:
            _, (sum_g, _) = _roundtrip(own, peer, layout, g, h, binned, np.arange(n), n_bins_max)
    names = {str(t["key"]) for t in ts.data}
    for function in ("bin_products_in_worker", "pack_in_worker"):
        assert any(f"batch_of_{function}_" in name for name in names), (function, names)
    _assert_close_to_float64(sum_g, binned, g, np.arange(n), n_bins_max, layout.frac_bits)
