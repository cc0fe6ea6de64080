"""ECDH PSI: curve helpers, the psi.host role, cardinality mode and the wire."""

from __future__ import annotations

import hashlib
import os

import numpy as np
import pandas as pd
import pytest
import rbcl

import ftl.federation.channel as channel_module
import ftl.federation.service as service_module
from ftl.data.align import align
from ftl.data.party import Party
from ftl.federation import Message, ProtocolError, Transcript, decode, encode
from ftl.federation.policy import PolicyError
from ftl.psi import curve, intersection_size

SALT = bytes(range(32))


def make_party(name, ids, labels=False, n_features=2):
    ids = list(ids)
    frame = pd.DataFrame({f"f{j}": np.arange(len(ids), dtype=float) + j for j in range(n_features)})
    frame.insert(0, "id", ids)
    if labels:
        frame["y"] = np.arange(len(ids)) % 2
    return Party(name, frame, id_column="id", label_column="y" if labels else None)


# Bad encodings from RFC 9496, Appendix A.2 (plus 32 bytes of 0xff): none of them
# decodes to a ristretto255 element.
BAD_ENCODINGS = [
    # non-canonical field encodings
    "00ffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff",
    "ffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff7f",
    "f3ffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff7f",
    "edffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff7f",
    "ff" * 32,
    # negative field elements
    "0100000000000000000000000000000000000000000000000000000000000000",
    "01ffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff7f",
    "ed57ffd8c914fb201471d1c3d245ce3c746fcbe63a3679d51b6a516ebebe0e20",
    # non-square x^2
    "26948d35ca62e643e26a83177332e6b6afeb9d08e4268b650f1f5bbd8d81d371",
    # negative xy value
    "3eb858e78f5a7254d8c9731174a94f76755fd3941c0ac93735c07ba14579630e",
    # s = -1, which causes y = 0
    "ecffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff7f",
]


def not_a_point() -> bytes:
    """A 32-byte string that is not a ristretto255 encoding (RFC 9496, A.2)."""
    return bytes.fromhex(BAD_ENCODINGS[0])


# -- curve helpers ------------------------------------------------------------------
def test_canonical_ids_int_and_str_agree():
    assert curve.canonical_ids([7, "7", "abc"]) == [b"7", b"7", b"abc"]
    assert curve.canonical_ids(np.array([7, 8], dtype=np.int64)) == [b"7", b"8"]
    assert curve.canonical_ids(np.array(["é"])) == ["é".encode()]


def test_hash_to_curve_is_deterministic_salted_and_valid():
    ids = curve.canonical_ids(range(50))
    p1 = curve.hash_to_curve(ids, SALT)
    p2 = curve.hash_to_curve(ids, SALT)
    p3 = curve.hash_to_curve(ids, bytes(32))
    assert p1.shape == (50, 32) and p1.dtype == np.uint8
    np.testing.assert_array_equal(p1, p2)
    assert not np.any(np.all(p1 == p3, axis=1))
    curve.check_points(p1, "hashed")  # every hashed point is in the prime-order group
    assert len(np.unique(curve.point_keys(p1))) == 50
    with pytest.raises(ValueError, match="salt"):
        curve.hash_to_curve(ids, b"short")


def test_length_prefix_separates_salt_and_id():
    # Without a length prefix, (salt, "ab") and (salt', "b") could hash alike.
    a = curve.hash_to_curve([b"ab"], SALT)
    b = curve.hash_to_curve([b"b"], SALT)
    assert not np.array_equal(a, b)


def test_blinding_commutes():
    points = curve.hash_to_curve(curve.canonical_ids(range(600)), SALT)  # > 1 thread chunk
    a, b = curve.random_scalar(), curve.random_scalar()
    ab = curve.blind(curve.blind(points, a), b)
    ba = curve.blind(curve.blind(points, b), a)
    np.testing.assert_array_equal(ab, ba)
    assert not np.array_equal(ab, points)


def test_blind_and_check_reject_invalid_points():
    points = curve.hash_to_curve([b"x", b"y"], SALT)
    points[1] = np.frombuffer(not_a_point(), dtype=np.uint8)
    with pytest.raises(ValueError, match="entry 1 is not a valid point.*canonical"):
        curve.check_points(points, "peer")
    with pytest.raises(ValueError, match="refused"):
        curve.blind(points, curve.random_scalar())


@pytest.mark.parametrize("encoding", BAD_ENCODINGS)
def test_rfc9496_bad_encodings_are_refused(encoding):
    points = curve.hash_to_curve([b"a", b"b", b"c"], SALT)
    points[2] = np.frombuffer(bytes.fromhex(encoding), dtype=np.uint8)
    with pytest.raises(ValueError, match="entry 2 is not a valid point"):
        curve.check_points(points, "peer")
    with pytest.raises(ValueError, match="refused"):
        curve.blind(points[2:], curve.random_scalar())


def test_identity_is_refused():
    # 32 zero bytes encode the neutral element: libsodium decodes it, we refuse it.
    points = curve.hash_to_curve([b"a", b"b"], SALT)
    points[0] = 0
    with pytest.raises(ValueError, match="entry 0 is not a valid point.*identity"):
        curve.check_points(points, "peer")
    with pytest.raises(ValueError, match="refused"):
        curve.blind(points, curve.random_scalar())
    # A zero scalar would send every point to the identity: blinding refuses it.
    with pytest.raises(ValueError, match="refused"):
        curve.blind(points[1:], bytes(32))
    with pytest.raises(ValueError, match="32 bytes"):
        curve.blind(points[1:], b"short")


def test_hash_to_curve_is_rfc9496_from_hash_of_salted_sha512():
    ids = [b"", b"7", "é".encode(), b"x" * 300]
    points = curve.hash_to_curve(ids, SALT)
    for ident, point in zip(ids, points, strict=True):
        digest = hashlib.sha512(SALT + len(ident).to_bytes(8, "big") + ident).digest()
        assert bytes(point) == rbcl.crypto_core_ristretto255_from_hash(digest)
    # The map itself against RFC 9496, A.3 (input: SHA-512 of the label).
    label = b"Ristretto is traditionally a short shot of espresso coffee"
    expected = "3066f82a1a747d45120d1740f14358531a8f04bbffe6a819f86dfe50f44a0a46"
    assert rbcl.crypto_core_ristretto255_from_hash(hashlib.sha512(label).digest()).hex() == expected


def test_hash_to_curve_depends_only_on_salt_and_id():
    # Same (salt, id) -> same point wherever it sits in the batch and whatever
    # else is hashed with it (also across thread chunks); another salt -> another point.
    ids = curve.canonical_ids(range(1000))
    whole = curve.hash_to_curve(ids, SALT)
    shuffled = np.random.default_rng(1).permutation(1000)
    part = curve.hash_to_curve([ids[i] for i in shuffled[:700]], SALT)
    np.testing.assert_array_equal(part, whole[shuffled[:700]])
    single = curve.hash_to_curve([ids[123]], SALT)
    np.testing.assert_array_equal(single[0], whole[123])
    other = curve.hash_to_curve([ids[123]], bytes(32))
    assert not np.array_equal(other[0], whole[123])


def test_blinding_is_scalar_multiplication_mod_the_group_order():
    # a*(b*P) == b*(a*P) == (a*b mod L)*P: the scalar is used whole, not clamped.
    points = curve.hash_to_curve(curve.canonical_ids(range(20)), SALT)
    a, b = curve.random_scalar(), curve.random_scalar()
    ab = rbcl.crypto_core_ristretto255_scalar_mul(a, b)
    np.testing.assert_array_equal(curve.blind(curve.blind(points, a), b), curve.blind(points, ab))
    np.testing.assert_array_equal(curve.blind(points, (1).to_bytes(32, "little")), points)
    # Blinding and unblinding with the inverse scalar round-trips.
    a_inv = rbcl.crypto_core_ristretto255_scalar_invert(a)
    np.testing.assert_array_equal(curve.blind(curve.blind(points, a), a_inv), points)
    # Blinded points are valid group elements again.
    curve.check_points(curve.blind(points, a), "blinded")


def test_check_and_blind_is_check_points_then_blind():
    points = curve.hash_to_curve(curve.canonical_ids(range(700)), SALT)  # > 1 thread chunk
    a = curve.random_scalar()
    np.testing.assert_array_equal(curve.check_and_blind(points, a, "peer"), curve.blind(points, a))
    bad = points.copy()
    bad[650] = np.frombuffer(not_a_point(), dtype=np.uint8)
    with pytest.raises(ValueError, match="peer: entry 650 is not a valid point.*canonical"):
        curve.check_and_blind(bad, a, "peer")
    bad[650] = points[650]
    bad[3] = 0
    with pytest.raises(ValueError, match="peer: entry 3 is not a valid point.*identity"):
        curve.check_and_blind(bad, a, "peer")
    with pytest.raises(ValueError, match="expected 2 points"):
        curve.check_and_blind(points, a, "peer", expected=2)
    with pytest.raises(ValueError, match="uint8"):
        curve.check_and_blind(points.astype(np.int64), a, "peer")
    with pytest.raises(ValueError, match="refused"):
        curve.check_and_blind(points, bytes(32), "peer")  # zero scalar


def test_check_points_shape_dtype_and_count():
    good = curve.hash_to_curve([b"x"], SALT)
    with pytest.raises(ValueError, match="uint8"):
        curve.check_points(good.astype(np.int64), "peer")
    with pytest.raises(ValueError, match="shape"):
        curve.check_points(good[:, :31], "peer")
    with pytest.raises(ValueError, match="expected 2 points"):
        curve.check_points(good, "peer", expected=2)
    with pytest.raises(ValueError, match="duplicate"):
        curve.check_distinct(np.vstack([good, good]), "peer")


def test_point_keys_sort_like_bytes():
    rng = np.random.default_rng(0)
    arr = rng.integers(0, 256, size=(300, 32), dtype=np.uint8)
    arr[:50, 5:] = 0  # embedded and trailing zero bytes must not confuse the order
    order = np.argsort(curve.point_keys(arr), kind="stable")
    expected = sorted(range(len(arr)), key=lambda i: bytes(arr[i]))
    assert order.tolist() == expected


def test_secret_permutation_and_batches():
    perm = curve.secret_permutation(1000)
    assert sorted(perm.tolist()) == list(range(1000))
    assert curve.secret_permutation(0).shape == (0,)
    assert list(curve.batches(5, 2)) == [(0, 2), (2, 4), (4, 5)]
    scalars = {curve.random_scalar() for _ in range(5)}
    assert len(scalars) == 5 and all(len(s) == 32 for s in scalars)


# -- the psi.host role, driven by hand (forged messages) -------------------------------
def open_session(
    host, n_guest=3, mode="full", how="inner", salt=SALT, session="s1", order="blinded"
):
    request = Message(
        "psi.open",
        {
            "salt": salt,
            "n_guest": n_guest,
            "mode": mode,
            "how": how,
            "order": order,
            "n_hosts": 1,
            "batch_size": 10,
        },
    )
    return decode(host.endpoint.handle(session, "psi.host.open", encode(request)))


def call(host, op, message, session="s1"):
    return decode(host.endpoint.handle(session, op, encode(message)))


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
    from ftl.federation import Channel
    from ftl.psi.guest import exchange, open_host

    ch = Channel("bank")
    info = open_host(
        ch,
        host.endpoint,
        salt=SALT,
        n_guest=10,
        mode="full",
        how="inner",
        n_hosts=1,
        batch_size=4,
    )

    class Bar:
        def update(self, n):
            pass

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
class Bar:
    def update(self, n):
        pass


def with_minimum(party, minimum):
    party.min_intersection = minimum  # what the server sets from the host's policy
    return party


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
    from ftl.federation import Channel
    from ftl.psi.guest import _fetch_host_points, _send_guest_points, open_host

    guest = make_party("bank", range(20), labels=True)
    host = with_minimum(make_party("shop", range(17, 40)), 4)  # 3 shared
    ch = Channel("bank")
    info = open_host(
        ch,
        host.endpoint,
        salt=SALT,
        n_guest=20,
        mode="full",
        how="inner",
        n_hosts=1,
        batch_size=8,
    )
    alpha = curve.random_scalar()
    _send_guest_points(ch, info, guest.local_ids(), SALT, alpha, 8, Bar())
    host_doubles = _fetch_host_points(ch, info, alpha, 8, Bar(), send_back=True)
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
    host.min_intersection = 20  # exactly the intersection: still allowed
    X, _ = align(guest, host)
    assert len(X) == 20


def test_min_intersection_is_checked_pairwise_with_several_hosts():
    guest = make_party("bank", range(0, 100), labels=True)
    shop_a = with_minimum(make_party("shop_a", range(0, 80)), 50)  # 80 shared with bank
    shop_b = with_minimum(make_party("shop_b", range(70, 130)), 40)  # 30 shared with bank
    with pytest.raises(PolicyError):
        align(guest, shop_a, shop_b)
    assert all(p._alignments == {} for p in (guest, shop_a, shop_b))
    shop_b.min_intersection = 30
    X, _ = align(guest, shop_a, shop_b)  # final intersection 10: pairwise sizes count
    assert len(X) == 10


def test_cardinality_mode_checks_the_minimum_only_at_open():
    # Cardinality mode keeps its flow: only the guest's set size is checked (at
    # open); a count below the minimum is still returned (documented residual).
    guest = make_party("bank", range(0, 30), labels=True)
    host = with_minimum(make_party("shop", range(27, 60)), 10)
    assert intersection_size(guest, host) == 3


# -- cardinality mode ---------------------------------------------------------------------
def test_intersection_size_counts_and_sends_nothing_back():
    guest = make_party("bank", range(0, 60), labels=True)
    host = make_party("shop", [str(i) for i in range(40, 130)])
    transcript = Transcript()
    n = intersection_size(guest, host, transcript=transcript, batch_size=16)
    assert n == 20
    records = list(transcript)
    first_host_points = next(
        i
        for i, r in enumerate(records)
        if r.sender == "shop"
        and r.type != "psi.opened"
        and any(f.form == "array" for f in r.fields)
    )
    later_guest = [
        r.type
        for r in records[first_host_points:]
        if r.sender == "bank" and any(f.form == "array" for f in r.fields)
    ]
    assert later_guest == []  # no step 4: the guest sends no points after the host's reply
    assert not any(r.type == "psi.host_points_reblinded" for r in records)
    shuffled = [r for r in records if r.type == "psi.shuffled_doubles"]
    assert sum(r.fields[0].shape[0] for r in shuffled if r.fields[0].name == "points") == 60
    assert host._alignments == {} and guest._alignments == {}
    assert host.endpoint.open_sessions == 0


def test_intersection_size_zero_and_errors():
    guest = make_party("bank", range(10), labels=True)
    host = make_party("shop", range(100, 110))
    assert intersection_size(guest, host) == 0
    with pytest.raises(ValueError, match="different parties"):
        intersection_size(guest, make_party("bank", range(3)))
    with pytest.raises(ValueError, match="batch_size"):
        intersection_size(guest, host, batch_size=0)


def test_cardinality_host_refuses_default_mode_operations():
    host = make_party("shop", range(5))
    open_session(host, n_guest=2, mode="cardinality")
    points = curve.hash_to_curve([b"1", b"2"], SALT)
    reply = call(
        host, "psi.host.submit", Message("psi.guest_points", {"start": 0, "points": points})
    )
    assert reply["count"] == 2
    with pytest.raises(ProtocolError):  # unshuffled blinded points: default mode only
        call(host, "psi.host.blinded", Message("psi.fetch", {"start": 0, "stop": 2}))
    with pytest.raises(ProtocolError):
        call(
            host,
            "psi.host.reblinded",
            Message("psi.host_points_reblinded", {"start": 0, "points": points}),
        )


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
