"""The guest's copy of a grown tree, and prediction through a decision callback.

The node arrays follow scikit-learn's ``TreePredictor`` (``predictor_nodes``
filled by ``_fill_predictor_arrays``): nodes in depth-first preorder, the root
first, a node's left subtree before its right one. Internal nodes keep their
unshrunk value (0 at the root) and leaves their value times the learning rate,
as in scikit-learn. A node split on a host's column records the block and the
host's opaque split id only: the host keeps the feature's threshold.

Prediction walks all trees level by level: at each level it asks one callback
per block for the rows' decisions at that block's nodes, so a remote block is
asked once per level (the round trips are the depth of the deepest tree).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, fields

import numpy as np

__all__ = ["SplitQueries", "Tree", "apply_trees", "go_left"]


@dataclass(frozen=True)
class Tree:
    """Node arrays of one tree (n_nodes entries each, depth-first preorder).

    Parameters
    ----------
    value : ndarray of float64
        Leaves: shrunk leaf value; internal nodes: unshrunk node value.
    count : ndarray of int64
        Training rows in the node.
    block : ndarray of int64
        Block of the split feature; -1 for leaves.
    feature : ndarray of int64
        Split feature within its block; -1 for leaves.
    bin_threshold : ndarray of int64
        Rows whose bin is at most this go left; 0 for leaves.
    num_threshold : ndarray of float64
        Rows whose value is at most this go left, for blocks whose thresholds
        the guest knows (its own columns); NaN elsewhere and for leaves.
    split_id : ndarray of object (str)
        The split's id at a remote block ("" for local splits and leaves).
    left, right : ndarray of int64
        Children's node indices; -1 for leaves.
    is_leaf : ndarray of bool
    gain : ndarray of float64
        Gain of the node's best split when it was evaluated, else -1.
    depth : ndarray of int64
    """

    value: np.ndarray
    count: np.ndarray
    block: np.ndarray
    feature: np.ndarray
    bin_threshold: np.ndarray
    num_threshold: np.ndarray
    split_id: np.ndarray
    left: np.ndarray
    right: np.ndarray
    is_leaf: np.ndarray
    gain: np.ndarray
    depth: np.ndarray

    @property
    def n_nodes(self) -> int:
        return self.value.shape[0]

    @property
    def n_leaves(self) -> int:
        return int(self.is_leaf.sum())

    @property
    def max_depth(self) -> int:
        return int(self.depth.max())


@dataclass(frozen=True)
class SplitQueries:
    """Rows waiting at internal nodes of one block, with those nodes' splits.

    All arrays are aligned (one entry per pending row and node).

    Parameters
    ----------
    rows : ndarray of int64
        Row positions of the data being predicted.
    feature : ndarray of int64
        Split feature within the block.
    bin_threshold : ndarray of int64
    num_threshold : ndarray of float64
        NaN where the guest does not know the threshold.
    split_id : ndarray of object (str)
        Remote split ids ("" for local splits).
    """

    rows: np.ndarray
    feature: np.ndarray
    bin_threshold: np.ndarray
    num_threshold: np.ndarray
    split_id: np.ndarray


#: ``decide(block, queries)``: True where a queried row goes to the left child.
Decide = Callable[[int, SplitQueries], np.ndarray]


def go_left(X: np.ndarray, queries: SplitQueries) -> np.ndarray:
    """Decisions of a block whose raw columns ``X`` are at hand: ``x <= threshold``."""
    return X[queries.rows, queries.feature] <= queries.num_threshold


def _concatenate(trees: Sequence[Tree]) -> tuple[Tree, np.ndarray]:
    """All trees as one node table (children re-indexed) and each tree's root."""
    sizes = np.array([tree.n_nodes for tree in trees], dtype=np.int64)
    roots = np.concatenate([[0], np.cumsum(sizes)[:-1]]).astype(np.int64)
    arrays = {
        field.name: np.concatenate([getattr(tree, field.name) for tree in trees])
        for field in fields(Tree)
    }
    shift = np.repeat(roots, sizes)
    for name in ("left", "right"):
        arrays[name] = np.where(arrays[name] >= 0, arrays[name] + shift, -1)
    return Tree(**arrays), roots


def apply_trees(trees: Sequence[Tree], n_rows: int, decide: Decide) -> np.ndarray:
    """The leaf each row reaches in each tree.

    Parameters
    ----------
    trees : sequence of Tree
    n_rows : int
        Number of rows to predict (positions ``0 .. n_rows - 1``).
    decide : callable ``(block, SplitQueries) -> ndarray of bool``
        Called once per block and level with the rows waiting at that block's
        nodes; returns True where a row goes left.

    Returns
    -------
    leaves : ndarray of int64, shape (len(trees), n_rows)
        Node index (within its tree) of the leaf reached.
    """
    leaves = np.zeros((len(trees), n_rows), dtype=np.int64)
    if not trees or n_rows == 0:
        return leaves
    table, roots = _concatenate(trees)
    # One pending (tree, row) pair per entry, at a node of the concatenated table.
    tree_of = np.repeat(np.arange(len(trees)), n_rows)
    rows = np.tile(np.arange(n_rows, dtype=np.int64), len(trees))
    node = np.repeat(roots, n_rows)
    while node.size:
        at_leaf = table.is_leaf[node]
        leaves[tree_of[at_leaf], rows[at_leaf]] = node[at_leaf] - roots[tree_of[at_leaf]]
        tree_of, rows, node = tree_of[~at_leaf], rows[~at_leaf], node[~at_leaf]
        blocks = table.block[node]
        for block in np.unique(blocks):
            here = np.flatnonzero(blocks == block)
            at = node[here]
            queries = SplitQueries(
                rows=rows[here],
                feature=table.feature[at],
                bin_threshold=table.bin_threshold[at],
                num_threshold=table.num_threshold[at],
                split_id=table.split_id[at],
            )
            left = np.asarray(decide(int(block), queries), dtype=bool)
            if left.shape != here.shape:
                raise ValueError(
                    f"block {block} answered {left.shape[0]} decisions for {here.shape[0]} rows"
                )
            node[here] = np.where(left, table.left[at], table.right[at])
    return leaves
