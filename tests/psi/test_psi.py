"""ECDH PSI: the psi.host role driven by hand, its minimum intersection size, and what
crosses the wire (the group: test_curve.py; cardinality mode: test_cardinality.py)."""

from __future__ import annotations

import os

import numpy as np
import pytest

import ftl.federation.channel as channel_module
import ftl.federation.service as service_module
from ftl.data.align import align
from ftl.federation import Message, ProtocolError, Transcript
from ftl.federation.policy import PolicyError
from ftl.psi import curve, intersection_size
from tests.psi._by_hand import (
    SALT,
    Bar,
    call,
    make_party,
    not_a_point,
    open_session,
    opened_by_the_guest,
    with_minimum,
)


# -- the psi.host role, driven by hand (forged messages) -------------------------------
def test_host_open_reports_public_metadata_only():
    host = make_party("shop", range(5))
    reply = open_session(host)
    assert reply.type == "psi.opened"
    assert reply["n_rows"] == 5 and reply["feature_names"] == ["f0", "f1"]


def test_host_rejects_forged_non_point():
    host = make_party("shop", range(5))
    open_session(host)
    points = curve.hash_to_curve([b"1", b"2", b"3"], SALT)
    points[2] = np.frombuffer(not_a_point(), dtype=np.uint8)
    with pytest.raises(ValueError, match="not a valid point"):
        call(host, "psi.host.submit", Message("psi.guest_points", {"start": 0, "points": points}))


def test_host_rejects_bad_batches_and_order():
    host = make_party("shop", range(5))
    open_session(host, n_guest=3)
    points = curve.hash_to_curve([b"1", b"2", b"3", b"4"], SALT)
    with pytest.raises(ValueError, match="does not fit"):  # more points than announced
        call(host, "psi.host.submit", Message("psi.guest_points", {"start": 0, "points": points}))
    with pytest.raises(ProtocolError):  # skipping ahead
        call(
            host, "psi.host.submit", Message("psi.guest_points", {"start": 1, "points": points[:1]})
        )
    with pytest.raises(ValueError, match="shape"):
        call(
            host,
            "psi.host.submit",
            Message("psi.guest_points", {"start": 0, "points": np.zeros((1, 31), np.uint8)}),
        )
    with pytest.raises(ProtocolError):  # cardinality-only operation in default mode
        call(host, "psi.host.shuffled", Message("psi.fetch", {"start": 0, "stop": 1}))
    with pytest.raises(ProtocolError):  # exchange not finished
        call(
            host,
            "psi.host.assign",
            Message(
                "psi.assign",
                {
                    "alignment_id": "abc",
                    "points": points[:1],
                    "positions": np.zeros(1, np.int64),
                    "n_rows": 1,
                },
            ),
        )
    with pytest.raises(ProtocolError, match="not all guest points"):  # host points first
        call(host, "psi.host.own", Message("psi.fetch", {"start": 0, "stop": 1}))
    reply = call(
        host, "psi.host.submit", Message("psi.guest_points", {"start": 0, "points": points[:3]})
    )
    assert reply.type == "psi.received" and reply["count"] == 3  # no points come back
    with pytest.raises(ProtocolError, match="not finished"):  # host points not re-blinded
        call(host, "psi.host.blinded", Message("psi.fetch", {"start": 0, "stop": 1}))
    with pytest.raises(ValueError, match="bad fetch range"):
        call(host, "psi.host.own", Message("psi.fetch", {"start": 0, "stop": 50}))
    with pytest.raises(ProtocolError, match="not a registered operation"):  # the old op
        call(host, "psi.host.blind", Message("psi.guest_points", {"start": 3, "points": points}))


def test_host_open_rejects_bad_parameters():
    host = make_party("shop", range(5))
    with pytest.raises(ValueError, match="salt"):
        open_session(host, salt=b"x" * 16)
    with pytest.raises(ValueError, match="mode"):
        open_session(host, mode="sloppy", session="s2")
    with pytest.raises(ValueError, match="join"):
        open_session(host, how="outer", session="s3")
    with pytest.raises(ValueError, match="left"):
        open_session(host, how="left", mode="cardinality", session="s4")
    with pytest.raises(ValueError, match="unknown order"):
        open_session(host, order="random", session="s5")
    with pytest.raises(ValueError, match="order='id'"):
        open_session(host, how="left", order="id", session="s6")
    with pytest.raises(ValueError, match="order='id'"):
        open_session(host, mode="cardinality", order="id", session="s7")
    assert host.endpoint.open_sessions == 0


def test_host_rejects_unknown_assigned_values():
    guest = make_party("bank", range(10), labels=True)
    host = make_party("shop", range(5, 15))
    # Run a real exchange by hand through the driver helpers, then forge the assign.
    from ftl.psi.guest import exchange

    ch, info = opened_by_the_guest(host, n_guest=10, batch_size=4)
    pair = exchange(ch, info, guest.local_ids(), SALT, 4, Bar())
    assert pair.in_host.sum() == 5
    forged = curve.hash_to_curve([b"zzz"], SALT)
    msg = Message(
        "psi.assign",
        {"alignment_id": "a1", "points": forged, "positions": np.zeros(1, np.int64), "n_rows": 1},
    )
    with pytest.raises(ValueError, match="not this host's"):
        ch.call(host.endpoint, "psi.host.assign", msg)
    # A correct subset in the wrong order is refused by a single host too.
    rows = np.flatnonzero(pair.in_host)
    wrong = pair.guest_doubles[rows]  # guest row order, not sorted by value
    keys = curve.point_keys(wrong)
    if np.all(keys[:-1] <= keys[1:]):  # pragma: no cover - astronomically unlikely
        wrong = wrong[::-1]
    msg = Message(
        "psi.assign",
        {"alignment_id": "a1", "points": wrong, "positions": np.arange(5), "n_rows": 5},
    )
    with pytest.raises(ValueError, match="sorted intersection"):
        ch.call(host.endpoint, "psi.host.assign", msg)
    with pytest.raises(ProtocolError):  # nothing staged
        ch.call(host.endpoint, "psi.host.commit", Message("psi.commit", {"alignment_id": "a1"}))
    assert host._alignments == {}


# -- the host's minimum intersection size --------------------------------------------------
def host_to_guest_types(transcript, host="shop", guest="bank"):
    return [r.type for r in transcript if r.sender == host and r.receiver == guest]


def test_min_intersection_refuses_small_guest_set_at_open():
    guest = make_party("bank", range(5), labels=True)
    host = with_minimum(make_party("shop", range(100)), 10)
    transcript = Transcript()
    with pytest.raises(PolicyError, match="minimum intersection size of 10"):
        align(guest, host, transcript=transcript)
    assert not any(r.type == "psi.guest_points" for r in transcript)  # nothing exchanged
    with pytest.raises(PolicyError, match="10"):  # cardinality mode checks at open too
        intersection_size(guest, host)
    assert host._alignments == {} and guest._alignments == {}
    assert host.endpoint.open_sessions == 0


def test_min_intersection_refuses_before_guest_can_match():
    guest = make_party("bank", range(0, 60), labels=True)
    host = with_minimum(make_party("shop", range(55, 120)), 10)  # 5 shared, 60 >= 10
    transcript = Transcript()
    with pytest.raises(PolicyError, match="intersection is smaller"):
        align(guest, host, transcript=transcript, batch_size=16)
    sent = host_to_guest_types(transcript)
    assert "psi.host_points" in sent  # the exchange ran up to the check ...
    assert "psi.guest_points_blinded" not in sent  # ... but b*a*P(x) never came back
    # Only counts and the host's singly blinded points reached the guest.
    assert set(sent) <= {"psi.opened", "psi.received", "psi.host_points", "ack"}
    assert host._alignments == {} and guest._alignments == {}
    assert host.endpoint.open_sessions == 0


def test_min_intersection_keeps_refusing_and_blocks_assign():
    from ftl.psi._guest_steps import Progress, fetch_host_points, send_guest_points

    guest = make_party("bank", range(20), labels=True)
    host = with_minimum(make_party("shop", range(17, 40)), 4)  # 3 shared
    ch, info = opened_by_the_guest(host, n_guest=20, batch_size=8)
    progress = Progress(curve.random_scalar(), np.arange(20), info.n_rows)
    send_guest_points(ch, info, guest.local_ids(), SALT, 8, Bar(), progress)
    host_doubles = fetch_host_points(ch, info, 8, Bar(), progress, send_back=True)
    for _ in range(2):
        with pytest.raises(PolicyError):
            ch.call(
                host.endpoint, "psi.host.blinded", Message("psi.fetch", {"start": 0, "stop": 8})
            )
    msg = Message(
        "psi.assign",
        {
            "alignment_id": "a1",
            "points": host_doubles[:1],
            "positions": np.zeros(1, np.int64),
            "n_rows": 1,
        },
    )
    with pytest.raises(PolicyError):  # no way around the check through assign
        ch.call(host.endpoint, "psi.host.assign", msg)
    assert not any(r.type == "psi.guest_points_blinded" for r in ch.transcript)


def test_min_intersection_just_below_passes():
    guest = make_party("bank", range(0, 60), labels=True)
    host = with_minimum(make_party("shop", range(40, 100)), 19)  # 20 shared
    transcript = Transcript()
    X, _ = align(guest, host, transcript=transcript, batch_size=16)
    assert len(X) == 20
    assert "psi.guest_points_blinded" in host_to_guest_types(transcript)
    with_minimum(host, 20)  # exactly the intersection: still allowed
    X, _ = align(guest, host)
    assert len(X) == 20


def test_min_intersection_is_checked_pairwise_with_several_hosts():
    guest = make_party("bank", range(0, 100), labels=True)
    shop_a = with_minimum(make_party("shop_a", range(0, 80)), 50)  # 80 shared with bank
    shop_b = with_minimum(make_party("shop_b", range(70, 130)), 40)  # 30 shared with bank
    with pytest.raises(PolicyError):
        align(guest, shop_a, shop_b)
    assert all(p._alignments == {} for p in (guest, shop_a, shop_b))
    with_minimum(shop_b, 30)
    X, _ = align(guest, shop_a, shop_b)  # final intersection 10: pairwise sizes count
    assert len(X) == 10


def test_cardinality_mode_checks_the_minimum_on_the_count():
    # The host counts the intersection itself (from the guest's tags) and refuses
    # before the guest gets the shuffled values it would count with.
    guest = make_party("bank", range(0, 30), labels=True)
    host = with_minimum(make_party("shop", range(27, 60)), 10)  # 3 shared, 30 >= 10
    transcript = Transcript()
    with pytest.raises(PolicyError, match="intersection is smaller") as refused:
        intersection_size(guest, host, transcript=transcript, batch_size=8)
    assert " 3 " not in str(refused.value)  # the count itself is not named
    assert "psi.host_tags" in {r.type for r in transcript}  # the run got to the check ...
    assert "psi.shuffled_doubles" not in host_to_guest_types(transcript)  # ... no further
    assert host.endpoint.open_sessions == 0
    with_minimum(host, 3)  # exactly the intersection: allowed, result unchanged
    assert intersection_size(guest, host, batch_size=8) == 3


# -- what crosses the wire --------------------------------------------------------------------
def test_no_raw_id_on_the_wire(monkeypatch):
    wire: list[bytes] = []

    def spy(encode_fn):
        def wrapped(message, *args, **kwargs):
            data = encode_fn(message, *args, **kwargs)
            wire.append(data)
            return data

        return wrapped

    # Requests are encoded in the channel, replies in the party service.
    monkeypatch.setattr(channel_module, "encode", spy(channel_module.encode))
    monkeypatch.setattr(service_module, "encode", spy(service_module.encode))
    guest_ids = [f"customer-{i:05d}" for i in range(0, 300)]
    host_ids = [f"customer-{i:05d}" for i in range(150, 450)]
    guest = make_party("bank", guest_ids, labels=True)
    host = make_party("shop", host_ids)
    transcript = Transcript()
    X, _ = align(guest, host, transcript=transcript, batch_size=64)
    # Every message that crossed was recorded, with its exact size.
    assert len(wire) == len(transcript)
    assert [len(w) for w in wire] == [r.nbytes for r in transcript]
    intersection_size(guest, host, batch_size=64)
    assert len(X) == 150
    blob = b"".join(wire)
    assert b"customer-" not in blob
    for ident in guest_ids[:20] + host_ids[-20:]:
        assert ident.encode() not in blob
    pairs = {(r.sender, r.receiver) for r in transcript}
    assert pairs == {("bank", "shop"), ("shop", "bank")}
    types = {r.type for r in transcript}
    assert {
        "psi.open",
        "psi.opened",
        "psi.guest_points",
        "psi.guest_points_blinded",
        "psi.fetch",
        "psi.host_points",
        "psi.host_points_reblinded",
        "psi.assign",
        "psi.commit",
        "psi.received",
        "ack",
    } <= types
    for record in transcript:
        for f in record.fields:
            if f.form == "array":
                assert f.kind == "public"


def test_points_are_batched():
    guest = make_party("bank", range(100), labels=True)
    host = make_party("shop", range(50, 120))
    transcript = Transcript()
    align(guest, host, transcript=transcript, batch_size=30, verbose=True)
    sizes = [
        f.shape[0]
        for r in transcript
        for f in r.fields
        if r.type in ("psi.guest_points", "psi.host_points") and f.name == "points"
    ]
    assert max(sizes) <= 30
    assert sum(sizes) == 100 + 70


def test_salt_is_fresh_per_run_unless_given():
    guest = make_party("bank", range(20), labels=True)
    host = make_party("shop", range(10, 30))
    X1, _ = align(guest, host)
    X2, _ = align(guest, host)
    assert X1.alignment.psi["salt"] != X2.alignment.psi["salt"]
    X3, _ = align(guest, host, salt=SALT)
    assert X3.alignment.psi["salt"] == SALT.hex()
    X4, _ = align(guest, host, salt=os.urandom(32).hex())
    assert len(bytes.fromhex(X4.alignment.psi["salt"])) == 32
