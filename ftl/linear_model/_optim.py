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
    """Mini-batch SGD or Adam with a per-epoch learning-rate decay.

    Parameters
    ----------
    kind : {"sgd", "adam"}
    learning_rate : float
        Step size at epoch 0.
    decay : float
        Multiplier applied to the step size after every epoch.
    """

    def __init__(self, kind: str, learning_rate: float, decay: float, size: int):
        self.kind = kind
        self.learning_rate = learning_rate
        self.decay = decay
        self.m = np.zeros(size)
        self.v = np.zeros(size)
        self.t = 0
        self.epoch = 0

    def step(self, weights: np.ndarray, grad: np.ndarray) -> np.ndarray:
        lr = self.learning_rate * self.decay**self.epoch
        self.t += 1
        if self.kind == "sgd":
            return weights - lr * grad
        self.m = 0.9 * self.m + 0.1 * grad
        self.v = 0.999 * self.v + 0.001 * grad**2
        m_hat = self.m / (1 - 0.9**self.t)
        v_hat = self.v / (1 - 0.999**self.t)
        return weights - lr * m_hat / (np.sqrt(v_hat) + 1e-8)

    def end_epoch(self) -> None:
        self.epoch += 1
