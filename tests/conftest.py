"""Shared fixtures: small insecure keys for logic tests, bundled real data."""

from __future__ import annotations

import warnings

import numpy as np
import pandas as pd
import pytest
from sklearn.exceptions import ConvergenceWarning
from sklearn.pipeline import make_pipeline

import ftl
from ftl.preprocessing import FederatedStandardScaler

#: Logic tests use small keys through the explicit insecure switch; at least one test
#: per protocol runs on the default 2048-bit key (marked slow).
SMALL_KEY = dict(key_size=512, insecure_for_tests=True)


def pooled(X) -> np.ndarray:
    """All parties' columns for a handle's rows (possible only in a simulation)."""
    parts = []
    for party in X.parties:
        rows = party.aligned_rows(X.alignment.id, X.positions)
        parts.append(party.local_features(rows))
    return np.hstack(parts)


def aligned_by_id(guest, host):
    """Align, then order rows by id so that splits are reproducible across runs
    (PSI's own order depends on fresh secret scalars, by design)."""
    X, y = ftl.align(guest, host)
    order = np.argsort(X.ids)
    return X[order], y[order]


def fit_transfer_pipeline(**params):
    """A FederatedStandardScaler and a plaintext FederatedTransferClassifier with
    ``params``, fitted on the breast transfer data (the short fit's
    ConvergenceWarning silenced); the pipeline, the data and the aligned handle."""
    data = ftl.datasets.load_breast_transfer()
    X, y = ftl.align(data.source, data.target, how="left")
    clf = ftl.FederatedTransferClassifier(encryption=None, random_state=0, **params)
    pipe = make_pipeline(FederatedStandardScaler(), clf)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        pipe.fit(X, y)
    return pipe, data, X


@pytest.fixture(scope="session")
def breast():
    return aligned_by_id(*ftl.datasets.load_breast_cancer())


@pytest.fixture(scope="session")
def vehicle():
    return aligned_by_id(*ftl.datasets.load_vehicle())


@pytest.fixture(scope="session")
def credit():
    return aligned_by_id(*ftl.datasets.load_default_credit())


@pytest.fixture
def toy_frames():
    rng = np.random.default_rng(0)
    n = 60
    ids = np.arange(100, 100 + n)
    a = pd.DataFrame({"id": ids, "a0": rng.normal(size=n), "a1": rng.normal(size=n)})
    b = pd.DataFrame({"id": ids[::-1], "b0": rng.normal(size=n)})
    logits = a["a0"].to_numpy() - b.set_index("id").loc[ids, "b0"].to_numpy()
    a["y"] = (logits + rng.normal(scale=0.5, size=n) > 0).astype(int)
    return a, b
