"""The federated transfer objective and its second-order Taylor form.

Notation of Liu et al., "Secure Federated Transfer Learning" (arXiv 1812.03337):
party A is the source (labels), party B the target; the protocol modules and
docs/transfer.md call them S and T.
source rows ``j`` (all labelled), overlap rows ``i`` (both parties), hidden
activations with a bias column ``h~``, representations ``u_A = W_A h~_A`` and
``u_B = W_B h~_B`` in ``R^d``.

Prototypes ``P = R.T U_A`` (``K' x d``) are weighted sums of the source's
representations of *all* its labelled rows: with two classes the paper's
``Phi = (1/N_A) sum_j y_j u_j`` (``K' = 1``, ``y = +-1``); with ``K > 2`` classes
one class mean per class (``K' = K``). A target row is scored ``z = P u_B``.

The classification loss of an overlap row is the second-order Taylor expansion
around ``z = 0`` of the logistic loss ``log(1 + exp(-y z))`` (binary) or of the
softmax cross-entropy (multiclass); its gradient is linear in ``z``::

    dl/dz = Q z - beta_i        Q = 1/4, beta_i = y_i / 2            (binary)
                                Q = (I - 11'/K) / K, beta_i = e_y - 1/K   (softmax)

which is what lets Paillier (additions only) carry it. The objective per batch of
``n`` overlap rows is::

    L = (1/n) sum_i [ l~(P u_B,i ; y_i) + gamma ||u_A,i - u_B,i||^2 ]
        + alpha/2 (||W_A||^2 + ||W_B||^2)        (bias columns not penalised)

:func:`reference_gradients` computes it on pooled values: the tests' yardstick
for the secure protocol, which never pools anything.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.special import expit, softmax

__all__ = [
    "LabelCoding",
    "label_coding",
    "exact_loss_and_slope",
    "reference_gradients",
    "taylor_loss",
]


@dataclass
class LabelCoding:
    """How the source's labels enter the objective (all of it stays at the source).

    Attributes
    ----------
    R : ndarray (n_source_rows, K')
        Prototype weights: ``P = R.T @ U_A``.
    Q : ndarray (K', K')
        Hessian of the loss at ``z = 0``.
    beta : ndarray (n_source_rows, K')
        Minus the gradient of the loss at ``z = 0``, per row.
    constant : float
        Loss at ``z = 0``.
    """

    R: np.ndarray
    Q: np.ndarray
    beta: np.ndarray
    constant: float

    @property
    def width(self) -> int:
        return self.Q.shape[0]


def label_coding(codes: np.ndarray, n_classes: int) -> LabelCoding:
    """Label coding for class codes ``0..n_classes-1`` of the source's rows."""
    codes = np.asarray(codes, dtype=np.int64)
    n = len(codes)
    if n_classes == 2:
        t = np.where(codes == 1, 1.0, -1.0)[:, None]
        return LabelCoding(t / n, np.array([[0.25]]), t / 2.0, float(np.log(2.0)))
    onehot = np.eye(n_classes)[codes]
    counts = onehot.sum(axis=0)
    if (counts == 0).any():
        raise ValueError("every class needs at least one labelled source row")
    q = (np.eye(n_classes) - 1.0 / n_classes) / n_classes
    return LabelCoding(onehot / counts, q, onehot - 1.0 / n_classes, float(np.log(n_classes)))


def taylor_loss(z: np.ndarray, beta: np.ndarray, q: np.ndarray, constant: float) -> np.ndarray:
    """Per-row Taylor loss ``c - beta.z + z'Qz/2``."""
    return constant - (beta * z).sum(axis=1) + 0.5 * np.einsum("ik,kl,il->i", z, q, z)


def _penalty_grad(w: np.ndarray, alpha: float) -> np.ndarray:
    g = alpha * w
    g[:, -1] = 0.0
    return g


def exact_loss_and_slope(z: np.ndarray, beta: np.ndarray, q: np.ndarray):
    """The loss the Taylor form approximates, and its gradient in ``z``, per row.

    Binary (``K' = 1``, ``beta = y/2`` with ``y = +-1``): ``log(1 + exp(-y z))``;
    multiclass (``beta = e_y - 1/K``): the softmax cross-entropy.
    """
    if q.shape == (1, 1):
        t = 2.0 * beta
        margin = t * z
        return np.logaddexp(0.0, -margin).sum(axis=1), -t * expit(-margin)
    onehot = beta + 1.0 / beta.shape[1]
    shifted = z - z.max(axis=1, keepdims=True)
    log_norm = np.log(np.exp(shifted).sum(axis=1, keepdims=True))
    return (log_norm - shifted)[onehot > 0.5], softmax(z, axis=1) - onehot


def reference_gradients(
    w_a, w_b, h_a_all, h_a, h_b, coding, beta, gamma, alpha, loss: str = "taylor"
):
    """Objective and gradients on pooled values (tests and benchmarks only).

    ``loss="exact"`` replaces the Taylor form by the loss it approximates, to
    measure what the approximation costs (``benchmarks/bench_transfer.py``); the
    secure protocol can only run the Taylor form.

    Parameters
    ----------
    w_a, w_b : ndarray (d, m_A), (d, m_B)
        Output layers (last column: bias).
    h_a_all : ndarray (n_source_rows, m_A)
        Source hidden activations with bias column, all labelled rows.
    h_a, h_b : ndarray (n, m_A), (n, m_B)
        Both parties' hidden activations (with bias column) on the overlap batch.
    coding : LabelCoding
    beta : ndarray (n, K')
        ``coding.beta`` of the batch's rows.
    gamma, alpha : float
    loss : {"taylor", "exact"}

    Returns
    -------
    loss : float
    grad_a, grad_b : ndarray
    """
    n = h_b.shape[0]
    u_a_all = h_a_all @ w_a.T
    p = coding.R.T @ u_a_all
    u_a, u_b = h_a @ w_a.T, h_b @ w_b.T
    z = u_b @ p.T
    diff = u_a - u_b
    if loss == "exact":
        per_row, s = exact_loss_and_slope(z, beta, coding.Q)
    else:
        per_row = taylor_loss(z, beta, coding.Q, coding.constant)
        s = z @ coding.Q.T - beta  # dl/dz per row
    value = (
        per_row.mean()
        + gamma * (diff**2).sum() / n
        + 0.5 * alpha * ((w_a[:, :-1] ** 2).sum() + (w_b[:, :-1] ** 2).sum())
    )
    grad_u_b = (s @ p - 2 * gamma * diff) / n
    grad_p = s.T @ u_b / n
    grad_b = grad_u_b.T @ h_b + _penalty_grad(w_b, alpha)
    grad_a = grad_p.T @ (coding.R.T @ h_a_all) + (2 * gamma * diff / n).T @ h_a
    return float(value), grad_a + _penalty_grad(w_a, alpha), grad_b
