"""Optimisers of one party's weight block.

``Optimizer`` (Adam, SGD) steps each block on its own; ``QuasiNewton`` keeps one
party's side of an L-BFGS whose direction the driver assembles from scalars.
"""

from __future__ import annotations

import numpy as np
from scipy.linalg import cho_factor, cho_solve

__all__ = [
    "LBFGS_MEMORY",
    "Optimizer",
    "QuasiNewton",
    "basis_size",
    "lbfgs_coefficients",
    "penalty_gradient",
]


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

    def state(self) -> dict:
        """What an epoch boundary holds: step size, moments and step count (a
        checkpoint; ``path`` is 0 there)."""
        return {"lr": self.lr, "m": self.m.copy(), "v": self.v.copy(), "t": self.t}

    def restore(self, state: dict) -> None:
        """Go back to a :meth:`state`."""
        m, v = (np.asarray(state[k], dtype=np.float64) for k in ("m", "v"))
        if m.shape != self.m.shape or v.shape != self.v.shape:
            raise ValueError("optimiser state of another block size")
        self.lr, self.m, self.v, self.t = float(state["lr"]), m.copy(), v.copy(), int(state["t"])
        self.path = 0.0


#: ``(s, y)`` pairs an L-BFGS run keeps, as scikit-learn's lbfgs (``maxcor``).
LBFGS_MEMORY = 10


class QuasiNewton:
    """One party's side of the vector-free, block-preconditioned L-BFGS.

    The search direction of L-BFGS is a linear combination of the last ``m``
    weight changes ``s_i``, gradient changes ``y_i`` and the gradient ``g``
    (Chen, Wang & Zhou, "Large-scale L-BFGS using MapReduce", NIPS 2014). With
    the initial inverse Hessian ``H0 = gamma * blockdiag(A_P^-1)`` it is a
    combination of the basis ``[s_0..s_m-1, y_0..y_m-1, g, H y_0..H y_m-1, H g]``
    where ``H = A_P^-1`` acts on each party's block alone. Every party therefore
    keeps its own blocks of these vectors and reports only their inner products
    (its partial Gram matrix); the driver adds the parties' Gram matrices, runs the
    two-loop recursion on coefficients (:func:`lbfgs_coefficients`) and sends the
    coefficients back. No party ever sees another party's vectors.

    ``A_P = X_P.T X_P / (4 n) + alpha I`` is the party's diagonal block of the
    Böhning–Lindsay bound on the logistic Hessian, ``X.T X / (4 n)``: built from
    its own features only, it removes the ill-conditioning inside every block.

    Parameters
    ----------
    features : ndarray of shape (n_samples, n_columns)
        The party's training columns (with the intercept column for the guest).
    alpha : float
        L2 strength of the objective ``mean(loss) + alpha/2 ||w||^2``.
    n_unpenalised : int
        Trailing columns without penalty (the intercept).
    memory : int
        Number of ``(s, y)`` pairs kept.
    """

    kind = "lbfgs"

    def __init__(
        self, features: np.ndarray, alpha: float, n_unpenalised: int, memory: int = LBFGS_MEMORY
    ):
        n, d = features.shape
        a = features.T @ features / (4.0 * n)
        ridge = np.full(d, float(alpha))
        ridge[d - n_unpenalised :] = 0.0
        a[np.diag_indices(d)] += ridge
        # a tiny relative jitter keeps constant or duplicated columns factorisable
        a[np.diag_indices(d)] += 1e-10 * max(float(np.trace(a)) / max(d, 1), 1e-12)
        self._factor = cho_factor(a)
        self.memory = int(memory)
        self.s: list[np.ndarray] = []
        self.y: list[np.ndarray] = []
        self.hy: list[np.ndarray] = []
        self.grad: np.ndarray | None = None
        self.base: np.ndarray | None = None
        self.base_grad: np.ndarray | None = None
        self.direction: np.ndarray | None = None
        self._basis: np.ndarray | None = None

    # the WeightBlock interface: a gradient step only records the gradient
    def step(self, weights: np.ndarray, grad: np.ndarray) -> np.ndarray:
        self.grad = grad
        return weights

    def end_epoch(self, displacement: float) -> None:
        """Nothing to schedule: the driver's line search picks the step length."""

    def slope(self) -> float:
        """This party's part of ``g(w) . d`` at the current trial point."""
        if self.grad is None or self.direction is None:
            return 0.0
        return float(self.grad @ self.direction)

    def accept(self, weights: np.ndarray, keep_pair: bool, clear_memory: bool) -> np.ndarray:
        """Make the current point the new base; return the partial Gram matrix."""
        if self.grad is None:
            raise ValueError("no gradient at the current point yet")
        if clear_memory:
            self.s, self.y, self.hy = [], [], []
        elif keep_pair and self.base is not None:
            y = self.grad - self.base_grad
            self.s.append(weights - self.base)
            self.y.append(y)
            self.hy.append(cho_solve(self._factor, y))
            if len(self.s) > self.memory:
                del self.s[0], self.y[0], self.hy[0]
        self.base = weights.copy()
        self.base_grad = self.grad
        self.direction = None
        self._basis = self._make_basis()
        return self._basis @ self._basis.T

    def _make_basis(self) -> np.ndarray:
        """``[s_0..s_m-1, y_0..y_m-1, g, H y_0..H y_m-1, H g]`` at the base point."""
        return np.array(
            [*self.s, *self.y, self.base_grad, *self.hy, cho_solve(self._factor, self.base_grad)]
        )

    def state(self) -> dict:
        """What an iteration boundary (after :meth:`accept`) holds: the pairs, the base
        point and its gradient (a checkpoint; the basis follows from them)."""
        if self.base is None:
            return {}
        size = len(self.base)
        return {
            **{k: np.array(getattr(self, k)).reshape(len(self.s), size) for k in ("s", "y", "hy")},
            "base": self.base.copy(),
            "base_grad": self.base_grad.copy(),
        }

    def restore(self, state: dict) -> None:
        """Go back to a :meth:`state`: the base point is accepted again, no move made."""
        self.s, self.y, self.hy = [], [], []
        self.grad = self.base = self.base_grad = self.direction = self._basis = None
        if "base" not in state:  # before the first accept
            return
        size = self._factor[0].shape[0]
        pairs = {k: np.asarray(state[k], dtype=np.float64) for k in ("s", "y", "hy")}
        base, grad = (np.asarray(state[k], dtype=np.float64) for k in ("base", "base_grad"))
        n = len(pairs["s"])
        if n > self.memory or any(a.shape != (n, size) for a in pairs.values()):
            raise ValueError("L-BFGS state of another block size")
        if base.shape != (size,) or grad.shape != (size,):
            raise ValueError("L-BFGS state of another block size")
        self.s, self.y, self.hy = ([row.copy() for row in pairs[k]] for k in ("s", "y", "hy"))
        self.base, self.base_grad, self.grad = base.copy(), grad.copy(), grad.copy()
        self._basis = self._make_basis()

    def move(self, coefficients: np.ndarray, step: float) -> np.ndarray:
        """The trial point ``base + step * d`` with ``d = coefficients @ basis``."""
        if self._basis is None:
            raise ValueError("no accepted point to move from")
        if coefficients.shape != (self._basis.shape[0],):
            raise ValueError(
                f"expected {self._basis.shape[0]} direction coefficients, got {coefficients.shape}"
            )
        self.direction = coefficients @ self._basis
        self.grad = None
        return self.base + float(step) * self.direction


def basis_size(n_pairs: int) -> int:
    """Vectors in the L-BFGS basis with ``n_pairs`` stored pairs."""
    return 3 * n_pairs + 2


def lbfgs_coefficients(gram: np.ndarray, n_pairs: int) -> np.ndarray:
    """Two-loop recursion on the basis of :class:`QuasiNewton`, with Gram matrix only.

    Returns the coefficients ``c`` of the direction ``d = -H g = sum_j c_j b_j``,
    where ``H`` is the L-BFGS inverse-Hessian approximation built on the
    preconditioner ``H0 = gamma * blockdiag(A_P^-1)``, ``gamma = s.y / y.H0 y`` of
    the newest pair (Nocedal & Wright, *Numerical Optimization*, alg. 7.4).
    """
    m = n_pairs
    size = basis_size(m)
    if gram.shape != (size, size):
        raise ValueError(f"expected a {size} x {size} Gram matrix, got {gram.shape}")
    s_idx = np.arange(m)
    y_idx = m + np.arange(m)
    g_idx = 2 * m
    hy_idx = 2 * m + 1 + np.arange(m)
    hg_idx = 3 * m + 1
    q = np.zeros(size)
    q[g_idx] = -1.0
    alphas = np.zeros(m)
    rho = 1.0 / gram[s_idx, y_idx] if m else np.zeros(0)
    for i in reversed(range(m)):
        alphas[i] = rho[i] * (gram[s_idx[i]] @ q)
        q[y_idx[i]] -= alphas[i]
    # r = H0 q: q lives in span{g, y_i}, and H0 maps g -> gamma H g, y_i -> gamma H y_i
    gamma = gram[s_idx[-1], y_idx[-1]] / gram[y_idx[-1], hy_idx[-1]] if m else 1.0
    r = np.zeros(size)
    r[hg_idx] = gamma * q[g_idx]
    r[hy_idx] = gamma * q[y_idx]
    for i in range(m):
        beta = rho[i] * (gram[y_idx[i]] @ r)
        r[s_idx[i]] += alphas[i] - beta
    return r
