"""Local optimisers: each party updates only its own weight block."""

from __future__ import annotations

import numpy as np

__all__ = ["Optimizer", "penalty_gradient"]


def penalty_gradient(
    weights: np.ndarray, penalty: str | None, alpha: float, n_unpenalised: int = 0
) -> np.ndarray:
    """Gradient (or subgradient, for L1) of ``alpha * R(w)``; trailing intercepts excluded."""
    grad = np.zeros_like(weights)
    k = len(weights) - n_unpenalised
    if penalty == "l2":
        grad[:k] = alpha * weights[:k]
    elif penalty == "l1":
        grad[:k] = alpha * np.sign(weights[:k])
    return grad


class Optimizer:
    """Mini-batch SGD or Adam on one party's own weights, with a step-size schedule.

    Parameters
    ----------
    kind : {"sgd", "adam"}
    learning_rate : float
        Initial step size.
    decay : float
        Multiplier applied to the step size at the end of an epoch.
    schedule : {"adaptive", "epoch"}
        ``"epoch"`` decays after every epoch. ``"adaptive"`` decays only after an
        epoch in which the weights wandered rather than travelled: their net
        displacement was less than half the length of the path the steps took.
        Large, well-conditioned problems then decay every epoch, while small or
        ill-conditioned ones keep their step size as long as it makes progress.
        Each party decides for its own block from its own steps, so the schedule
        needs no extra message.
    """

    def __init__(
        self, kind: str, learning_rate: float, decay: float, size: int, schedule: str = "adaptive"
    ):
        self.kind = kind
        self.lr = learning_rate
        self.decay = decay
        self.schedule = schedule
        self.m = np.zeros(size)
        self.v = np.zeros(size)
        self.t = 0
        self.path = 0.0

    def step(self, weights: np.ndarray, grad: np.ndarray) -> np.ndarray:
        self.t += 1
        if self.kind == "sgd":
            update = self.lr * grad
        else:
            self.m = 0.9 * self.m + 0.1 * grad
            self.v = 0.999 * self.v + 0.001 * grad**2
            m_hat = self.m / (1 - 0.9**self.t)
            v_hat = self.v / (1 - 0.999**self.t)
            update = self.lr * m_hat / (np.sqrt(v_hat) + 1e-8)
        self.path += float(np.linalg.norm(update))
        return weights - update

    def end_epoch(self, displacement: float) -> None:
        """Apply the schedule given how far the weights moved over the epoch."""
        if self.schedule == "epoch" or displacement < 0.5 * self.path:
            self.lr *= self.decay
        self.path = 0.0
