"""The PSI group (ristretto255): hashing ids, blinding, and refusing what is no point."""

from __future__ import annotations

import hashlib

import numpy as np
import pytest
import rbcl

from ftl.federation.messages import MessageError
from ftl.psi import curve
from tests.psi._by_hand import BAD_ENCODINGS, SALT, not_a_point


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
