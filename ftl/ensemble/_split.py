"""Best split of a node over the histograms of all blocks, as scikit-learn finds it.

scikit-learn's splitter (``splitting.pyx``, numerical features without missing
values) scans each feature's bins from left to right, accumulating the left
child's gradient, hessian and count sums bin by bin, and keeps a bin when

* both children have at least ``min_samples_leaf`` rows,
* both children have a hessian sum of at least ``min_hessian_to_split``,
* the gain beats the best so far and ``min_gain_to_split``.

The last bin is never a threshold (the right child would be empty). The gain of
a split is ``loss(node) - loss(left) - loss(right)`` with ``loss = G * value``,
``value = -G / (H + l2_regularization + 1e-15)`` and ``loss(node)`` taken from
the node's own value (0 at the root). Ties go to the first bin of a feature and
to the first feature in the pooled column order (blocks in order, features in
order).

The scan here is vectorised: ``np.cumsum`` adds sequentially along the bins, so
the cumulated sums, and hence every gain, are the very floats of scikit-learn's
loop; ``np.argmax`` keeps the first maximum, as the strict ``>`` of the loop
does. The constraints on the right child only grow stricter along the bins, so
scikit-learn's early ``break`` and a mask over all bins select the same bins.

Only what scikit-learn does with ``max_features=1.0``, no categorical features,
no monotonic or interaction constraints and no missing values is supported.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from ftl.ensemble._histogram import Histogram

__all__ = ["SplitInfo", "TreeParams", "find_best_split", "node_value", "split_at"]

#: Term scikit-learn adds to the denominator of a node value.
_VALUE_EPS = 1e-15


@dataclass(frozen=True)
class TreeParams:
    """How a tree grows (scikit-learn's names and defaults).

    Parameters
    ----------
    max_leaf_nodes : int or None, default=31
        Maximum number of leaves; ``None`` for no limit.
    max_depth : int or None, default=None
        Maximum depth (the root has depth 0); ``None`` for no limit.
    min_samples_leaf : int, default=20
        Minimum number of training rows in a leaf.
    l2_regularization : float, default=0.0
        L2 penalty on leaf values.
    min_hessian_to_split : float, default=1e-3
        Minimum hessian sum in each child.
    min_gain_to_split : float, default=0.0
        A split must gain more than this.
    max_bins : int, default=255
        Bins per feature the binning allowed; scikit-learn's histograms have
        ``max_bins + 1`` bins, which fixes how it sums the root's gradients.
    host_depth : int or None, default=None
        SecureBoost+'s layered trees: nodes above this depth split on the hosts'
        blocks only, deeper nodes on the guest's block (block 0) only; None: every
        block everywhere (see :meth:`allows`).
    only_block : int or None, default=None
        The tree splits on this block only, at every depth: the guest's (0) in
        SecureBoost's "complete secure" first trees, each party's in turn in
        SecureBoost+'s mixed trees; the other blocks take no part in the tree.
    """

    max_leaf_nodes: int | None = 31
    max_depth: int | None = None
    min_samples_leaf: int = 20
    l2_regularization: float = 0.0
    min_hessian_to_split: float = 1e-3
    min_gain_to_split: float = 0.0
    max_bins: int = 255
    host_depth: int | None = None
    only_block: int | None = None

    def allows(self, block: int, depth: int) -> bool:
        """Whether a node at ``depth`` may split on ``block`` (0 is the guest's): the
        one rule of which blocks the scan may choose."""
        if self.only_block is not None:
            return block == self.only_block
        if self.host_depth is None:
            return True
        return (block != 0) == (depth < self.host_depth)

    def takes_part(self, block: int) -> bool:
        """Whether ``block`` may split any node of the tree; a block that may not
        hears nothing of the tree (no gradients, no partition)."""
        return self.only_block is None or block == self.only_block


@dataclass(frozen=True)
class SplitInfo:
    """The best split of a node.

    Parameters
    ----------
    block : int
        Index of the block (party's column group) holding the feature.
    feature : int
        Index of the feature within its block.
    bin_threshold : int
        Rows whose bin is at most this go to the left child.
    gain : float
    sum_gradient_left, sum_gradient_right : float
    sum_hessian_left, sum_hessian_right : float
    n_left, n_right : int
        Number of training rows of each child.
    value_left, value_right : float
        Unshrunk values of the children.
    ties : tuple of (int, int)
        The other ``(feature, bin_threshold)`` of the block with exactly this gain,
        in the block's feature order (each feature's first best bin). scikit-learn
        takes the first in column order; a host, whose features the guest knows by
        pseudonym only, picks among them by its own column order.
    """

    block: int
    feature: int
    bin_threshold: int
    gain: float
    sum_gradient_left: float
    sum_gradient_right: float
    sum_hessian_left: float
    sum_hessian_right: float
    n_left: int
    n_right: int
    value_left: float
    value_right: float
    ties: tuple[tuple[int, int], ...] = ()


def node_value(sum_gradient, sum_hessian, l2_regularization: float):
    """Newton step ``-G / (H + l2 + 1e-15)`` of a node (scalar or array)."""
    return -sum_gradient / (sum_hessian + l2_regularization + _VALUE_EPS)


def _block_best(
    histogram: Histogram,
    n_bins_non_missing: np.ndarray,
    sum_gradients: float,
    sum_hessians: float,
    n_samples: int,
    value: float,
    params: TreeParams,
) -> tuple[np.ndarray, np.ndarray]:
    """Best gain (``-inf`` if none) and its bin, per feature of one block."""
    n_features, n_bins = histogram.sum_gradients.shape
    if n_features == 0:
        return np.empty(0), np.empty(0, dtype=np.intp)
    gradient_left = np.cumsum(histogram.sum_gradients, axis=1)
    hessian_left = np.cumsum(histogram.sum_hessians, axis=1)
    n_left = np.cumsum(histogram.count, axis=1)
    gradient_right = sum_gradients - gradient_left
    hessian_right = sum_hessians - hessian_left
    n_right = n_samples - n_left
    candidate = np.arange(n_bins)[None, :] < (np.asarray(n_bins_non_missing)[:, None] - 1)
    candidate &= n_left >= params.min_samples_leaf
    candidate &= n_right >= params.min_samples_leaf
    candidate &= hessian_left >= params.min_hessian_to_split
    candidate &= hessian_right >= params.min_hessian_to_split
    l2 = params.l2_regularization
    with np.errstate(divide="ignore", invalid="ignore"):
        gain = sum_gradients * value - gradient_left * node_value(gradient_left, hessian_left, l2)
        gain -= gradient_right * node_value(gradient_right, hessian_right, l2)
    gain = np.where(candidate & (gain > params.min_gain_to_split), gain, -np.inf)
    best_bin = np.argmax(gain, axis=1)
    return gain[np.arange(n_features), best_bin], best_bin


def find_best_split(
    histograms: Sequence[Histogram],
    n_bins_non_missing: Sequence[np.ndarray],
    *,
    sum_gradients: float,
    sum_hessians: float,
    n_samples: int,
    value: float,
    params: TreeParams,
) -> SplitInfo | None:
    """The best split of a node over all blocks, or None if no split is allowed.

    Parameters
    ----------
    histograms : sequence of Histogram
        The node's histogram of each block, blocks in pooled column order.
    n_bins_non_missing : sequence of ndarray of int
        Per block, the number of bins of each feature.
    sum_gradients, sum_hessians : float
        The node's gradient and hessian sums.
    n_samples : int
        The node's number of training rows.
    value : float
        The node's own (unshrunk) value; 0 at the root, as in scikit-learn.
    params : TreeParams

    Returns
    -------
    split : SplitInfo or None
    """
    best = None
    for block, (histogram, n_bins) in enumerate(zip(histograms, n_bins_non_missing, strict=True)):
        gains, bins = _block_best(
            histogram, n_bins, sum_gradients, sum_hessians, n_samples, value, params
        )
        if gains.size == 0:
            continue
        feature = int(np.argmax(gains))
        # Strictly greater: an earlier block wins a tie, as an earlier feature does.
        if np.isfinite(gains[feature]) and (best is None or gains[feature] > best[0]):
            tied = np.flatnonzero(gains == gains[feature])[1:]
            ties = tuple((int(f), int(bins[f])) for f in tied)
            best = (gains[feature], block, feature, int(bins[feature]), ties)
    if best is None:
        return None
    gain, block, feature, bin_threshold, ties = best
    return split_at(
        histograms[block],
        block,
        feature,
        bin_threshold,
        gain,
        sum_gradients=sum_gradients,
        sum_hessians=sum_hessians,
        n_samples=n_samples,
        params=params,
        ties=ties,
    )


def split_at(
    histogram: Histogram,
    block: int,
    feature: int,
    bin_threshold: int,
    gain: float,
    *,
    sum_gradients: float,
    sum_hessians: float,
    n_samples: int,
    params: TreeParams,
    ties: tuple[tuple[int, int], ...] = (),
) -> SplitInfo:
    """The split of a node at ``feature`` and ``bin_threshold`` of ``block`` (whose
    histogram is ``histogram``), with its ``gain``: the children's sums and values."""
    gradient_left = float(np.cumsum(histogram.sum_gradients[feature])[bin_threshold])
    hessian_left = float(np.cumsum(histogram.sum_hessians[feature])[bin_threshold])
    n_left = int(histogram.count[feature, : bin_threshold + 1].sum())
    gradient_right = sum_gradients - gradient_left
    hessian_right = sum_hessians - hessian_left
    l2 = params.l2_regularization
    return SplitInfo(
        block=block,
        feature=feature,
        bin_threshold=bin_threshold,
        gain=float(gain),
        sum_gradient_left=gradient_left,
        sum_gradient_right=float(gradient_right),
        sum_hessian_left=hessian_left,
        sum_hessian_right=float(hessian_right),
        n_left=n_left,
        n_right=n_samples - n_left,
        value_left=float(node_value(gradient_left, hessian_left, l2)),
        value_right=float(node_value(gradient_right, hessian_right, l2)),
        ties=ties,
    )
