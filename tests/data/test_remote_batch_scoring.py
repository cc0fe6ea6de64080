"""Batch prediction against ``ftl serve`` killed and restarted between and during batches.

The lab (of tests/data/test_remote_resume.py, on a fixed port) keeps its model shards
(``model_dir``) and the alignment (``checkpoint_dir``) across a restart; the driver
scores in plaintext mode, where the resumed result must be the uninterrupted one to
the bit. In-process kill loops of every
estimator family: tests/data/test_batch_scoring.py.
"""

from __future__ import annotations

import re
import threading

import numpy as np
import pytest

import ftl
from ftl.exceptions import PartyUnavailableError, ProtocolError
from tests.data import test_remote_resume as served
from tests.data.test_remote_resume import on_call, remote

pytest.importorskip("grpc")

certs_dir, lab = served.certs_dir, served.lab  # fixtures shared with the fit's resume

PLAINTEXT = dict(encryption=None, random_state=0, max_iter=4)


@pytest.fixture
def keeping_lab(lab, tmp_path):
    """The lab of tests/data/test_remote_resume.py (fixed port, ``checkpoint_dir``),
    restarted to keep its model shards too (``model_dir``)."""
    lab.stop()
    models = f'[server]\nmodel_dir = "{tmp_path / "models"}"\n'
    lab.config.write_text(lab.config.read_text().replace("[server]\n", models, 1))
    return lab.start()


@pytest.mark.slow
def test_prediction_survives_a_lab_killed_between_and_during_batches(
    certs_dir, keeping_lab, tmp_path, monkeypatch, caplog
):
    guest = ftl.datasets.load_breast_cancer()[0]
    X, y = ftl.align(guest, remote(certs_dir, keeping_lab, retry_for=60), order="id")
    clf = ftl.FederatedLogisticRegression(predict_batch_rows=50, **PLAINTEXT).fit(X, y)
    reference = clf.decision_function(X)  # 11 batches, uninterrupted
    clf.set_params(checkpoint_dir=tmp_path / "driver")

    def restart_in(seconds: float):
        def action():
            keeping_lab.kill()
            threading.Timer(seconds, keeping_lab.start).start()

        return action

    # 1. killed before the 3rd batch and back within retry_for: the next batch's
    #    open is retried until the restarted lab (shards and alignment reloaded) answers
    with monkeypatch.context() as patch:
        on_call(patch, "lr.predict.open", 3, restart_in(1.0))
        np.testing.assert_array_equal(clf.decision_function(X), reference)
    # 2. killed in the middle of the 4th batch: its session is gone, the call fails;
    #    the next call resumes from the 3 finished batches
    with monkeypatch.context() as patch:
        on_call(patch, "lr.predict.decrypt", 4, restart_in(1.0))
        with pytest.raises(ProtocolError) as lost:
            clf.decision_function(X)
    # the restarted lab knows no such session (the error of the call that failed,
    # not of the close after it)
    assert re.search("no open lr.predict session|unknown or expired session", str(lost.value))
    # 3. then killed before the 7th batch for longer than retry_for: a clean error
    X.alignment.hosts[0]._client.retry_for = 2.0  # a shorter wait for this outage
    with monkeypatch.context() as patch:
        on_call(patch, "lr.predict.open", 4, keeping_lab.kill)  # the 4th open of this call
        with pytest.raises(PartyUnavailableError):
            clf.decision_function(X)
    keeping_lab.start()
    X.alignment.hosts[0]._client.retry_for = 60.0  # gRPC reconnects after a back-off
    with caplog.at_level("WARNING", logger="ftl.checkpoint"):
        resumed = clf.decision_function(X)
    np.testing.assert_array_equal(resumed, reference)
    assert "(6 of 11 batches done)" in caplog.text
    assert not list((tmp_path / "driver").iterdir())
