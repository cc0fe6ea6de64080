"""Losses of gradient boosting, arithmetic for arithmetic like scikit-learn's.

``HistGradientBoosting*`` computes per-row gradients and hessians in float64 and
stores them as float32 (``HalfBinomialLoss``, ``HalfMultinomialLoss``,
``HalfSquaredError`` of ``sklearn._loss``); the trees are grown on those float32
values. The classes below evaluate the same formulas, in the same order, with
numpy, so that the float32 values -- and hence the histograms and the trees --
are the same (the tests check this bit for bit). The one place the two could
part is ``exp``: numpy may use its own vectorised ``exp`` where scikit-learn
calls the C library's, and on CPUs where the two differ in the last float64 bit
a float32 gradient can move by one unit in the last place in a rare row.

The baseline (raw prediction of an intercept-only model) is computed the way
scikit-learn computes it as well. Raw predictions have shape
``(n_samples, n_trees_per_iteration)``; gradients and hessians are returned as
Fortran-ordered float32 arrays of that shape, so that each tree's column is
contiguous.
"""

from __future__ import annotations

import numpy as np
from scipy.special import expit, logit
from scipy.stats import gmean

__all__ = ["BinomialLoss", "MultinomialLoss", "SquaredErrorLoss", "make_loss"]


def _as_raw(raw: np.ndarray, n_columns: int) -> np.ndarray:
    raw = np.asarray(raw, dtype=np.float64)
    if raw.ndim == 1:
        raw = raw[:, None]
    if raw.ndim != 2 or raw.shape[1] != n_columns:
        raise ValueError(f"raw predictions must have {n_columns} column(s), got {raw.shape}")
    return raw


class SquaredErrorLoss:
    """Half squared error ``(raw - y)**2 / 2`` for regression (identity link).

    The hessian is constant (1), as in scikit-learn, where the splitter then
    uses the row counts as hessian sums: with float32 ones the float64 hessian
    sums are exactly those counts.
    """

    n_trees_per_iteration = 1
    constant_hessian = True

    def baseline(self, y: np.ndarray) -> np.ndarray:
        """Mean of ``y``: the raw prediction before the first tree, shape (1,)."""
        return np.atleast_1d(np.average(np.asarray(y, dtype=np.float64), axis=0))

    def gradient_hessian(self, y: np.ndarray, raw: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """float32 ``raw - y`` and ones, each of shape (n_samples, 1)."""
        raw = _as_raw(raw, 1)
        gradient = np.asfortranarray((raw[:, 0] - y).astype(np.float32)[:, None])
        return gradient, np.ones_like(gradient, order="F")

    def mean_loss(self, y: np.ndarray, raw: np.ndarray) -> float:
        """Average half squared error."""
        return float(np.average(0.5 * (_as_raw(raw, 1)[:, 0] - y) ** 2))


class BinomialLoss:
    """Half binomial deviance with logit link, for two classes encoded 0/1."""

    n_trees_per_iteration = 1
    constant_hessian = False

    def baseline(self, y: np.ndarray) -> np.ndarray:
        """Logit of the mean of ``y`` (clipped away from 0 and 1), shape (1,)."""
        eps = 10 * np.finfo(np.float64).eps
        mean = np.average(np.asarray(y, dtype=np.float64), axis=0)
        return np.atleast_1d(logit(np.clip(mean, eps, 1 - eps)))

    def gradient_hessian(self, y: np.ndarray, raw: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """float32 ``expit(raw) - y`` and ``expit(raw) * (1 - expit(raw))``.

        Written as scikit-learn's ``cgrad_hess_half_binomial``: through
        ``exp(-raw)`` above ``raw = -37``, through a first-order expansion below.
        """
        raw = _as_raw(raw, 1)[:, 0]
        y = np.asarray(y, dtype=np.float64)
        gradient = np.empty(raw.shape[0], dtype=np.float64)
        hessian = np.empty(raw.shape[0], dtype=np.float64)
        usual = raw > -37
        exp_neg = np.exp(-raw[usual])
        yu = y[usual]
        gradient[usual] = ((1 - yu) - yu * exp_neg) / (1 + exp_neg)
        hessian[usual] = exp_neg / ((1 + exp_neg) * (1 + exp_neg))
        exp_pos = np.exp(raw[~usual])
        gradient[~usual] = exp_pos - y[~usual]
        hessian[~usual] = exp_pos
        return (
            np.asfortranarray(gradient.astype(np.float32)[:, None]),
            np.asfortranarray(hessian.astype(np.float32)[:, None]),
        )

    def mean_loss(self, y: np.ndarray, raw: np.ndarray) -> float:
        """Average half binomial deviance ``log(1 + exp(raw)) - y * raw``."""
        raw = _as_raw(raw, 1)[:, 0]
        return float(np.average(np.logaddexp(0.0, raw) - y * raw))

    def predict_proba(self, raw: np.ndarray) -> np.ndarray:
        """Class probabilities, shape (n_samples, 2)."""
        raw = _as_raw(raw, 1)[:, 0]
        proba = np.empty((raw.shape[0], 2), dtype=np.float64)
        proba[:, 1] = expit(raw)
        proba[:, 0] = 1 - proba[:, 1]
        return proba


class MultinomialLoss:
    """Half multinomial deviance with softmax link, for classes encoded 0..K-1.

    One tree per class and iteration; raw predictions are centred as
    scikit-learn's symmetric multinomial logit centres them.

    Parameters
    ----------
    n_classes : int
        Number of classes, at least 3.
    """

    constant_hessian = False

    def __init__(self, n_classes: int):
        self.n_classes = n_classes

    @property
    def n_trees_per_iteration(self) -> int:
        return self.n_classes

    def baseline(self, y: np.ndarray) -> np.ndarray:
        """Symmetric logit of the class frequencies, shape (n_classes,)."""
        y = np.asarray(y, dtype=np.float64)
        eps = np.finfo(np.float64).eps
        freq = np.zeros(self.n_classes, dtype=np.float64)
        for k in range(self.n_classes):
            freq[k] = np.clip(np.average(y == k, axis=0), eps, 1 - eps)
        return np.log(freq[None, :] / gmean(freq[None, :], axis=1)[:, None]).reshape(-1)

    def _unnormalised(self, raw: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """``exp(raw - max)`` per class and their sum, added class by class as
        scikit-learn's ``sum_exp_minus_max`` adds them."""
        shifted = np.exp(raw - raw.max(axis=1, keepdims=True))
        total = np.zeros(raw.shape[0], dtype=np.float64)
        for k in range(self.n_classes):
            total += shifted[:, k]
        return shifted, total

    def gradient_hessian(self, y: np.ndarray, raw: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """float32 ``p_k - (y == k)`` and ``p_k * (1 - p_k)``, shape (n_samples, K)."""
        raw = _as_raw(raw, self.n_classes)
        shifted, total = self._unnormalised(raw)
        proba = shifted / total[:, None]
        onehot = np.asarray(y)[:, None] == np.arange(self.n_classes)[None, :]
        gradient = np.asfortranarray((proba - onehot).astype(np.float32))
        hessian = np.asfortranarray((proba * (1.0 - proba)).astype(np.float32))
        return gradient, hessian

    def mean_loss(self, y: np.ndarray, raw: np.ndarray) -> float:
        """Average half multinomial deviance ``logsumexp(raw) - raw[y]``."""
        raw = _as_raw(raw, self.n_classes)
        shifted, total = self._unnormalised(raw)
        log_norm = raw.max(axis=1) + np.log(total)
        own = raw[np.arange(raw.shape[0]), np.asarray(y, dtype=np.intp)]
        return float(np.average(log_norm - own))

    def predict_proba(self, raw: np.ndarray) -> np.ndarray:
        """Softmax of the raw predictions, shape (n_samples, n_classes)."""
        shifted, total = self._unnormalised(_as_raw(raw, self.n_classes))
        return shifted / total[:, None]


def make_loss(n_classes: int | None):
    """The loss of a boosting problem.

    Parameters
    ----------
    n_classes : int or None
        ``None`` for regression (squared error), 2 for binary classification,
        more for multiclass.

    Returns
    -------
    loss : SquaredErrorLoss, BinomialLoss or MultinomialLoss
    """
    if n_classes is None:
        return SquaredErrorLoss()
    if n_classes == 2:
        return BinomialLoss()
    if n_classes > 2:
        return MultinomialLoss(n_classes)
    raise ValueError(f"classification needs at least 2 classes, got {n_classes}")
