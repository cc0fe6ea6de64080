"""Attack: the guest chooses how much CPU and memory the host spends (issue 13, item 6).

The driver's parameters used to be obeyed at the host: ``n_jobs=9`` made a
2-core host run 9 workers (and a background process for its randomness pool), and
a transfer source could ask the target to build and pre-train any network for any
number of epochs. Now the host uses its own ``n_jobs`` (its configuration) and
refuses, with a ``PolicyError``, a network or a number of passes above its caps.
"""

from __future__ import annotations

import warnings

import numpy as np
import pytest

import ftl
import ftl.linear_model.host as lr_host
import ftl.transfer.target as transfer_target

try:
    from ftl.federation.budget import BudgetLimits, HostGuard
except ImportError:  # the code before the privacy budget: there is no guard to attach
    BudgetLimits = HostGuard = None


def guard(peer: str, **limits):
    """The guard ``ftl serve`` attaches for ``peer`` (host n_jobs=1); None on old code."""
    return None if HostGuard is None else HostGuard(peer, BudgetLimits(**limits))


def key_jobs(monkeypatch, module) -> list:
    """Record the ``n_jobs`` every key the host's role makes is given."""
    seen = []
    make = module.make_own_key

    def recording(encryption, key_size, insecure=False, n_jobs=None, *args, **kwargs):
        seen.append(n_jobs)
        return make(encryption, key_size, insecure, n_jobs, *args, **kwargs)

    monkeypatch.setattr(module, "make_own_key", recording)
    return seen


def lr_federation(host_guard):
    rng = np.random.default_rng(0)
    ids = np.arange(150)
    bank = ftl.Party("bank", rng.normal(size=(150, 2)), ids=ids, labels=rng.integers(0, 2, 150))
    shop = ftl.Party("shop", rng.normal(size=(150, 3)), ids=ids)
    shop.guard = host_guard
    X, y = ftl.align(bank, shop)
    return X, y, shop


def test_the_host_ignores_the_guests_n_jobs(monkeypatch):
    jobs = key_jobs(monkeypatch, lr_host)
    X, y, shop = lr_federation(guard("bank"))
    # plaintext mode: the same roles and keys (the guest's own n_jobs=9 costs it time)
    clf = ftl.FederatedLogisticRegression(encryption=None, n_jobs=9, max_iter=2).fit(X, y)
    clf.predict(X)
    shard = shop.load_model(clf.models_[0]["model_id"])
    assert jobs and set(jobs) == {1}  # training key and prediction session key
    assert shard["n_jobs"] == 1


def test_the_host_caps_passes_over_its_rows():
    X, y, shop = lr_federation(guard("bank", max_epochs=3))
    clf = ftl.FederatedLogisticRegression(
        encryption=None, optimizer="sgd", max_iter=10, tol=0, batch_size=None
    )
    with pytest.raises(ftl.PolicyError, match="max_epochs"):
        clf.fit(X, y)


@pytest.fixture(scope="module")
def transfer():
    data = ftl.datasets.load_breast_transfer()
    X, y = ftl.align(data.source, data.target, how="left")
    return data, X, y


def fit_transfer(data, X, y, **params):
    """The source asks for a network; what the target built (or its refusal)."""
    kw = dict(encryption=None, n_components=4, hidden_layer_sizes=(4,), pretrain_epochs=1)
    clf = ftl.FederatedTransferClassifier(max_iter=1, random_state=0, **{**kw, **params})
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        clf.fit(X, y)
    shard = data.target.load_model(clf.model_id_)
    return [np.asarray(w).shape for w in shard["hidden"]["weights"]]


@pytest.mark.parametrize(
    "params, key",
    [
        (dict(hidden_layer_sizes=(2, 2, 2, 2, 2)), "max_hidden_layers"),
        (dict(hidden_layer_sizes=(700, 700)), "max_hidden_units"),
        (dict(n_components=1100, hidden_layer_sizes=()), "max_hidden_units"),
        (dict(pretrain_epochs=201), "max_pretrain_epochs"),
    ],
    ids=["layers", "units", "output-width", "pretrain-epochs"],
)
def test_the_target_refuses_an_oversized_network(transfer, params, key):
    data, X, y = transfer
    data.target.guard = guard("hospital")
    try:
        with pytest.raises(ftl.PolicyError, match=key):
            fit_transfer(data, X, y, **params)
    finally:
        data.target.guard = None


def test_the_target_ignores_the_sources_n_jobs(transfer, monkeypatch):
    data, X, y = transfer
    jobs = key_jobs(monkeypatch, transfer_target)
    data.target.guard = guard("hospital")
    try:
        layers = fit_transfer(data, X, y, n_jobs=9)
    finally:
        data.target.guard = None
    assert jobs == [1] and len(layers) == 1
