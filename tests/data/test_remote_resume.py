"""A fit resumes after ``ftl serve`` restarts mid-fit; only its own peer may resume it.

The lab runs ``ftl serve`` with a ``checkpoint_dir`` on a fixed port, so that a
restarted lab is found at the same address. The driver (this process) fits in
plaintext mode, where a resumed fit must be the uninterrupted one to the bit.
"""

from __future__ import annotations

import json
import re
import socket
import threading

import numpy as np
import pytest

import ftl
from ftl.exceptions import ProtocolError
from ftl.federation import Channel, Message
from ftl.linear_model import _messages as msg
from ftl.linear_model import guest as guest_role
from tests.data.test_remote import DATA, PLAINTEXT_POLICY, Host, tls

grpc = pytest.importorskip("grpc")

POLICY = (
    PLAINTEXT_POLICY
    + """
    [[policy.peers]]
    identity = "stranger"
"""
)
PLAINTEXT = dict(encryption=None, random_state=0, max_iter=8)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture(scope="module")
def certs_dir(tmp_path_factory):
    from ftl.federation.certs import make_certificates

    tmp = tmp_path_factory.mktemp("resume")
    make_certificates(tmp / "certs", ["hospital", "lab", "stranger"])
    return tmp


@pytest.fixture
def lab(certs_dir, tmp_path):
    """The lab on a fixed port, keeping checkpoints in ``tmp_path / "checkpoints"``."""
    server = f'checkpoint_dir = "{tmp_path / "checkpoints"}"'
    host = Host(certs_dir, "lab", DATA / "breast_hetero_host.csv", POLICY, server, "resume-lab")
    port = free_port()
    host.config.write_text(host.config.read_text().replace("127.0.0.1:0", f"127.0.0.1:{port}"))
    host.start()
    yield host
    host.stop()


def remote(certs_dir, host, identity="hospital", **kw) -> ftl.RemoteParty:
    return ftl.RemoteParty("lab", host.address, tls=tls(certs_dir, identity), **kw)


def on_call(monkeypatch, op: str, count: int, action) -> None:
    """Run ``action()`` just before the driver's ``count``-th call of ``op``."""
    seen = {"n": 0}
    real = Channel.call

    def call(self, endpoint, name, request, origin=None):
        if name == op:
            seen["n"] += 1
            if seen["n"] == count:
                action()
        return real(self, endpoint, name, request, origin)

    monkeypatch.setattr(Channel, "call", call)


def test_host_restart_mid_fit_is_resumed_and_the_model_is_the_uninterrupted_one(
    certs_dir, lab, tmp_path, monkeypatch, caplog
):
    guest, local_lab = ftl.datasets.load_breast_cancer()
    X_ref, y_ref = ftl.align(guest, local_lab, order="id")
    reference = ftl.FederatedLogisticRegression(**PLAINTEXT).fit(X_ref, y_ref)
    X, y = ftl.align(guest, remote(certs_dir, lab, retry_for=30), order="id")

    def restart() -> None:  # killed mid-iteration, back 1 s later: the call is retried
        lab.kill()
        threading.Timer(1.0, lab.start).start()

    # the 5th pass's update: mid-iteration, well after the first checkpoints
    on_call(monkeypatch, "lr.host.update", 5, restart)
    with caplog.at_level("WARNING", logger="ftl.checkpoint"):
        clf = ftl.FederatedLogisticRegression(**PLAINTEXT).fit(X, y)
    assert [r for r in caplog.records if "resuming the fit" in r.getMessage()]
    np.testing.assert_array_equal(clf.coef_, reference.coef_)
    np.testing.assert_array_equal(clf.intercept_, reference.intercept_)
    assert clf.n_iter_.tolist() == reference.n_iter_.tolist()
    # the restarted lab kept the alignment: prediction on it works
    np.testing.assert_allclose(clf.decision_function(X), reference.decision_function(X_ref))
    # the finished fit's checkpoint is gone; the alignment is kept
    kept = tmp_path / "checkpoints" / "hospital"
    assert not list((kept / "lr").glob("*.json"))
    assert [p.stem for p in (kept / "alignments").glob("*.json")] == [X.alignment.id]


def interrupted_fit(certs_dir, lab, monkeypatch, checkpoint_dir) -> tuple:
    """A fit the driver abandons after a few iterations (as if it crashed); the
    aligned data and the fit id the lab keeps its checkpoint under."""
    guest = ftl.datasets.load_breast_cancer()[0]
    X, y = ftl.align(guest, remote(certs_dir, lab), order="id")

    class Crash(BaseException):
        pass

    def crash():
        raise Crash

    with monkeypatch.context() as patch:
        on_call(patch, "lr.host.accept", 4, crash)
        with pytest.raises(Crash):
            ftl.FederatedLogisticRegression(checkpoint_dir=checkpoint_dir, **PLAINTEXT).fit(X, y)
    return X, y


def test_another_peer_cannot_resume_a_fit_and_its_owner_can(certs_dir, lab, tmp_path, monkeypatch):
    X, y = interrupted_fit(certs_dir, lab, monkeypatch, tmp_path / "driver")
    (saved,) = (tmp_path / "driver").glob("lr-*.json")
    state = json.loads(saved.read_text())["body"]["current"]["state"]
    params, step = state["params"], state["step"]
    # the stranger (a peer of the lab too) names the hospital's fit, alignment and rows
    stranger = remote(certs_dir, lab, identity="stranger")
    request = Message(
        msg.RESUME.name,
        {
            "params": params,
            "public_keys": {"hospital": {"scheme": "plain"}},
            "alignment": X.alignment.id,
            "positions": X.positions,
            "step": step,
        },
    )
    # refused: the stranger's view holds neither the hospital's alignment (each peer's
    # alignments are its own) nor its fit
    refusal = "has no alignment|no resumable lr run"
    with pytest.raises(ValueError, match=refusal):
        Channel("stranger").call(stranger, "lr.host.open", request)
    assert re.search(refusal, lab.log())
    # the hospital resumes it: not charged as another fit
    hospital = remote(certs_dir, lab)
    fits = hospital.budget()["fits_per_day"]["used"]
    clf = ftl.FederatedLogisticRegression(checkpoint_dir=tmp_path / "driver", **PLAINTEXT)
    clf.fit(X, y)
    assert hospital.budget()["fits_per_day"]["used"] == fits
    reference = ftl.FederatedLogisticRegression(**PLAINTEXT).fit(X, y)
    np.testing.assert_array_equal(clf.coef_, reference.coef_)
    assert not list((tmp_path / "driver").glob("lr-*"))  # a finished fit keeps nothing


def test_a_resume_supersedes_the_session_that_ran_the_fit(certs_dir, lab, tmp_path, monkeypatch):
    """A driver that died left its session open at the lab: the resume takes the fit
    over, and the old session answers nothing more."""
    X, y = interrupted_fit(certs_dir, lab, monkeypatch, tmp_path / "driver")
    sessions = []
    real = guest_role.LogisticGuest._open_sessions

    def open_sessions(self, resume_step=None):
        real(self, resume_step)
        sessions.append(self.channel.session)

    monkeypatch.setattr(guest_role.LogisticGuest, "_open_sessions", open_sessions)
    refit = ftl.FederatedLogisticRegression(checkpoint_dir=tmp_path / "driver", **PLAINTEXT)
    with monkeypatch.context() as patch:  # a driver resumes, then dies without a word
        real_call = Channel.call

        def call(self, endpoint, op, request, origin=None):
            if op == "lr.host.close":
                return Message("ack", {})
            if op == "lr.host.move":
                raise KeyboardInterrupt
            return real_call(self, endpoint, op, request, origin)

        patch.setattr(Channel, "call", call)
        with pytest.raises(KeyboardInterrupt):
            refit.fit(X, y)
    clf = refit.fit(X, y)  # the next driver resumes the fit again
    assert len(sessions) == 2
    # the first resumed session is still open at the lab, but superseded: refused
    lab_party = X.alignment.hosts[0]  # its client knows the session's sequence numbers
    batch = Message(msg.BATCH.name, {"batch": np.arange(len(X))})
    with pytest.raises(ProtocolError, match="resumed in another session"):
        Channel("hospital", session=sessions[0]).call(lab_party, "lr.host.contribution", batch)
    reference = ftl.FederatedLogisticRegression(**PLAINTEXT).fit(X, y)
    np.testing.assert_array_equal(clf.coef_, reference.coef_)
