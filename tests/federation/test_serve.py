"""The gRPC server in this process: what it refuses, and that refusals change nothing.

``tests/data/test_remote.py`` runs ``ftl serve`` as a subprocess end to end; here the
server runs in a thread so that its session and role state can be inspected
after every malformed, oversized, replayed or out-of-order request.
"""

from __future__ import annotations

import hashlib
import json
import time

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import ftl
from ftl.federation import Message, encode
from ftl.federation.config import load_config
from ftl.federation.policy import PeerRule, Policy, PolicyError
from ftl.federation.server import PartyServer
from ftl.federation.wire import CHUNK_BYTES
from tests.security._serving import (
    RawClient,
    grpc,
    make_certs,
    metadata,
    outcome,
    psi_open,
    start_server,
    tls_for,
)


@pytest.fixture(scope="module")
def certs(tmp_path_factory):
    return make_certs(tmp_path_factory.mktemp("serve") / "certs")


@pytest.fixture
def served(certs):
    """A fresh in-process server for the shop, and its address."""
    server, grpc_server, address = start_server(certs, max_message_bytes=4 << 20, session_ttl=60)
    yield server, address
    grpc_server.stop(0)


def status(call) -> tuple:
    """(status code, ``ftl-error`` trailer, details) of a call that must be refused."""
    refused = outcome(call)
    assert refused[0] != grpc.StatusCode.OK, "the call was accepted"
    return refused


def test_replayed_and_out_of_order_requests_are_refused_without_state_change(certs, served):
    server, address = served
    client = RawClient(certs, address)
    first = client.send(psi_open())
    assert server.role_states() == 1
    # An exact retransmission gets the stored reply; the role is not opened twice.
    assert client.send(psi_open()) == first
    assert server.role_states() == 1
    # The same sequence number with other content is a replay.
    code, trailer, details = status(lambda: client.send(psi_open(n_guest=60)))
    assert code == grpc.StatusCode.FAILED_PRECONDITION and trailer == "ReplayError"
    assert "replayed or out of order" in details
    code, trailer, _ = status(
        lambda: client.send(
            encode(Message("psi.fetch", {"start": 0, "stop": 1})), op="psi.host.own", seq=5
        )
    )
    assert trailer == "ReplayError"
    assert server.role_states() == 1
    # The session goes on where it was.
    client.send(encode(Message("ack", {})), op="psi.host.close", seq=1)
    assert server.role_states() == 0


def test_a_new_session_must_start_at_zero(certs, served):
    _, address = served
    code, trailer, details = status(lambda: RawClient(certs, address).send(psi_open(), seq=3))
    assert code == grpc.StatusCode.FAILED_PRECONDITION and "unknown or expired session" in details


@settings(
    max_examples=25,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
@given(payload=st.binary(max_size=400))
def test_malformed_payloads_are_refused_without_state_change(certs, served, payload):
    server, address = served
    client = RawClient(certs, address)
    session = hashlib.md5(payload).hexdigest()  # a fresh session per example
    code, trailer, _ = status(lambda: client.send(payload, session=session))
    assert code in (grpc.StatusCode.INVALID_ARGUMENT, grpc.StatusCode.FAILED_PRECONDITION)
    assert trailer in ("MessageError", "ValueError", "ProtocolError")
    assert server.role_states() == 0


@settings(
    max_examples=25,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
@given(
    key=st.sampled_from(
        ["ftl-session", "ftl-op", "ftl-seq", "ftl-length", "ftl-digest", "ftl-path"]
    ),
    value=st.text(alphabet=st.characters(min_codepoint=33, max_codepoint=126), max_size=90),
)
def test_malformed_metadata_is_refused_before_the_payload_is_read(certs, served, key, value):
    server, address = served
    client = RawClient(certs, address)
    payload = psi_open()
    if value == dict(metadata(payload, session="c" * 32))[key]:
        return
    try:
        client.send(payload, session="c" * 32, **{key: value})
    except grpc.RpcError as err:
        assert err.code() in (
            grpc.StatusCode.INVALID_ARGUMENT,
            grpc.StatusCode.FAILED_PRECONDITION,
            grpc.StatusCode.PERMISSION_DENIED,
            grpc.StatusCode.RESOURCE_EXHAUSTED,
        )
    else:  # only a different but valid path/session could pass; then it opened cleanly
        pytest.fail(f"metadata {key}={value!r} was accepted")
    assert server.role_states() == 0


def test_oversized_and_lying_requests_are_refused(certs, served):
    server, address = served
    client = RawClient(certs, address)
    big = b"\0" * (5 << 20)  # above the server's 4 MiB limit
    code, _, details = status(lambda: client.send(big))
    assert code == grpc.StatusCode.INVALID_ARGUMENT and "exceeds" in details
    payload = psi_open()
    code, trailer, details = status(lambda: client.send(payload, **{"ftl-length": "10"}))
    assert trailer == "MessageError" and "longer than its declared" in details
    code, trailer, details = status(lambda: client.send(payload, **{"ftl-digest": "0" * 64}))
    assert trailer == "MessageError" and "digest" in details
    assert server.role_states() == 0
    # each refusal is in the audit log as refused (none looks accepted)
    assert len(server.transcript.records) == 3
    assert all(r.outcome == "refused" for r in server.transcript.records)


def test_unknown_operations_and_paths_are_refused(certs, served):
    server, address = served
    client = RawClient(certs, address)
    code, trailer, _ = status(lambda: client.send(psi_open(), op="os.system.open"))
    assert code == grpc.StatusCode.PERMISSION_DENIED
    code, trailer, details = status(lambda: client.send(psi_open(), **{"ftl-path": "nope"}))
    assert code == grpc.StatusCode.INVALID_ARGUMENT and "has not derived its rows" in details
    assert server.role_states() == 0


def test_large_messages_stream_in_chunks(certs, served):
    server, address = served
    remote = ftl.RemoteParty("shop", address, tls=tls_for(certs, "bank"))
    guest = ftl.Party(
        "bank", np.zeros((120_000, 1)), ids=np.arange(120_000), labels=np.zeros(120_000)
    )
    X, _ = ftl.align(guest, remote, batch_size=100_000)  # 3.2 MB of points per message
    assert len(X) == 300
    big = [r for r in server.transcript if r.nbytes > CHUNK_BYTES]
    assert big, "no message above one chunk crossed"


def test_idle_sessions_expire_and_free_their_state(certs):
    server, grpc_server, address = start_server(certs, session_ttl=0.3)
    try:
        client = RawClient(certs, address)
        client.send(psi_open())
        assert server.role_states() == 1
        time.sleep(0.5)
        # the driver's close of the expired session finds nothing to free: answered,
        # and audited as ignored (no refusal)
        client.send(encode(Message("ack", {})), op="psi.host.close", seq=1)
        assert server.role_states() == 0
        assert server.transcript.records[-2].outcome == "ignored"
        code, _, details = status(lambda: client.send(psi_open(), seq=1))
        assert "unknown or expired session" in details
    finally:
        grpc_server.stop(0)


def test_sessions_per_peer_are_limited(certs):
    server, grpc_server, address = start_server(certs, max_sessions_per_peer=2)
    try:
        client = RawClient(certs, address)
        client.send(psi_open(), session="1" * 32)
        client.send(psi_open(), session="2" * 32)
        code, trailer, details = status(lambda: client.send(psi_open(), session="3" * 32))
        assert code == grpc.StatusCode.RESOURCE_EXHAUSTED and "open sessions" in details
    finally:
        grpc_server.stop(0)


def test_policy_checks_every_key_in_an_open_message():
    policy = Policy(peers={"bank": PeerRule("bank")}, min_key_size=2048)
    rule = policy.peer("bank")
    small = {"scheme": "paillier", "n": str((1 << 1023) + 1)}
    lr_open = Message(
        "lr.open",
        {
            "params": {"encryption": "paillier", "key_size": 2048},
            "public_keys": {"bank": small},
            "alignment": "x",
            "positions": np.zeros(1, dtype=np.int64),
        },
    )
    with pytest.raises(PolicyError, match="1024 bits"):
        policy.check_request(rule, "lr.host.open", lr_open)
    lr_open.fields["params"]["key_size"] = 1024
    with pytest.raises(PolicyError, match="requested key size"):
        policy.check_request(rule, "lr.host.open", lr_open)
    with pytest.raises(PolicyError, match="not allowed"):
        policy.peer("eve")
    with pytest.raises(PolicyError, match="may not run"):
        Policy(peers={"bank": PeerRule("bank", protocols=("psi",))}).check_operation(
            PeerRule("bank", protocols=("psi",)), "lr.host.open"
        )


def test_policy_can_refuse_lbfgs_and_its_inner_products():
    """A host that will not reveal the inner products of its weight and gradient
    changes (docs/protocols.md §3.8) admits LR only with the mini-batch optimisers."""
    strict = Policy.from_dict({"allow_lbfgs": False, "peers": [{"identity": "bank"}]})
    assert strict.allow_lbfgs is False and Policy().allow_lbfgs is True
    rule = strict.peer("bank")

    def lr_open(optimizer):
        params = {"encryption": "paillier", "key_size": 2048, "optimizer": optimizer}
        return Message(
            "lr.open",
            {
                "params": params,
                "public_keys": {},
                "alignment": "x",
                "positions": np.zeros(1, dtype=np.int64),
            },
        )

    with pytest.raises(PolicyError, match="optimizer='lbfgs'.*not allowed"):
        strict.check_request(rule, "lr.host.open", lr_open("lbfgs"))
    strict.check_request(rule, "lr.host.open", lr_open("adam"))
    Policy(peers={"bank": PeerRule("bank")}).check_request(rule, "lr.host.open", lr_open("lbfgs"))


def test_config_file_is_read_and_checked(tmp_path, certs):
    csv = tmp_path / "shop.csv"
    csv.write_text("id,a,b\n1,0.5,1\n2,0.1,2\n")
    good = f"""
[party]
name = "shop"
data = "shop.csv"
id_column = "id"

[server]
listen = "127.0.0.1:0"

[tls]
cert = "{certs / "shop.crt"}"
key = "{certs / "shop.key"}"
ca = "{certs / "ca.crt"}"

[policy]
min_intersection = 1

[[policy.peers]]
identity = "bank"
columns = ["a"]
"""
    path = tmp_path / "shop.toml"
    path.write_text(good)
    config = load_config(path)
    assert ftl.Party.from_file(**config.party_settings()).feature_names == ["a", "b"]
    assert config.policy.peers["bank"].columns == ("a",)
    for bad, match in [
        (good.replace("[tls]", "[tls]\ncolour = 1"), "unknown setting"),
        (good.replace('identity = "bank"', 'identity = "bank"\nprotocols = ["sql"]'), "sql"),
        (
            good.replace("[[policy.peers]]", "")
            .replace('identity = "bank"', "")
            .replace('columns = ["a"]', ""),
            "at least one peer",
        ),
        (good.replace('id_column = "id"', ""), "id_column"),
    ]:
        path.write_text(bad)
        with pytest.raises(ValueError, match=match):
            load_config(path)


def test_served_party_never_has_labels():
    labelled = ftl.Party("bank", np.zeros((3, 1)), ids=[1, 2, 3], labels=[0, 1, 0])
    with pytest.raises(ValueError, match="features only"):
        PartyServer(labelled, Policy(peers={"bank": PeerRule("bank")}))


def test_ftl_certs_command(tmp_path, capsys):
    from ftl.cli import main

    assert main(["certs", "bank", "shop", "--out", str(tmp_path / "c")]) == 0
    out = capsys.readouterr().out
    assert "bank" in out and "throwaway" in out
    assert (tmp_path / "c" / "shop.key").stat().st_mode & 0o077 == 0
    info = json.dumps({"ok": True})  # the command prints, it does not return data
    assert info


class _LostReply(grpc.RpcError):
    """What the driver sees when the connection drops after the host answered."""

    def code(self):
        return grpc.StatusCode.UNAVAILABLE

    def details(self):
        return "connection reset (simulated)"

    def trailing_metadata(self):
        return ()


def test_retry_after_a_lost_reply_does_not_run_the_operation_twice(certs, served):
    server, address = served
    remote = ftl.RemoteParty("shop", address, tls=tls_for(certs, "bank"))
    conn = remote._client.connection()
    real_call, dropped = conn.call, []

    def flaky_call(requests, **kw):
        reply = list(real_call(requests, **kw))  # the host runs the operation ...
        meta = dict(kw["metadata"])
        if meta["ftl-op"].endswith(".open") and not dropped:
            dropped.append(meta["ftl-seq"])
            raise _LostReply()  # ... but its reply never arrives
        return iter(reply)

    conn.call = flaky_call
    guest = ftl.Party("bank", np.zeros((200, 1)), ids=np.arange(200), labels=np.zeros(200))
    X, _ = ftl.align(guest, remote)  # psi.host.open is sent twice, opened once
    assert dropped == ["0"] and len(X) == 200
    opens = [r for r in server.transcript if r.type == "psi.open"]
    # the retransmission was answered from the stored reply: logged, but not run again
    assert [r.outcome for r in opens] == ["accepted", "repeated"]
    assert server.role_states() == 0


def test_a_driver_gives_up_after_its_retries(certs, served):
    _, address = served
    # retry_for=0: no retrying beyond the count (the default keeps at it for 30 s)
    remote = ftl.RemoteParty("shop", address, tls=tls_for(certs, "bank"), retries=1, retry_for=0)
    calls = []

    def always_down(requests, **kw):
        calls.append(1)
        raise _LostReply()

    remote._client.connection().call = always_down
    guest = ftl.Party("bank", np.zeros((20, 1)), ids=np.arange(20), labels=np.zeros(20))
    with pytest.raises(ftl.federation.PartyUnavailableError, match="did not answer"):
        ftl.align(guest, remote)
    assert len(calls) >= 2  # each call was sent again once before giving up
