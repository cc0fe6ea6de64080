"""Best-first growth of one tree over blocks of columns, as scikit-learn's TreeGrower.

A *block* is a group of columns whose histograms and partitions come from one
place: the guest's own columns (:class:`LocalBlock`) or a host's (a remote block
that talks to the host). The grower only sees per-bin sums, and asks the block
that owns the winning feature to partition the node's rows.

The growth is scikit-learn's (``grower.py``, 1.9), step for step, so that the
trees are the same:

* the root's gradient and hessian sums are the sums of the first feature's
  histogram (padded to ``max_bins + 1`` bins, as numpy's pairwise sum of that
  row in scikit-learn); the root's value is 0;
* a node is split when it has a split with positive gain; splittable nodes wait
  in a heap ordered by gain (``heapq`` with the same comparison, so equal gains
  leave the heap in the same order);
* splitting the node with the largest gain creates two children; both become
  leaves when the number of leaves reaches ``max_leaf_nodes`` (and every waiting
  node too) or when they reach ``max_depth``; a child with fewer than
  ``2 * min_samples_leaf`` rows becomes a leaf;
* if a child may still be split, the histogram of the child with fewer rows
  (the right one on a tie) is built by the blocks and the other one's is the
  parent's minus it; each child that may be split then gets its best split
  (left first) and joins the heap, or becomes a leaf;
* at the end every leaf value is multiplied by the learning rate.

Layered trees (SecureBoost+, ``TreeParams.host_depth``) restrict which blocks a
node at a given depth may split on (:meth:`TreeParams.allows`): a block a node may
not split on is not asked for its histogram, and offers no feature to the scan.
A tree that splits on one block only (``TreeParams.only_block``: the guest's first
trees, mixed trees) involves no other block at all: they hear nothing of it.

The block that wins a split returns the partition and, when the children will be
split further, the smaller child's histogram in one step (a remote block: one
round trip per host split).

Only ``max_features=1.0``, numerical features, no monotonic or interaction
constraints and no missing values are supported.
"""

from __future__ import annotations

import heapq
from collections.abc import Sequence
from typing import Protocol

import numpy as np

from ftl.ensemble._histogram import Histogram, build_histogram
from ftl.ensemble._split import SplitInfo, TreeParams, find_best_split, split_at
from ftl.ensemble._tree import Tree

__all__ = ["Block", "LocalBlock", "grow_tree"]


class Block(Protocol):
    """A group of columns the grower can ask for histograms and partitions.

    ``begin_tree`` and ``end_tree`` frame each tree (one per class and iteration)
    the block takes part in (:meth:`TreeParams.takes_part`); a block hears nothing
    of the other trees. Nodes are numbered per tree in creation order: the root is
    0, the children of a split get the next two numbers (left, then right). The
    root's histogram is asked first. Per split of node ``N`` won by block ``b``
    into children ``L`` and ``R`` the grower calls ``blocks[b].split(N, rows,
    feature, bin_threshold, (L, R), asked)``, where ``asked`` is the child whose
    histogram the blocks will build next (the smaller one, the right one on a tie;
    -1 if none or if ``b`` may not split it); the block may return that histogram
    with the partition. Then ``partitioned(N, L, R, left_rows, right_rows)`` on
    every block of the tree, then, if a child may still be split,
    ``histogram(smaller_child, its_rows)`` on every block that did not return it
    (the sibling's histogram is derived by subtraction).
    """

    n_features: int
    n_bins_non_missing: np.ndarray
    #: Whether the block's features reach the scan in an order other than its
    #: columns' (a host's pseudonyms), so that it breaks ties itself (optional:
    #: false when absent).
    breaks_ties: bool

    def begin_tree(self, gradients: np.ndarray, hessians: np.ndarray, tree: int) -> None:
        """Start tree number ``tree`` (over all iterations and classes): the float32
        (n_train,) gradients and hessians of every row."""

    def histogram(self, node: int, rows: np.ndarray) -> Histogram:
        """Histogram over this block's features of the sorted training rows ``rows``."""

    def split(
        self,
        node: int,
        rows: np.ndarray,
        feature: int,
        bin_threshold: int,
        children: tuple[int, int],
        asked: int,
        *,
        ties: list[tuple[int, int, int]] | None = None,
    ) -> tuple:
        """Apply this block's split at ``node``: mask over ``rows`` (True = left), id,
        and the histogram of child ``asked`` if the block built it (else None).

        ``ties`` (given only to a block whose ``breaks_ties`` is true, and only when
        the scan found them): the other ``(feature, bin_threshold, asked)`` of the
        same gain; the block applies the one its column order puts first and returns
        its index as a fourth element (0: the scan's own pick, ``i``: ``ties[i - 1]``).
        """

    def partitioned(
        self, node: int, left: int, right: int, left_rows: np.ndarray, right_rows: np.ndarray
    ) -> None:
        """Node ``node`` (split by any block) now has children ``left`` and ``right``."""

    def end_tree(self) -> None:
        """The tree is complete."""


class LocalBlock:
    """Columns held in this process (the guest's own, or any in plaintext tests).

    Parameters
    ----------
    binned_columns : ndarray of uint8, shape (n_train, n_features)
        Bin indices of the training rows.
    n_bins_non_missing : ndarray of int, shape (n_features,)
        Number of bins of each column.
    bin_thresholds : list of ndarray
        Per column, the upper bounds of its bins (to record real thresholds).
    """

    def __init__(self, binned_columns, n_bins_non_missing, bin_thresholds):
        self.binned = np.asfortranarray(binned_columns, dtype=np.uint8)
        self.n_bins_non_missing = np.asarray(n_bins_non_missing, dtype=np.int64)
        self.bin_thresholds = list(bin_thresholds)
        self.n_features = self.binned.shape[1]
        self._n_bins = int(self.n_bins_non_missing.max(initial=1))
        self._gradients = self._hessians = None

    def begin_tree(self, gradients: np.ndarray, hessians: np.ndarray, tree: int = 0) -> None:
        self._gradients, self._hessians = gradients, hessians

    def histogram(self, node: int, rows: np.ndarray) -> Histogram:
        return build_histogram(self.binned, self._gradients, self._hessians, rows, self._n_bins)

    def split(
        self,
        node: int,
        rows: np.ndarray,
        feature: int,
        bin_threshold: int,
        children: tuple[int, int] = (-1, -1),
        asked: int = -1,
    ) -> tuple[np.ndarray, str, None]:
        """The mask; the histogram is built when asked for, like every block's."""
        return self.binned[rows, feature] <= bin_threshold, "", None

    def partitioned(self, node, left, right, left_rows, right_rows) -> None:
        """Nothing to do: the rows are at hand."""

    def end_tree(self) -> None:
        self._gradients = self._hessians = None


#: The histogram of a block a node may not split on: no feature, the scan skips it.
_NO_FEATURES = Histogram(np.zeros((0, 1)), np.zeros((0, 1)), np.zeros((0, 1), dtype=np.int64))


class _Node:
    """A node while the tree grows; ordered by gain for the heap, as scikit-learn's."""

    def __init__(self, node_id, depth, rows, sum_gradients, sum_hessians, value):
        self.node_id = node_id
        self.depth = depth
        self.rows = rows
        self.sum_gradients = sum_gradients
        self.sum_hessians = sum_hessians
        self.value = value
        self.histograms: list[Histogram] | None = None
        self.split: SplitInfo | None = None
        self.split_id = ""
        self.is_leaf = False
        self.left: _Node | None = None
        self.right: _Node | None = None

    def __lt__(self, other: _Node) -> bool:
        return self.split.gain > other.split.gain


def _padded_sum(values: np.ndarray, n_bins: int) -> float:
    """Sum of one histogram row as numpy sums scikit-learn's ``n_bins``-wide row
    (pairwise: the width fixes the order of the additions)."""
    row = np.zeros(max(n_bins, values.shape[0]), dtype=np.float64)
    row[: values.shape[0]] = values
    return row.sum()


class _Grower:
    """State of one tree's growth; see the module docstring for the rules."""

    def __init__(self, blocks: Sequence[Block], params: TreeParams):
        self.blocks = list(blocks)
        self.params = params
        #: The blocks that hear of the tree (the others may not split any node).
        self.taking_part = [blk for b, blk in enumerate(self.blocks) if params.takes_part(b)]
        self.n_bins_non_missing = [blk.n_bins_non_missing for blk in self.blocks]
        self.splittable: list[_Node] = []
        self.leaves: list[_Node] = []
        self.n_nodes = 0

    def _new_node(self, depth, rows, sum_gradients, sum_hessians, value) -> _Node:
        node = _Node(self.n_nodes, depth, rows, sum_gradients, sum_hessians, value)
        self.n_nodes += 1
        return node

    def _histogram(self, block: int, node: _Node) -> Histogram:
        """A block's histogram of ``node``; a block the node may not split on
        (layered trees) is not asked and offers no feature."""
        if not self.params.allows(block, node.depth):
            return _NO_FEATURES
        return self.blocks[block].histogram(node.node_id, node.rows)

    def _histograms(
        self, node: _Node, built: dict[int, Histogram] | None = None
    ) -> list[Histogram]:
        """``node``'s histogram of every block; ``built``: those a block already
        returned (with its split)."""
        built = built or {}
        return [
            built[b] if b in built else self._histogram(b, node) for b in range(len(self.blocks))
        ]

    def _sibling_histograms(
        self, node: _Node, parent: list[Histogram], sibling: list[Histogram]
    ) -> list[Histogram]:
        """``node``'s histograms: the parent's minus its sibling's, or built when the
        block could not split the parent (a layered tree's first guest layer)."""
        histograms = []
        for b, (p, s) in enumerate(zip(parent, sibling, strict=True)):
            if self.params.allows(b, node.depth - 1) and self.params.allows(b, node.depth):
                histograms.append(p - s)
            else:
                histograms.append(self._histogram(b, node))
        return histograms

    def _finalize(self, node: _Node) -> None:
        node.is_leaf = True
        node.histograms = None
        self.leaves.append(node)

    def _evaluate(self, node: _Node) -> None:
        """Best split of ``node``: into the heap if it gains, else a leaf."""
        node.split = find_best_split(
            node.histograms,
            self.n_bins_non_missing,
            sum_gradients=node.sum_gradients,
            sum_hessians=node.sum_hessians,
            n_samples=node.rows.shape[0],
            value=node.value,
            params=self.params,
        )
        if node.split is None or node.split.gain <= 0:
            self._finalize(node)
        else:
            heapq.heappush(self.splittable, node)

    def grow_root(self, n_rows: int) -> _Node:
        rows = np.arange(n_rows, dtype=np.int64)
        root = self._new_node(0, rows, 0.0, 0.0, 0.0)
        histograms = self._histograms(root)
        first = next((h for h in histograms if h.n_features), None)
        if first is None:
            raise ValueError("no block has any feature")
        width = self.params.max_bins + 1
        root.sum_gradients = _padded_sum(first.sum_gradients[0], width)
        root.sum_hessians = _padded_sum(first.sum_hessians[0], width)
        if n_rows < 2 * self.params.min_samples_leaf:
            self._finalize(root)
        elif root.sum_hessians < self.params.min_hessian_to_split:
            self._finalize(root)
        else:
            root.histograms = histograms
            self._evaluate(root)
        return root

    def _split_at(self, node: _Node, split: SplitInfo, feature: int, bin_threshold: int):
        """The split of ``node`` at another feature and bin of ``split``'s block, with
        the same gain (a tie)."""
        return split_at(
            node.histograms[split.block],
            split.block,
            feature,
            bin_threshold,
            split.gain,
            sum_gradients=node.sum_gradients,
            sum_hessians=node.sum_hessians,
            n_samples=node.rows.shape[0],
            params=self.params,
        )

    def split_next(self) -> None:
        node = heapq.heappop(self.splittable)
        split, params = node.split, self.params
        depth = node.depth + 1
        # What happens to the children is known before the partition (the counts
        # come from the histograms), so the winning block can be asked for the
        # next histogram with its split.
        n_leaves = len(self.leaves) + len(self.splittable) + 2
        leaves_full = params.max_leaf_nodes is not None and n_leaves == params.max_leaf_nodes
        deepest = params.max_depth is not None and depth == params.max_depth
        left_id, right_id = self.n_nodes, self.n_nodes + 1

        def children(split: SplitInfo) -> tuple[list[bool], int, int]:
            """Which children are too small to split, the smaller's id, the asked one."""
            small = [n < 2 * params.min_samples_leaf for n in (split.n_left, split.n_right)]
            grows = not (leaves_full or deepest or all(small))
            smaller_id = left_id if split.n_left < split.n_right else right_id
            asked = smaller_id if grows and params.allows(split.block, depth) else -1
            return small, smaller_id, asked

        small, smaller_id, asked = children(split)
        block = self.blocks[split.block]
        args = (node.node_id, node.rows, split.feature, split.bin_threshold, (left_id, right_id))
        if not (split.ties and getattr(block, "breaks_ties", False)):
            mask, node.split_id, built = block.split(*args, asked)
        else:
            # Splits of the same gain: the block takes the one its column order puts
            # first (scikit-learn's choice), which only it knows. A block that shows
            # its columns in their order (``breaks_ties`` false) needs no say: the
            # scan's pick is already the first.
            candidates = [split, *(self._split_at(node, split, *tie) for tie in split.ties)]
            ties = [(c.feature, c.bin_threshold, children(c)[2]) for c in candidates[1:]]
            mask, node.split_id, built, chosen = block.split(*args, asked, ties=ties)
            split = node.split = candidates[chosen]
            small, smaller_id, asked = children(split)
        mask = np.asarray(mask, dtype=bool)
        if mask.shape != node.rows.shape or int(mask.sum()) != split.n_left:
            raise ValueError(
                f"block {split.block} partitioned node {node.node_id} into "
                f"{int(mask.sum())} left rows, its histogram said {split.n_left}"
            )
        left = self._new_node(
            depth,
            node.rows[mask],
            split.sum_gradient_left,
            split.sum_hessian_left,
            split.value_left,
        )
        right = self._new_node(
            depth,
            node.rows[~mask],
            split.sum_gradient_right,
            split.sum_hessian_right,
            split.value_right,
        )
        node.left, node.right = left, right
        for blk in self.taking_part:
            blk.partitioned(node.node_id, left.node_id, right.node_id, left.rows, right.rows)
        parent_histograms, node.histograms, node.rows = node.histograms, None, None

        if leaves_full:
            self._finalize(left)
            self._finalize(right)
            while self.splittable:
                self._finalize(self.splittable.pop())
            return
        if deepest:
            self._finalize(left)
            self._finalize(right)
            return
        for child, is_small in zip((left, right), small, strict=True):
            if is_small:
                self._finalize(child)
        if left.is_leaf and right.is_leaf:
            return
        smaller, larger = (left, right) if smaller_id == left.node_id else (right, left)
        smaller.histograms = self._histograms(
            smaller, {} if built is None or asked < 0 else {split.block: built}
        )
        larger.histograms = self._sibling_histograms(larger, parent_histograms, smaller.histograms)
        for child in (left, right):
            if child.is_leaf:
                child.histograms = None
            else:
                self._evaluate(child)


def _to_tree(root: _Node, bin_thresholds, n_rows: int) -> tuple[Tree, np.ndarray]:
    """Node arrays in depth-first preorder, and the leaf of each training row."""
    order: list[_Node] = []
    stack = [root]
    while stack:
        node = stack.pop()
        order.append(node)
        if not node.is_leaf:
            stack.append(node.right)
            stack.append(node.left)
    index = {id(node): i for i, node in enumerate(order)}
    n = len(order)
    tree = Tree(
        value=np.array([node.value for node in order], dtype=np.float64),
        count=np.zeros(n, dtype=np.int64),
        block=np.full(n, -1, dtype=np.int64),
        feature=np.full(n, -1, dtype=np.int64),
        bin_threshold=np.zeros(n, dtype=np.int64),
        num_threshold=np.full(n, np.nan),
        split_id=np.full(n, "", dtype=object),
        left=np.full(n, -1, dtype=np.int64),
        right=np.full(n, -1, dtype=np.int64),
        is_leaf=np.array([node.is_leaf for node in order], dtype=bool),
        gain=np.array([node.split.gain if node.split is not None else -1.0 for node in order]),
        depth=np.array([node.depth for node in order], dtype=np.int64),
    )
    leaf_of_row = np.empty(n_rows, dtype=np.int64)
    for i, node in enumerate(order):
        if node.is_leaf:
            tree.count[i] = node.rows.shape[0]
            leaf_of_row[node.rows] = i
            continue
        split = node.split
        tree.count[i] = split.n_left + split.n_right
        tree.block[i], tree.feature[i] = split.block, split.feature
        tree.bin_threshold[i] = split.bin_threshold
        thresholds = bin_thresholds[split.block] if bin_thresholds is not None else None
        if thresholds is not None:
            tree.num_threshold[i] = thresholds[split.feature][split.bin_threshold]
        tree.split_id[i] = node.split_id
        tree.left[i], tree.right[i] = index[id(node.left)], index[id(node.right)]
    return tree, leaf_of_row


def grow_tree(
    blocks: Sequence[Block],
    gradients: np.ndarray,
    hessians: np.ndarray,
    params: TreeParams,
    *,
    shrinkage: float = 1.0,
    bin_thresholds: Sequence[Sequence[np.ndarray] | None] | None = None,
    tree: int = 0,
) -> tuple[Tree, np.ndarray]:
    """Grow one tree on the blocks' columns.

    Parameters
    ----------
    blocks : sequence of Block
        Column groups in pooled column order (the guest's first).
    gradients, hessians : ndarray of float32, shape (n_train,)
        Per-row gradient and hessian of this tree.
    params : TreeParams
    shrinkage : float, default=1.0
        Learning rate, applied to the leaf values at the end.
    bin_thresholds : sequence of (list of ndarray or None), optional
        Per block, the bin thresholds if known here (they fill
        ``Tree.num_threshold``), else None.
    tree : int, default=0
        The tree's number over all iterations and classes (the blocks hear it).

    Returns
    -------
    tree : Tree
    leaf_of_row : ndarray of int64, shape (n_train,)
        Node index of the leaf each training row falls in.
    """
    gradients = np.ascontiguousarray(gradients, dtype=np.float32)
    hessians = np.ascontiguousarray(hessians, dtype=np.float32)
    grower = _Grower(blocks, params)
    for blk in grower.taking_part:
        blk.begin_tree(gradients, hessians, tree)
    try:
        root = grower.grow_root(gradients.shape[0])
        while grower.splittable:
            grower.split_next()
    finally:
        for blk in grower.taking_part:
            blk.end_tree()
    for leaf in grower.leaves:
        leaf.value *= shrinkage
    return _to_tree(root, bin_thresholds, gradients.shape[0])
