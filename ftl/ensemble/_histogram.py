"""Per-bin gradient and hessian sums of a node (plaintext).

The sums are scikit-learn's float64 sums bit for bit as long as a node's rows
come in increasing order (its partition is stable): the kernel,
:func:`ftl.crypto.histograms.bin_sums`, says why. The larger child's histogram is
the parent's minus the smaller child's, as scikit-learn derives it.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ftl.crypto.histograms import bin_sums

__all__ = ["Histogram", "build_histogram"]


@dataclass(frozen=True)
class Histogram:
    """Gradient and hessian sums and row counts per (feature, bin) of a node.

    Parameters
    ----------
    sum_gradients : ndarray of float64, shape (n_features, n_bins)
    sum_hessians : ndarray of float64, shape (n_features, n_bins)
    count : ndarray of int64, shape (n_features, n_bins)
    """

    sum_gradients: np.ndarray
    sum_hessians: np.ndarray
    count: np.ndarray

    @property
    def n_features(self) -> int:
        return self.sum_gradients.shape[0]

    def __sub__(self, other: Histogram) -> Histogram:
        """The sibling's histogram: this (the parent's) minus ``other`` (one child's)."""
        return Histogram(
            self.sum_gradients - other.sum_gradients,
            self.sum_hessians - other.sum_hessians,
            self.count - other.count,
        )


def build_histogram(
    binned: np.ndarray,
    gradients: np.ndarray,
    hessians: np.ndarray,
    rows: np.ndarray,
    n_bins_max: int,
) -> Histogram:
    """Histogram of the training rows ``rows`` over all columns of ``binned``.

    Parameters
    ----------
    binned : ndarray of uint8, shape (n_train, n_features)
        Bin indices of the training rows (Fortran order is fastest).
    gradients, hessians : ndarray of float32, shape (n_train,)
        Per-row gradient and hessian of the tree being grown.
    rows : ndarray of int64
        Sorted positions of the node's training rows.
    n_bins_max : int
        Number of bins of the histogram (at least the largest bin index + 1).

    Returns
    -------
    histogram : Histogram
    """
    (sum_gradients, sum_hessians), count = bin_sums(binned, rows, n_bins_max, (gradients, hessians))
    return Histogram(sum_gradients, sum_hessians, count)
