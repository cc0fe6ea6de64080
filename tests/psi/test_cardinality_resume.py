"""A long cardinality run (``intersection_size``) resumes after the guest or the host is
killed, without redoing finished batches, and counts what the uninterrupted run counts;
a resume gives a deviating guest no second count (the attacks at the end).

The host side is the alignment's (:mod:`ftl.psi._resume`); these tests drive it through
the cardinality driver and by hand, with the helpers of ``test_psi_resume``.
"""

from __future__ import annotations

import threading

import numpy as np
import pytest

import ftl
from ftl.exceptions import CheckpointError
from ftl.federation import Channel, Message, ProtocolError
from ftl.federation.checkpoints import PartyCheckpoints
from ftl.federation.policy import PolicyError
from ftl.psi import _resume as resume_module
from ftl.psi import curve, intersection_size
from ftl.psi._resume import OPEN_FIELDS
from ftl.psi.host import PSIHost, cardinality_tags
from tests.psi._by_hand import SALT, make_party, with_minimum
from tests.psi.test_psi_resume import (
    Killed,
    blinded_ids,
    certificates,  # noqa: F401  (the fixture served uses)
    count_runs,
    final_values,
    host_points,
    kept_host,
    killed_until_done,
    remote,
    restart_at,
    resume,
    served,  # noqa: F401  (a fixture)
    start,
    submit_all,
)


def sent(monkeypatch, op: str) -> list:
    """The requests the driver sends for ``op`` (from now on)."""
    requests = []
    real = Channel.call

    def call(self, endpoint, op_, request, origin=None):
        if op_ == op:
            requests.append(request)
        return real(self, endpoint, op_, request, origin)

    monkeypatch.setattr(Channel, "call", call)
    return requests


# -- resume ----------------------------------------------------------------------------------
def test_killed_at_random_batch_boundaries_the_count_is_the_uninterrupted_one(
    monkeypatch, tmp_path
):
    guest = make_party("bank", range(0, 90), labels=True)
    host = make_party("shop", range(40, 150)[::-1])
    counts = count_runs(monkeypatch)
    n, attempts = killed_until_done(
        monkeypatch,
        host,
        lambda: intersection_size(guest, host, batch_size=16, checkpoint_dir=tmp_path),
        seed=3,
    )
    assert attempts > 10
    assert n == 50
    # nothing finished was redone: each batch the host stored, it stored once; one
    # run admitted (charged)
    assert counts["submit"] == 6 and counts["tags"] == 7 and counts["reblinded"] == 0
    assert counts["admitted"] == 1
    assert not [p for p in tmp_path.rglob("*") if p.is_file()]  # a finished run keeps nothing


def test_a_host_that_lost_its_session_is_resumed_in_the_same_count(monkeypatch, tmp_path, caplog):
    guest = make_party("bank", range(0, 70), labels=True)
    host = make_party("shop", range(30, 120))
    host.checkpoints = PartyCheckpoints(tmp_path / "shop" / "bank", "local")  # ftl serve's
    counts = count_runs(monkeypatch)
    restart_at(monkeypatch, host, "psi.host.tags", 5)
    transcript = ftl.Transcript()
    with caplog.at_level("WARNING", logger="ftl.checkpoint"):
        n = ftl.align(
            guest,
            host,
            cardinality_only=True,
            batch_size=8,
            transcript=transcript,
            checkpoint_dir=tmp_path / "bank",
        )
    assert n == 40
    assert [r for r in caplog.records if "resuming PSI run" in r.getMessage()]
    assert len({r.session for r in transcript if r.type == "psi.resume"}) == 1
    assert counts["tags"] == 12 and counts["admitted"] == 1  # no tag batch twice
    assert not list((tmp_path / "shop").rglob("*.json"))
    assert not list((tmp_path / "bank").rglob("*.json"))


def test_a_resumed_count_sends_the_same_tags_again(monkeypatch, tmp_path):
    """The guest keeps its secret shuffle of the tags: a host that claims to hold fewer
    tags than it does receives the same bytes again (a fresh shuffle would give it the
    list twice, and mixed with the first, duplicates and gaps: a wrong count)."""
    guest = make_party("bank", range(0, 40), labels=True)
    host = make_party("shop", range(20, 60))
    with monkeypatch.context() as patch:
        tags = sent(patch, "psi.host.tags")
        real = Channel.call

        def call(self, endpoint, op, request, origin=None):
            if op == "psi.host.shuffled":  # the driver dies once every tag is in
                raise Killed(op)
            return real(self, endpoint, op, request, origin)

        patch.setattr(Channel, "call", call)
        with pytest.raises(Killed):
            intersection_size(guest, host, batch_size=8, checkpoint_dir=tmp_path)
    first = np.concatenate([r["tags"] for r in tags])
    real_restore = PSIHost._restore

    def forgetful(self):  # the host claims it holds no tag
        real_restore(self)
        self._n_reblinded = 0

    monkeypatch.setattr(PSIHost, "_restore", forgetful)
    tags = sent(monkeypatch, "psi.host.tags")
    assert intersection_size(guest, host, batch_size=8, checkpoint_dir=tmp_path) == 20
    np.testing.assert_array_equal(np.concatenate([r["tags"] for r in tags]), first)


def test_a_refused_count_is_refused_again_and_keeps_no_checkpoint(tmp_path):
    guest = make_party("bank", range(0, 40), labels=True)
    host = with_minimum(make_party("shop", range(35, 80)), 10)  # 5 shared
    for _ in range(2):
        with pytest.raises(PolicyError, match="intersection is smaller"):
            intersection_size(guest, host, batch_size=8, checkpoint_dir=tmp_path)
        assert not [p for p in tmp_path.rglob("*") if p.is_file()]  # nothing to resume


# -- attacks: a resume gives a deviating guest no second count ---------------------------------
def shuffled(channel, host, start_at, stop, batch_size=4):
    """The host's shuffled reply ``[start_at, stop)``, batch by batch."""
    out = []
    for a in range(start_at, stop, batch_size):
        fetch = Message("psi.fetch", {"start": a, "stop": min(a + batch_size, stop)})
        out.append(channel.call(host.endpoint, "psi.host.shuffled", fetch)["points"])
    return np.concatenate(out)


def send_tags(channel, host, doubles, batch_size=4):
    tags = cardinality_tags(doubles, SALT)[np.random.default_rng(0).permutation(len(doubles))]
    for a in range(0, len(tags), batch_size):
        message = Message("psi.host_tags", {"start": a, "tags": tags[a : a + batch_size]})
        channel.call(host.endpoint, "psi.host.tags", message)


def shared(values, doubles):
    return int(np.isin(curve.point_keys(values), curve.point_keys(doubles)).sum())


def count_under_way():
    """A kept host with 40 ids and a count whose guest committed 0..7 (shared) and
    100..103 (not) and fetched the host's points: ``(host, alpha, channel, doubles)``."""
    host = kept_host(range(0, 40))
    alpha = curve.random_scalar()
    channel = Channel("bank", session="s1")
    start(host, mode="cardinality")
    submit_all(channel, host, blinded_ids([*range(8), *range(100, 104)], alpha))
    doubles = host_points(channel, host, alpha, 40, send_back=False)
    return host, alpha, channel, doubles


def test_a_resumed_count_cannot_swap_a_batch_after_the_count(monkeypatch):
    """The guest commits 0..7 (shared) and 100..103 (not), has the count begin (the
    host counted, and served all but the last batch of its reply), then resumes to
    send its last batch again with other ids: had the host gone back one batch, the
    second count would tell the guest how many of the new ids the host has (here: all
    4) -- per batch, or with batches of one id, id by id."""

    def count_with_a_swapped_batch():
        host, alpha, channel, doubles = count_under_way()
        send_tags(channel, host, doubles)
        shuffled(channel, host, 0, 8)  # the run goes on: its last batch is not out
        channel, _ = resume(host, mode="cardinality")
        swapped = Message(
            "psi.guest_points", {"start": 8, "points": blinded_ids(range(8, 12), alpha)}
        )
        channel.call(host.endpoint, "psi.host.submit", swapped)
        return shared(shuffled(channel, host, 0, 12), doubles)

    with pytest.raises(ProtocolError, match="expected guest batch at 12"):
        count_with_a_swapped_batch()  # the host holds the whole set: none is sent again
    real_restore = PSIHost._restore

    def one_batch_back(self):  # a host that lets the guest send its last batch again
        real_restore(self)
        self._n_received -= 4

    with monkeypatch.context() as patch:
        patch.setattr(PSIHost, "_restore", one_batch_back)
        assert count_with_a_swapped_batch() == 12  # the committed set shares 8


def test_a_count_served_to_the_end_cannot_be_resumed(monkeypatch):
    """Once its whole reply is out the run is removed: a guest cannot resume it to have
    the intersection counted again (with any way back into the run, a second set)."""

    def count_then_resume():
        host = kept_host(range(0, 40))
        alpha = curve.random_scalar()
        channel = Channel("bank", session="s1")
        start(host, mode="cardinality")
        submit_all(channel, host, blinded_ids(range(4, 16), alpha))
        doubles = host_points(channel, host, alpha, 40, send_back=False)
        send_tags(channel, host, doubles)
        first = shared(shuffled(channel, host, 0, 12), doubles)
        channel, reply = resume(host, mode="cardinality")
        return first, reply

    with pytest.raises(CheckpointError, match="no resumable psi run"):
        count_then_resume()
    with monkeypatch.context() as patch:  # a finished run that is kept resumable
        patch.setattr(PSIHost, "_finish", lambda self: None)
        first, reply = count_then_resume()
    assert first == 12 and reply.type == "psi.resumed" and reply["received"] == 12


def test_a_count_cannot_be_resumed_as_an_alignment(monkeypatch):
    """The mode is part of what a run is bound to: resumed in the default mode, a count
    would answer ``b*a*P(x)`` in the order the guest sent its points -- which of its
    ids the host has, not only how many."""

    def resumed_as_an_alignment():
        host, alpha, channel, doubles = count_under_way()
        channel, _ = resume(host, mode="full")
        host_points(channel, host, alpha, 40)  # the same points again, re-blinded (step 4)
        values = final_values(channel, host, 12)  # in the order the guest sent its points
        return np.isin(curve.point_keys(values), curve.point_keys(doubles))

    with pytest.raises(CheckpointError, match="other parameters"):
        resumed_as_an_alignment()
    with monkeypatch.context() as patch:  # a run bound to its open's fields but the mode
        patch.setattr(resume_module, "OPEN_FIELDS", tuple(f for f in OPEN_FIELDS if f != "mode"))
        shared_ids = resumed_as_an_alignment()
    np.testing.assert_array_equal(shared_ids, [True] * 8 + [False] * 4)


# -- served: ftl serve with a checkpoint_dir ---------------------------------------------------
@pytest.mark.slow  # ftl serve killed mid-count and started again: ~10 s
def test_a_served_host_restarted_mid_count_is_resumed(served, tmp_path, monkeypatch, caplog):  # noqa: F811
    from tests.data.test_remote_resume import on_call

    guest, local_lab = ftl.datasets.load_breast_cancer()
    expected = intersection_size(guest, local_lab)
    lab = remote(tmp_path, served, retry_for=60)

    def restart() -> None:  # killed mid-run, back 1 s later: the call is retried
        served.kill()
        threading.Timer(1.0, served.start).start()

    submitted = sent(monkeypatch, "psi.host.submit")
    on_call(monkeypatch, "psi.host.tags", 4, restart)
    with caplog.at_level("WARNING", logger="ftl.checkpoint"):
        n = intersection_size(guest, lab, batch_size=64, checkpoint_dir=tmp_path / "me")
    assert n == expected
    assert [r for r in caplog.records if "resuming PSI run" in r.getMessage()]
    assert len(submitted) == 9  # the restarted lab held every guest point: none sent again
    assert not list((tmp_path / "checkpoints").rglob("psi/*.json"))  # a finished run
    assert not list((tmp_path / "me").rglob("*.json"))
