"""Every process ftl starts ends with its owner (issue 17, "clean exits").

A job runner or process pool runs ftl inside a ``multiprocessing`` child (spawn
context). Such a child joins its own children before interpreter-exit hooks run,
so worker processes that ftl keeps alive (joblib's loky workers, the randomness
pool's background process) used to make it hang for ever after a finished fit.
"""

from __future__ import annotations

import multiprocessing as mp
import time

import pytest

SMALL = {"key_size": 1024, "insecure_for_tests": True}


def _lr_fit() -> float:
    import ftl

    X, y = ftl.align(*ftl.datasets.load_breast_cancer())
    clf = ftl.FederatedLogisticRegression(n_jobs=2, max_iter=2, random_state=0, **SMALL)
    return float(clf.fit(X[:300], y[:300]).intercept_[0])


def _transfer_fit() -> float:
    import ftl

    data = ftl.datasets.load_breast_transfer()
    X, y = ftl.align(data.source, data.target, how="left")
    clf = ftl.FederatedTransferClassifier(
        n_jobs=2, max_iter=1, random_state=0, n_components=4, hidden_layer_sizes=(), **SMALL
    )
    return float(clf.fit(X, y).predict_proba(X)[0, 1])


def _psi() -> float:
    import ftl

    X, _ = ftl.align(*ftl.datasets.load_breast_cancer())
    return float(len(X))


def _pool_only() -> float:
    from ftl.crypto.scheme import make_own_key

    key = make_own_key("paillier", 1024, True, 1, pool_capacity=256)
    key.randomness_pool.wait_until_full(timeout=60)  # the background process is running
    return float(len(key.encrypt(__import__("numpy").ones(8)).values))


def _child(target, queue) -> None:
    queue.put(target())


def _run_in_spawned_child(target) -> tuple[float, float]:
    """Run ``target`` in a spawn-context child; return its result and how long the
    child took to exit after sending it."""
    ctx = mp.get_context("spawn")
    queue = ctx.Queue()
    child = ctx.Process(target=_child, args=(target, queue))
    child.start()
    try:
        result = queue.get(timeout=600)
        sent = time.monotonic()
        child.join(60)
        assert not child.is_alive(), "the child hung in its exit hook"
        assert child.exitcode == 0
        return result, time.monotonic() - sent
    finally:
        if child.is_alive():
            child.kill()
            child.join()


@pytest.mark.parametrize("target", [_lr_fit, _transfer_fit, _psi, _pool_only])
def test_a_multiprocessing_child_exits_after_ftl_work(target):
    _, exit_seconds = _run_in_spawned_child(target)
    assert exit_seconds < 30


def test_worker_processes_can_be_ended_and_restarted():
    """``end_worker_processes`` stops the pool's and loky's workers; the next
    parallel call starts new ones and gives the same results."""
    import numpy as np

    from ftl.crypto.lifecycle import end_worker_processes
    from ftl.crypto.scheme import make_own_key

    key = make_own_key("paillier", 1024, True, 2, pool_capacity=64)
    values = np.linspace(-1, 1, 600)
    first = key.decrypt_values(key.encrypt(values), 32)
    end_worker_processes()
    again = key.decrypt_values(key.encrypt(values), 32)
    np.testing.assert_allclose(first, values, atol=1e-9)
    np.testing.assert_allclose(again, values, atol=1e-9)
