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

__all__ = ["Binning", "draw_seed", "find_bin_thresholds", "fit_binning"]

#: Upper clip of thresholds (scikit-learn keeps +inf for "split on missing" only).
ALMOST_INF = 1e300


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
    distinct = np.unique(values)
    if distinct.shape[0] == 1:
        return np.asarray([], dtype=np.float64)
    if distinct.shape[0] <= max_bins:
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
            # side="left" puts x in bin i iff thresholds[i - 1] < x <= thresholds[i].
            binned[:, j] = np.searchsorted(thresholds, X[:, j], side="left")
        return binned


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
