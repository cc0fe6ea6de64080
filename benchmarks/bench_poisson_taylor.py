"""Exact federated Poisson regression against Taylor-expanded surrogates, on dvisits.

Issue 18 asked to measure "FATE's Taylor-expanded Poisson" side by side. FATE's
hetero Poisson regression does not expand: its guest multiplies the host's
encrypted ``exp(u_H)`` by its own ``exp(u_G)`` (FATE 1.x
``federatedml/optim/gradient/hetero_poisson_gradient_and_loss.py``,
``compute_and_aggregate_forwards``; FATE 2.x
``fate/ml/glm/hetero/coordinated_poisson/guest.py``, ``mu_all = mu * mu_h``), the
factorisation ftl uses too. A Taylor expansion of the mean, in the spirit of
FATE's degree-1 logistic approximation, is measured here as a *surrogate*: the
mean ``exp(z)`` is replaced in the residual by

    m(z) = exp(c) * sum_{k <= K} (z - c)**k / k!     (z = u_G + u_H)

around ``c = 0`` (as FATE expands the sigmoid) or around the guest's
``c = log(mean(y))``. Written as guest x host products,
``(z - c)**k = sum_j C(k, j) (u_G - c)**(k - j) u_H**j``, it fits the link
machinery of ``ftl/linear_model/_links.py`` (the host encrypts ``u_H**j / j!``,
``j = 1 .. K``; the guest ``m``'s guest factors), so each surrogate runs through the
real protocol in plaintext mode, with the surrogate link swapped in for this
script only. ``K = 1`` is least squares of the margin (convex); ``K = 2`` is the
gradient of ``z + z**2 / 2 + z**3 / 6 - y z`` (at ``c = 0``), unbounded below, and
its mean never falls below ``exp(c) / 2``. Predictions use the exact
``exp(z)``, as FATE's logistic regression predicts with the exact sigmoid.

Prints, for ``--splits`` 70/30 splits of dvisits (rows ordered by id), the test mean
Poisson deviance and D² of scikit-learn's ``PoissonRegressor`` on the pooled
columns, of ``FederatedPoissonRegressor`` and of each surrogate (all ``alpha=1``),
with the L-BFGS iterations and protocol passes; the last block is the mean over the
splits.

Usage: python benchmarks/bench_poisson_taylor.py [--splits 3]
"""

from __future__ import annotations

import argparse
import contextlib
from math import factorial

import numpy as np
from sklearn.linear_model import PoissonRegressor
from sklearn.metrics import d2_tweedie_score, mean_poisson_deviance
from sklearn.model_selection import train_test_split

import ftl
from ftl.linear_model import FederatedPoissonRegressor
from ftl.linear_model import guest as guest_role
from ftl.linear_model import host as host_role
from ftl.linear_model._links import make_link


class TaylorLogLink:
    """Degree-``K`` Taylor expansion of ``exp`` around ``c``, as guest x host products.

    Term ``j`` (``j = 0 .. K``) of ``m(u_G + u_H)`` is ``g_j * u_H**j / j!`` with the
    guest factor ``g_j = exp(c) * sum_{i <= K - j} (u_G - c)**i / i!``; the guest's
    own term is ``g_0 - y``.
    """

    name = "log"
    scale = 1.0
    tracks_loss = False

    def __init__(self, degree: int, centre: float):
        self.degree = int(degree)
        self.centre = float(centre)
        self.host_width = self.degree
        self.guest_width = self.degree + 1

    def _guest_factors(self, u_guest: np.ndarray) -> np.ndarray:
        a = u_guest - self.centre
        partial = np.cumsum([a**i / factorial(i) for i in range(self.degree + 1)], axis=0)
        # column j: the partial sum up to K - j
        return np.exp(self.centre) * partial[::-1].T

    def _host_powers(self, u_host: np.ndarray) -> np.ndarray:
        return np.column_stack([u_host**j / factorial(j) for j in range(1, self.degree + 1)])

    def guest_values(self, u_guest, y):
        g = self._guest_factors(u_guest)
        g[:, 0] -= y
        return g

    def guest_own(self, u_guest, y):
        return self._guest_factors(u_guest)[:, 0] - y

    def guest_weights(self, u_guest):
        return self._guest_factors(u_guest)[:, 1:]

    def host_values(self, u_host):
        return self._host_powers(u_host)

    def host_own(self, u_host):
        return None  # every term's guest factor is per-row (or exp(c)), sent encrypted

    def host_weights(self, u_host):
        return np.column_stack([np.ones(len(u_host)), self._host_powers(u_host)])

    def host_chain(self, u_host):
        return np.ones(len(u_host))


@contextlib.contextmanager
def surrogate(link: TaylorLogLink):
    """Both roles build ``link`` for a Poisson run (this process only)."""

    def patched(params):
        return link if params.get("link") == "log" else make_link(params)

    saved = guest_role.make_link, host_role.make_link
    guest_role.make_link = host_role.make_link = patched
    try:
        yield
    finally:
        guest_role.make_link, host_role.make_link = saved


def check_expansion() -> None:
    """The products add up to the expanded mean (guards the algebra above)."""
    rng = np.random.default_rng(0)
    ug, uh, y = rng.normal(size=5), rng.normal(size=5), rng.poisson(2, size=5)
    for degree, centre in [(1, 0.0), (2, 0.0), (2, 0.7), (3, -0.4)]:
        link = TaylorLogLink(degree, centre)
        z = ug + uh - centre
        mean = np.exp(centre) * sum(z**k / factorial(k) for k in range(degree + 1))
        g, h = link.guest_values(ug, y), link.host_weights(uh)
        np.testing.assert_allclose((g * h).sum(axis=1), mean - y, atol=1e-12)
        # the guest's side: own term plus its weights times the host's columns
        cross = (link.guest_weights(ug) * link.host_values(uh)).sum(axis=1)
        np.testing.assert_allclose(link.guest_own(ug, y) + cross, mean - y, atol=1e-12)


def pooled(X) -> np.ndarray:
    return np.hstack(
        [p.local_features(p.aligned_rows(X.alignment.id, X.positions)) for p in X.parties]
    )


def evaluate(model, X_test, y_test) -> tuple[float, float]:
    pred = model.predict(X_test)
    if not np.all(np.isfinite(pred)) or np.any(pred <= 0):
        return float("nan"), float("nan")
    return mean_poisson_deviance(y_test, pred), d2_tweedie_score(y_test, pred, power=1)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--splits", type=int, default=3)
    args = parser.parse_args()
    check_expansion()

    X, y = ftl.align(*ftl.datasets.load_dvisits(), order="id")
    log_mean = float(np.log(np.mean(y)))
    models = [
        ("sklearn PoissonRegressor, pooled", None),
        ("FederatedPoissonRegressor (exact)", "exact"),
        ("Taylor-1 at 0", TaylorLogLink(1, 0.0)),
        ("Taylor-1 at log(mean y)", TaylorLogLink(1, log_mean)),
        ("Taylor-2 at 0", TaylorLogLink(2, 0.0)),
        ("Taylor-2 at log(mean y)", TaylorLogLink(2, log_mean)),
    ]
    rows: dict[str, list] = {name: [] for name, _ in models}
    for seed in range(args.splits):
        X_tr, X_te, y_tr, y_te = train_test_split(X, y, test_size=0.3, random_state=seed)
        for name, kind in models:
            if kind is None:
                sk = PoissonRegressor(alpha=1.0, max_iter=1000).fit(pooled(X_tr), y_tr)
                dev = mean_poisson_deviance(y_te, sk.predict(pooled(X_te)))
                d2 = sk.score(pooled(X_te), y_te)
                rows[name].append((dev, d2, sk.n_iter_, float("nan")))
                continue
            reg = FederatedPoissonRegressor(alpha=1.0, encryption=None)
            link = surrogate(kind) if kind != "exact" else contextlib.nullcontext()
            try:
                with link, np.errstate(all="ignore"):
                    reg.fit(X_tr, y_tr)
            except ValueError:  # the run left finite numbers (the slope check refused)
                rows[name].append((float("nan"),) * 4)
                continue
            dev, d2 = evaluate(reg, X_te, y_te)
            passes = reg.history_[-1]["passes"] if reg.history_ else 0
            rows[name].append((dev, d2, reg.n_iter_, passes))
        print(f"split {seed}")
        report({name: [values[-1]] for name, values in rows.items()})
    print(f"mean over {args.splits} splits (test 30 %, {len(y)} rows, alpha = 1)")
    report(rows)


def report(rows: dict) -> None:
    reference = np.mean([r[0] for r in rows["sklearn PoissonRegressor, pooled"]])
    print(
        f"| {'model':<36} | test deviance | vs sklearn | D² | iterations | passes |\n"
        f"|{'-' * 38}|---:|---:|---:|---:|---:|"
    )
    for name, values in rows.items():
        dev, d2, iters, passes = (np.mean([v[i] for v in values]) for i in range(4))
        if not np.isfinite(dev):
            print(f"| {name:<36} | diverged | — | — | — | — |")
            continue
        gap = f"{100 * (dev / reference - 1):+.2f} %"
        shown = "—" if np.isnan(passes) else f"{passes:.0f}"
        print(f"| {name:<36} | {dev:.5f} | {gap} | {d2:.4f} | {iters:.0f} | {shown} |")


if __name__ == "__main__":
    main()
