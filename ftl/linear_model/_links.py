"""Residuals of the regression links, written as sums of guest x host products.

The protocol of :mod:`ftl.linear_model.guest`/``host`` needs the residual of a
row as ``scale * (mean(z) - y) = sum_k G[:, k] * H[:, k]``, each factor known to
one party (see ``_sigmoid.py``, which does this approximately for the logistic
link). For the two regression links it is exact:

* :class:`IdentityLink` (linear regression, ``mean(z) = z``): the residual
  ``u_G + sum_H u_H - y`` is linear in every margin -- the guest's part
  ``u_G - y`` times 1 plus 1 times each host's ``u_H``, for any number of hosts.
* :class:`LogLink` (Poisson regression, ``mean(z) = exp(z)``): the mean
  factorises, ``exp(u_G + u_H) = exp(u_G) * exp(u_H)``, so the residual is
  ``(-y) * 1 + exp(u_G) * exp(u_H)``: the host encrypts ``exp(u_H)``, the guest
  ``-y`` and ``exp(u_G)``. Two parties only (with several hosts the mean would
  be a product of three parties' values).

Nothing is approximated: the federated fit minimises the same objective as
scikit-learn's ``Ridge`` / ``PoissonRegressor`` on the pooled columns, up to the
fixed-point encoding of the encrypted values.
"""

from __future__ import annotations

import numpy as np

from ftl.linear_model._sigmoid import MarginLinear, make_approximation

__all__ = ["IdentityLink", "LogLink", "make_link"]

#: Margins are capped here inside ``exp`` (``exp(20)`` is ~5e8, far beyond any
#: count's mean): an L-BFGS trial step may overshoot to margins whose exponential
#: would leave the fixed-point range of encrypted values (``2**32``). Beyond the
#: cap the mean stays constant, so the gradient still points back, and the line
#: search returns to sane margins; no optimum of real counts lies there.
MAX_LOG_MARGIN = 20.0


class IdentityLink(MarginLinear):
    """``u_G + sum_H u_H - y = (u_G - y) * 1 + sum_H 1 * u_H``."""

    name = "identity"
    scale = 1.0
    tracks_loss = True

    def guest_own(self, u_guest: np.ndarray, y: np.ndarray) -> np.ndarray:
        return u_guest - y

    # The squared error (u_G + u_H - y)**2 / 2 = (u_G - y)**2 / 2 + (u_G - y) u_H
    # + u_H**2 / 2: the guest's own part, a cross part linear in u_H, the host's own.
    def loss_guest(self, u_guest: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        residual = u_guest - y
        return residual**2 / 2.0, residual[:, None]

    def loss_host_own(self, u_host: np.ndarray) -> float:
        return float(np.sum(u_host**2) / 2.0)


class LogLink:
    """``exp(u_G + u_H) - y = (-y) * 1 + exp(u_G) * exp(u_H)`` (one host)."""

    name = "log"
    scale = 1.0
    host_width = 1
    guest_width = 2
    # The Poisson loss exp(u) - y u needs y * u_H, which no encrypted column
    # carries: a verbose fit shows no training loss.
    tracks_loss = False

    def guest_values(self, u_guest: np.ndarray, y: np.ndarray) -> np.ndarray:
        return np.column_stack([-y, _exp(u_guest)])

    def guest_own(self, u_guest: np.ndarray, y: np.ndarray) -> np.ndarray:
        return -y

    def guest_weights(self, u_guest: np.ndarray) -> np.ndarray:
        return _exp(u_guest)[:, None]

    def host_values(self, u_host: np.ndarray) -> np.ndarray:
        return _exp(u_host)[:, None]

    def host_own(self, u_host: np.ndarray) -> None:
        return None  # every term of the host's gradient involves the guest's values

    def host_weights(self, u_host: np.ndarray) -> np.ndarray:
        return np.column_stack([np.ones(len(u_host)), _exp(u_host)])

    def host_chain(self, u_host: np.ndarray) -> np.ndarray:
        return np.ones(len(u_host))


def _exp(margin: np.ndarray) -> np.ndarray:
    """``exp(min(margin, MAX_LOG_MARGIN))``: inside the encrypted range."""
    return np.exp(np.minimum(margin, MAX_LOG_MARGIN))


def make_link(params: dict):
    """The residual's factorisation for the link named in the protocol parameters:
    ``"identity"``, ``"log"``, or the logistic link's sigmoid approximation."""
    link = params.get("link", "logit")
    if link == "identity":
        return IdentityLink()
    if link == "log":
        return LogLink()
    if link != "logit":
        raise ValueError(f"unknown link {link!r}")
    return make_approximation(params)
