"""Leases (issue 17): what a served party keeps for a peer between sessions -- its
alignment tables, its model shards in memory -- is dropped once unused for the
host's own time-to-live, audited, and a peer that names it later is told to align
or fit again. A shard kept in ``model_dir`` is the host's file: it stays, and is
loaded again when next used."""

from __future__ import annotations

import time

import numpy as np
import pytest

import ftl
from ftl.data import leases as leases_module
from ftl.federation.config import load_config
from tests.security._serving import make_certs, start_server, tls_for

FIT = dict(encryption=None, max_iter=2)


class _Clock:
    """The monotonic clock, moved on by hand (the server's threads see it too, so
    it only ever runs forward)."""

    def __init__(self):
        self.real = time.monotonic
        self.offset = 0.0

    def __call__(self):
        return self.real() + self.offset

    def advance(self, seconds):
        self.offset += seconds


@pytest.fixture
def clock(monkeypatch):
    fake = _Clock()
    monkeypatch.setattr(leases_module.time, "monotonic", fake)
    return fake


def _dropped(found):
    """Kind and id of what ``expire_kept`` dropped, idle time rounded to seconds."""
    return [(kind, key, round(idle)) for kind, key, idle in found]


def _party(n=20):
    return ftl.Party("shop", np.arange(2.0 * n).reshape(n, 2), ids=np.arange(n))


def test_an_alignment_unused_for_its_ttl_is_dropped_and_named_as_expired(clock):
    shop = _party()
    shop.remember_alignment("a1", np.arange(5))
    shop.remember_alignment("a2", np.arange(5))
    clock.advance(50)
    shop.aligned_rows("a2", [0, 1])  # a use renews the lease
    clock.advance(60)
    assert _dropped(shop.expire_kept({"alignment": 100.0})) == [("alignment", "a1", 110)]
    with pytest.raises(ValueError, match=r"dropped alignment 'a1'.*0.0278 h.*align again"):
        shop.aligned_rows("a1", [0])
    np.testing.assert_array_equal(shop.aligned_rows("a2", [0, 1]), [0, 1])
    with pytest.raises(ValueError, match="has no alignment 'never'"):  # never held: as before
        shop.aligned_rows("never", [0])
    # made again (a new PSI run under that id), it is held again
    shop.remember_alignment("a1", np.arange(3))
    assert len(shop.alignment_table("a1")) == 3


def test_a_derived_party_renews_its_bases_alignment_and_a_kind_not_named_is_kept(clock):
    shop = _party()
    shop.remember_alignment("a1", np.arange(5))
    shop.store_model("m1", {"kind": "test"})
    derived = shop.view(lambda rows: rows * 2, ["a", "b"])
    clock.advance(90)
    derived.aligned_rows("a1", [0])  # rows of the base: the base's lease is renewed
    clock.advance(20)
    assert shop.expire_kept({"alignment": 100.0}) == []
    assert _dropped(shop.expire_kept({"model": 100.0})) == [("model", "m1", 110)]
    with pytest.raises(ValueError, match="dropped model 'm1'.*fit the model again"):
        shop.load_model("m1")
    with pytest.raises(ValueError, match="holds no model 'm2'"):
        shop.load_model("m2")


# -- ftl serve -----------------------------------------------------------------------
@pytest.fixture(scope="module")
def certs(tmp_path_factory):
    return make_certs(tmp_path_factory.mktemp("leases") / "certs")


def _bank(n=120):
    rng = np.random.default_rng(1)
    return ftl.Party("bank", rng.normal(size=(n, 2)), ids=np.arange(n), labels=rng.random(n) < 0.5)


def _fitted(certs, address):
    """The bank's remote shop, an alignment with it, a model fitted on it and its
    scores."""
    shop = ftl.RemoteParty("shop", address, tls=tls_for(certs, "bank"))
    X, y = ftl.align(_bank(), shop, order="id")
    clf = ftl.FederatedLogisticRegression(**FIT).fit(X, y)
    return shop, X, clf, clf.decision_function(X)


def _expire(server, clock, seconds):
    """Move the clock on and sweep as the next request would."""
    clock.advance(seconds)
    server.peers.expire_leases(clock())


def test_ftl_serve_drops_expired_state_audits_it_and_tells_the_peer_what_to_do(
    certs, clock, tmp_path
):
    server, grpc_server, address = start_server(
        certs, alignment_ttl=3600.0, model_ttl=7200.0, audit_log=tmp_path / "audit.jsonl"
    )
    try:
        shop, X, clf, scores = _fitted(certs, address)
        _expire(server, clock, 3000)
        np.testing.assert_array_equal(clf.decision_function(X), scores)  # both renewed
        _expire(server, clock, 4000)  # the alignment's hour passed, the model's two did not
        with pytest.raises(ValueError, match=r"dropped alignment .*1 h.*align again"):
            clf.decision_function(X)
        X2, _ = ftl.align(_bank(), shop, order="id")
        np.testing.assert_allclose(clf.decision_function(X2), scores, atol=1e-12)
        _expire(server, clock, 7300)
        with pytest.raises(ValueError, match=r"dropped model .*2 h.*fit the model again"):
            clf.decision_function(X2)
    finally:
        grpc_server.stop(0)
    expired = ftl.Transcript.from_jsonl(tmp_path / "audit.jsonl").expired
    kinds = [(e["peer"], e["kind"]) for e in expired]
    assert kinds == [("bank", "alignment"), ("bank", "alignment"), ("bank", "model")]
    assert server.transcript.expired == expired


def test_a_shard_kept_in_model_dir_stays_there_and_is_loaded_again(certs, clock, tmp_path):
    server, grpc_server, address = start_server(
        certs, model_ttl=60.0, model_dir=tmp_path / "models"
    )
    try:
        _, X, clf, scores = _fitted(certs, address)
        _expire(server, clock, 100)
        assert server.transcript.expired[-1]["kind"] == "model"
        assert list((tmp_path / "models" / "bank").glob("*.json"))  # the file stays
        np.testing.assert_array_equal(clf.decision_function(X), scores)  # loaded again
    finally:
        grpc_server.stop(0)


def test_the_sweep_needs_no_thread_of_its_own(certs, monkeypatch):
    """Expired state is swept when a request arrives, with the sessions' expiry."""
    server, grpc_server, address = start_server(certs, alignment_ttl=0.5)
    try:
        shop = ftl.RemoteParty("shop", address, tls=tls_for(certs, "bank"))
        ftl.align(_bank(), shop, order="id")
        time.sleep(0.7)
        assert server.transcript.expired == []  # nobody asked: nothing swept yet
        ftl.align(_bank(), shop)  # its first request sweeps
        assert [e["kind"] for e in server.transcript.expired] == ["alignment"]
    finally:
        grpc_server.stop(0)


def test_lease_times_are_set_in_hours_in_the_serve_config(tmp_path):
    config = tmp_path / "shop.toml"
    config.write_text(
        '[party]\nname = "shop"\ndata = "shop.csv"\nid_column = "id"\n'
        "[server]\nalignment_ttl_hours = 24\nmodel_ttl_hours = 0.5\n"
        '[tls]\ncert = "c"\nkey = "k"\nca = "a"\n'
        '[[policy.peers]]\nidentity = "bank"\n'
    )
    settings = load_config(config).server_settings()
    assert settings["alignment_ttl"] == 24 * 3600 and settings["model_ttl"] == 1800
    config.write_text(config.read_text().replace("= 24", "= 0"))
    with pytest.raises(ValueError, match="alignment_ttl_hours must be > 0"):
        load_config(config)


def test_a_peer_learns_nothing_of_another_peers_expired_state(certs, clock):
    """Expired ids are remembered per peer view: another peer naming one hears
    "no such alignment", as for an id that never was, and cannot renew it."""
    server, grpc_server, _ = start_server(certs, peers=("bank", "eve"), alignment_ttl=60.0)
    try:
        bank, eve = (server._view(server.policy.peer(p)) for p in ("bank", "eve"))
        bank.remember_alignment("b1", np.arange(5))
        clock.advance(50)
        eve._touch("alignment", "b1")  # no lease of eve's: renews nothing
        _expire(server, clock, 20)
        with pytest.raises(ValueError, match="dropped alignment 'b1'"):
            bank.aligned_rows("b1", [0])
        with pytest.raises(ValueError, match="has no alignment 'b1'"):
            eve.aligned_rows("b1", [0])
    finally:
        grpc_server.stop(0)


@pytest.mark.parametrize("kept_apart", [True, False])
def test_a_peer_cannot_use_or_overwrite_another_peers_alignment(certs, monkeypatch, kept_apart):
    """Each peer's view keeps its own alignment tables: eve, had she learned the
    bank's alignment id, could neither read rows through it nor replace it (with
    the views sharing one table, as before, she could do both)."""
    if not kept_apart:
        monkeypatch.setattr(ftl.data.party.DerivedParty, "keep_own_alignments", lambda self: None)
    server, grpc_server, _ = start_server(certs, peers=("bank", "eve"))
    try:
        bank, eve = (server._view(server.policy.peer(p)) for p in ("bank", "eve"))
        bank.remember_alignment("b1", np.arange(5))
        eve.remember_alignment("b1", np.arange(5)[::-1])  # a deviating PSI run's commit
        if kept_apart:
            np.testing.assert_array_equal(bank.aligned_rows("b1", [0]), [0])
            np.testing.assert_array_equal(eve.aligned_rows("b1", [0]), [4])  # her own
        else:  # the attack: eve replaced the bank's table
            np.testing.assert_array_equal(bank.aligned_rows("b1", [0]), [4])
    finally:
        grpc_server.stop(0)
