"""One party's block of a vertical linear model: its features, weights and optimiser.

Both roles use it. The approximated residual times a scale (4 for Taylor-1, 1 for
the polynomial) is a sum of products of per-party columns (``_sigmoid.py``), so
the gradient of party P is ``(X_P.T @ own + sum of cross terms) / (scale * b)``:
its own term is plaintext, the cross terms are the masked totals computed on the
other parties' ciphertexts.
"""

from __future__ import annotations

import numpy as np

from ftl.linear_model._optim import Optimizer, QuasiNewton, penalty_gradient


class WeightBlock:
    """Features of the training rows and the weights that belong to one party."""

    def __init__(self, features: np.ndarray, params: dict, fit_intercept: bool):
        self.fit_intercept = fit_intercept
        if fit_intercept:
            features = np.hstack([features, np.ones((features.shape[0], 1))])
        self.features = features
        self.weights = np.zeros(features.shape[1])
        self.penalty = params["penalty"]
        self.alpha = float(params["alpha"])
        if params["optimizer"] == "lbfgs":
            if self.penalty == "l1":
                raise ValueError("optimizer='lbfgs' needs a smooth penalty: 'l2' or None")
            ridge = self.alpha if self.penalty == "l2" else 0.0
            self.optimizer = QuasiNewton(features, ridge, int(fit_intercept))
        else:
            self.optimizer = Optimizer(
                params["optimizer"],
                params["learning_rate"],
                params["decay"],
                features.shape[1],
                params.get("schedule", "adaptive"),
            )
        self.batch: np.ndarray | None = None
        self.epoch_start = self.weights.copy()

    def start_at(self, weights: np.ndarray) -> None:
        """Begin training at ``weights`` instead of zero (the guest's secret start)."""
        weights = np.asarray(weights, dtype=np.float64)
        if weights.shape != self.weights.shape or not np.isfinite(weights).all():
            raise ValueError(f"a start needs {self.weights.shape[0]} finite weights")
        self.weights = weights.copy()
        self.epoch_start = self.weights.copy()

    def batch_features(self) -> np.ndarray:
        return self.features[self.batch]

    def start_batch(self, batch: np.ndarray) -> np.ndarray:
        """Select the batch rows and return this party's margins on them."""
        if batch.size == 0 or batch.min() < 0 or batch.max() >= self.features.shape[0]:
            raise ValueError("batch rows out of range")
        self.batch = batch
        return self.batch_features() @ self.weights

    def apply_gradient(
        self,
        own_contribution: np.ndarray | None,
        cross_terms: list[np.ndarray],
        residual_scale: float = 4.0,
    ) -> None:
        """Gradient step from the own term and the unmasked cross terms.

        ``residual_scale`` is the factor the residual was multiplied by (4 for the
        Taylor-1 form ``z + 2 - 4y``, 1 for the polynomial form).
        """
        x = self.batch_features()
        total = np.zeros(x.shape[1]) if own_contribution is None else x.T @ own_contribution
        for term in cross_terms:
            total = total + term
        grad = total / (residual_scale * len(self.batch))
        grad += penalty_gradient(self.weights, self.penalty, self.alpha, int(self.fit_intercept))
        self.weights = self.optimizer.step(self.weights, grad)

    def end_epoch(self) -> tuple[float, float]:
        """Squared norms of the weight change over the epoch and of the weights."""
        delta = float(np.sum((self.weights - self.epoch_start) ** 2))
        norm = float(np.sum(self.weights**2))
        self.epoch_start = self.weights.copy()
        self.optimizer.end_epoch(float(np.sqrt(delta)))
        return delta, norm

    def state(self) -> dict:
        """This block at an iteration boundary: weights, epoch start, optimiser
        (what a checkpoint keeps; see :mod:`ftl.federation.checkpoints`)."""
        return {
            "weights": self.weights.copy(),
            "epoch_start": self.epoch_start.copy(),
            "optimizer": self.optimizer.state(),
        }

    def restore(self, state: dict) -> None:
        """Go back to a :meth:`state` of this block."""
        weights = np.asarray(state["weights"], dtype=np.float64)
        start = np.asarray(state["epoch_start"], dtype=np.float64)
        if weights.shape != self.weights.shape or start.shape != self.weights.shape:
            raise ValueError(f"a block state needs {self.weights.shape[0]} weights")
        self.optimizer.restore(state["optimizer"])
        self.weights, self.epoch_start, self.batch = weights.copy(), start.copy(), None

    # ------------------------------------------------------------------ L-BFGS
    def accept(self, keep_pair: bool, clear_memory: bool) -> tuple[np.ndarray, float, float]:
        """L-BFGS: close the iteration (:meth:`end_epoch`) and make the current
        weights the base point; the partial Gram matrix and the two squared norms."""
        delta, norm = self.end_epoch()
        gram = self._quasi_newton().accept(self.weights, keep_pair, clear_memory)
        return gram, delta, norm

    def move(self, coefficients: np.ndarray, step: float) -> None:
        """L-BFGS: go to the trial point ``base + step * d`` of the new direction."""
        self.weights = self._quasi_newton().move(coefficients, step)

    def slope(self) -> float:
        """L-BFGS: this block's part of the directional derivative at the trial point."""
        return self._quasi_newton().slope()

    def _quasi_newton(self) -> QuasiNewton:
        if not isinstance(self.optimizer, QuasiNewton):
            raise ValueError("this run does not train with optimizer='lbfgs'")
        return self.optimizer
