"""Labels from spy columns in logistic regression, attacked (docs/protocols.md §5.2).

Every pass a host learns its own gradient ``X_H.T r`` with the residual
``r = sigmoid~(u_G + u_H) - y``. A spy column (:mod:`tests.security._spy`), non-zero
on a single row, makes that row's residual an entry of the gradient, and its sign
is the label: ``-r > 0`` exactly when ``y = 1`` wherever ``sigmoid~`` lies inside
``(0, 1)`` -- at every margin of the start; later a confidently predicted row may
reach the approximation's flat 0 or 1, where its residual 0 says nothing. The
guest's secret random start, its minimum batch (two rows per host column still
admits half as many spy columns) and L-BFGS's full batches change nothing. Each
test runs a real fit with a host that follows the protocol and reads what it
legitimately computes -- its gradient
(:func:`~tests.security.test_label_leak.curious_host`) -- on 120 spy rows.

``label_privacy=epsilon`` is the defence: the guest trains on randomized
responses, so the same reading yields the responses, which are the true labels
with probability ``e**epsilon / (1 + e**epsilon)`` each, and no more.
"""

from __future__ import annotations

import numpy as np

from ftl import FederatedLogisticRegression
from ftl.linear_model._label_privacy import response_probabilities
from tests.security._spy import HOST_COLUMNS, claims
from tests.security.test_label_leak import curious_host, protocol_targets

#: A claim above this amount is a large claim: the guest's binary label.
LARGE_CLAIM = 2000


def large_claims():
    """The parties of :func:`~tests.security._spy.claims`, the insurer labelling
    each claim large or not; returns the handle, the labels and the spy rows.

    The insurer's secret is fixed there: its randomized responses, and so the
    figures docs/protocols.md §5.2 quotes, are the same in every run."""
    X, amounts, spy = claims(counts=False)
    return X, (amounts > LARGE_CLAIM).astype(int), spy


def spy_readings(monkeypatch, X, y, **params) -> np.ndarray:
    """Fit with a curious host; what it reads on its spy columns: ``-r`` on the spy
    rows, one row per pass (line-search trials included)."""
    seen = curious_host(monkeypatch, stop_after=None)
    FederatedLogisticRegression(encryption=None, **params).fit(X, y)
    return np.array([-pass_["g"][HOST_COLUMNS:] for pass_ in seen])


def read_labels(readings: np.ndarray) -> np.ndarray:
    """The host's guess per pass: label 1 where the residual is negative."""
    return (readings > 0).astype(int)


def test_spy_host_reads_the_labels(monkeypatch):
    X, y, spy = large_claims()
    guesses = read_labels(spy_readings(monkeypatch, X, y))
    hits = guesses == y[spy]
    # every label from the first pass (120 of 120), whatever the secret start ...
    assert hits[0].all()
    # ... and nearly all from every later pass (7 passes, at least 118 of 120: the
    # misses are rows that reached sigmoid~ = 1)
    assert len(hits) > 2
    assert hits.mean(axis=1).min() > 0.95, hits.mean(axis=1)


def test_label_privacy_bounds_the_spy_hosts_accuracy(monkeypatch):
    """The host reads the randomized responses exactly, and through them the true
    labels no better than randomized response allows: ``p = e/(1 + e)`` at
    ``epsilon = 1``, within three binomial standard deviations on 120 rows."""
    X, y, spy = large_claims()
    targets = protocol_targets(monkeypatch)
    guesses = read_labels(spy_readings(monkeypatch, X, y, label_privacy=1.0))
    responses = (targets[0] > 0.5).astype(int)  # debiased: above 1 for response 1, below 0
    np.testing.assert_array_equal(guesses[0], responses[spy])
    p, _ = response_probabilities(1.0, 2)
    margin = 3 * np.sqrt(p * (1 - p) / len(spy))
    accuracy = (guesses == y[spy]).mean(axis=1)
    assert abs(accuracy[0] - p) < margin, accuracy[0]  # 95 of 120 (79 %)
    # no pass, nor a vote over all passes (16), reads more than the responses give
    assert accuracy.max() < p + margin, accuracy
    vote = (guesses.mean(axis=0) > 0.5).astype(int)
    assert np.mean(vote == y[spy]) < p + margin
