"""The driver's side of the vector-free L-BFGS: direction, line search, stopping rule.

The guest runs it. Every party's part goes through three callables, the protocol
operations of ``guest.py``: ``evaluate`` runs one pass over the data at the current
trial point (every party takes its gradient) and returns the slope ``g . d``
summed over the parties; ``accept`` makes every party's trial point its base and
returns the summed Gram matrix of the basis (:class:`~ftl.linear_model._optim.QuasiNewton`)
with the squared norms of the weight change and of the weights; ``move`` sends every
party to ``base + t d``. Nothing here sees a vector of any party.

**Stopping rule.** ``tol="auto"`` stops once L-BFGS itself estimates that at most
:data:`AUTO_DECREASE` of the objective is left to gain. At a base point with
gradient ``g`` and direction ``d = -H_k g`` its quadratic model of the objective
falls by ``g.H_k g / 2 = -g.d / 2`` to the model's minimum (the Newton decrement
of Boyd & Vandenberghe, *Convex Optimization* §9.5.1, with the L-BFGS matrix for
the inverse Hessian). Each party's block of ``H_0`` is the inverse of its own bound
``X_P.T X_P / 4n + alpha I`` on its Hessian block, and the whole Hessian is at most
``P`` times that block-diagonal bound (``P`` parties), so at least ``g.H_0 g / 2P``
is left to gain: the rule takes the larger of ``-g.d`` and ``g.H_0 g``, which keeps an
L-BFGS matrix that has not yet learnt the curvature from stopping the run early. Both
are read off the Gram matrix the driver already has: the rule needs no message. They
are in units of the objective (mean log-loss plus penalty), so the rule does not
depend on how the parties scale their features, unlike a bound on the gradient's
norm. It is an estimate, not a bound (docs/sigmoid.md, *The optimiser*). A number
``tol`` keeps its documented meaning: stop once ``||g|| <= tol``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from ftl.linear_model._optim import LBFGS_MEMORY, basis_size, lbfgs_coefficients

__all__ = [
    "ACCEPT_SLOPE",
    "AUTO_DECREASE",
    "MAX_LINE_SEARCH",
    "MAX_STEP_GROWTH",
    "Boundary",
    "Direction",
    "minimise",
    "next_step",
    "plan_direction",
]

#: ``tol="auto"``: stop when the estimated gain left is at most this (mean log-loss).
AUTO_DECREASE = 5e-5
#: Trial points per iteration before the memory is cleared.
MAX_LINE_SEARCH = 8
#: A trial step is accepted once ``g . d <= ACCEPT_SLOPE * |g0 . d|``: the upper half
#: of the strong Wolfe curvature condition with the ``c2 = 0.9`` that Nocedal &
#: Wright (and scipy) use for quasi-Newton methods. Where the objective is quadratic
#: along the line it also proves a decrease of at least ``0.05 |g0 . d|`` (there the
#: objective changes by the mean of the two slopes): the Armijo test decided from
#: slopes alone, since no pass computes the loss. It was 1/2, which sent 6-15 % of
#: the unit steps on the bundled data to a second trial (docs/sigmoid.md).
ACCEPT_SLOPE = 0.9


@dataclass(frozen=True)
class Direction:
    """The next search direction from a base point.

    Attributes
    ----------
    coefficients : ndarray
        ``d = sum_j coefficients[j] * basis[j]`` (every party's blocks).
    slope : float
        ``g . d`` at the base point (negative: a descent direction).
    gradient_norm : float
        ``||g||`` over all parties' weights.
    decrease : float
        Estimated gain left, ``max(-g.d, g.H_0 g) / 2``.
    """

    coefficients: np.ndarray
    slope: float
    gradient_norm: float
    decrease: float

    def converged(self, tol: float | str) -> bool:
        """Whether to stop here: ``tol="auto"`` on the decrease, a number on ``||g||``."""
        if tol == "auto":
            return self.decrease <= AUTO_DECREASE
        return self.gradient_norm <= float(tol)


def plan_direction(gram: np.ndarray, n_pairs: int) -> Direction:
    """The L-BFGS direction at a base point from the parties' summed Gram matrix.

    Falls back to ``-H_0 g`` where the two-loop recursion gives no descent direction.
    """
    g = 2 * n_pairs  # index of the gradient in the basis; H_0 g is the last vector
    coefficients = lbfgs_coefficients(gram, n_pairs)
    slope = float(coefficients @ gram[:, g])
    if not slope < 0:  # not a descent direction: restart from -H0 g
        coefficients = np.zeros(basis_size(n_pairs))
        coefficients[-1] = -1.0
        slope = float(coefficients @ gram[:, g])
    bound = float(gram[g, -1])  # g . H0 g
    return Direction(
        coefficients,
        slope,
        float(np.sqrt(max(gram[g, g], 0.0))),
        max(-slope, bound, 0.0) / 2,
    )


#: A trial step at most this many times the last one (the slope's secant may
#: extrapolate far where the objective's curvature grows along the line, as the
#: exponential of Poisson regression does).
MAX_STEP_GROWTH = 4.0


def next_step(step: float, slope: float, low: tuple[float, float]) -> tuple[float, tuple]:
    """The next trial step of the secant line search on the directional derivative.

    ``low`` is the farthest step known to descend (``slope < 0`` there; step 0 with
    ``g0 . d`` at first). The next step is the zero of the slope's secant between
    ``low`` and this trial: an interpolation if the slope here is positive (the
    minimum lies between), else an extrapolation capped at
    :data:`MAX_STEP_GROWTH` times this step. Returns the step and the new ``low``.
    """
    low_step, low_slope = low
    if slope < 0:  # still descending: extrapolate from here, boundedly
        secant = step + (step - low_step) * slope / (low_slope - slope)
        return min(secant, MAX_STEP_GROWTH * step), (step, slope)
    secant = low_step + (step - low_step) * low_slope / (low_slope - slope)
    # stay clear of both ends so that a curved slope cannot stall the search
    width = step - low_step
    return min(max(secant, low_step + 0.1 * width), step - 0.1 * width), low


@dataclass(frozen=True)
class Boundary:
    """Where the driver stands after an iteration: all L-BFGS needs to go on.

    Attributes
    ----------
    gram : ndarray
        The parties' summed Gram matrix of the basis at the base point.
    n_pairs : int
        ``(s, y)`` pairs in the memory.
    iteration : int
        Iterations completed (0: only the first base point is accepted).
    """

    gram: np.ndarray
    n_pairs: int
    iteration: int


def minimise(
    evaluate: Callable[[], float],
    accept: Callable[[bool, bool], tuple[np.ndarray, float, float]],
    move: Callable[[np.ndarray, float], None],
    max_iter: int,
    tol: float | str,
    on_iteration: Callable[[float, float, Direction], None],
    start: Boundary | None = None,
    at_boundary: Callable[[Boundary], None] | None = None,
) -> None:
    """Full-batch L-BFGS with a secant line search on the directional derivative.

    Each iteration moves every party to ``base + t d`` (``t = 1`` first) and runs a
    pass (``evaluate``). The step is accepted once ``g . d <= ACCEPT_SLOPE |g0 . d|``
    (:data:`ACCEPT_SLOPE`; for a convex objective a non-positive slope proves
    descent); otherwise the next trial is the secant step on the slope from the
    farthest descending step (:func:`next_step`), up to :data:`MAX_LINE_SEARCH`
    trials, after which the memory is cleared. The ``(s, y)`` pair is kept when
    ``s . y = t (g.d - g0.d) > 0``. ``on_iteration(delta, norm, direction)``
    follows every iteration with the squared norms of the weight change and of the
    weights and the next direction (whose ``decrease`` the stopping rule reads);
    then ``at_boundary`` gets the :class:`Boundary` reached (also after the first
    base point is accepted), from which ``start`` resumes the run once every party
    is back at that base point.
    """
    if start is None:
        evaluate()
        gram, _, _ = accept(False, False)
        start = Boundary(gram, 0, 0)
        if at_boundary is not None:
            at_boundary(start)
    gram, n_pairs, iteration = start.gram, start.n_pairs, start.iteration
    direction = plan_direction(gram, n_pairs)
    while iteration < max_iter:
        if direction.converged(tol):
            break
        slope0 = direction.slope
        step, accepted = 1.0, False
        low = (0.0, slope0)  # the farthest step known to still descend
        for _trial in range(MAX_LINE_SEARCH):
            move(direction.coefficients, step)
            slope = evaluate()
            if slope <= ACCEPT_SLOPE * abs(slope0):
                accepted = True
                break
            step, low = next_step(step, slope, low)
        curvature = step * (slope - slope0)  # s . y
        keep = accepted and curvature > 1e-12 * step * abs(slope0)
        gram, delta, norm = accept(keep, not accepted)
        n_pairs = min(n_pairs + 1, LBFGS_MEMORY) if keep else (n_pairs if accepted else 0)
        direction = plan_direction(gram, n_pairs)
        iteration += 1
        on_iteration(delta, norm, direction)
        if at_boundary is not None:
            at_boundary(Boundary(gram, n_pairs, iteration))
