"""Early stopping of federated gradient boosting, as ``HistGradientBoosting*`` stops.

scikit-learn scores the model before the first tree and after every iteration --
the negative loss (``scoring="loss"``) or a scorer -- on the validation rows (or,
without them, the training rows; a scorer on at most 10 000 of them) and stops
when none of the last ``n_iter_no_change`` scores beats the one before them by
more than ``tol``. The training rows' raw predictions are the boosting loop's;
the validation rows' are accumulated tree by tree from the prediction walk, which
asks the hosts about their nodes (the guest never sees a host's columns).
"""

from __future__ import annotations

from contextlib import contextmanager

import numpy as np
from sklearn.base import is_classifier
from sklearn.metrics import check_scoring
from sklearn.utils import resample

from ftl.ensemble._tree import Tree

__all__ = ["EarlyStopping", "should_stop"]

#: Training rows a scorer scores at most (scikit-learn's ``_get_small_trainset``).
_SMALL_TRAINSET = 10_000


def should_stop(scores: list[float], n_iter_no_change: int, tol: float) -> bool:
    """Whether none of the last ``n_iter_no_change`` scores beats the one before
    them by more than ``tol`` (higher scores are better)."""
    reference = n_iter_no_change + 1
    if len(scores) < reference:
        return False
    best_before = scores[-reference] + tol
    return not any(score > best_before for score in scores[-reference + 1 :])


@contextmanager
def _raw_predictions(estimator, raw: np.ndarray):
    """The estimator's raw predictions are ``raw`` meanwhile (for a scorer's call)."""
    estimator._raw_predict = lambda X: raw
    try:
        yield estimator
    finally:
        del estimator._raw_predict


class EarlyStopping:
    """Scores of one fit and the decision to stop (a boosting loop's callback).

    Parameters
    ----------
    estimator : BaseFederatedGradientBoosting
        The estimator being fitted (its ``scoring``, ``n_iter_no_change``, ``tol``).
    loss : loss object
    y_train, y_val : ndarray
        Encoded targets of the training and validation rows (``y_val`` None: the
        training rows are scored).
    validation_leaves : callable
        ``validation_leaves(trees) -> leaves`` of the validation rows (the walk).
    baseline : ndarray
        Raw prediction before the first tree.
    seed : int
        The fit's seed (the scorer's subsample of training rows).
    """

    def __init__(self, estimator, loss, y_train, y_val, validation_leaves, baseline, seed):
        self.estimator = estimator
        self.loss = loss
        self.y_train = y_train
        self.y_val = y_val
        self.validation_leaves = validation_leaves
        self.train_score: list[float] = []
        self.validation_score: list[float] = []
        self.scorer = (
            None if estimator.scoring == "loss" else check_scoring(estimator, estimator.scoring)
        )
        self.small = slice(None)
        if self.scorer is not None and y_train.shape[0] > _SMALL_TRAINSET:
            self.small = resample(
                np.arange(y_train.shape[0]),
                n_samples=_SMALL_TRAINSET,
                replace=False,
                random_state=seed,
                stratify=y_train if is_classifier(estimator) else None,
            )
        self.raw_val = None
        if y_val is not None:
            self.raw_val = np.zeros((y_val.shape[0], baseline.shape[0]))
            self.raw_val += baseline[None, :]
        raw_train = np.zeros((y_train.shape[0], baseline.shape[0]))
        raw_train += baseline[None, :]
        self._record(raw_train)

    def _score(self, raw: np.ndarray, y: np.ndarray) -> float:
        if self.scorer is None:
            return -self.loss.mean_loss(y, raw)
        est = self.estimator
        labels = est.classes_[y.astype(int)] if is_classifier(est) else y
        with _raw_predictions(est, raw):
            return float(self.scorer(est, None, labels))

    def _record(self, raw_train: np.ndarray) -> bool:
        self.train_score.append(self._score(raw_train[self.small], self.y_train[self.small]))
        if self.y_val is None:
            scores = self.train_score
        else:
            self.validation_score.append(self._score(self.raw_val, self.y_val))
            scores = self.validation_score
        est = self.estimator
        return should_stop(scores, est.n_iter_no_change, est.tol)

    def __call__(self, iteration: int, trees: list[Tree], raw_train: np.ndarray) -> bool:
        """After an iteration: add its trees to the validation rows, score, decide."""
        if self.y_val is not None:
            leaves = self.validation_leaves(trees)
            for k, tree in enumerate(trees):
                self.raw_val[:, k] += tree.value[leaves[k]]
        return self._record(raw_train)
