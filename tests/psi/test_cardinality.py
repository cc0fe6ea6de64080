"""PSI cardinality mode: the guest learns how many ids match, and a deviating guest
cannot make the host count more."""

from __future__ import annotations

import numpy as np
import pytest

from ftl.federation import Message, ProtocolError, Transcript
from ftl.federation.policy import PolicyError
from ftl.psi import curve, intersection_size
from ftl.psi.host import cardinality_tags
from tests.psi._by_hand import SALT, call, make_party, open_session, with_minimum


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
