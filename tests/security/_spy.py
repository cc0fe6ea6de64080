"""Spy columns: a host's columns, each non-zero on a single row (docs/protocols.md
§3.12, §5.2).

A host's columns are its own data, so it may hold a column that is zero except on
one row: that row's residual is then one entry of the host's gradient, every pass,
and neither the guest nor any minimum of rows per batch can refuse it. The attack
tests of the regressors (``test_regression_attacks``) and of logistic regression
(``test_spy_columns``) share these parties.
"""

from __future__ import annotations

import numpy as np

import ftl

#: Real columns of the host; its spy columns follow them.
HOST_COLUMNS = 6
#: Guest columns, plus the intercept: the dimension its margins move in.
GUEST_COLUMNS = 4
#: The guest's secret (normally 256 bits from the OS), fixed so that its random start
#: and label noise, and so every attack's outcome, are the same in every run.
GUEST_SECRET = bytes(32)


# --------------------------------------------------------------------------- the parties
def claims(counts: bool, n: int = 400, n_spy: int = 120, seed: int = 0):
    """An insurer (guest: 4 columns and the targets) and a garage (host: 6 columns
    and one spy column per spy row), aligned in id order.

    Targets are claim amounts around 2000 (std ~600) or claim counts around 50
    (std ~18); the guest's columns explain little of them. Returns the handle,
    the targets and the spy rows.
    """
    rng = np.random.default_rng(seed)
    x_guest = rng.normal(size=(n, GUEST_COLUMNS))
    x_host = rng.normal(size=(n, HOST_COLUMNS))
    if counts:
        y = rng.poisson(np.exp(6.2 + 0.1 * x_guest[:, 0] + 0.3 * x_host[:, 0])).astype(float)
    else:
        y = np.round(2000 + 100 * x_guest[:, 0] + 500 * x_host[:, 0] + 300 * rng.normal(size=n))
    spy = np.sort(rng.choice(n, n_spy, replace=False))
    spies = np.zeros((n, n_spy))
    spies[spy, np.arange(n_spy)] = 1.0
    ids = np.arange(1000, 1000 + n)  # four digits: id order is row order
    insurer = ftl.Party("insurer", x_guest, ids=ids, labels=y)
    insurer._secret = GUEST_SECRET
    garage = ftl.Party("garage", np.hstack([x_host, spies]), ids=ids)
    X, y_aligned = ftl.align(insurer, garage, order="id")
    return X, y_aligned, spy
