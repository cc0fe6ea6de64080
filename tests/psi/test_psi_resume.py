"""A long PSI alignment resumes after the guest or a host is killed, without redoing
finished batches, and ends with the uninterrupted run's alignment; a resume gives
a deviating guest nothing a run would not (the attacks at the end).

In-process runs draw their secrets from counters (:func:`fixed_secrets`), so an
interrupted run can be compared with an uninterrupted one bit for bit; a resumed run
draws nothing new, which is the point.
"""

from __future__ import annotations

import contextlib
import functools
import json
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest
import rbcl

import ftl
import ftl.psi.cardinality as cardinality_module
import ftl.psi.guest as guest_module
import ftl.psi.host as host_module
from ftl.data.align import align
from ftl.exceptions import CheckpointError
from ftl.federation import Channel, Message, ProtocolError
from ftl.federation.checkpoints import PartyCheckpoints
from ftl.federation.policy import PolicyError
from ftl.psi import curve
from ftl.psi.host import PSIHost
from tests.psi._by_hand import SALT, Bar, make_party, with_minimum


class Killed(Exception):
    """The driver's process dies (raised where a call is sent or its reply comes)."""


@pytest.fixture
def fixed_secrets(monkeypatch):
    """Scalars and secret orders drawn from counters; returns ``reset()``."""
    counter = {"n": 0}

    def scalar():
        counter["n"] += 1
        return rbcl.crypto_core_ristretto255_scalar_reduce(bytes([counter["n"]]) * 64)

    def permutation(n):
        counter["n"] += 1
        return np.random.default_rng(counter["n"]).permutation(n).astype(np.int64)

    for module in (guest_module, cardinality_module, host_module):
        monkeypatch.setattr(module, "random_scalar", scalar)
        monkeypatch.setattr(module, "secret_permutation", permutation)

    def reset():
        counter["n"] = 0

    return reset


def aligned(X, *parties):
    """Every party's local rows in aligned order (what the alignment *is*)."""
    positions = np.arange(len(X))
    return [p.aligned_rows(X.alignment.id, positions) for p in parties]


def kill_after(monkeypatch, calls: int, after_reply: bool) -> None:
    """The driver dies at its ``calls``-th call: before it is sent, or once the
    party ran it but before the reply arrives (a lost reply)."""
    seen = {"n": 0}
    real = Channel.call

    def call(self, endpoint, op, request, origin=None):
        if not op.endswith(".close"):
            seen["n"] += 1
            if seen["n"] == calls and not after_reply:
                raise Killed(op)
            reply = real(self, endpoint, op, request, origin)
            if seen["n"] == calls:
                raise Killed(op)
            return reply
        return real(self, endpoint, op, request, origin)

    monkeypatch.setattr(Channel, "call", call)


def restart(host) -> None:
    """The host's process restarts: its sessions (and kept state in memory) are gone."""
    for session in host.endpoint.session_ids():
        host.endpoint.end_session(session)


def killed_until_done(monkeypatch, host, run, seed):
    """``run()``, the driver killed at random calls and both sides restarted (the host
    from its folder) after each kill, until it ends: its result, and the attempts."""
    rng = np.random.default_rng(seed)
    for attempt in range(60):  # bounded: every attempt gets at least one call through
        with monkeypatch.context() as patch:
            kill_after(patch, int(rng.integers(2, 5)), bool(rng.integers(2)))
            try:
                return run(), attempt
            except Killed:
                restart(host)
    pytest.fail("the run never finished")


def restart_at(monkeypatch, host, op: str, calls: int) -> None:
    """The host (keeping checkpoints on disk, as ftl serve does) restarts before the
    driver's ``calls``-th call of ``op``: a new store reads its folder."""
    store, seen = host.checkpoints, {"n": 0}
    real = Channel.call

    def call(self, endpoint, op_, request, origin=None):
        if op_ == op:
            seen["n"] += 1
            if seen["n"] == calls:
                restart(host)
                host.checkpoints = PartyCheckpoints(store.root, store.identity)
        return real(self, endpoint, op_, request, origin)

    monkeypatch.setattr(Channel, "call", call)


def count_runs(monkeypatch) -> dict:
    """How often the host ran each storing operation (so: what was redone)."""
    counts = {"submit": 0, "reblinded": 0, "tags": 0, "own": 0, "admitted": 0}
    for name in ("submit", "reblinded", "tags", "own"):
        real = getattr(PSIHost, name)

        @functools.wraps(real)  # keeps the operation's declaration
        def counted(self, request, _real=real, _name=name):
            reply = _real(self, request)
            counts[_name] += 1
            return reply

        monkeypatch.setattr(PSIHost, name, counted)
    real_init = PSIHost.__init__

    def init(self, party, request):
        real_init(self, party, request)
        counts["admitted"] += request.type != "psi.resume"

    monkeypatch.setattr(PSIHost, "__init__", init)
    return counts


# -- resume ----------------------------------------------------------------------------------
@pytest.mark.parametrize("how", ["inner", "left"])
def test_killed_at_random_batch_boundaries_the_run_ends_as_the_uninterrupted_one(
    fixed_secrets, monkeypatch, tmp_path, how
):
    guest = make_party("bank", range(0, 90), labels=True)
    host = make_party("shop", range(40, 150)[::-1])
    fixed_secrets()
    X_ref, y_ref = align(guest, host, how=how, batch_size=16, salt=SALT)
    reference = aligned(X_ref, guest, host)

    fixed_secrets()
    counts = count_runs(monkeypatch)
    (X, y), attempts = killed_until_done(
        monkeypatch,
        host,
        lambda: align(guest, host, how=how, batch_size=16, salt=SALT, checkpoint_dir=tmp_path),
        seed=7,
    )
    assert attempts > 10
    for mine, theirs in zip(aligned(X, guest, host), reference, strict=True):
        np.testing.assert_array_equal(mine, theirs)
    np.testing.assert_array_equal(y, y_ref)
    if how == "left":
        np.testing.assert_array_equal(X.alignment.overlap, X_ref.alignment.overlap)
    # nothing finished was redone: each batch the host stored, it stored once; one
    # run admitted (charged)
    assert counts["submit"] == 6 and counts["reblinded"] == 7
    assert counts["admitted"] == 1
    assert not [p for p in tmp_path.rglob("*") if p.is_file()]  # a finished run keeps nothing


def test_a_host_that_lost_its_session_is_resumed_in_the_same_run(
    fixed_secrets, monkeypatch, tmp_path, caplog
):
    guest = make_party("bank", range(0, 70), labels=True)
    host = make_party("shop", range(30, 120))
    fixed_secrets()
    reference = aligned(align(guest, host, batch_size=8, salt=SALT)[0], guest, host)

    host.checkpoints = PartyCheckpoints(tmp_path / "shop" / "bank", "local")  # ftl serve's
    fixed_secrets()
    restart_at(monkeypatch, host, "psi.host.own", 5)
    with caplog.at_level("WARNING", logger="ftl.checkpoint"):
        X, _ = align(guest, host, batch_size=8, salt=SALT, checkpoint_dir=tmp_path / "bank")
    assert [r for r in caplog.records if "resuming PSI run" in r.getMessage()]
    # the auditor sees the run go on in a new session
    assert "| Resumes (a run going on in a new session, §2.8) | 1 |" in ftl.report(
        X.alignment.psi["transcript"]
    )
    for mine, theirs in zip(aligned(X, guest, host), reference, strict=True):
        np.testing.assert_array_equal(mine, theirs)
    assert not list((tmp_path / "shop").rglob("*.json"))


def test_three_parties_resume_after_the_first_host_stored_the_alignment(
    fixed_secrets, monkeypatch, tmp_path
):
    guest = make_party("bank", range(0, 60), labels=True)
    shops = [make_party("shop_a", range(10, 80)), make_party("shop_b", range(0, 50)[::-1])]
    fixed_secrets()
    reference = aligned(align(guest, *shops, batch_size=16, salt=SALT)[0], guest, *shops)
    fixed_secrets()
    with monkeypatch.context() as patch:
        real = Channel.call

        def call(self, endpoint, op, request, origin=None):
            if op == "psi.host.commit" and endpoint.name == "shop_b":
                raise Killed(op)
            return real(self, endpoint, op, request, origin)

        patch.setattr(Channel, "call", call)
        with pytest.raises(Killed):
            align(guest, *shops, batch_size=16, salt=SALT, checkpoint_dir=tmp_path)
    X, _ = align(guest, *shops, batch_size=16, salt=SALT, checkpoint_dir=tmp_path)
    for mine, theirs in zip(aligned(X, guest, *shops), reference, strict=True):
        np.testing.assert_array_equal(mine, theirs)


def test_a_kept_run_the_host_cannot_resume_starts_afresh(tmp_path, monkeypatch):
    guest = make_party("bank", range(0, 40), labels=True)
    host = make_party("shop", range(20, 60))
    with monkeypatch.context() as patch:
        kill_after(patch, 3, after_reply=False)
        with pytest.raises(Killed):
            align(guest, host, batch_size=8, checkpoint_dir=tmp_path)
    for run in (tmp_path / "psi-guest-hosts").iterdir():  # the host lost its folder
        for path in run.rglob("*.json"):
            path.unlink()
    with pytest.warns(UserWarning, match="starts afresh"):
        X, _ = align(guest, host, batch_size=8, checkpoint_dir=tmp_path)
    assert len(X) == 20


def test_a_refused_run_keeps_no_checkpoint(tmp_path):
    guest = make_party("bank", range(0, 40), labels=True)
    host = with_minimum(make_party("shop", range(35, 80)), 10)  # 5 shared
    with pytest.raises(PolicyError):
        align(guest, host, batch_size=8, checkpoint_dir=tmp_path)
    assert not [p for p in tmp_path.rglob("*") if p.is_file()]  # nothing to resume
    with pytest.raises(PolicyError):
        align(guest, host, cardinality_only=True, batch_size=8, checkpoint_dir=tmp_path)
    assert not [p for p in tmp_path.rglob("*") if p.is_file()]


# -- attacks: a resume gives a deviating guest nothing a run would not -----------------------
def start(host, run_id="r1", session="s1", n_guest=12, mode="full", batch_size=4):
    """A named run opened by hand (as a deviating guest would)."""
    request = Message(
        "psi.start",
        {
            "run_id": run_id,
            "salt": SALT,
            "n_guest": n_guest,
            "mode": mode,
            "how": "inner",
            "order": "blinded",
            "n_hosts": 1,
            "batch_size": batch_size,
        },
    )
    return Channel("bank", session=session).call(host.endpoint, "psi.host.open", request)


def resume(host, run_id="r1", session="s2", **kw):
    """Re-open the named run by hand (``psi.resume``); the channel and the reply."""
    fields = {
        "run_id": run_id,
        "salt": SALT,
        "n_guest": kw.get("n_guest", 12),
        "mode": kw.get("mode", "full"),
        "how": "inner",
        "order": "blinded",
        "n_hosts": 1,
        "batch_size": kw.get("batch_size", 4),
    }
    channel = Channel("bank", session=session)
    return channel, channel.call(host.endpoint, "psi.host.open", Message("psi.resume", fields))


def blinded_ids(ids, alpha):
    return curve.blind(curve.hash_to_curve(curve.canonical_ids(ids), SALT), alpha)


def submit_all(channel, host, points, batch_size=4):
    for start_at in range(0, len(points), batch_size):
        batch = points[start_at : start_at + batch_size]
        message = Message("psi.guest_points", {"start": start_at, "points": batch})
        channel.call(host.endpoint, "psi.host.submit", message)


def host_points(channel, host, alpha, n, batch_size=4, send_back=True):
    """Steps 3-4 by hand: the host's points, times ``alpha``, sent back."""
    doubles = []
    for a in range(0, n, batch_size):
        fetch = Message("psi.fetch", {"start": a, "stop": min(a + batch_size, n)})
        reply = channel.call(host.endpoint, "psi.host.own", fetch)
        double = curve.blind(reply["points"], alpha)
        if send_back:
            message = Message("psi.host_points_reblinded", {"start": a, "points": double})
            channel.call(host.endpoint, "psi.host.reblinded", message)
        doubles.append(double)
    return np.concatenate(doubles)


def final_values(channel, host, n, batch_size=4):
    out = []
    for a in range(0, n, batch_size):
        fetch = Message("psi.fetch", {"start": a, "stop": min(a + batch_size, n)})
        out.append(channel.call(host.endpoint, "psi.host.blinded", fetch)["points"])
    return np.concatenate(out)


def kept_host(ids, identity="bank"):
    host = make_party("shop", ids)
    host.checkpoints = PartyCheckpoints(None, identity)
    return host


def naive_restore(self):
    """A resume that reloads only the host's secrets: the counters start again."""
    state = self.checkpoints.load("psi", self.run_id)
    self._beta = bytes.fromhex(state["beta"])
    self._order = self._load_order("order", self.n_host)
    self._kept, self._step = {"guest": [], "own": [], "tags": []}, int(state["step"]) + 1


def test_a_resume_cannot_commit_a_second_set_after_the_first_was_answered(monkeypatch):
    host = kept_host(range(0, 40))
    alpha = curve.random_scalar()
    set_a, set_b = np.arange(100, 112), np.arange(0, 12)  # A shares nothing, B all
    channel = Channel("bank", session="s1")
    start(host)
    submit_all(channel, host, blinded_ids(set_a, alpha))
    theirs = host_points(channel, host, alpha, 40)
    final_values(channel, host, 12)  # the answer for set A: nothing shared

    sessions = iter(range(2, 10))

    def second_set():
        channel, _ = resume(host, session=f"s{next(sessions)}")
        submit_all(channel, host, blinded_ids(set_b, alpha))
        host_points(channel, host, alpha, 40)
        mine = final_values(channel, host, 12)
        return int(np.isin(curve.point_keys(mine), curve.point_keys(theirs)).sum())

    with pytest.raises(ProtocolError, match="expected guest batch at 12"):
        second_set()  # the host holds set A: the resume goes on after it
    with monkeypatch.context() as patch:  # a resume that restarts the counters
        patch.setattr(PSIHost, "_restore", naive_restore)
        assert second_set() == 12  # set B's intersection too, for one run's budget


def test_a_resumed_cardinality_run_cannot_count_another_set(monkeypatch):
    host = kept_host(range(0, 40))
    alpha = curve.random_scalar()
    channel = Channel("bank", session="s1")
    start(host, mode="cardinality")
    submit_all(channel, host, blinded_ids(np.arange(100, 112), alpha))
    host_points(channel, host, alpha, 40, send_back=False)  # saw the host's points
    with pytest.raises(ProtocolError, match="expected guest batch at 12"):
        channel, _ = resume(host, mode="cardinality")
        submit_all(channel, host, blinded_ids(np.arange(0, 12), alpha))
    with monkeypatch.context() as patch:
        patch.setattr(PSIHost, "_restore", naive_restore)
        channel, _ = resume(host, mode="cardinality", session="s3")
        submit_all(channel, host, blinded_ids(np.arange(0, 12), alpha))  # accepted


def test_a_resume_keeps_the_host_scalar_and_order(monkeypatch):
    host = kept_host(range(0, 40))
    alpha = curve.random_scalar()
    channel = Channel("bank", session="s1")
    start(host)
    submit_all(channel, host, blinded_ids(np.arange(12), alpha))
    fetch = Message("psi.fetch", {"start": 0, "stop": 4})
    before = channel.call(host.endpoint, "psi.host.own", fetch)["points"]
    channel, reply = resume(host)
    assert (reply["received"], reply["reblinded"]) == (12, 0)
    again = channel.call(host.endpoint, "psi.host.own", fetch)["points"]
    np.testing.assert_array_equal(again, before)  # the same bytes: nothing new

    def fresh_scalar(self):  # a resume that draws its scalar again, as a restart would
        naive_restore(self)
        self._beta = curve.random_scalar()
        self._n_received = self.n_guest

    with monkeypatch.context() as patch:
        patch.setattr(PSIHost, "_restore", fresh_scalar)
        channel, _ = resume(host, session="s3")
        other = channel.call(host.endpoint, "psi.host.own", fetch)["points"]
    # the same host rows in the same order under two scalars: b' * b^-1 links them
    assert not np.array_equal(other, before)


def test_a_resume_must_ask_for_the_run_it_continues():
    host = kept_host(range(0, 40))
    start(host)
    submit_all(Channel("bank", session="s1"), host, blinded_ids(range(12), curve.random_scalar()))
    fields = {"salt": SALT, "n_guest": 12, "mode": "full", "how": "inner"}
    fields |= {"order": "blinded", "n_hosts": 1, "batch_size": 4, "run_id": "r1"}
    # another salt would hash the host's ids anew under the same scalar and order
    for i, change in enumerate(({"salt": bytes(32)}, {"n_guest": 13}, {"batch_size": 5})):
        with pytest.raises(CheckpointError, match="other parameters"):
            Channel("bank", session=f"x{i}").call(
                host.endpoint, "psi.host.open", Message("psi.resume", fields | change)
            )
    reply = Channel("bank", session="x9").call(
        host.endpoint, "psi.host.open", Message("psi.resume", fields)
    )
    assert reply["received"] == 12


def test_a_finished_run_cannot_be_resumed_for_a_second_alignment(monkeypatch):
    guest = make_party("bank", range(0, 30), labels=True)

    def run_to_the_end(host):
        from ftl.psi.guest import exchange, open_host

        channel = Channel("bank", session="s1")
        info = open_host(
            channel,
            host.endpoint,
            salt=SALT,
            n_guest=30,
            mode="full",
            how="inner",
            n_hosts=1,
            batch_size=8,
            run_id="r1",
        )
        pair = exchange(channel, info, guest.local_ids(), SALT, 8, Bar())
        rows = np.flatnonzero(pair.in_host)
        rows = rows[np.argsort(curve.point_keys(pair.guest_doubles[rows]), kind="stable")]
        assign = {
            "points": pair.guest_doubles[rows],
            "positions": np.arange(len(rows)),
            "n_rows": len(rows),
        }
        for alignment_id in ("a1", "a2"):
            message = Message("psi.assign", {"alignment_id": alignment_id, **assign})
            try:
                channel.call(host.endpoint, "psi.host.assign", message)
            except ProtocolError:  # one run, one alignment: after a resume, then
                channel, _ = resume(host, session="s9", n_guest=30, batch_size=8)
                channel.call(host.endpoint, "psi.host.assign", message)
            commit = Message("psi.commit", {"alignment_id": alignment_id})
            channel.call(host.endpoint, "psi.host.commit", commit)
        return host._alignments

    with pytest.raises(CheckpointError, match="no resumable psi run"):
        run_to_the_end(kept_host(range(10, 50)))
    with monkeypatch.context() as patch:  # a finished run that is kept resumable
        patch.setattr(PSIHost, "_finish", lambda self: None)
        assert set(run_to_the_end(kept_host(range(10, 50)))) == {"a1", "a2"}


def test_only_the_peer_that_ran_a_run_may_resume_it(monkeypatch):
    host = kept_host(range(0, 40))
    host.guard = _Guard("bank")
    alpha = curve.random_scalar()
    start(host)
    submit_all(Channel("bank", session="s1"), host, blinded_ids(np.arange(12), alpha))
    eve = PartyCheckpoints(None, "eve")  # eve's own store: the run is not there
    host.checkpoints, bank = eve, host.checkpoints
    with pytest.raises(CheckpointError, match="no resumable psi run"):
        resume(host)
    # Even from the bank's store (one folder shared by mistake), the run is bound to
    # the bank's identity: eve's resume is refused ...
    host.checkpoints = bank
    monkeypatch.setattr(host_module, "guard_of", lambda party: _Guard("eve"))
    with pytest.raises(CheckpointError, match="another peer"):
        resume(host, session="s3")
    # ... and would have gone on with the bank's run without that binding.
    real = PSIHost._name_run

    def unbound(self, party, request, identity):
        real(self, party, request, "bank")

    monkeypatch.setattr(PSIHost, "_name_run", unbound)
    _, reply = resume(host, session="s4")
    assert reply["received"] == 12


class _Guard:
    """A guard for peer ``identity`` with no limit (what ``ftl serve`` attaches)."""

    def __init__(self, identity):
        self.identity, self.min_intersection = identity, 0

    def admit_alignment(self, mode, n_guest):
        pass


def test_a_resume_supersedes_the_live_session_of_its_run():
    host = kept_host(range(0, 40))
    alpha = curve.random_scalar()
    old = Channel("bank", session="s1")
    start(host)
    submit_all(old, host, blinded_ids(np.arange(12), alpha))
    resume(host)
    fetch = Message("psi.fetch", {"start": 0, "stop": 4})
    with pytest.raises(ProtocolError, match="resumed in another session"):
        old.call(host.endpoint, "psi.host.own", fetch)


def test_a_request_in_flight_in_a_superseded_session_keeps_nothing(monkeypatch):
    """The guest resumes while its old session still blinds a batch: the old
    session's late write must not replace the batch the resumed run received (a
    later resume would then answer for the old points, the current one for the new:
    both sets blinded in one run)."""

    def race():
        host = kept_host(range(0, 40))
        alpha = curve.random_scalar()
        old = Channel("bank", session="s1")
        start(host)
        submit_all(old, host, blinded_ids(range(8), alpha))  # batches 0 and 1
        real = host_module.check_and_blind
        late = {"new": None}

        def blind_slowly(points, scalar, what):
            if late["new"] is None:  # meanwhile the guest resumes and sends another batch 2
                late["new"], _ = resume(host)
                batch = blinded_ids(range(100, 104), alpha)
                message = Message("psi.guest_points", {"start": 8, "points": batch})
                late["new"].call(host.endpoint, "psi.host.submit", message)
            return real(points, scalar, what)

        with monkeypatch.context() as patch:
            patch.setattr(host_module, "check_and_blind", blind_slowly)
            message = Message(
                "psi.guest_points", {"start": 8, "points": blinded_ids(range(8, 12), alpha)}
            )
            with contextlib.suppress(CheckpointError):
                old.call(host.endpoint, "psi.host.submit", message)
        host_points(late["new"], host, alpha, 40)
        answered = final_values(late["new"], host, 12)
        later, _ = resume(host, session="s3")
        return answered, final_values(later, host, 12)

    answered, later = race()
    np.testing.assert_array_equal(later, answered)  # one set, whatever the order
    with monkeypatch.context() as patch:  # keeping for any session
        patch.setattr(PartyCheckpoints, "_check_owner", lambda self, key, owner: None)
        answered, later = race()
    assert not np.array_equal(later[8:], answered[8:])  # b*S for two batches 2


def test_a_resume_checks_the_hosts_minimum_again_and_is_not_charged():
    host = with_minimum(kept_host(range(0, 40)), 5)
    host.guard.enforce = True  # counted, so that the charge shows
    alpha = curve.random_scalar()
    channel = Channel("bank", session="s1")
    start(host)
    submit_all(channel, host, blinded_ids(np.arange(100, 112), alpha))  # shares nothing
    host_points(channel, host, alpha, 40)
    with pytest.raises(PolicyError):
        final_values(channel, host, 12)
    channel, _ = resume(host)  # the refusal holds in the resumed run
    with pytest.raises(PolicyError):
        final_values(channel, host, 12)
    assert host.guard.ledger.used("bank", "alignment") == 1  # the resume was not charged
    host.guard.min_intersection = 13  # the host's policy now wants more than 12 ids
    with pytest.raises(PolicyError, match="smaller than this host's minimum"):
        resume(host, session="s3")


# -- served: ftl serve with a checkpoint_dir ---------------------------------------------------
@pytest.fixture(scope="module")
def certificates(tmp_path_factory):
    pytest.importorskip("grpc")
    from ftl.federation.certs import make_certificates

    folder = tmp_path_factory.mktemp("psi-resume")
    make_certificates(folder / "certs", ["hospital", "lab", "stranger"])
    return folder / "certs"


@pytest.fixture
def served(tmp_path, certificates):
    """The lab served on a fixed port (so a restart is found again), keeping its
    checkpoints in ``tmp_path / "checkpoints"``; with the driver's certificates."""
    from tests.data.test_remote import DATA, Host
    from tests.data.test_remote_resume import POLICY, free_port

    (tmp_path / "certs").symlink_to(certificates)
    server = f'checkpoint_dir = "{tmp_path / "checkpoints"}"'
    csv = DATA / "breast_hetero_host.csv"
    host = Host(tmp_path, "lab", csv, POLICY, server, "psi-lab")
    port = free_port()
    host.config.write_text(host.config.read_text().replace("127.0.0.1:0", f"127.0.0.1:{port}"))
    host.start()
    yield host
    host.stop()


def remote(tmp, host, identity="hospital", **kw):
    from tests.data.test_remote import tls

    return ftl.RemoteParty("lab", host.address, tls=tls(tmp, identity), **kw)


PLAINTEXT = dict(encryption=None, random_state=0, max_iter=5)


@pytest.mark.slow  # 10 s on a quiet machine, more under load
def test_a_served_host_restarted_mid_alignment_is_resumed(served, tmp_path, monkeypatch, caplog):
    from tests.data.test_remote_resume import on_call

    guest, local_lab = ftl.datasets.load_breast_cancer()
    X_ref, y_ref = ftl.align(guest, local_lab, order="id")
    lab = remote(tmp_path, served, retry_for=60)

    def restart() -> None:  # killed mid-run, back 1 s later: the call is retried
        served.kill()
        threading.Timer(1.0, served.start).start()

    on_call(monkeypatch, "psi.host.own", 4, restart)
    with caplog.at_level("WARNING", logger="ftl.checkpoint"):
        X, y = ftl.align(guest, lab, order="id", batch_size=64, checkpoint_dir=tmp_path / "me")
    assert [r for r in caplog.records if "resuming PSI run" in r.getMessage()]
    np.testing.assert_array_equal(X.ids, X_ref.ids)
    np.testing.assert_array_equal(y, y_ref)
    # the restarted lab holds the in-process lab's row mapping: the same model
    clf = ftl.FederatedLogisticRegression(**PLAINTEXT).fit(X, y)
    reference = ftl.FederatedLogisticRegression(**PLAINTEXT).fit(X_ref, y_ref)
    np.testing.assert_array_equal(clf.coef_, reference.coef_)
    assert not list((tmp_path / "checkpoints").rglob("psi/*.json"))  # a finished run
    assert not list((tmp_path / "me").rglob("*.json"))


def test_a_restarted_driver_resumes_its_run_and_only_it_may(served, tmp_path, monkeypatch):
    from tests.data.test_remote_resume import on_call

    guest = ftl.datasets.load_breast_cancer()[0]
    lab = remote(tmp_path, served)
    used = lab.budget()["alignments_per_day"]["used"]
    with monkeypatch.context() as patch:  # the driver dies after a few batches

        def die():
            raise KeyboardInterrupt

        on_call(patch, "psi.host.reblinded", 3, die)
        with pytest.raises(KeyboardInterrupt):
            ftl.align(guest, lab, order="id", batch_size=64, checkpoint_dir=tmp_path / "me")
    (saved,) = (tmp_path / "me" / "psi-guest").glob("*.json")
    body = json.loads(saved.read_text())["body"]["latest"]
    fields = {
        "run_id": body["run_id"],
        "salt": bytes.fromhex(body["salt"]),
        "n_guest": guest.n_rows,
        "mode": "full",
        "how": "inner",
        "order": "id",
        "n_hosts": 1,
        "batch_size": 64,
    }
    stranger = remote(tmp_path, served, identity="stranger")
    with pytest.raises(ValueError, match="no resumable psi run"):
        Channel("stranger").call(stranger, "psi.host.open", Message("psi.resume", fields))
    counts = {"submit": 0}
    real = Channel.call

    def call(self, endpoint, op, request, origin=None):
        counts["submit"] += op == "psi.host.submit"
        return real(self, endpoint, op, request, origin)

    monkeypatch.setattr(Channel, "call", call)
    X, _ = ftl.align(guest, lab, order="id", batch_size=64, checkpoint_dir=tmp_path / "me")
    assert counts["submit"] == 0  # every guest point was in: none sent again
    assert lab.budget()["alignments_per_day"]["used"] == used + 1  # one run, charged once
    local_lab = ftl.datasets.load_breast_cancer()[1]
    np.testing.assert_array_equal(X.ids, ftl.align(guest, local_lab, order="id")[0].ids)


@pytest.mark.slow  # a driver process killed mid-run, then resumed here
def test_a_killed_driver_process_resumes_from_its_checkpoint(served, tmp_path, monkeypatch):
    folder = tmp_path / "me"
    script = f"""
import sys
from pathlib import Path
sys.path.insert(0, {str(Path(__file__).parents[2])!r})
import ftl
from tests.data.test_remote import tls
guest = ftl.datasets.load_breast_cancer()[0]
lab = ftl.RemoteParty("lab", {served.address!r}, tls=tls(Path({str(tmp_path)!r}), "hospital"))
ftl.align(guest, lab, order="id", batch_size=4, checkpoint_dir={str(folder)!r})
"""
    driver = subprocess.Popen([sys.executable, "-c", script])
    try:
        fetched, deadline = 0, time.monotonic() + 120
        while fetched < 100 and driver.poll() is None and time.monotonic() < deadline:
            time.sleep(0.01)
            for saved in folder.glob("psi-guest/*.json"):
                with contextlib.suppress(OSError, ValueError, KeyError, IndexError):
                    fetched = json.loads(saved.read_text())["body"]["latest"]["hosts"][0]["fetched"]
        driver.send_signal(signal.SIGKILL)
    finally:
        driver.wait(10)
    assert 100 <= fetched, "the driver was not killed mid-run"
    lab = remote(tmp_path, served)
    used = lab.budget()["alignments_per_day"]["used"]
    fetches = []
    real = Channel.call

    def call(self, endpoint, op, request, origin=None):
        if op == "psi.host.own":
            fetches.append(request["start"])
        return real(self, endpoint, op, request, origin)

    monkeypatch.setattr(Channel, "call", call)
    guest, local_lab = ftl.datasets.load_breast_cancer()
    X, _ = ftl.align(guest, lab, order="id", batch_size=4, checkpoint_dir=folder)
    assert min(fetches) >= fetched  # the host's points it had blinded were not fetched again
    assert lab.budget()["alignments_per_day"]["used"] == used  # the same run: not charged
    np.testing.assert_array_equal(X.ids, ftl.align(guest, local_lab, order="id")[0].ids)
    assert not list(folder.rglob("*.json"))
