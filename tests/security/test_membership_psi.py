"""Attack: cardinality-only PSI as a membership oracle (issue 13, item 4a).

The guest wants to know whether one person is a customer of the host. It runs
``ftl.intersection_size`` with that person's id plus made-up ids (enough to pass
the host's check of the guest's set size): the count is 1 for a customer and 0
otherwise. Before the fix the host never saw the count, so its minimum
intersection size did not apply, and cardinality runs were not counted against
the peer's alignments per day: an unlimited, exact membership oracle.

Each test runs the attack and asserts on what the attacker learned, so it runs
unchanged against the code before the fix (where the attack succeeds).
"""

from __future__ import annotations

import numpy as np
import pytest

import ftl
from ftl.federation.policy import PeerRule, Policy, PolicyError

MINIMUM = 10  # the host's min_intersection
HOST_IDS = np.arange(1000)
MEMBER, NON_MEMBER = 123, 5000


def host_party() -> ftl.Party:
    rng = np.random.default_rng(0)
    return ftl.Party("shop", rng.normal(size=(len(HOST_IDS), 3)), ids=HOST_IDS)


def peer_rule(max_alignments_per_day: int | None = None) -> PeerRule:
    """The guest's rule at the host, with an alignment limit."""
    try:
        from ftl.federation.budget import BudgetLimits
    except ImportError:  # the code before the privacy budget kept the limit on the rule
        return PeerRule("bank", max_alignments_per_day=max_alignments_per_day)
    return PeerRule("bank", budget=BudgetLimits(max_alignments_per_day=max_alignments_per_day))


def guarded(party: ftl.Party, minimum: int, max_alignments_per_day: int | None = None):
    """A local host protected as ``ftl serve`` protects it for peer ``bank``."""
    policy = Policy(peers={"bank": peer_rule(max_alignments_per_day)}, min_intersection=minimum)
    try:
        from ftl.federation.budget import HostGuard
    except ImportError:  # the code before the guard read only this attribute (server.py)
        party.min_intersection = minimum
        return party
    party.guard = HostGuard.from_policy(policy, "bank")
    return party


def prober(candidate, known=()) -> ftl.Party:
    """The attacker's party: known shared ids, the candidate, made-up ids to pass
    the host's check of the guest's set size."""
    fakes = [f"made-up-{k}" for k in range(MINIMUM - 1 - len(known))]
    ids = np.array([*map(str, known), str(candidate), *fakes], dtype=object)
    return ftl.Party("bank", np.zeros((len(ids), 1)), ids=ids)


def probe(host, candidate, known=()) -> int | str:
    """Run the attack once; what the guest learns: the count or the refusal text."""
    try:
        return ftl.intersection_size(prober(candidate, known), host)
    except PolicyError as refusal:
        return f"refused: {refusal}"


def test_one_candidate_plus_made_up_ids_learns_nothing():
    host = guarded(host_party(), MINIMUM)
    member, non_member = probe(host, MEMBER), probe(host, NON_MEMBER)
    # Old code: 1 and 0 -- an exact answer to "is this person a customer?".
    assert member == non_member, f"the oracle works: member -> {member}, other -> {non_member}"
    assert member.startswith("refused:") and "smaller than this host's minimum" in member
    for secret in (str(MEMBER), str(NON_MEMBER), " 0 ", " 1 "):
        assert secret not in member  # no id and no count in the refusal


def test_each_probe_costs_one_alignment_of_the_daily_budget():
    # Residual (documented): with MINIMUM - 1 known shared ids plus one candidate the
    # threshold is a 1-bit oracle. Every run, whatever its mode, is one alignment.
    host = guarded(host_party(), MINIMUM, max_alignments_per_day=2)
    known = HOST_IDS[500 : 500 + MINIMUM - 1]
    assert probe(host, MEMBER, known) == MINIMUM  # 1st alignment of the day
    second = probe(host, NON_MEMBER, known)  # 2nd; old code: 9, the exact count
    assert isinstance(second, str) and second.startswith("refused:"), f"answered: {second}"
    third = probe(host, 124, known)
    # Old code: 10 again -- cardinality runs were never counted.
    assert isinstance(third, str) and "alignment" in third, f"third probe answered: {third}"


def test_default_and_cardinality_runs_share_the_alignment_budget():
    host = guarded(host_party(), 0, max_alignments_per_day=2)
    guest = ftl.Party("bank", np.zeros((200, 1)), ids=HOST_IDS[:200], labels=np.arange(200) % 2)
    ftl.align(guest, host)
    assert ftl.intersection_size(guest, host) == 200
    with pytest.raises(PolicyError, match="alignment"):
        ftl.intersection_size(guest, host)  # old code: answered a third time


def test_served_host_refuses_the_probe_and_counts_it(tmp_path):
    pytest.importorskip("grpc")
    from ftl.federation.certs import make_certificates
    from ftl.federation.server import PartyServer

    make_certificates(tmp_path, ["bank", "shop"])

    def tls(name: str) -> ftl.TLSConfig:
        return ftl.TLSConfig(
            ca=tmp_path / "ca.crt", cert=tmp_path / f"{name}.crt", key=tmp_path / f"{name}.key"
        )

    policy = Policy(peers={"bank": peer_rule(2)}, min_intersection=MINIMUM)
    server = PartyServer(host_party(), policy, session_ttl=60)
    grpc_server, port = server.start("127.0.0.1:0", tls("shop"))
    try:
        remote = ftl.RemoteParty("shop", f"localhost:{port}", tls=tls("bank"))
        member, non_member = probe(remote, MEMBER), probe(remote, NON_MEMBER)
        # Old code: 1 and 0 through ftl serve too.
        assert member == non_member, f"the oracle works: member -> {member}, other -> {non_member}"
        assert "smaller than this host's minimum" in member
        honest = ftl.Party("bank", np.zeros((300, 1)), ids=HOST_IDS[:300])
        with pytest.raises(PolicyError, match="alignment"):  # both probes were counted
            ftl.intersection_size(honest, remote)
    finally:
        grpc_server.stop(0)
