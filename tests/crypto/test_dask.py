"""joblib's dask backend moves the Paillier loops onto a Dask cluster.

``with joblib.parallel_config(backend="dask"):`` sends every ``joblib.Parallel``
call of ``ftl.crypto`` (encryption, decryption, re-randomisation, the encrypted
matrix products) to the workers of the active ``distributed.Client``. The cluster
here is a ``LocalCluster`` of two single-threaded worker *processes*: separate
interpreters, so every function and argument really is pickled and shipped, as on
a remote cluster. It starts in a few seconds; the whole file takes about 10 s.
See ``docs/howto/dask.md``.
"""

from __future__ import annotations

import joblib
import numpy as np
import pytest

distributed = pytest.importorskip("distributed")

import ftl  # noqa: E402
from ftl.crypto.scheme import VALUE_FRAC_BITS, make_own_key  # noqa: E402
from ftl.crypto.workers import split_work  # noqa: E402

FIT = dict(
    key_size=512,
    insecure_for_tests=True,
    n_jobs=-1,
    random_state=0,
    max_iter=2,
    # full batches (569 rows): large enough that encryption and the products are
    # split into chunks; the "auto" batches of 35 rows only parallelise
    # re-randomisation
    batch_size=None,
)

#: The scheduler's HTTP server (dashboard, health checks) starts even with
#: ``dashboard_address=None``, then on port 8787; a free loopback port instead
#: avoids clashing with other clusters (and concurrent test runs) on this machine.
NO_DASHBOARD = "127.0.0.1:0"


@pytest.fixture(scope="module")
def client():
    cluster = distributed.LocalCluster(
        n_workers=2, threads_per_worker=1, processes=True, dashboard_address=NO_DASHBOARD
    )
    client = distributed.Client(cluster)
    try:
        yield client
    finally:
        client.close()
        cluster.close()


def _run_on_cluster(client, fn):
    """``fn()`` under the dask backend; returns its result and the tasks that ran."""
    with joblib.parallel_config(backend="dask"):
        with distributed.get_task_stream(client) as stream:
            result = fn()
    return result, stream.data


def _task_names(tasks) -> set[str]:
    # joblib names its dask tasks "batch_of_<function>_<n>_calls-<uuid>"
    return {str(t["key"]) for t in tasks}


def test_fit_runs_its_loops_on_the_cluster_and_matches_a_local_fit(client):
    X, y = ftl.align(*ftl.datasets.load_breast_cancer(), order="id")
    remote, tasks = _run_on_cluster(
        client, lambda: ftl.FederatedLogisticRegression(**FIT).fit(X, y)
    )
    names = _task_names(tasks)
    for function in ("encrypt_in_worker", "column_multiexp", "rerandomize_chunk"):
        assert any(f"batch_of_{function}_" in name for name in names), (function, names)
    # both worker processes did some of the work, and nothing ran elsewhere
    assert {t["worker"] for t in tasks} == set(client.scheduler_info()["workers"])

    # the same fit without dask (and serially): fresh encryption randomness, the
    # same decrypted results to fixed-point precision
    local = ftl.FederatedLogisticRegression(**{**FIT, "n_jobs": None}).fit(X, y)
    np.testing.assert_allclose(remote.coef_, local.coef_, rtol=0, atol=1e-6)
    np.testing.assert_allclose(remote.intercept_, local.intercept_, rtol=0, atol=1e-6)
    np.testing.assert_array_equal(remote.predict(X), local.predict(X))


def test_encrypt_and_decrypt_on_the_cluster(client):
    own = make_own_key("paillier", 512, insecure_for_tests=True, n_jobs=-1)
    values = np.random.default_rng(0).normal(scale=100, size=1500)

    def roundtrip():
        return own.decrypt_values(own.encrypt(values), VALUE_FRAC_BITS)

    decrypted, tasks = _run_on_cluster(client, roundtrip)
    np.testing.assert_allclose(decrypted.astype(float), values, rtol=0, atol=2.0**-30)
    names = _task_names(tasks)
    assert any("batch_of_encrypt_in_worker_" in name for name in names), names
    assert any("batch_of_decrypt_chunk_" in name for name in names), names


def test_chunks_follow_the_clusters_size_not_the_local_cpus():
    # an in-process cluster of 3 threads: more than this 2-core CI machine has
    with distributed.Client(
        processes=False, n_workers=1, threads_per_worker=3, dashboard_address=NO_DASHBOARD
    ) as three:
        with joblib.parallel_config(backend="dask", client=three):
            assert joblib.effective_n_jobs(-1) == 3
            chunks = split_work(list(range(10_000)), n_jobs=-1)
    assert len(chunks) == 2 * 3  # two chunks per worker thread
    assert sum(chunks, []) == list(range(10_000))
