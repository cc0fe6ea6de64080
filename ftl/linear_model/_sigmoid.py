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
  ``p(s) = a_0 + sum_k a_k phi_k(s)`` closest to ``sigmoid(u_G + R s)`` for ``s``
  in ``[-1, 1]``; the host contributes ``phi_1(s), ..., phi_K(s)`` of its smoothly
  clipped, scaled margin ``s = c(u_H) / R``. The basis is either the powers
  ``s**k`` or (the estimator's default) the ``K`` polynomials that approximate the
  whole family ``s -> sigmoid(u + R s)`` best (:func:`kernel_basis`), which gains
  about one degree: ``K = 4`` on ``R = 5`` is as accurate as five powers. The
  model trained is ``sigmoid(u_G + c(u_H))``, so the host weights its own gradient
  rows by ``c'(u_H)`` (:meth:`LocalPolynomial.host_chain`). The worst-case error of
  the residual over all guest margins and ``|u_H| <= R`` is 0.025 for five powers
  on ``R = 5`` and 0.013 for the kernel basis with ``K = 4`` on ``R = 4``, against
  0.5 and more for Taylor-1 a few units away from 0; docs/sigmoid.md measures what
  that means for AUC.
"""

from __future__ import annotations

from functools import lru_cache

import numpy as np
from numpy.polynomial import chebyshev
from scipy.special import expit

__all__ = [
    "BASES",
    "LocalPolynomial",
    "MarginLinear",
    "Taylor1",
    "kernel_basis",
    "make_approximation",
]

#: Host bases of the per-row polynomial: powers of ``s``, or the kernel's best ``K``.
BASES = ("monomial", "kernel")
#: Guest margins over which the kernel basis is fitted (the sigmoid saturates beyond).
_KERNEL_MARGINS = np.linspace(-10.0, 10.0, 401)
#: Chebyshev points of ``[-1, 1]`` that sample the kernel, and the degree of the
#: Chebyshev series of each basis function (its coefficients decay geometrically:
#: below 1e-6 from degree 24 and 1e-10 at degree 32 for R <= 8, far below the
#: approximation's own error).
_KERNEL_POINTS = 64
_KERNEL_SERIES_DEGREE = 32


class MarginLinear:
    """A residual linear in every host margin: ``g(u_G, y) * 1 + sum_H 1 * u_H``.

    The shared half of :class:`Taylor1` and the identity link of linear
    regression: each host encrypts its margin as is, the guest one column of its
    own part, and the host's gradient has no per-row factor. Subclasses give
    ``guest_own`` (``g``) and the loss terms.
    """

    host_width = 1  # columns each host encrypts
    guest_width = 1  # columns the guest encrypts

    def guest_own(self, u_guest: np.ndarray, y: np.ndarray) -> np.ndarray:
        """The guest's plaintext part of the scaled residual."""
        raise NotImplementedError

    def guest_values(self, u_guest: np.ndarray, y: np.ndarray) -> np.ndarray:
        """Columns the guest encrypts (its side of the residual)."""
        return self.guest_own(u_guest, y)[:, None]

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


class Taylor1(MarginLinear):
    """``4 (sigmoid(u_G + sum u_H) - y) ~= (u_G + 2 - 4y) * 1 + sum_H 1 * u_H``."""

    name = "taylor"
    scale = 4.0

    def guest_own(self, u_guest: np.ndarray, y: np.ndarray) -> np.ndarray:
        return u_guest + 2.0 - 4.0 * y

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


def chebyshev_points(m: int) -> np.ndarray:
    """The ``m`` Chebyshev points ``cos(pi (j + 1/2) / m)`` of ``[-1, 1]``."""
    return np.cos(np.pi * (np.arange(m) + 0.5) / m)


@lru_cache(maxsize=32)
def kernel_basis(size: int, radius: float) -> np.ndarray:
    """Chebyshev coefficients of the ``size`` functions of ``s`` that, with the
    constant, approximate ``s -> sigmoid(u + radius * s)`` best for all guest margins.

    The kernel ``sigmoid(u + R s)`` sampled at guest margins ``u`` in ``[-10, 10]``
    and Chebyshev points ``s`` is centred over ``s`` (the constant is always in the
    basis: it carries the guest's own term ``a_0 - y``) and split by a singular value
    decomposition; its leading right singular vectors are the ``size``-dimensional
    space of functions of ``s`` that leaves the least squared error over all those
    ``u`` (Eckart--Young). Each is stored as a Chebyshev series (an ordinary
    polynomial of ``s``), scaled to a maximum of 1 on ``[-1, 1]`` and signed so that
    it is positive at ``s = 1``: guest and host compute the same basis from the public
    ``K`` and ``R``, whatever the sign conventions of their LAPACK.

    Returns
    -------
    ndarray of shape (size, _KERNEL_SERIES_DEGREE + 1)
        Row ``k`` holds the Chebyshev coefficients of ``phi_{k+1}``.
    """
    points = chebyshev_points(_KERNEL_POINTS)
    samples = expit(_KERNEL_MARGINS[:, None] + radius * points[None, :])
    centred = samples - samples.mean(axis=1, keepdims=True)
    _, _, vt = np.linalg.svd(centred, full_matrices=False)
    series = chebyshev.chebfit(points, vt[:size].T, _KERNEL_SERIES_DEGREE).T
    grid = chebyshev.chebval(np.linspace(-1.0, 1.0, 2001), series.T)  # (size, 2001)
    series /= np.abs(grid).max(axis=1, keepdims=True)
    series *= np.sign(series.sum(axis=1, keepdims=True))  # phi(1) = sum of coefficients
    series.setflags(write=False)
    return series


class LocalPolynomial:
    """Per-row least-squares polynomial of the sigmoid in the host's scaled margin.

    Parameters
    ----------
    degree : int
        ``K``, the number of non-constant basis functions: the host encrypts
        ``phi_1(s), ..., phi_K(s)`` (for the monomial basis ``s, s**2, ..., s**K``).
    radius : float
        ``R``: host margins are clipped to ``[-R, R]`` (locally, at the host).
    basis : {"monomial", "kernel"}, default="monomial"
        ``"monomial"``: the powers of ``s``. ``"kernel"``: the ``K`` polynomials of
        :func:`kernel_basis`, as accurate as one power more at the same cost.
    """

    name = "poly"
    scale = 1.0

    def __init__(self, degree: int, radius: float, basis: str = "monomial"):
        if basis not in BASES:
            raise ValueError(f"sigmoid basis must be one of {BASES}, got {basis!r}")
        self.degree = int(degree)
        self.radius = float(radius)
        self.basis = basis
        self.knee = min(1.0, self.radius / 2)
        self.host_width = self.degree
        self.guest_width = self.degree + 1
        self._series = kernel_basis(self.degree, self.radius) if basis == "kernel" else None
        m = 4 * self.degree + 8
        self.nodes = chebyshev_points(m)
        # (K + 1, m): samples at the nodes -> least-squares coefficients
        self._fit = np.linalg.pinv(self.functions(self.nodes))

    def functions(self, s: np.ndarray) -> np.ndarray:
        """``[1, phi_1(s), ..., phi_K(s)]`` for every ``s`` (len(s) x (K + 1))."""
        s = np.asarray(s, dtype=np.float64)
        if self._series is None:
            return np.vander(s, self.degree + 1, increasing=True)
        return np.column_stack([np.ones(len(s)), chebyshev.chebval(s, self._series.T).T])

    def coefficients(self, u_guest: np.ndarray) -> np.ndarray:
        """``a[i, k]``: coefficient of ``phi_k(s)`` (``phi_0 = 1``) for row ``i`` (n x (K + 1))."""
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
        return self.functions(self.scaled(u_host))[:, 1:]

    def host_own(self, u_host: np.ndarray) -> None:
        return None  # every term of the host's gradient involves the guest's values

    def host_weights(self, u_host: np.ndarray) -> np.ndarray:
        return self.functions(self.scaled(u_host))

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
        constant term (the guest's own part) and the coefficients of ``phi_1 .. phi_K``."""
        u = u_guest[:, None] + self.radius * self.nodes[None, :]
        coefficients = (np.logaddexp(0.0, u) - y[:, None] * u) @ self._fit.T
        return coefficients[:, 0], coefficients[:, 1:]

    def loss_host_own(self, u_host: np.ndarray) -> float:
        return 0.0  # every host term of the loss multiplies a guest coefficient


def make_approximation(params: dict) -> Taylor1 | LocalPolynomial:
    """The approximation named in the public training parameters.

    ``sigmoid_basis`` absent means the powers of ``s`` (what guests sent before the
    kernel basis existed); an unknown basis is refused.
    """
    if params.get("sigmoid", "taylor") == "taylor":
        return Taylor1()
    return LocalPolynomial(
        params["sigmoid_degree"], params["sigmoid_radius"], params.get("sigmoid_basis", "monomial")
    )
