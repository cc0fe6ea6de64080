"""The host's privacy budget and key-size policy, attacked directly.

The protocol roles call the guard (tests of each attack live next to this file);
here the guard itself: limits hold, a refusal consumes nothing, counts survive a
restart, and a policy minimum cannot be slipped past with a key size that is not
an integer.
"""

from __future__ import annotations

import json

import pytest

from ftl import PolicyError
from ftl.federation import Message
from ftl.federation.budget import BudgetLimits, HostGuard, guard_of
from ftl.federation.policy import PeerRule, Policy


def guarded(tmp_path, **limits) -> tuple[Policy, HostGuard]:
    policy = Policy(
        peers={"bank": PeerRule("bank", budget=BudgetLimits(**limits))},
        state_path=tmp_path / "state.json",
    )
    return policy, HostGuard.from_policy(policy, "bank")


def test_fit_minimum_grows_with_the_host_block(tmp_path):
    _, guard = guarded(tmp_path, min_fit_rows=100, min_fit_rows_per_feature=10)
    with pytest.raises(PolicyError, match="min_fit_rows'"):
        guard.admit_fit("lr", "a1", 99, 3)
    with pytest.raises(PolicyError, match="min_fit_rows_per_feature"):
        guard.admit_fit("lr", "a1", 199, 20)
    guard.admit_fit("lr", "a1", 200, 20)


def test_refusals_consume_no_budget_and_counts_survive_a_restart(tmp_path):
    policy, guard = guarded(tmp_path, max_fits_per_alignment=2, max_fits_per_day=3)
    guard.admit_fit("lr", "a1", 500, 2)
    with pytest.raises(PolicyError):
        guard.admit_fit("lr", "a1", 5, 2)  # too few rows: not counted
    guard.admit_fit("lr", "a1", 500, 2)
    with pytest.raises(PolicyError, match="max_fits_per_alignment"):
        guard.admit_fit("lr", "a1", 500, 2)
    # a restarted host reads the same state file
    again = Policy(peers=policy.peers, state_path=tmp_path / "state.json")
    guard2 = HostGuard.from_policy(again, "bank")
    guard2.admit_fit("lr", "a2", 500, 2)
    with pytest.raises(PolicyError, match="max_fits_per_day"):
        guard2.admit_fit("lr", "a3", 500, 2)
    assert guard2.readings()["fits_per_day"] == {"used": 3, "limit": 3}


def test_rows_scored_per_day_and_prediction_minimum(tmp_path):
    _, guard = guarded(tmp_path, max_rows_scored_per_day=100, min_prediction_rows=20)
    with pytest.raises(PolicyError, match="min_prediction_rows"):
        guard.admit_prediction("lr", "a1", 19)
    guard.admit_prediction("lr", "a1", 60)
    with pytest.raises(PolicyError, match="max_rows_scored_per_day"):
        guard.admit_prediction("lr", "a1", 41)
    guard.admit_prediction("lr", None, 40)
    assert guard.readings()["rows_scored_per_day"]["used"] == 100


def test_earlier_state_files_are_read(tmp_path):
    (tmp_path / "state.json").write_text(json.dumps({"bank": [1e18]}))
    policy = Policy(
        peers={"bank": PeerRule("bank", budget=BudgetLimits(max_alignments_per_day=1))},
        state_path=tmp_path / "state.json",
    )
    guard = HostGuard.from_policy(policy, "bank")
    with pytest.raises(PolicyError, match="max_alignments_per_day"):
        guard.admit_alignment("full", 10)


def test_resource_caps_and_the_hosts_own_n_jobs(tmp_path):
    _, guard = guarded(tmp_path, max_pretrain_epochs=10)
    assert guard.n_jobs(9) == 1
    with pytest.raises(PolicyError, match="max_pretrain_epochs"):
        guard.cap("pretrain_epochs", 11)
    assert guard.cap("pretrain_epochs", 10) == 10


def test_a_simulated_party_is_unrestricted():
    class Local:
        pass

    guard = guard_of(Local())
    guard.admit_fit("lr", "a", 1, 50)
    guard.admit_prediction("lr", "a", 1)
    assert guard.n_jobs(4) == 4 and guard.may_score_ids


def test_policy_file_keys_and_per_peer_overrides(tmp_path):
    policy = Policy.from_dict(
        {
            "min_fit_rows": 500,
            "max_fits_per_day": -1,
            "n_jobs": 2,
            "peers": [{"identity": "bank"}, {"identity": "shop", "min_fit_rows": 50}],
        }
    )
    assert policy.peers["bank"].budget.min_fit_rows == 500
    assert policy.peers["bank"].budget.max_fits_per_day is None
    assert policy.peers["shop"].budget.min_fit_rows == 50
    assert policy.n_jobs == 2
    with pytest.raises(ValueError, match="min_fit_rows"):
        Policy.from_dict({"min_fit_rows": "many", "peers": [{"identity": "bank"}]})
    with pytest.raises(ValueError, match="unknown setting"):
        Policy.from_dict({"min_fit_row": 5, "peers": [{"identity": "bank"}]})


def lr_open(key_size, n_bits=2048) -> Message:
    return Message(
        "lr.open",
        {
            "params": {"encryption": "paillier", "key_size": key_size},
            "public_keys": {"bank": {"scheme": "paillier", "n": str((1 << (n_bits - 1)) + 1)}},
        },
    )


def _bypass(policy: Policy, key_size) -> bool:
    """The attack: ask for a key the minimum forbids, spelled as a non-integer."""
    try:
        policy.check_request(policy.peers["bank"], "lr.host.open", lr_open(key_size, 3072))
    except PolicyError:
        return False
    return True


@pytest.mark.parametrize("size", ["2048", 2048.0, True, [4096]])
def test_a_key_size_that_is_not_an_integer_cannot_pass_the_minimum(size):
    policy = Policy(peers={"bank": PeerRule("bank")}, min_key_size=3072)
    assert not _bypass(policy, size)
    assert not _bypass(policy, 2048)
    assert _bypass(policy, 3072)


def test_a_huge_key_size_cannot_tie_up_the_host():
    policy = Policy(peers={"bank": PeerRule("bank")})
    with pytest.raises(PolicyError, match="max_key_size"):
        policy.check_request(policy.peers["bank"], "lr.host.open", lr_open(1 << 16))
    policy.check_request(policy.peers["bank"], "lr.host.open", lr_open(4096))


def test_every_peer_key_of_every_request_is_checked():
    policy = Policy(peers={"bank": PeerRule("bank")}, min_key_size=2048)
    rule = policy.peers["bank"]
    small = Message("x", {"public_keys": {"h2": {"scheme": "paillier", "n": str(2**1023 + 1)}}})
    with pytest.raises(PolicyError, match="1024 bits"):
        policy.check_request(rule, "lr.host.peer_keys", small)  # not an open
    for bad in ({"scheme": "paillier", "n": "12x"}, {"scheme": "rsa"}, "key"):
        with pytest.raises(PolicyError):
            policy.check_request(rule, "lr.host.peer_keys", Message("x", {"public_key": bad}))


def test_a_peer_reads_its_own_budget_from_the_served_party(tmp_path):
    import numpy as np

    import ftl
    from ftl.federation.certs import make_certificates
    from ftl.federation.server import PartyServer

    make_certificates(tmp_path, ["bank", "shop"])

    def tls(name):
        return ftl.TLSConfig(
            ca=tmp_path / "ca.crt", cert=tmp_path / f"{name}.crt", key=tmp_path / f"{name}.key"
        )

    rng = np.random.default_rng(0)
    shop = ftl.Party("shop", rng.normal(size=(200, 2)), ids=np.arange(200))
    limits = BudgetLimits(max_alignments_per_day=3)
    policy = Policy(peers={"bank": PeerRule("bank", budget=limits)}, min_intersection=0)
    server = PartyServer(shop, policy, audit_log=tmp_path / "shop-audit.jsonl")
    grpc_server, port = server.start("127.0.0.1:0", tls("shop"))
    try:
        remote = ftl.RemoteParty("shop", f"localhost:{port}", tls=tls("bank"))
        bank = ftl.Party(
            "bank", rng.normal(size=(150, 2)), ids=np.arange(150), labels=np.arange(150) % 2
        )
        assert remote.budget()["alignments_per_day"] == {"used": 0, "limit": 3}
        ftl.align(bank, remote)
        readings = remote.budget()
        assert readings["alignments_per_day"] == {"used": 1, "limit": 3}
        assert readings["limits"]["min_fit_rows"] == 100
        # the host's operator reads every peer's budget from its audit log
        text = ftl.report(tmp_path / "shop-audit.jsonl")
        assert "## Privacy budget" in text
        assert "| `bank` | alignments per day | 1 | 3 | 2 |" in text
    finally:
        grpc_server.stop(0)
