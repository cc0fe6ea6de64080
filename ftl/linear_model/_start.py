"""The guest's secret and the secret random point its weights start from.

A zero start would make every host's first gradient a known function of the labels
(docs/protocols.md §5.2), so the guest starts at a random point of its own block,
drawn from a secret that never leaves the guest.
"""

from __future__ import annotations

import hashlib
import secrets

import numpy as np

__all__ = ["START_MARGIN_SPREAD", "guest_secret", "random_start", "start_seed"]

#: Standard deviation of the guest's secret starting margins over the training rows
#: (docs/protocols.md §5.2): of the order of the label signal ``sigmoid(u) - y``,
#: small enough that the optimiser starts near the usual region.
START_MARGIN_SPREAD = 1.0
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
