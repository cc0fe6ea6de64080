"""How the sigmoid is approximated so that the residual needs only additive HE.

The residual ``sigmoid(u_G + u_H) - y`` mixes the guest's margin ``u_G`` (and
labels) with the host's margin ``u_H``; Paillier can only add ciphertexts and
multiply them by plaintexts. Each approximation below writes the residual as a
sum of products ``guest value x host value`` per row, so that every party can form
its gradient from its own plaintexts and the other side's ciphertexts:

``residual * scale = sum_k G[:, k] * H[:, k]``

where the guest knows ``G`` (n x m) and the host knows ``H`` (n x m). Each party
encrypts its own columns under its own key; the other party multiplies them by
its features weighted by its own columns (``X * G[:, k]`` or ``X * H[:, k]``).

* :class:`Taylor1` (``sigmoid="taylor"``): FATE's degree-1 expansion around 0,
  ``4 (sigmoid(z) - y) ~= z + 2 - 4y``. Linear in every margin, so it also works
  with several hosts.
* :class:`LocalPolynomial` (``sigmoid="poly"``, two parties): for every row the
  guest fits, by least squares on Chebyshev nodes, the polynomial
  ``p(s) = sum_k a_k s**k`` closest to ``sigmoid(u_G + R s)`` for ``s`` in
  ``[-1, 1]``; the host contributes powers of its smoothly clipped, scaled margin
  ``s = c(u_H) / R``. The model trained is ``sigmoid(u_G + c(u_H))``, so the host
  weights its own gradient rows by ``c'(u_H)`` (:meth:`LocalPolynomial.host_chain`).
  The worst-case error of the residual over all guest margins and ``|u_H| <= R``
  is 0.16 for degree 3 and ``R = 8`` (0.08 for degree 5; 0.05 for degree 3 and
  ``R = 4``), against 0.5 and more for Taylor-1 a few units away from 0;
  docs/sigmoid.md measures what that means for AUC.
"""

from __future__ import annotations

import numpy as np
from scipy.special import expit

__all__ = ["LocalPolynomial", "Taylor1", "make_approximation"]


class Taylor1:
    """``4 (sigmoid(u_G + sum u_H) - y) ~= (u_G + 2 - 4y) * 1 + sum_H 1 * u_H``."""

    name = "taylor"
    scale = 4.0
    host_width = 1  # columns each host encrypts
    guest_width = 1  # columns the guest encrypts

    def guest_values(self, u_guest: np.ndarray, y: np.ndarray) -> np.ndarray:
        """Columns the guest encrypts (its side of the residual)."""
        return (u_guest + 2.0 - 4.0 * y)[:, None]

    def guest_own(self, u_guest: np.ndarray, y: np.ndarray) -> np.ndarray:
        """The guest's plaintext part of the scaled residual."""
        return u_guest + 2.0 - 4.0 * y

    def guest_weights(self, u_guest: np.ndarray) -> np.ndarray:
        """Per-row weights of the guest's features against the host's columns."""
        return np.ones((len(u_guest), 1))

    def host_values(self, u_host: np.ndarray) -> np.ndarray:
        return u_host[:, None]

    def host_own(self, u_host: np.ndarray) -> np.ndarray:
        return u_host

    def host_weights(self, u_host: np.ndarray) -> np.ndarray:
        return np.ones((len(u_host), 1))

    def host_chain(self, u_host: np.ndarray) -> np.ndarray:
        """Per-row factor of the host's gradient (1: the margin enters linearly)."""
        return np.ones(len(u_host))

    # The training log-loss ``log(1 + e**u) - y u`` to second order around 0:
    # ``log 2 + (1/2 - y) u + u**2 / 8`` with ``u = u_G + u_H`` splits into a guest
    # part, a cross part linear in ``u_H`` and the host's own ``u_H**2 / 8``.
    def loss_guest(self, u_guest: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """The guest's plaintext part of the per-row loss, and the per-row
        coefficients of the host's encrypted columns in it."""
        own = np.log(2.0) + (0.5 - y) * u_guest + u_guest**2 / 8.0
        return own, (0.5 - y + u_guest / 4.0)[:, None]

    def loss_host_own(self, u_host: np.ndarray) -> float:
        return float(np.sum(u_host**2) / 8.0)


class LocalPolynomial:
    """Per-row least-squares polynomial of the sigmoid in the host's scaled margin.

    Parameters
    ----------
    degree : int
        Polynomial degree ``K``: the host encrypts ``s, s**2, ..., s**K``.
    radius : float
        ``R``: host margins are clipped to ``[-R, R]`` (locally, at the host).
    """

    name = "poly"
    scale = 1.0

    def __init__(self, degree: int, radius: float):
        self.degree = int(degree)
        self.radius = float(radius)
        self.knee = min(1.0, self.radius / 2)
        self.host_width = self.degree
        self.guest_width = self.degree + 1
        m = 4 * self.degree + 8
        self.nodes = np.cos(np.pi * (np.arange(m) + 0.5) / m)
        vander = np.vander(self.nodes, self.degree + 1, increasing=True)
        self._fit = np.linalg.pinv(vander)  # (K + 1, m): samples -> coefficients

    def coefficients(self, u_guest: np.ndarray) -> np.ndarray:
        """``a[i, k]``: coefficients of ``s**k`` for row ``i`` (n x (K + 1))."""
        samples = expit(u_guest[:, None] + self.radius * self.nodes[None, :])
        return samples @ self._fit.T

    def scaled(self, u_host: np.ndarray) -> np.ndarray:
        """``s = c(u_H) / R`` with the smooth clip ``c`` (identity on ``|u| <= R - h``,
        ``±R`` beyond ``R + h``, a quadratic blend between: continuously differentiable)."""
        r, h = self.radius, self.knee
        excess = np.clip(np.abs(u_host) - (r - h), 0.0, 2.0 * h)
        clipped = np.sign(u_host) * (
            np.minimum(np.abs(u_host), r - h) + excess - excess**2 / (4 * h)
        )
        return clipped / r

    def guest_values(self, u_guest: np.ndarray, y: np.ndarray) -> np.ndarray:
        a = self.coefficients(u_guest)
        a[:, 0] -= y
        return a

    def guest_own(self, u_guest: np.ndarray, y: np.ndarray) -> np.ndarray:
        return self.coefficients(u_guest)[:, 0] - y

    def guest_weights(self, u_guest: np.ndarray) -> np.ndarray:
        return self.coefficients(u_guest)[:, 1:]

    def host_values(self, u_host: np.ndarray) -> np.ndarray:
        s = self.scaled(u_host)
        return np.column_stack([s**k for k in range(1, self.degree + 1)])

    def host_own(self, u_host: np.ndarray) -> None:
        return None  # every term of the host's gradient involves the guest's values

    def host_weights(self, u_host: np.ndarray) -> np.ndarray:
        s = self.scaled(u_host)
        return np.column_stack([s**k for k in range(self.degree + 1)])

    def host_chain(self, u_host: np.ndarray) -> np.ndarray:
        """Per-row factor of the host's gradient: ``c'(u_H)``, the slope of the clip
        (1 inside, 0 beyond ``R + h``, linear in between).

        The model trained is ``sigmoid(u_G + c(u_H))``; its gradient in the host's
        weights is ``X_H.T (residual * c'(u_H))``. Rows far beyond the radius stop
        pulling on the host's weights, as they would with the exact sigmoid (where
        their residual vanishes), and the approximated gradient stays the gradient
        of one smooth objective, which L-BFGS needs.
        """
        return np.clip((self.radius + self.knee - np.abs(u_host)) / (2 * self.knee), 0.0, 1.0)

    def loss_guest(self, u_guest: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Per-row polynomial in ``s`` closest to the log-loss at ``u_G + R s``: its
        constant term (the guest's own part) and the coefficients of ``s, ..., s**K``."""
        u = u_guest[:, None] + self.radius * self.nodes[None, :]
        coefficients = (np.logaddexp(0.0, u) - y[:, None] * u) @ self._fit.T
        return coefficients[:, 0], coefficients[:, 1:]

    def loss_host_own(self, u_host: np.ndarray) -> float:
        return 0.0  # every host term of the loss multiplies a guest coefficient


def make_approximation(params: dict) -> Taylor1 | LocalPolynomial:
    """The approximation named in the public training parameters."""
    if params.get("sigmoid", "taylor") == "taylor":
        return Taylor1()
    return LocalPolynomial(params["sigmoid_degree"], params["sigmoid_radius"])
