"""The guest's secret and the secret random point its weights start from.

A zero start would make every host's first gradient a known function of the labels
(docs/protocols.md §5.2), so the guest starts at a random point of its own block,
drawn from a secret that never leaves the guest. Its margins mask the first
residual: for the logistic link they spread like the label signal; for the
regression links they are rescaled to the targets' own spread (§3.12), which only
the guest knows.
"""

from __future__ import annotations

import hashlib
import secrets

import numpy as np

__all__ = [
    "START_MARGIN_SPREAD",
    "TARGET_MASK_RATIO",
    "guest_secret",
    "random_start",
    "start_for_link",
    "start_margins",
    "start_seed",
]

#: Standard deviation of the guest's secret starting margins over the training rows
#: (docs/protocols.md §5.2): of the order of the label signal ``sigmoid(u) - y``,
#: small enough that the optimiser starts near the usual region.
START_MARGIN_SPREAD = 1.0
#: A regressor's start margins mask the first residual with a spread of this many
#: standard deviations of the targets (docs/protocols.md §3.12): a host that reads a
#: row's first residual ``mask - y`` then sees the target under noise three times
#: its spread (correlation with the targets about 1 / sqrt(1 + 3**2) = 0.32).
TARGET_MASK_RATIO = 3.0
#: Streams of the guest's secret: one per binary model's start.
_START_STREAM = 0x53545254  # "STRT"


def guest_secret(party) -> int:
    """The guest party's secret (256 bits from the OS when the party was created).

    It never leaves the guest. It seeds the random start and randomized response,
    so a host that knows or guesses ``random_state`` cannot reproduce them; a guest
    that fits again on the same :class:`~ftl.Party` gets the same start and noise.
    """
    base = party
    while getattr(base, "_base", None) is not None:  # a preprocessed view of the party
        base = base._base
    secret = base.__dict__.get("_secret")
    if secret is None:  # a party unpickled from an older version: make one now
        secret = base._secret = secrets.token_bytes(32)
    return int.from_bytes(secret, "big")


def start_seed(
    secret: int | None, model: int, seed: int | None = None, rows: np.ndarray | None = None
) -> np.random.SeedSequence:
    """Seed of binary model ``model``'s random start.

    Drawn from the guest's secret and the set of training rows (the guest's own row
    numbers ``rows``), and from ``seed`` (the fit's, from ``random_state``) if given.
    Without ``seed`` the start is a fixed function of the rows: a deterministic
    optimiser (L-BFGS) then repeats exactly the same run on the same rows, so
    repeated fits show a host nothing it could average the start away with; other
    rows give an independent start. ``secret=None`` (a simulated federation, whose
    driver holds every party's data) uses ``seed`` alone.
    """
    if secret is None:
        entropy = [int(seed or 0)]
    else:
        canonical = np.sort(np.asarray(rows, dtype=np.int64)).astype("<i8").tobytes()
        digest = int.from_bytes(hashlib.sha256(canonical).digest(), "big")
        entropy = [int(secret), digest] + ([] if seed is None else [int(seed)])
    return np.random.SeedSequence(entropy=entropy, spawn_key=(_START_STREAM, int(model)))


def random_start(features: np.ndarray, fit_intercept: bool, rng: np.random.Generator) -> np.ndarray:
    """The guest's secret starting weights (and intercept, last).

    A random direction of the guest's columns, scaled so that the starting margins
    ``u_G = X_G w + b`` spread with standard deviation :data:`START_MARGIN_SPREAD`
    over the training rows, centred on a random offset (``N(0, 1/4)``). From a zero
    start every party's first gradient would be ``X_P.T (sigmoid(u_H) - y)`` with
    ``u_H`` known to the host, so the host's first gradient would be a known
    function of the labels (docs/protocols.md §5.2); with ``u_G`` secret per row it
    is not. The objective is convex, so L-BFGS reaches the same optimum from here.
    """
    features = np.asarray(features, dtype=np.float64)
    weights = rng.standard_normal(features.shape[1])
    margins = features @ weights
    spread = float(np.std(margins)) if len(margins) else 0.0
    if spread > 0:
        weights *= START_MARGIN_SPREAD / spread
        margins *= START_MARGIN_SPREAD / spread
    else:  # constant or no columns: only an intercept can move the margins
        weights[:] = 0.0
        margins[:] = 0.0
    if not fit_intercept:
        return weights
    offset = 0.5 * START_MARGIN_SPREAD * rng.standard_normal()
    intercept = offset - (float(np.mean(margins)) if len(margins) else 0.0)
    return np.append(weights, intercept)


def start_margins(link: str, y: np.ndarray) -> tuple[float, float]:
    """``(centre, spread)`` of the guest's secret starting margins for ``link``.

    The first residual a host's gradient carries is ``mean(u_G) - y`` (its own
    margins are zero), so the guest's start masks the targets only if
    ``mean(u_G)`` varies over the rows as much as ``y`` does:

    * ``"logit"`` (and any other name): spread :data:`START_MARGIN_SPREAD`
      around 0, of the order of the label signal ``sigmoid(u) - y``;
    * ``"identity"``: spread :data:`TARGET_MASK_RATIO` times ``std(y)`` around
      ``mean(y)`` (a spread of 1 hides nothing of targets in the thousands);
    * ``"log"``: the mean is ``exp(u_G)``, log-normal for normal margins; margins
      of log-spread ``s`` around ``log(mean(y)) - s**2 / 2`` give means that
      average ``mean(y)`` and spread :data:`TARGET_MASK_RATIO` times ``std(y)``
      when ``exp(s**2) - 1 = (ratio * std(y) / mean(y))**2``. ``s`` is capped at
      :data:`START_MARGIN_SPREAD` (a wider log-normal puts most rows' means far
      below its mean, where small counts show through ``exp(u_G) - y``) and the
      centre is never below the logistic start's 0 (means of about one count);
      low counts (``mean(y) < 1.65``) therefore start as the logistic link does.

    Targets without spread (or a log link's zero mean) keep the logistic start.
    """
    y = np.asarray(y, dtype=np.float64)
    mean = float(np.mean(y)) if len(y) else 0.0
    std = float(np.std(y)) if len(y) else 0.0
    if link == "identity" and std > 0:
        return mean, TARGET_MASK_RATIO * std
    if link == "log" and std > 0 and mean > 0:
        spread = float(np.sqrt(np.log1p((TARGET_MASK_RATIO * std / mean) ** 2)))
        spread = min(spread, START_MARGIN_SPREAD)
        return max(float(np.log(mean)) - spread**2 / 2, 0.0), spread
    return 0.0, START_MARGIN_SPREAD


def start_for_link(weights: np.ndarray, params: dict, y: np.ndarray) -> np.ndarray:
    """:func:`random_start`'s weights rescaled to the :func:`start_margins` of the
    protocol parameters' ``link`` (the logistic start is returned unchanged).

    The random start's margins spread :data:`START_MARGIN_SPREAD` around a random
    offset; multiplying every weight by ``spread / START_MARGIN_SPREAD`` and adding
    ``centre`` to the intercept gives margins of spread ``spread`` around
    ``centre`` plus an offset scaled alike, exactly as if they had been drawn at
    that spread. Without an intercept only the spread applies.
    """
    centre, spread = start_margins(params.get("link", "logit"), y)
    if centre == 0.0 and spread == START_MARGIN_SPREAD:
        return weights
    scaled = np.asarray(weights, dtype=np.float64) * (spread / START_MARGIN_SPREAD)
    if params["fit_intercept"]:
        scaled[-1] += centre
    return scaled
