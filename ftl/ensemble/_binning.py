"""Per-party binning of a party's own columns, equal to scikit-learn's ``_BinMapper``.

Each party bins only its own columns, on the training rows, and keeps the
thresholds: the trees it helps to grow refer to a bin index, and only the party
that owns a column can map that index back to a value. For the federated trees
to be the trees scikit-learn's ``HistGradientBoosting*`` grows on the pooled
columns, every party must cut its columns exactly where ``_BinMapper`` cuts
them (scikit-learn 1.9):

* a column with at most ``max_bins`` distinct values gets the midpoints of
  consecutive distinct values as thresholds; a column with more gets the
  ``averaged_inverted_cdf`` percentiles at ``100 * i / max_bins``, duplicates
  removed; a constant column gets none (a single bin);
* on more than ``subsample`` rows the thresholds come from ``subsample`` rows
  drawn with replacement by ``RandomState(seed).choice``. All parties draw the
  same row positions as long as they use the same seed and the same number of
  rows, which is what keeps the draw identical to the pooled one;
* a value ``x`` falls in bin ``i`` iff ``thresholds[i - 1] < x <= thresholds[i]``.

Missing values are not supported (they are refused before a party bins), so no
bin is reserved for them here and ``n_bins_non_missing`` is the number of bins
of each column.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from sklearn.utils import check_random_state

__all__ = ["Binning", "bin_indices", "draw_seed", "find_bin_thresholds", "fit_binning"]

#: Upper clip of thresholds (scikit-learn keeps +inf for "split on missing" only).
ALMOST_INF = 1e300
#: Values binned at a time by :func:`bin_indices`: its temporaries stay in the cache.
_SEARCH_CHUNK = 1 << 15


def draw_seed(random_state) -> int:
    """The seed ``HistGradientBoosting*`` draws from ``random_state`` at ``fit``.

    scikit-learn does not give ``random_state`` to its bin mapper directly but
    the first draw ``check_random_state(random_state).randint(2**32 - 1)``. The
    guest draws it once and hands the same integer to every party, so that all
    parties subsample the same rows (and so that the draw equals scikit-learn's).

    Parameters
    ----------
    random_state : int, RandomState instance or None
        As the estimator's ``random_state``.

    Returns
    -------
    seed : int
    """
    rng = check_random_state(random_state)
    return int(rng.randint(np.iinfo(np.uint32).max, dtype="u8"))


def find_bin_thresholds(column: np.ndarray, max_bins: int) -> np.ndarray:
    """Thresholds of one NaN-free column, as ``_BinMapper`` finds them.

    Parameters
    ----------
    column : ndarray of shape (n_samples,)
        The (possibly subsampled) values of one feature.
    max_bins : int
        Maximum number of bins, in ``[2, 255]``.

    Returns
    -------
    thresholds : ndarray of float64, shape (n_bins - 1,)
        Increasing upper bounds of the bins; empty for a constant column.
    """
    values = np.sort(np.asarray(column, dtype=np.float64))
    # the first of each run of equal values: np.unique's mask, without sorting again
    first = np.empty(values.shape, dtype=bool)
    first[:1] = True
    np.not_equal(values[1:], values[:-1], out=first[1:])
    n_distinct = int(np.count_nonzero(first))
    if n_distinct == 1:
        return np.asarray([], dtype=np.float64)
    if n_distinct <= max_bins:
        distinct = values[first]
        thresholds = (distinct[:-1] + distinct[1:]) / 2
    else:
        percentiles = np.linspace(0, 100, num=max_bins + 1)[1:-1]
        thresholds = np.percentile(values, percentiles, method="averaged_inverted_cdf")
        thresholds = np.unique(thresholds)
    return np.minimum(thresholds, ALMOST_INF)


@dataclass(frozen=True)
class Binning:
    """The bin thresholds of one party's columns (they never leave the party).

    Parameters
    ----------
    thresholds : list of ndarray
        Per column, the increasing upper bounds of its bins.
    """

    thresholds: list[np.ndarray]

    @property
    def n_bins_non_missing(self) -> np.ndarray:
        """Number of bins of each column, int64 of shape (n_features,)."""
        return np.array([len(t) + 1 for t in self.thresholds], dtype=np.int64)

    def transform(self, X: np.ndarray) -> np.ndarray:
        """Bin indices of ``X``: uint8, Fortran-ordered (columns are scanned whole).

        Parameters
        ----------
        X : ndarray of shape (n_samples, n_features)
            NaN-free values of this party's columns.

        Returns
        -------
        binned : ndarray of uint8, shape (n_samples, n_features)
        """
        X = np.asarray(X, dtype=np.float64)
        if X.ndim != 2 or X.shape[1] != len(self.thresholds):
            raise ValueError(
                f"expected {len(self.thresholds)} columns, got an array of shape {X.shape}"
            )
        binned = np.empty(X.shape, dtype=np.uint8, order="F")
        for j, thresholds in enumerate(self.thresholds):
            binned[:, j] = bin_indices(thresholds, X[:, j])
        return binned


def bin_indices(thresholds: np.ndarray, values: np.ndarray) -> np.ndarray:
    """The bin of each value: how many thresholds lie strictly below it.

    That is ``np.searchsorted(thresholds, values, side="left")`` -- ``x`` in bin
    ``i`` iff ``thresholds[i - 1] < x <= thresholds[i]``, NaN last -- found by a
    binary search without branches: the thresholds padded with ``+inf`` to
    ``2**d - 1``, each of the ``d`` steps compares every value with one table
    entry, vectorised over a cache-sized chunk of values. (``searchsorted``
    branches per value and mispredicts about every other step on unsorted
    values: 2 to 3 times slower on a million.)

    Parameters
    ----------
    thresholds : ndarray of float64, shape (n_thresholds,)
        Increasing.
    values : ndarray of shape (n_samples,)

    Returns
    -------
    bins : ndarray of intp, shape (n_samples,)
    """
    values = np.asarray(values, dtype=np.float64)
    depth = int(thresholds.shape[0]).bit_length()
    table = np.full((1 << depth) - 1, np.inf)
    table[: thresholds.shape[0]] = thresholds
    out = np.empty(values.shape[0], dtype=np.intp)
    for start in range(0, values.shape[0], _SEARCH_CHUNK):
        chunk = np.ascontiguousarray(values[start : start + _SEARCH_CHUNK])
        bins = np.zeros(chunk.shape[0], dtype=np.intp)
        for shift in range(depth - 1, -1, -1):
            step = 1 << shift
            bins += step * (table.take(bins + (step - 1)) < chunk)
        bins[np.isnan(chunk)] = thresholds.shape[0]
        out[start : start + chunk.shape[0]] = bins
    return out


def fit_binning(
    X: np.ndarray, max_bins: int = 255, subsample: int | None = 200_000, random_state=None
) -> Binning:
    """Bin thresholds of a party's columns on its training rows.

    Parameters
    ----------
    X : ndarray of shape (n_samples, n_features)
        The party's NaN-free training columns, rows in alignment order.
    max_bins : int, default=255
        Maximum number of bins per column, in ``[2, 255]``.
    subsample : int or None, default=200_000
        Thresholds are computed on this many rows drawn with replacement when
        there are more rows; ``None`` uses all rows.
    random_state : int, RandomState instance or None
        Seed of the row draw. Pass the same integer (:func:`draw_seed`) to every
        party.

    Returns
    -------
    binning : Binning
    """
    if not 2 <= max_bins <= 255:
        raise ValueError(f"max_bins must be in [2, 255], got {max_bins}")
    X = np.asarray(X, dtype=np.float64)
    if X.ndim != 2:
        raise ValueError(f"X must be two-dimensional, got shape {X.shape}")
    if np.isnan(X).any():
        raise ValueError("X contains NaN; missing values are not supported")
    rng = check_random_state(random_state)
    if subsample is not None and X.shape[0] > subsample:
        X = X.take(rng.choice(X.shape[0], subsample, replace=True), axis=0)
    return Binning([find_bin_thresholds(X[:, j], max_bins) for j in range(X.shape[1])])
