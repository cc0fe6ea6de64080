"""ftl.align: intersection, agreed order, stored mappings, how='left', errors."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import rbcl

import ftl
import ftl.psi.guest as guest_module
import ftl.psi.host as host_module
from ftl.data.align import align
from ftl.data.handles import VerticalData
from ftl.data.party import Party
from ftl.federation import Transcript, decode, encode
from ftl.psi import curve

DATA = Path(__file__).resolve().parents[2] / "ftl" / "datasets" / "data"


def make_party(name, ids, labels=False, n_features=2):
    ids = list(ids)
    frame = pd.DataFrame(
        {f"f{j}": np.arange(len(ids), dtype=float) * (j + 1) for j in range(n_features)}
    )
    frame.insert(0, "id", ids)
    if labels:
        frame["y"] = np.arange(len(ids)) % 3
    return Party(name, frame, id_column="id", label_column="y" if labels else None)


def host_ids_in_order(host, X):
    rows = host.aligned_rows(X.alignment.id, np.arange(len(X)))
    return host.local_ids()[rows].astype(str)


def no_open_sessions(*parties):
    return all(p.endpoint.open_sessions == 0 for p in parties)


def nothing_stored(*parties):
    return all(p._alignments == {} and p.endpoint.open_sessions == 0 for p in parties)


# -- correctness of the intersection -------------------------------------------------------
@pytest.mark.parametrize(
    "guest_ids, host_ids",
    [
        (range(0, 200), range(100, 300)),  # int vs int
        ([f"c{i}" for i in range(200)], [f"c{i}" for i in range(150, 260)]),  # str vs str
        (range(0, 200), [str(i) for i in range(120, 240)]),  # int vs its str form
    ],
    ids=["int", "str", "mixed"],
)
def test_intersection_and_host_mapping(guest_ids, host_ids):
    guest = make_party("bank", guest_ids, labels=True)
    host = make_party("shop", host_ids)
    X, y = align(guest, host, batch_size=64)
    expected = set(map(str, guest_ids)) & set(map(str, host_ids))
    assert isinstance(X, VerticalData)
    assert set(X.ids.astype(str)) == expected and len(X) == len(expected)
    # Both parties stored mappings that point at the same ids, in the same order.
    np.testing.assert_array_equal(host_ids_in_order(host, X), X.ids.astype(str))
    guest_rows = guest.aligned_rows(X.alignment.id, np.arange(len(X)))
    np.testing.assert_array_equal(guest.local_ids()[guest_rows], X.ids)
    np.testing.assert_array_equal(y, guest.local_labels(guest_rows))
    # The order is neither the input order nor sorted by id.
    as_int = [int(str(i).lstrip("c")) for i in X.ids]
    assert as_int != sorted(as_int)


def test_alignment_metadata():
    guest = make_party("bank", range(50), labels=True, n_features=3)
    host = make_party("shop", range(25, 80), n_features=2)
    transcript = Transcript()
    X, y = align(host, guest, transcript=transcript)  # the guest may come in any position
    a = X.alignment
    assert a.guest is guest and a.hosts == (host,)
    assert a.n_features == (3, 2) and X.shape == (25, 5)
    assert a.feature_names == ("bank__f0", "bank__f1", "bank__f2", "shop__f0", "shop__f1")
    assert a.how == "inner" and a.overlap is None
    assert len(a.id) == 32 and int(a.id, 16) >= 0
    psi = a.psi
    assert psi["protocol"] == "ecdh-ristretto255"
    assert psi["group"].startswith("ristretto255")
    assert psi["sizes"] == {"bank": 50, "shop": 55}
    assert psi["intersection"] == 25
    assert len(bytes.fromhex(psi["salt"])) == 32
    assert psi["transcript"] is transcript and len(transcript) > 0
    assert y.shape == (25,)


def test_order_is_sorted_by_doubly_blinded_values(monkeypatch):
    captured = []
    real_exchange = guest_module.exchange

    def spy(*args, **kwargs):
        pair = real_exchange(*args, **kwargs)
        captured.append(pair)
        return pair

    monkeypatch.setattr(guest_module, "exchange", spy)
    guest = make_party("bank", range(300), labels=True)
    host = make_party("shop", range(100, 500))
    X, _ = align(guest, host, batch_size=50)
    (pair,) = captured
    rows = guest.aligned_rows(X.alignment.id, np.arange(len(X)))
    keys = curve.point_keys(pair.guest_doubles[rows])
    assert np.all(keys[:-1] < keys[1:])
    # The guest's doubly blinded values of the shared rows are exactly the host's.
    shared = np.intersect1d(curve.point_keys(pair.host_doubles), keys)
    assert len(shared) == len(X) == 200


def fixed_secrets(monkeypatch):
    """Make scalars deterministic so two runs can be compared (test only)."""
    counter = {"n": 0}

    def scalar():
        counter["n"] += 1
        return rbcl.crypto_core_ristretto255_scalar_reduce(bytes([counter["n"]]) * 64)

    def reset():
        counter["n"] = 0

    monkeypatch.setattr(guest_module, "random_scalar", scalar)
    monkeypatch.setattr(host_module, "random_scalar", scalar)
    return reset


def test_order_does_not_depend_on_non_shared_ids(monkeypatch):
    reset = fixed_secrets(monkeypatch)
    salt = bytes(32)
    shared = list(range(1000, 1100))
    guest = make_party("bank", shared + list(range(0, 50)), labels=True)
    host_small = make_party("shop", list(range(5000, 5010)) + shared)
    host_big = make_party("shop", list(range(2000, 2300)) + shared[::-1])
    reset()
    X1, _ = align(guest, host_small, salt=salt)
    reset()
    X2, _ = align(guest, host_big, salt=salt)
    np.testing.assert_array_equal(X1.ids, X2.ids)
    np.testing.assert_array_equal(host_ids_in_order(host_small, X1), X1.ids.astype(str))
    np.testing.assert_array_equal(host_ids_in_order(host_big, X2), X2.ids.astype(str))


# -- order="id" ------------------------------------------------------------------------------
def canonical(ids):
    return [c.decode() for c in curve.canonical_ids(ids)]


def test_id_order_is_reproducible_and_sorted():
    guest = make_party("bank", range(0, 200), labels=True)
    host = make_party("shop", [str(i) for i in range(60, 240)][::-1])  # str vs int ids
    X1, y1 = align(guest, host, order="id", batch_size=64)
    X2, y2 = align(guest, host, order="id")
    assert X1.alignment.id != X2.alignment.id
    np.testing.assert_array_equal(X1.ids, X2.ids)
    np.testing.assert_array_equal(y1, y2)
    keys = canonical(X1.ids)
    assert keys == sorted(keys) and len(keys) == 140
    assert keys[0] == "100" and keys[-1] == "99"  # by str(id), not by number
    positions = np.arange(len(X1))
    for party in (guest, host):
        np.testing.assert_array_equal(
            party.aligned_rows(X1.alignment.id, positions),
            party.aligned_rows(X2.alignment.id, positions),
        )
    np.testing.assert_array_equal(host_ids_in_order(host, X1), X1.ids.astype(str))
    assert X1.alignment.psi["order"] == "id"
    X3, _ = align(guest, host)
    assert X3.alignment.psi["order"] == "blinded"


def test_id_order_with_three_parties():
    guest = make_party("bank", [f"c{i}" for i in range(0, 300)], labels=True)
    shop_a = make_party("shop_a", [f"c{i}" for i in range(100, 400)])
    shop_b = make_party("shop_b", [f"c{i}" for i in range(150, 260)][::-1])
    X1, _ = align(shop_a, guest, shop_b, order="id", batch_size=70)
    X2, _ = align(guest, shop_b, shop_a, order="id")
    np.testing.assert_array_equal(X1.ids, X2.ids)
    assert list(X1.ids) == sorted(f"c{i}" for i in range(150, 260))
    for host in (shop_a, shop_b):
        np.testing.assert_array_equal(host_ids_in_order(host, X1), X1.ids.astype(str))


def test_id_order_needs_inner_join():
    guest = make_party("bank", range(10), labels=True)
    host = make_party("shop", range(5, 15))
    with pytest.raises(ValueError, match="order='id' needs how='inner'"):
        align(guest, host, how="left", order="id")
    with pytest.raises(ValueError, match="order"):
        align(guest, host, order="random")
    assert nothing_stored(guest, host)


def test_host_rejects_assign_not_in_id_order():
    from ftl.federation import Channel, Message

    class Bar:
        def update(self, n):
            pass

    guest = make_party("bank", range(0, 30), labels=True)
    host = make_party("shop", range(10, 50)[::-1])
    ch = Channel("bank")
    info = guest_module.open_host(
        ch,
        host.endpoint,
        salt=bytes(32),
        n_guest=30,
        mode="full",
        how="inner",
        n_hosts=1,
        batch_size=8,
        order="id",
    )
    pair = guest_module.exchange(ch, info, guest.local_ids(), bytes(32), 8, Bar())
    rows = np.flatnonzero(pair.in_host)
    assert len(rows) == 20

    def assign(order_rows):
        points = pair.guest_doubles[order_rows]
        n = len(order_rows)
        msg = Message(
            "psi.assign",
            {"alignment_id": "a1", "points": points, "positions": np.arange(n), "n_rows": n},
        )
        return ch.call(host.endpoint, "psi.host.assign", msg)

    by_id = rows[host_module.id_order(guest.local_ids()[rows])]
    by_value = rows[np.argsort(curve.point_keys(pair.guest_doubles[rows]), kind="stable")]
    if np.array_equal(by_value, by_id):  # pragma: no cover - astronomically unlikely
        by_value = by_value[::-1]
    with pytest.raises(ValueError, match="not sorted by id"):
        assign(by_value)  # the blinded order is not the announced one
    with pytest.raises(ValueError, match="not exactly the intersection"):
        assign(by_id[1:])  # sorted by id, but a shared row is missing
    with pytest.raises(ValueError, match="not sorted by id"):
        assign(by_id[::-1])
    assert assign(by_id)["count"] == 20  # the id order is accepted and staged
    assert host._alignments == {}  # staged, not stored before commit


# -- several hosts -----------------------------------------------------------------------------
def test_three_parties():
    guest = make_party("bank", range(0, 300), labels=True, n_features=1)
    shop_a = make_party("shop_a", [str(i) for i in range(100, 400)], n_features=2)
    shop_b = make_party("shop_b", range(150, 260), n_features=3)
    transcript = Transcript()
    X, y = align(shop_a, guest, shop_b, transcript=transcript, batch_size=70)
    assert set(X.ids.tolist()) == set(range(150, 260))
    assert X.alignment.hosts == (shop_a, shop_b)
    assert X.alignment.n_features == (1, 2, 3)
    assert X.alignment.feature_names[:2] == ("bank__f0", "shop_a__f0")
    assert X.alignment.psi["pairwise_intersections"] == {"shop_a": 200, "shop_b": 110}
    for host in (shop_a, shop_b):
        np.testing.assert_array_equal(host_ids_in_order(host, X), X.ids.astype(str))
    assert {r.receiver for r in transcript if r.sender == "bank"} == {"shop_a", "shop_b"}
    assert no_open_sessions(guest, shop_a, shop_b)


def test_three_parties_empty_final_intersection():
    guest = make_party("bank", range(0, 100), labels=True)
    shop_a = make_party("shop_a", range(0, 50))
    shop_b = make_party("shop_b", range(50, 100))
    with pytest.raises(ValueError, match="no shared ids"):
        align(guest, shop_a, shop_b)
    assert nothing_stored(guest, shop_a, shop_b)


# -- how="left" --------------------------------------------------------------------------------
def test_left_join_overlap_and_host_mapping():
    guest = make_party("bank", range(0, 120), labels=True)
    host = make_party("shop", range(80, 200))
    X, y = align(guest, host, how="left", batch_size=32)
    a = X.alignment
    assert a.how == "left" and len(X) == 120
    assert sorted(X.ids.tolist()) == list(range(120))
    assert a.overlap.dtype == bool
    np.testing.assert_array_equal(a.overlap, np.isin(X.ids, np.arange(80, 200)))
    assert a.psi["intersection"] == 40
    host_rows = host.aligned_rows(a.id, np.arange(len(X)))
    assert np.all(host_rows[~a.overlap] == -1)
    np.testing.assert_array_equal(
        host.local_ids()[host_rows[a.overlap]].astype(str), X.ids[a.overlap].astype(str)
    )
    guest_rows = guest.aligned_rows(a.id, np.arange(len(X)))
    np.testing.assert_array_equal(guest.local_ids()[guest_rows], X.ids)
    np.testing.assert_array_equal(y, guest.local_labels(guest_rows))
    assert X.ids.tolist() != list(range(120))


def test_left_join_needs_two_parties_and_some_overlap():
    guest = make_party("bank", range(10), labels=True)
    with pytest.raises(ValueError, match="exactly two parties"):
        align(guest, make_party("a", range(5)), make_party("b", range(5)), how="left")
    host = make_party("shop", range(20, 30))
    with pytest.raises(ValueError, match="no shared ids"):
        align(guest, host, how="left")
    assert nothing_stored(guest, host)


# -- errors ---------------------------------------------------------------------------
def test_argument_errors_change_nothing():
    guest = make_party("bank", range(10), labels=True)
    host = make_party("shop", range(5, 15))
    other_labelled = make_party("insurer", range(10), labels=True)
    with pytest.raises(ValueError, match="exactly one party"):
        align(make_party("a", range(3)), make_party("b", range(3)))
    with pytest.raises(ValueError, match="exactly one party"):
        align(guest, other_labelled)
    with pytest.raises(ValueError, match="unique"):
        align(guest, make_party("bank", range(10)))
    with pytest.raises(ValueError, match="at least two"):
        align(guest)
    with pytest.raises(ValueError, match="how"):
        align(guest, host, how="outer")
    with pytest.raises(ValueError, match="salt"):
        align(guest, host, salt=b"short")
    with pytest.raises(ValueError, match="batch_size"):
        align(guest, host, batch_size=0)
    with pytest.raises(ValueError, match="transcript"):
        align(guest, host, transcript=[])
    assert nothing_stored(guest, host, other_labelled)


def test_empty_intersection():
    guest = make_party("bank", range(10), labels=True)
    host = make_party("shop", range(10, 20))
    with pytest.raises(ValueError, match="no shared ids"):
        align(guest, host)
    assert nothing_stored(guest, host)


class TamperingHost:
    """A host reached through an endpoint whose replies are altered in transit."""

    def __init__(self, party, op, tamper):
        self.name = party.name
        self.has_labels = False
        self._inner = party.endpoint
        self._op, self._tamper = op, tamper
        self.endpoint = self

    def handle(self, session, op, payload):
        raw = self._inner.handle(session, op, payload)
        if op != self._op:
            return raw
        message = decode(raw)
        self._tamper(message)
        return encode(message)


def _drop_last(message):
    message.fields["points"] = message.fields["points"][:-1]


def _invalid_point(message):
    points = message.fields["points"].copy()
    points[0] = 0  # 32 zero bytes encode the identity, which is refused
    message.fields["points"] = points


def _non_canonical(message):
    points = message.fields["points"].copy()
    points[3] = 0xFF  # not a canonical field element: no ristretto255 encoding
    message.fields["points"] = points


def _duplicate(message):
    points = message.fields["points"].copy()
    points[1] = points[0]
    message.fields["points"] = points


@pytest.mark.parametrize(
    "op, tamper, match",
    [
        ("psi.host.blinded", _drop_last, "expected 40 points"),
        ("psi.host.blinded", _invalid_point, "not a valid point"),
        ("psi.host.own", _invalid_point, "not a valid point"),
        ("psi.host.blinded", _non_canonical, "entry 3 is not a valid point"),
        ("psi.host.own", _non_canonical, "entry 3 is not a valid point"),
        ("psi.host.own", _drop_last, "expected 40 points"),
        ("psi.host.blinded", _duplicate, "duplicate"),
        ("psi.host.own", _duplicate, "duplicate"),
    ],
)
def test_misbehaving_host_is_caught(op, tamper, match):
    guest = make_party("bank", range(40), labels=True)
    host = make_party("shop", range(20, 60))
    with pytest.raises(ValueError, match=match):
        align(guest, TamperingHost(host, op, tamper), batch_size=40)
    assert nothing_stored(guest, host)


# -- real data -------------------------------------------------------------------------------
def test_breast_data_matches_pandas_inner_join():
    rng = np.random.default_rng(7)
    g = pd.read_csv(DATA / "breast_hetero_guest.csv")
    h = pd.read_csv(DATA / "breast_hetero_host.csv")
    g = g.drop(index=rng.choice(len(g), 120, replace=False)).reset_index(drop=True)
    h = h.drop(index=rng.choice(len(h), 90, replace=False)).reset_index(drop=True)
    h = h.sample(frac=1.0, random_state=1).reset_index(drop=True)
    guest = Party("hospital", g, id_column="id", label_column="y")
    host = Party("lab", h, id_column="id")
    X, y = align(guest, host)
    merged = g.merge(h, on="id", suffixes=("_g", "_h")).set_index("id")
    assert len(X) == len(merged) and set(X.ids) == set(merged.index)
    ordered = merged.loc[X.ids]
    np.testing.assert_array_equal(y, ordered["y"].to_numpy())
    host_rows = host.aligned_rows(X.alignment.id, np.arange(len(X)))
    host_cols = [c for c in h.columns if c != "id"]
    expected = ordered[[f"{c}_h" if f"{c}_g" in ordered else c for c in host_cols]].to_numpy()
    np.testing.assert_allclose(host.local_features(host_rows), expected)
    assert X.shape == (len(merged), 10 + 20)


def test_align_cardinality_only_returns_the_size_and_stores_nothing():
    rng = np.random.default_rng(5)
    a = ftl.Party("a", np.zeros((30, 1)), ids=np.arange(30), labels=rng.integers(0, 2, 30))
    b = ftl.Party("b", np.zeros((25, 1)), ids=np.arange(20, 45))
    assert ftl.align(a, b, cardinality_only=True) == 10
    assert a._alignments == {} and b._alignments == {}
