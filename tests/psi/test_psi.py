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
from ftl.federation.budget import BudgetLimits, HostGuard
from ftl.federation.messages import MessageError
from ftl.federation.policy import PolicyError
from ftl.psi import curve, intersection_size
from ftl.psi.host import cardinality_tags

SALT = bytes(range(32))


def make_party(name, ids, labels=False, n_features=2):
    ids = list(ids)
    frame = pd.DataFrame({f"f{j}": np.arange(len(ids), dtype=float) + j for j in range(n_features)})
    frame.insert(0, "id", ids)
    if labels:
        frame["y"] = np.arange(len(ids)) % 2
    return Party(name, frame, id_column="id", label_column="y" if labels else None)


# The bad encodings of RFC 9496, Appendix A.2, all of them (plus 32 bytes of 0xff):
# none of them decodes to a ristretto255 element.
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
    "c34c4e1826e5d403b78e246e88aa051c36ccf0aafebffe137d148a2bf9104562",
    "c940e5a4404157cfb1628b108db051a8d439e1a421394ec4ebccb9ec92a8ac78",
    "47cfc5497c53dc8e61c91d17fd626ffb1c49e2bca94eed052281b510b1117a24",
    "f1c6165d33367351b0da8f6e4511010c68174a03b6581212c71c0e1d026c3c72",
    "87260f7a2f12495118360f02c26a470f450dadf34a413d21042b43b9d93e1309",
    # non-square x^2
    "26948d35ca62e643e26a83177332e6b6afeb9d08e4268b650f1f5bbd8d81d371",
    "4eac077a713c57b4f4397629a4145982c661f48044dd3f96427d40b147d9742f",
    "de6a7b00deadc788eb6b6c8d20c0ae96c2f2019078fa604fee5b87d6e989ad7b",
    "bcab477be20861e01e4a0e295284146a510150d9817763caf1a6f4b422d67042",
    "2a292df7e32cababbd9de088d1d1abec9fc0440f637ed2fba145094dc14bea08",
    "f4a9e534fc0d216c44b218fa0c42d99635a0127ee2e53c712f70609649fdff22",
    "8268436f8c4126196cf64b3c7ddbda90746a378625f9813dd9b8457077256731",
    "2810e5cbc2cc4d4eece54f61c6f69758e289aa7ab440b3cbeaa21995c2f4232b",
    # negative xy value
    "3eb858e78f5a7254d8c9731174a94f76755fd3941c0ac93735c07ba14579630e",
    "a45fdc55c76448c049a1ab33f17023edfb2be3581e9c7aade8a6125215e04220",
    "d483fe813c6ba647ebbfd3ec41adca1c6130c2beeee9d9bf065c8d151c5f396e",
    "8a2e1d30050198c65a54483123960ccc38aef6848e1ec8f5f780e8523769ba32",
    "32888462f8b486c68ad7dd9610be5192bbeaf3b443951ac1a8118419d9fa097b",
    "227142501b9d4355ccba290404bde41575b037693cef1f438c47f8fbf35d1165",
    "5c37cc491da847cfeb9281d407efc41e15144c876e0170b499a96a22ed31e01e",
    "445425117cb8c90edcbc7c1cc0e74f747f2c1efa5630a967c64f287792a48a4b",
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


def test_rfc9496_bad_encodings_are_refused_by_check_and_blind():
    points = curve.hash_to_curve(curve.canonical_ids(range(len(BAD_ENCODINGS) + 3)), SALT)
    bad = np.array([np.frombuffer(bytes.fromhex(e), np.uint8) for e in BAD_ENCODINGS])
    points[3:] = bad
    message = f"entry 3 is not a valid point.*canonical.*{len(bad)} of {len(points)} points"
    for check in (
        lambda: curve.check_points(points, "peer"),
        lambda: curve.check_and_blind(points, curve.random_scalar(), "peer"),
    ):
        with pytest.raises(MessageError, match=message):
            check()
    # The vectorised byte check catches exactly the values >= p or odd (negative);
    # libsodium's decoding refuses the rest.
    values = [int.from_bytes(bytes.fromhex(e), "little") for e in BAD_ENCODINGS]
    expected = [v >= 2**255 - 19 or v % 2 == 1 for v in values]
    assert curve.noncanonical(bad).tolist() == expected
    assert 0 < sum(expected) < len(expected)


def test_points_with_bit_255_set_are_refused():
    # RFC 9496 §4.3.1: bit 255 must be 0. The libsodium bundled with rbcl masks it
    # off, so P with bit 255 set decodes (and blinds) like P: a second encoding.
    points = curve.hash_to_curve(curve.canonical_ids(range(600)), SALT)  # > 1 thread chunk
    flipped = points.copy()
    flipped[[5, 7, 599], -1] |= 0x80
    scalar = curve.random_scalar()
    message = r"entry 5 is not a valid point.*canonical.*3 of 600 points refused"
    with pytest.raises(MessageError, match=message):
        curve.check_points(flipped, "peer")
    with pytest.raises(MessageError, match=message):
        curve.check_and_blind(flipped, scalar, "peer")
    assert curve.noncanonical(flipped).sum() == 3 and not curve.noncanonical(points).any()
    np.testing.assert_array_equal(
        curve.check_and_blind(points, scalar, "peer"), curve.blind(points, scalar)
    )


def test_noncanonical_is_exact_at_the_field_prime():
    def enc(value: int) -> np.ndarray:
        return np.frombuffer(value.to_bytes(32, "little"), np.uint8)

    p = 2**255 - 19
    values = [0, 2, p - 1, p - 3, p, p + 1, p + 2, 2**255 - 1, 2**255, 2**255 + 2, 2**256 - 2]
    flags = curve.noncanonical(np.array([enc(v) for v in values]))
    # canonical: below p and even (p - 1 is even); everything else is not
    assert flags.tolist() == [v >= p or v % 2 == 1 for v in values]


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
    # What ``ftl serve`` attaches from the host's policy (no other limit here).
    party.guard = HostGuard("bank", BudgetLimits.unrestricted(), min_intersection=minimum)
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


# -- cardinality mode ---------------------------------------------------------------------
def test_intersection_size_counts_and_returns_only_shuffled_tags():
    guest = make_party("bank", range(0, 60), labels=True)
    host = make_party("shop", [str(i) for i in range(40, 130)])
    transcript = Transcript()
    n = intersection_size(guest, host, transcript=transcript, batch_size=16)
    assert n == 20
    records = list(transcript)
    types = [r.type for r in records]
    first = {t: types.index(t) for t in set(types)}
    last = {t: len(types) - 1 - types[::-1].index(t) for t in set(types)}
    # Commit, host points, tags, and only then the shuffled guest values.
    assert last["psi.guest_points"] < first["psi.host_points"]
    assert last["psi.host_points"] < first["psi.host_tags"]
    assert last["psi.host_tags"] < first["psi.shuffled_doubles"]
    later_guest = {
        r.type
        for r in records[first["psi.host_points"] :]
        if r.sender == "bank" and any(f.form == "array" for f in r.fields)
    }
    # Step 4 returns tags (not points the host could relate to its own) ...
    assert later_guest == {"psi.host_tags"}
    assert "psi.host_points_reblinded" not in types
    tags = [f for r in records if r.type == "psi.host_tags" for f in r.fields if f.name == "tags"]
    assert sum(f.shape[0] for f in tags) == 90 and all(f.kind == "public" for f in tags)
    shuffled = [r for r in records if r.type == "psi.shuffled_doubles"]
    assert sum(r.fields[0].shape[0] for r in shuffled if r.fields[0].name == "points") == 60
    assert host._alignments == {} and guest._alignments == {}
    assert host.endpoint.open_sessions == 0


def test_cardinality_tags_are_equal_exactly_for_equal_points():
    points = curve.hash_to_curve(curve.canonical_ids(range(5)), SALT)
    a, b = curve.random_scalar(), curve.random_scalar()
    ab = curve.blind(curve.blind(points, a), b)
    ba = curve.blind(curve.blind(points, b), a)
    tags = cardinality_tags(ab, SALT)
    assert tags.shape == (5, 32) and tags.dtype == np.uint8
    np.testing.assert_array_equal(tags, cardinality_tags(ba, SALT))
    assert len(np.unique(curve.point_keys(tags))) == 5
    assert not np.array_equal(tags, cardinality_tags(ab, bytes(32)))  # salted
    assert cardinality_tags(ab[:0], SALT).shape == (0, 32)


def test_cardinality_host_checks_order_and_tags():
    host = make_party("shop", range(5))
    open_session(host, n_guest=2, mode="cardinality")
    tags = np.random.default_rng(0).integers(0, 256, size=(5, 32), dtype=np.uint8)
    fetch = Message("psi.fetch", {"start": 0, "stop": 5})
    with pytest.raises(ProtocolError, match="not all guest points"):  # commit first
        call(host, "psi.host.own", fetch)
    points = curve.hash_to_curve([b"1", b"2"], SALT)
    call(host, "psi.host.submit", Message("psi.guest_points", {"start": 0, "points": points}))
    with pytest.raises(ProtocolError, match="every host point"):  # tags after host points
        call(host, "psi.host.tags", Message("psi.host_tags", {"start": 0, "tags": tags}))
    with pytest.raises(ProtocolError, match="not finished"):  # no shuffled values yet
        call(host, "psi.host.shuffled", Message("psi.fetch", {"start": 0, "stop": 2}))
    call(host, "psi.host.own", fetch)
    with pytest.raises(ValueError, match="shape"):
        call(host, "psi.host.tags", Message("psi.host_tags", {"start": 0, "tags": tags[:, :16]}))
    with pytest.raises(ValueError, match="does not match"):  # more tags than host points
        call(
            host,
            "psi.host.tags",
            Message("psi.host_tags", {"start": 0, "tags": np.vstack([tags, tags[:1]])}),
        )
    with pytest.raises(ProtocolError, match="expected tag batch at 0"):
        call(host, "psi.host.tags", Message("psi.host_tags", {"start": 1, "tags": tags[:1]}))
    repeated = tags.copy()
    repeated[4] = repeated[0]  # a repeated (matching) tag must not count twice
    reply = call(host, "psi.host.tags", Message("psi.host_tags", {"start": 0, "tags": repeated}))
    assert reply["count"] == 5
    with pytest.raises(ValueError, match="duplicate"):
        call(host, "psi.host.shuffled", Message("psi.fetch", {"start": 0, "stop": 2}))


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


def run_deviating_cardinality_guest(host, guest_ids, forge, session):
    """Drive the cardinality run by hand with step-4 tags chosen by ``forge``."""
    alpha = curve.random_scalar()
    mine = curve.blind(curve.hash_to_curve(curve.canonical_ids(guest_ids), SALT), alpha)
    open_session(host, n_guest=len(mine), mode="cardinality", session=session)
    call(
        host, "psi.host.submit", Message("psi.guest_points", {"start": 0, "points": mine}), session
    )
    theirs = np.vstack(
        [
            call(host, "psi.host.own", Message("psi.fetch", {"start": i, "stop": i + 10}), session)[
                "points"
            ]
            for i in range(0, host.n_rows, 10)
        ]
    )
    tags = forge(alpha, mine, theirs)
    for start in range(0, len(tags), 10):
        batch = tags[start : start + 10]
        call(
            host,
            "psi.host.tags",
            Message("psi.host_tags", {"start": start, "tags": batch}),
            session,
        )
    fetch = Message("psi.fetch", {"start": 0, "stop": len(mine)})
    return call(host, "psi.host.shuffled", fetch, session)["points"]


def test_deviating_guest_cannot_inflate_the_cardinality_count():
    # None of the guest's ids is the host's and the host's minimum is 1: any match
    # the host counted would be made up. Each forgery is something the guest can
    # compute without the host's scalar; making a match needs b*S for a point S it
    # committed to (computational Diffie-Hellman).
    host = with_minimum(make_party("shop", range(100)), 1)
    made_up = [f"made-up-{k}" for k in range(10)]
    rng = np.random.default_rng(1)

    def honest(alpha, mine, theirs):
        return cardinality_tags(curve.blind(theirs, alpha), SALT)

    def padded_with(extra):
        def forge(alpha, mine, theirs):
            tags = honest(alpha, mine, theirs)
            forged = cardinality_tags(extra(alpha, mine, theirs), SALT)[:50]
            tags[: len(forged)] = forged
            return tags

        return forge

    forgeries = [
        padded_with(lambda a, mine, theirs: mine),  # its own committed points
        padded_with(lambda a, mine, theirs: theirs),  # host points as received
        padded_with(lambda a, mine, theirs: curve.blind(curve.blind(theirs, a), a)),
        padded_with(lambda a, mine, theirs: curve.blind(mine, a)),
        lambda a, mine, theirs: rng.integers(0, 256, (100, 32), dtype=np.uint8),
    ]
    for k, forge in enumerate(forgeries):
        with pytest.raises(PolicyError, match="intersection is smaller"):
            run_deviating_cardinality_guest(host, made_up, forge, f"forged{k}")
    # Control: three real shared ids and a minimum of 3 pass.
    with_minimum(host, 3)
    doubles = run_deviating_cardinality_guest(host, [97, 98, 99, *made_up[3:]], honest, "ok")
    assert len(doubles) == 10


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
