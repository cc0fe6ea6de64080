"""The driver's line search decides from slopes alone (no pass computes the loss).

A trial step is accepted once ``g . d <= ACCEPT_SLOPE |g0 . d|`` (strong Wolfe's
``c2 = 0.9``). On a one-dimensional quadratic ``f(w) = q w^2 / 2`` started at
``w = 1``, the first direction is ``-H0 g = -q`` (the party's bound is the identity)
and the unit step lands where the slope is ``q - 1`` times ``|g0 . d|``: the test
picks ``q`` to place the trial just inside or outside the rule.
"""

import numpy as np
import pytest

from ftl.linear_model import _lbfgs
from ftl.linear_model._optim import QuasiNewton


class _Quadratic:
    """One party minimising ``q w^2 / 2`` through :func:`_lbfgs.minimise`, counting passes."""

    def __init__(self, q: float):
        self.q = q
        # features whose bound X.T X / 4n is the identity: H0 = I
        self.optimizer = QuasiNewton(np.array([[2.0]]), alpha=0.0, n_unpenalised=0)
        self.w = np.array([1.0])
        self.passes = 0

    def objective(self, w) -> float:
        return float(self.q * w[0] ** 2 / 2)

    def evaluate(self) -> float:
        self.passes += 1
        self.optimizer.step(self.w, self.q * self.w)
        return self.optimizer.slope()

    def accept(self, keep_pair: bool, clear_memory: bool):
        gram = self.optimizer.accept(self.w, keep_pair, clear_memory)
        return gram, 0.0, float(self.w @ self.w)

    def move(self, coefficients, step: float) -> None:
        self.w = self.optimizer.move(coefficients, step)

    def first_iteration(self) -> None:
        _lbfgs.minimise(self.evaluate, self.accept, self.move, 1, 0.0, lambda delta, norm, d: None)


@pytest.mark.parametrize("ratio", [0.6, 0.89])
def test_a_unit_step_within_the_curvature_bound_costs_one_pass(ratio, monkeypatch):
    """A unit step whose slope is ``ratio`` of ``|g0 . d|`` (0.5 < ratio < 0.9) is
    accepted after one pass (the previous rule, ``1/2``, spent a second trial on it),
    and the objective did fall, by at least 5 % of ``|g0 . d|``: on a quadratic the
    slope rule is the Armijo test."""
    run = _Quadratic(1.0 + ratio)
    run.first_iteration()
    assert run.passes == 2  # the start and the unit step
    np.testing.assert_allclose(run.w, [1.0 - run.q])
    slope0 = run.q**2  # |g0 . d| with d = -g0
    assert run.objective([1.0]) - run.objective(run.w) >= 0.05 * slope0
    monkeypatch.setattr(_lbfgs, "ACCEPT_SLOPE", 0.5)
    previous = _Quadratic(1.0 + ratio)
    previous.first_iteration()
    assert previous.passes == 3


def test_a_unit_step_beyond_the_curvature_bound_is_searched():
    """A unit step at or past the mirror image of the start (slope ratio >= 0.9)
    gained (almost) nothing: the secant step follows, which on a quadratic is exact."""
    run = _Quadratic(2.0)  # slope ratio 1: f(w + d) = f(w)
    run.first_iteration()
    assert run.passes == 3
    np.testing.assert_allclose(run.w, [0.0], atol=1e-12)
    assert _lbfgs.ACCEPT_SLOPE < 1.0
