"""The fast paths of the plaintext trees give exactly what the plain loops give.

Histograms (``ftl.crypto.histograms.bin_sums``: per-feature ``bincount``, the root's
bins never gathered, small nodes' features counted in chunks) must add every row's
value to its bin in increasing row order, as scikit-learn does; the binning's
branch-free search (``bin_indices``) must put every value where ``np.searchsorted``
puts it; the thresholds' distinct values must be ``np.unique``'s. No timings here:
``benchmarks/bench_secureboost.py`` measures the speed.
"""

from __future__ import annotations

import numpy as np
import pytest

from ftl.crypto import histograms
from ftl.crypto.arrays import PlainArray
from ftl.crypto.scheme import PlainPeerKey
from ftl.ensemble._binning import bin_indices, find_bin_thresholds


def _reference(binned, rows, n_bins, weights):
    """Float64 sums added one row after the other (``np.add.at`` is unbuffered and
    in index order), and the row counts."""
    n_features = binned.shape[1]
    sums = np.zeros((len(weights), n_features, n_bins))
    counts = np.zeros((n_features, n_bins), dtype=np.int64)
    for f in range(n_features):
        bins = binned[rows, f].astype(np.intp)
        for k, w in enumerate(weights):
            np.add.at(sums[k, f], bins, np.asarray(w, dtype=np.float64)[rows])
        np.add.at(counts[f], bins, 1)
    return sums, counts


def _data(n, n_features, n_bins, seed=0, order="F", dtype=np.uint8):
    rng = np.random.default_rng(seed)
    # skewed bins: some bins hold many rows, others few or none
    binned = np.minimum(rng.geometric(0.2, (n, n_features)) - 1, n_bins - 1).astype(dtype)
    g = rng.normal(scale=1e3, size=n).astype(np.float32)
    h = rng.random(n).astype(np.float32)
    return np.asarray(binned, order=order), g, h


@pytest.mark.parametrize(
    "n, n_features, n_bins, share",
    [
        (3000, 6, 7, 0.4),  # a small node: all features in one chunk
        (70_000, 3, 255, 1.0),  # the root of a large node: one feature at a time
        (70_000, 3, 255, 0.6),  # a large node: its rows gathered per feature
        (500, 40, 255, 0.1),  # chunks of several features, then a shorter last one
    ],
)
@pytest.mark.parametrize("order", ["F", "C"])
def test_bin_sums_add_each_row_in_row_order(n, n_features, n_bins, share, order):
    binned, g, h = _data(n, n_features, n_bins, order=order)
    rng = np.random.default_rng(1)
    rows = np.sort(rng.choice(n, int(n * share), replace=False))
    sums, counts = histograms.bin_sums(binned, rows, n_bins, (g, h))
    expected_sums, expected_counts = _reference(binned, rows, n_bins, (g, h))
    np.testing.assert_array_equal(sums, expected_sums)
    np.testing.assert_array_equal(counts, expected_counts)
    assert sums.dtype == np.float64 and counts.dtype == np.int64
    np.testing.assert_array_equal(histograms.bin_counts(binned, rows, n_bins), expected_counts)
    only_sums, none = histograms.bin_sums(binned, rows, n_bins, (g,), counts=False)
    assert none is None
    np.testing.assert_array_equal(only_sums[0], expected_sums[0])


def test_bin_sums_of_no_rows_and_wide_bins():
    binned, g, h = _data(200, 4, 300, dtype=np.uint16)
    sums, counts = histograms.bin_sums(binned, np.array([], dtype=np.int64), 300, (g, h))
    assert sums.shape == (2, 4, 300) and not sums.any() and not counts.any()
    rows = np.arange(0, 200, 3)
    np.testing.assert_array_equal(
        histograms.bin_sums(binned, rows, 300, (g, h))[0], _reference(binned, rows, 300, (g, h))[0]
    )


def test_bin_sums_check_rows_and_bins():
    binned, g, h = _data(50, 3, 5)
    for rows in ([3, 3, 4], [4, 3], [-1, 2], [2, 50]):
        with pytest.raises(ValueError, match="strictly increasing"):
            histograms.bin_sums(binned, np.array(rows), 5, (g,))
    with pytest.raises(ValueError, match="bin indices"):
        histograms.bin_sums(binned, np.arange(50), int(binned.max()), (g,))
    signed = binned.astype(np.int16)
    signed[7, 1] = -1  # in a chunk, -1 would land in the previous feature's last bin
    with pytest.raises(ValueError, match="bin indices"):
        histograms.bin_sums(signed, np.arange(50), 5, (g,))


def test_plaintext_mode_bin_sums_are_the_kernels():
    binned, g, h = _data(2000, 5, 9)
    rows = np.arange(1, 2000, 2)
    values = PlainArray(np.column_stack([g.astype(np.float64), h.astype(np.float64)]))
    out = histograms.encrypted_bin_sums(PlainPeerKey(), values, binned, rows, 9)
    expected, _ = _reference(binned, rows, 9, (g, h))
    assert out.values.shape == (5, 9, 2)
    np.testing.assert_array_equal(np.moveaxis(out.values, -1, 0), expected)
    # the host's counts come from the same pass, equal to bin_counts'
    both, counts = histograms.encrypted_bin_sums(
        PlainPeerKey(), values, binned, rows, 9, with_counts=True
    )
    np.testing.assert_array_equal(both.values, out.values)
    np.testing.assert_array_equal(counts, histograms.bin_counts(binned, rows, 9))
    with pytest.raises(ValueError, match="binned rows"):
        histograms.encrypted_bin_sums(PlainPeerKey(), values, binned[:-1], rows, 9)


@pytest.mark.parametrize("n_thresholds", [0, 1, 2, 3, 31, 127, 128, 254])
def test_bin_indices_are_searchsorted_left(n_thresholds):
    rng = np.random.default_rng(n_thresholds)
    thresholds = np.unique(rng.normal(size=n_thresholds))
    values = np.concatenate(
        [
            rng.normal(size=100_000),  # more than one chunk of the search
            thresholds,  # x == threshold goes left of it
            np.nextafter(thresholds, np.inf),
            [np.inf, -np.inf, np.nan, 0.0, -0.0, 1e300, -1e300],
        ]
    )
    expected = np.searchsorted(thresholds, values, side="left")
    np.testing.assert_array_equal(bin_indices(thresholds, values), expected)
    strided = np.column_stack([values, values])[:, 1]
    np.testing.assert_array_equal(bin_indices(thresholds, strided), expected)


@pytest.mark.parametrize(
    "column",
    [
        np.zeros(40),
        np.r_[np.zeros(30), np.ones(10)],
        np.r_[-0.0, 0.0, 1.0, -0.0, 2.0],
        np.repeat(np.arange(255.0), 3),  # exactly max_bins distinct values
        np.repeat(np.arange(256.0), 3),  # one more: quantiles
        np.random.default_rng(0).normal(size=5000).round(1),
        np.random.default_rng(1).exponential(size=5000),
        np.array([]),
    ],
)
def test_thresholds_come_from_the_distinct_values_np_unique_finds(column):
    """find_bin_thresholds reads the distinct values off the sorted column; the
    thresholds must be those computed from ``np.unique``."""
    values = np.sort(column)
    distinct = np.unique(values)
    if distinct.shape[0] == 1:
        expected = np.array([])
    elif distinct.shape[0] <= 255:
        expected = (distinct[:-1] + distinct[1:]) / 2
    else:
        percentiles = np.linspace(0, 100, num=256)[1:-1]
        expected = np.unique(np.percentile(values, percentiles, method="averaged_inverted_cdf"))
    np.testing.assert_array_equal(find_bin_thresholds(column, 255), expected)
