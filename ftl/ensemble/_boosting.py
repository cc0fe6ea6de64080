"""The boosting loop over blocks of columns, as scikit-learn's HistGradientBoosting.

Per iteration: gradients and hessians of the current raw predictions (float32),
then one tree per class (one in regression and binary classification) grown on
them, each tree's shrunk leaf values added to the raw predictions of its class
(one float64 addition per row and tree, as scikit-learn adds them). The loop
knows blocks only; whatever a protocol needs per iteration (progress, early
stopping on held-out rows, a tree cap) goes into the ``callback``.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import replace
from typing import NamedTuple

import numpy as np

from ftl.ensemble._grower import Block, grow_tree
from ftl.ensemble._plan import TreePlan
from ftl.ensemble._split import TreeParams
from ftl.ensemble._tree import Decide, Tree, apply_trees

__all__ = ["BoostingResult", "fit_boosting", "predict_raw"]

#: ``callback(iteration, trees, raw_predictions)``, called after each iteration
#: with that iteration's trees (one per class) and the training raw predictions
#: so far (a live array: copy it to keep it); a true return value stops the loop.
IterationCallback = Callable[[int, list[Tree], np.ndarray], bool | None]


class BoostingResult(NamedTuple):
    """What :func:`fit_boosting` grew.

    Attributes
    ----------
    baseline : ndarray of float64, shape (n_trees_per_iteration,)
        Raw prediction before the first tree.
    trees : list of list of Tree
        ``trees[i][k]``: the tree of iteration ``i`` for class ``k``.
    raw_predictions : ndarray of float64, shape (n_train, n_trees_per_iteration)
        Raw predictions of the training rows after the last iteration.
    """

    baseline: np.ndarray
    trees: list[list[Tree]]
    raw_predictions: np.ndarray


def fit_boosting(
    blocks: Sequence[Block],
    y: np.ndarray,
    loss,
    params: TreeParams,
    *,
    max_iter: int = 100,
    learning_rate: float = 0.1,
    bin_thresholds: Sequence[Sequence[np.ndarray] | None] | None = None,
    callback: IterationCallback | None = None,
    plan: TreePlan | None = None,
    start: BoostingResult | None = None,
) -> BoostingResult:
    """Boost trees on the blocks' columns.

    Parameters
    ----------
    blocks : sequence of Block
        Column groups in pooled column order (the guest's first).
    y : ndarray of shape (n_train,)
        Target: classes encoded ``0 .. K-1`` (as float or int) or real values.
    loss : SquaredErrorLoss, BinomialLoss or MultinomialLoss
        See :func:`ftl.ensemble._loss.make_loss`.
    params : TreeParams
    max_iter : int, default=100
        Number of boosting iterations (the callback may stop earlier).
    learning_rate : float, default=0.1
        Shrinkage of every leaf value.
    bin_thresholds : sequence of (list of ndarray or None), optional
        Per block, its bin thresholds if known here, else None (see
        :func:`~ftl.ensemble._grower.grow_tree`).
    callback : callable, optional
        ``callback(iteration, trees, raw_predictions)`` after each iteration;
        return True to stop.
    plan : TreePlan, optional
        Which block alone the trees of each iteration split on (the guest's first
        trees, mixed trees; ``TreeParams.only_block``); default: every block.
    start : BoostingResult, optional
        The iterations grown before (a resumed fit): the loop goes on after them,
        from their raw predictions, as if it had never stopped.

    Returns
    -------
    result : BoostingResult
    """
    y = np.asarray(y, dtype=np.float64)
    baseline = loss.baseline(y)
    raw = np.zeros((y.shape[0], loss.n_trees_per_iteration), dtype=np.float64, order="F")
    raw += baseline[None, :]
    trees: list[list[Tree]] = []
    if start is not None:
        raw[:] = start.raw_predictions
        trees = [list(per_iteration) for per_iteration in start.trees]
    plan = TreePlan() if plan is None else plan
    for iteration in range(len(trees), max_iter):
        gradients, hessians = loss.gradient_hessian(y, raw)
        trees.append([])
        owner = plan.owner(iteration)
        tree_params = params if owner is None else replace(params, only_block=owner)
        for k in range(loss.n_trees_per_iteration):
            tree, leaf_of_row = grow_tree(
                blocks,
                gradients[:, k],
                hessians[:, k],
                tree_params,
                shrinkage=learning_rate,
                bin_thresholds=bin_thresholds,
                tree=iteration * loss.n_trees_per_iteration + k,
            )
            raw[:, k] += tree.value[leaf_of_row]
            trees[-1].append(tree)
        if callback is not None and callback(iteration, trees[-1], raw):
            break
    return BoostingResult(baseline, trees, raw)


def predict_raw(
    baseline: np.ndarray, trees: Sequence[Sequence[Tree]], n_rows: int, decide: Decide
) -> np.ndarray:
    """Raw predictions of ``n_rows`` rows: baseline plus every tree's leaf value.

    All trees are walked together, level by level (see
    :func:`~ftl.ensemble._tree.apply_trees`); the leaf values are added in
    iteration order, as scikit-learn adds them.

    Parameters
    ----------
    baseline : ndarray of shape (n_trees_per_iteration,)
    trees : sequence of sequence of Tree
        ``trees[i][k]`` as in :class:`BoostingResult`.
    n_rows : int
    decide : callable ``(block, SplitQueries) -> ndarray of bool``

    Returns
    -------
    raw : ndarray of float64, shape (n_rows, n_trees_per_iteration)
    """
    baseline = np.asarray(baseline, dtype=np.float64)
    raw = np.zeros((n_rows, baseline.shape[0]), dtype=np.float64)
    raw += baseline[None, :]
    flat = [tree for per_iteration in trees for tree in per_iteration]
    leaves = apply_trees(flat, n_rows, decide)
    for t, tree in enumerate(flat):
        raw[:, t % baseline.shape[0]] += tree.value[leaves[t]]
    return raw
