"""Targets from a host's gradient in the federated regressors, attacked (docs/protocols.md §3.12).

Every pass a host learns its own gradient ``X_H.T r``, with the residual
``r = mean(u_G + u_H) - y``: ``u_G + u_H - y`` for ridge, ``exp(u_G + u_H) - y``
for Poisson. The host's columns are its own data: a *spy column*, non-zero on a
single row, makes that row's residual one entry of the gradient. The guest can
neither see nor refuse it, and no minimum of rows per batch helps (one column, one
row). Each test runs a real fit with a host that follows the protocol and reads
what it legitimately computes -- its gradient -- on 120 spy rows.

(a) The first pass. The host's weights start at zero, so a spy row's first
    residual is ``mean(u_G) - y``: with a zero guest start the target itself;
    with the start of the logistic link (margins of spread 1) the target to
    within a few units, i.e. all of it when targets are in the thousands. The
    guest now spreads its secret start like its targets (``start_margins``).
(b) Every pass. The guest's margins move inside the span of its own columns,
    the start included, so the host reads the spy rows' targets modulo that
    span: ridge targets exactly (a projection), and Poisson counts themselves
    (the logarithm breaks the ambiguity: the passes are consistent with the true
    counts and with no count one away). No start hides this. ``label_privacy``
    (Laplace noise on the targets) leaves the host the noisy targets only.
"""

from __future__ import annotations

import functools

import numpy as np
import pytest

import ftl
from ftl.linear_model import FederatedLinearRegression, FederatedPoissonRegressor, _start
from ftl.linear_model import guest as guest_role
from ftl.linear_model._links import MAX_LOG_MARGIN
from ftl.linear_model.host import LogisticHost
from tests.security._spy import GUEST_COLUMNS, HOST_COLUMNS, claims
from tests.security.test_label_leak import _Enough, curious_host, protocol_targets


def regressor(counts: bool, **params):
    cls = FederatedPoissonRegressor if counts else FederatedLinearRegression
    return cls(encryption=None, **params)


# --------------------------------------------------------------------------- what the host reads
def first_pass_reading(monkeypatch, X, y, counts: bool) -> np.ndarray:
    """``-r`` on the spy rows in the first pass: ``y - mean(u_G)`` (``u_H = 0``)."""
    seen = curious_host(monkeypatch)
    with pytest.raises(_Enough):
        regressor(counts).fit(X, y)
    return -seen[0]["g"][HOST_COLUMNS:]


def spy_passes(monkeypatch) -> dict:
    """Record, per pass, the host's gradient (:func:`curious_host`) and its own
    margins, and which passes L-BFGS accepted (an ``lr.accept`` follows them)."""
    seen = {"gradients": curious_host(monkeypatch, stop_after=None), "margins": []}
    seen["accepted"] = []
    contribution, accept = LogisticHost.contribution, LogisticHost.accept

    @functools.wraps(contribution)
    def recording_contribution(self, request):
        reply = contribution(self, request)
        seen["margins"].append(self.margin.copy())
        return reply

    @functools.wraps(accept)
    def recording_accept(self, request):
        seen["accepted"].append(len(seen["margins"]) - 1)
        return accept(self, request)

    monkeypatch.setattr(LogisticHost, "contribution", recording_contribution)
    monkeypatch.setattr(LogisticHost, "accept", recording_accept)
    return seen


def spy_matrices(seen: dict, spy: np.ndarray, counts: bool):
    """Residuals and host margins on the spy rows at the accepted passes, (rows,
    passes): a line search's rejected trials can reach margins where ``exp``
    underflows or is capped. Poisson passes in which the host's own margins reached
    the cap are dropped too (there ``exp(u_H)`` is not its margin's)."""
    accepted = seen["accepted"]
    residuals = np.array([seen["gradients"][t]["g"][HOST_COLUMNS:] for t in accepted]).T
    own = np.array([seen["margins"][t][spy] for t in accepted]).T
    keep = own.max(axis=0) < MAX_LOG_MARGIN if counts else slice(None)
    return residuals[:, keep], own[:, keep]


def inconsistency(residuals, own, candidate, counts: bool) -> float:
    """How far candidate targets are from explaining every pass.

    Per pass ``t``, ``link(r_t + y) - u_H,t`` is the guest's margin ``X_G w_t`` on
    the spy rows, so for the true ``y`` the matrix of these columns has rank at
    most ``GUEST_COLUMNS + 1`` (public: every party's width is in ``lr.open``).
    Returns its next singular value relative to the largest: ``inf`` where a
    Poisson candidate makes a mean negative (refuted); passes in which a mean is
    zero to rounding (``exp`` underflowed in a line-search trial) say nothing.
    """
    means = residuals + candidate[:, None]
    if counts:
        rounding = 1e-6 * np.max(np.abs(candidate))
        if means.min() < -rounding:
            return np.inf
        usable = means.min(axis=0) > rounding
        means, own = np.log(means[:, usable]), own[:, usable]
    values = np.linalg.svd(means - own, compute_uv=False)
    return float(values[GUEST_COLUMNS + 1] / values[0])


def picks_the_truth(residuals, own, truth, counts: bool) -> float:
    """Share of spy rows on which the true target explains the passes better than
    the target one unit away (the neighbouring data set of label privacy)."""
    at_truth = inconsistency(residuals, own, truth, counts)
    wins = []
    for i in range(len(truth)):
        neighbour = truth.copy()
        neighbour[i] += 1.0
        wins.append(at_truth < inconsistency(residuals, own, neighbour, counts))
    return float(np.mean(wins))


def unexplained(reading: np.ndarray, truth: np.ndarray) -> float:
    """Error of the host's best affine estimate of the targets from its reading, in
    units of the targets' spread: ``sqrt(1 - corr**2)`` (0: exact, 1: nothing)."""
    corr = np.corrcoef(reading, truth)[0, 1]
    return float(np.sqrt(max(0.0, 1.0 - corr**2)))


def logistic_start(link, y):
    """The start every link had before (test-only switch): spread 1 around 0."""
    return 0.0, _start.START_MARGIN_SPREAD


# --------------------------------------------------------------------------- (a) the first pass
@pytest.mark.parametrize("counts", [False, True], ids=["ridge", "poisson"])
def test_first_pass_reads_the_targets_unless_the_start_spreads_like_them(monkeypatch, counts):
    X, y, spy = claims(counts)
    truth = y[spy]
    with monkeypatch.context() as old:
        old.setattr(_start, "start_margins", logistic_start)
        old.setattr(guest_role, "random_start", lambda x, icpt, rng: np.zeros(x.shape[1] + icpt))
        zero_start = first_pass_reading(old, X, y, counts)
    # zero start: -r = y - 1 for Poisson (exp(0) = 1), y itself for ridge
    np.testing.assert_allclose(zero_start + (1.0 if counts else 0.0), truth, atol=1e-9)
    with monkeypatch.context() as old:
        old.setattr(_start, "start_margins", logistic_start)
        spread_one = first_pass_reading(old, X, y, counts)
    # the logistic start's mask is a few units: the claims show through
    assert unexplained(spread_one, truth) < 0.25
    if not counts:
        assert np.max(np.abs(spread_one - truth)) < 0.02 * np.std(y)
    # the guest's start now spreads 3 std(y): the best affine estimate from the
    # reading errs by more than half the targets' spread (corr < 0.87)
    scaled = first_pass_reading(monkeypatch, X, y, counts)
    assert unexplained(scaled, truth) > 0.5, np.corrcoef(scaled, truth)[0, 1]
    assert np.sqrt(np.mean((scaled - truth) ** 2)) > np.std(y)


def test_start_margins_follow_the_targets():
    y = np.array([1000.0, 2000.0, 3000.0, 6000.0])
    centre, spread = _start.start_margins("identity", y)
    assert centre == pytest.approx(np.mean(y))
    assert spread == pytest.approx(_start.TARGET_MASK_RATIO * np.std(y))
    # Poisson: the log-normal mask averages mean(y) with 3 std(y) ...
    counts = np.array([40.0, 50.0, 60.0, 55.0, 45.0])
    centre, spread = _start.start_margins("log", counts)
    mask_mean = np.exp(centre + spread**2 / 2)
    assert mask_mean == pytest.approx(np.mean(counts))
    assert mask_mean * np.sqrt(np.expm1(spread**2)) == pytest.approx(3 * np.std(counts))
    # ... up to the logistic start's log-spread, and never centred below 0
    assert _start.start_margins("log", np.array([0.0, 0.0, 0.0, 1.0, 4.0])) == (0.0, 1.0)
    assert _start.start_margins("logit", y) == (0.0, _start.START_MARGIN_SPREAD)
    # the logistic start is returned as drawn (FederatedLogisticRegression unchanged)
    weights = np.array([0.3, -0.2, 0.1])
    params = {"link": "logit", "fit_intercept": True}
    assert _start.start_for_link(weights, params, y) is weights
    scaled = _start.start_for_link(weights, {**params, "link": "identity"}, y)
    factor = _start.TARGET_MASK_RATIO * np.std(y)
    np.testing.assert_allclose(scaled, [0.3 * factor, -0.2 * factor, 0.1 * factor + np.mean(y)])


# --------------------------------------------------------------------------- (b) every pass
def test_spy_host_reads_ridge_targets_up_to_the_guest_columns(monkeypatch):
    """``r_t - u_H,t = X_G w_t - y`` on the spy rows: the differences between passes
    span the guest's columns there, and projecting them out of any pass leaves
    the targets' own projection, exactly, whatever the start."""
    X, y, spy = claims(counts=False)
    truth = y[spy]
    seen = spy_passes(monkeypatch)
    regressor(False).fit(X, y)
    residuals, own = spy_matrices(seen, spy, counts=False)
    guest_part = residuals - own  # X_G w_t - y
    basis = np.linalg.svd(guest_part[:, 1:] - guest_part[:, :1], full_matrices=False)[0]
    basis = basis[:, : GUEST_COLUMNS + 1]
    outside = np.eye(len(spy)) - basis @ basis.T
    read = outside @ -guest_part[:, 0]
    target = outside @ truth
    np.testing.assert_allclose(read, target, atol=1e-6 * np.linalg.norm(target))
    # nearly all of the claims lie outside the guest's five dimensions (99 %)
    assert np.var(target) > 0.9 * np.var(truth)
    assert unexplained(read, truth) < 0.25  # 0.12
    # and the passes single out the true claim of every spy row
    assert picks_the_truth(residuals, own, truth, counts=False) == 1.0


def test_spy_host_pins_poisson_counts(monkeypatch):
    """``log(r_t + y) - u_H,t = X_G w_t``: at the true counts the passes have the
    guest's rank, at any count one away on any spy row they do not."""
    X, y, spy = claims(counts=True)
    truth = y[spy]
    seen = spy_passes(monkeypatch)
    regressor(True).fit(X, y)
    residuals, own = spy_matrices(seen, spy, counts=True)
    assert residuals.shape[1] > 2 * (GUEST_COLUMNS + 1)
    assert inconsistency(residuals, own, truth, counts=True) < 1e-12
    assert picks_the_truth(residuals, own, truth, counts=True) == 1.0


@pytest.mark.parametrize("counts", [False, True], ids=["ridge", "poisson"])
def test_label_privacy_leaves_the_spy_host_the_noisy_targets(monkeypatch, counts):
    """With ``label_privacy`` the passes are explained by the noisy targets the
    guest trained on (Laplace, scale range / epsilon), not by the true ones: the
    same attack reads an epsilon-label-DP release."""
    X, y, spy = claims(counts)
    truth = y[spy]
    targets = protocol_targets(monkeypatch)
    seen = spy_passes(monkeypatch)
    reg = regressor(counts, label_privacy=2.0).fit(X, y)
    residuals, own = spy_matrices(seen, spy, counts)
    noisy = targets[0][spy]
    assert inconsistency(residuals, own, noisy, counts) < 1e-9
    assert inconsistency(residuals, own, truth, counts) > 1e-6
    assert picks_the_truth(residuals, own, truth, counts) < 0.9
    assert np.mean(np.abs(noisy - truth)) > np.std(y)
    assert reg.label_privacy_["scale"] == pytest.approx((y.max() - y.min()) / 2.0)


# --------------------------------------------------------------------------- the noise
def test_label_privacy_noise_is_unbiased_laplace_reused_per_row(monkeypatch):
    X, y = ftl.align(*ftl.datasets.load_student(), order="id")
    targets = protocol_targets(monkeypatch)
    kw = dict(encryption=None, label_privacy=1.0, max_iter=2, label_range=(0, 20))
    FederatedLinearRegression(**kw).fit(X[:300], y[:300])
    FederatedLinearRegression(**kw).fit(X[100:], y[100:])
    noise = targets[0] - y[:300]
    scale = 20.0
    # Laplace(scale): mean 0, mean absolute value scale
    assert abs(noise.mean()) < 4 * np.sqrt(2) * scale / np.sqrt(len(noise))
    assert np.mean(np.abs(noise)) == pytest.approx(scale, rel=0.2)
    # a row's noise is a function of the guest's secret and the row: shared rows agree
    np.testing.assert_array_equal(targets[0][100:], targets[1][:200])
    # targets outside the public range are clipped before the noise
    reg = FederatedLinearRegression(**{**kw, "label_range": (5, 15)}).fit(X[:300], y[:300])
    clipped = np.clip(y[:300], 5, 15)
    assert np.mean(np.abs(targets[2] - clipped)) == pytest.approx(10.0, rel=0.2)
    assert reg.label_privacy_ == {"epsilon": 1.0, "range": (5.0, 15.0), "scale": 10.0}


def test_poisson_label_privacy_needs_a_penalty():
    X, y = ftl.align(*ftl.datasets.load_dvisits(), order="id")
    with pytest.raises(ValueError, match="label_privacy needs alpha > 0"):
        FederatedPoissonRegressor(encryption=None, label_privacy=1.0, alpha=0.0).fit(X, y)
    with pytest.raises(ValueError, match="label_range"):
        FederatedLinearRegression(encryption=None, label_privacy=1.0, label_range=(3, 1)).fit(X, y)
