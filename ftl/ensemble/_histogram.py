"""Per-bin gradient and hessian sums of a node (plaintext).

scikit-learn adds each row's float32 gradient and hessian, converted to
float64, to its bin, row after row in increasing row order (a node's rows stay
in increasing order because its partition is stable), and derives the larger
child's histogram as parent minus smaller child. ``np.bincount`` with weights
does the same: it converts the float32 weights to float64 exactly and adds them
to their bin in input order, so the sums here are bit for bit scikit-learn's
float64 sums of the same float32 values (sklearn never sums in float32). The
only place the two could part is the order of the rows, which is why
:func:`build_histogram` requires them sorted.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

__all__ = ["Histogram", "build_histogram"]

#: Features are counted together in chunks: one bincount per chunk saves calls
#: on small nodes, while the limits keep a chunk's output (64 KB) and its index
#: and weight arrays (1 MB each) in the caches on large ones (measured fastest).
_CHUNK_CELLS = 8192
_CHUNK_ENTRIES = 1 << 17


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
    # (n_features, n_train), C-ordered when ``binned`` is Fortran-ordered: one
    # feature's bins are contiguous, so gathering a node's rows is cheap.
    by_feature = binned.T
    n_features = by_feature.shape[0]
    shape = (n_features, n_bins_max)
    sum_gradients = np.empty(shape, dtype=np.float64)
    sum_hessians = np.empty(shape, dtype=np.float64)
    count = np.empty(shape, dtype=np.int64)
    chunk = max(
        1, min(_CHUNK_CELLS // n_bins_max, _CHUNK_ENTRIES // max(1, rows.shape[0]), n_features)
    )
    # The weights of a chunk, float64 (exact for float32 values), tiled once.
    tiled_gradients = np.tile(gradients[rows].astype(np.float64), chunk)
    tiled_hessians = np.tile(hessians[rows].astype(np.float64), chunk)
    for start in range(0, n_features, chunk):
        stop = min(start + chunk, n_features)
        width = stop - start
        # Feature-major codes: within each feature the rows keep their increasing
        # order, hence scikit-learn's summation order in every bin.
        codes = np.take(by_feature[start:stop], rows, axis=1).astype(np.intp)
        codes += (np.arange(width, dtype=np.intp) * n_bins_max)[:, None]
        codes = codes.ravel()
        cells = width * n_bins_max
        sum_gradients[start:stop] = np.bincount(
            codes, tiled_gradients[: codes.shape[0]], minlength=cells
        ).reshape(width, n_bins_max)
        sum_hessians[start:stop] = np.bincount(
            codes, tiled_hessians[: codes.shape[0]], minlength=cells
        ).reshape(width, n_bins_max)
        count[start:stop] = np.bincount(codes, minlength=cells).reshape(width, n_bins_max)
    return Histogram(sum_gradients, sum_hessians, count)
