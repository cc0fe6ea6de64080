"""Attacks on the wire codec and the server by a listed peer that deviates.

Issue 13, items 5 and 11 (wire part). Each test does what the attacker does and
asserts that it fails:

- memory amplification: a payload shaped like millions of narrow ciphertexts (a
  Python ``int`` costs ~36 bytes however narrow its encoding) sent under an
  operation that cannot take it, or as a message type the operation does not
  take, or as JSON that parses into millions of objects; and a large payload for
  an operation whose requests are a few scalars. The host must refuse all of them
  from the header (or the declared length) without decoding -- its memory grows
  by far less than the decoded size;
- malformed headers and JSON (deep nesting, wrong JSON types, shapes beyond
  int64) must end as a ``MessageError`` (``INVALID_ARGUMENT``), never an internal
  error;
- the audit log must say which requests were refused.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
from _serving import (
    RawClient,
    forge,
    grpc,
    make_certs,
    outcome,
    peak_memory,
    pieces,
    psi_open,
    raw_header,
    start_server,
)

from ftl.federation import MessageError, decode

N_INTS = 4_000_000  # 8 MB of 2-byte "ciphertexts"
DECODED = N_INTS * 36  # what they take as Python ints in an object array


@pytest.fixture(scope="module")
def certs(tmp_path_factory):
    return make_certs(tmp_path_factory.mktemp("wire") / "certs")


@pytest.fixture
def served(certs):
    server, grpc_server, address = start_server(certs, max_message_bytes=64 << 20)
    client = RawClient(certs, address)
    yield server, client
    client.close()
    grpc_server.stop(0)


def ciphertext_bomb(n=N_INTS) -> bytes:
    """``lr.contribution`` with ``n`` two-byte ciphertexts (values above CPython's
    small-int cache, so each becomes an int object)."""
    return forge(
        "lr.contribution",
        [
            ({"name": "owner"}, b"bank"),
            (
                {
                    "name": "values",
                    "scheme": "paillier",
                    "shape": [n, 1],
                    "key_id": "k",
                    "width": 2,
                },
                b"\x01\x01" * n,
            ),
        ],
    )


def send_measured(client, payload: bytes, **meta):
    """The attack: send ``payload``; return the outcome and the peak memory."""
    chunks = pieces(payload)  # made before measuring: the attacker's own memory
    return peak_memory(lambda: outcome(lambda: client.send(payload, chunks=chunks, **meta)))


@pytest.mark.parametrize(
    "op", ["psi.host.open", "lr.host.open"], ids=["other-protocol", "wrong-type"]
)
def test_ciphertext_bomb_is_refused_before_decoding(served, op):
    """8 MB of narrow ciphertexts (~144 MB as Python ints) under an operation that
    does not take them: before the fix the host decoded all of them first."""
    server, client = served
    payload = ciphertext_bomb()
    (code, trailer, details), peak = send_measured(client, payload, op=op)
    assert peak < DECODED / 10, f"server allocated {peak / 1e6:.0f} MB for the bomb"
    assert code == grpc.StatusCode.INVALID_ARGUMENT and trailer == "MessageError", details
    assert server.role_states() == 0 and server.open_sessions == 0


def test_large_request_for_a_small_operation_is_refused_before_reading(served):
    """``close`` takes an ``ack``: a declared 8 MB request is refused from its
    declared length, before a byte of it is read."""
    _, client = served
    payload = b"\0" * (8 << 20)
    (code, trailer, details), peak = send_measured(client, payload, op="psi.host.close")
    assert peak < 4 << 20, f"server buffered {peak / 1e6:.0f} MB of a request it refuses"
    assert code == grpc.StatusCode.INVALID_ARGUMENT and trailer == "MessageError", details


def json_bomb(n=2_000_000) -> bytes:
    """``lr.open`` whose ``params`` is 6 MB of ``[[],[],...]`` (~130 MB of lists)."""
    return forge(
        "lr.open",
        [
            ({"name": "params"}, b"[" + b"[]," * n + b"[]]"),
            ({"name": "public_keys"}, b"{}"),
            ({"name": "alignment"}, b"a"),
            ({"name": "positions", "dtype": "int64", "shape": [0]}, b""),
        ],
    )


def test_json_bomb_is_refused_before_parsing():
    payload = json_bomb()

    def attack():
        try:
            decode(payload)
        except MessageError as exc:
            return exc
        return None

    refusal, peak = peak_memory(attack)
    assert peak < 40 << 20, f"decoding allocated {peak / 1e6:.0f} MB for 6 MB of JSON"
    assert isinstance(refusal, MessageError)


DEEP = 100_000


def _malformed() -> dict[str, bytes]:
    """Headers and fields an honest encoder never writes."""
    psi_commit = [({"name": "alignment_id"}, b"a1")]
    return {
        "deep JSON field": forge(
            "lr.open",
            [
                ({"name": "params"}, b"[" * DEEP + b"]" * DEEP),
                ({"name": "public_keys"}, b"{}"),
                ({"name": "alignment"}, b"a"),
                ({"name": "positions", "dtype": "int64", "shape": [0]}, b""),
            ],
        ),
        "deep header": raw_header(
            b'{"v": 1, "type": "ack", "fields": ' + b"[" * DEEP + b"]" * DEEP + b"}"
        ),
        "list header": raw_header(b"[1, 2]"),
        "fields not a list": raw_header(b'{"v": 1, "type": "ack", "fields": 5}'),
        "fields entry not an object": raw_header(
            b'{"v": 1, "type": "psi.commit", "fields": [5]}', b"a1"
        ),
        "field name not a string": forge("psi.commit", [({"name": 1}, b""), *psi_commit]),
        "shape beyond int64": forge(
            "psi.guest_points",
            [
                ({"name": "start"}, b"\0"),
                ({"name": "points", "dtype": "uint8", "shape": [2**70, 32]}, b""),
            ],
        ),
        "shape that overflows int64": forge(
            "psi.guest_points",
            [
                ({"name": "start"}, b"\0"),
                ({"name": "points", "dtype": "uint8", "shape": [2**32, 2**32]}, b""),
            ],
        ),
        "type not a string": raw_header(b'{"v": 1, "type": ["ack"], "fields": []}'),
        "version a bool": raw_header(b'{"v": true, "type": "ack", "fields": []}'),
    }


MALFORMED = _malformed()


@pytest.mark.parametrize("name", list(MALFORMED))
def test_malformed_messages_are_message_errors(name):
    with pytest.raises(MessageError):
        decode(MALFORMED[name])


@pytest.mark.parametrize("name", list(MALFORMED))
def test_malformed_messages_get_a_clean_refusal_from_the_server(served, name):
    server, client = served
    code, trailer, details = outcome(lambda: client.send(MALFORMED[name]))
    assert code == grpc.StatusCode.INVALID_ARGUMENT, (code, details)
    assert trailer == "MessageError"
    assert server.role_states() == 0


def test_the_audit_log_says_which_requests_were_refused(certs, tmp_path):
    log = tmp_path / "audit.jsonl"
    server, grpc_server, address = start_server(certs, audit_log=log)
    client = RawClient(certs, address)
    try:
        refused = outcome(lambda: client.send(ciphertext_bomb(10), session="1" * 32))
        bad_open = outcome(lambda: client.send(psi_open(mode="nope"), session="2" * 32))
        client.send(psi_open(), session="3" * 32)
    finally:
        client.close()
        grpc_server.stop(0)
    assert refused[0] != grpc.StatusCode.OK and bad_open[0] != grpc.StatusCode.OK
    records = [json.loads(line) for line in log.read_text().splitlines()]
    # message records (the log also holds the peers' budget readings, without a step)
    requests = {r["session"]: r for r in records if "step" in r and r["receiver"] == "shop"}
    assert requests["1" * 32].get("outcome") == "refused"
    assert requests["1" * 32]["error"].startswith("MessageError")
    assert requests["2" * 32].get("outcome") == "refused"  # decoded, then refused by PSI
    assert requests["2" * 32]["type"] == "psi.open"
    assert requests["3" * 32].get("outcome") == "accepted"
    assert requests["3" * 32]["op"] == "psi.host.open"
    # ``ftl report`` still reads the log
    import ftl

    assert "psi" in ftl.report(str(log))


def test_declared_request_types_are_checked_before_decoding(request):
    """A role that declares what each operation takes (``@operation(accepts=...)``)
    refuses every other type from the header; small types get a small limit."""
    from ftl.federation import FieldSpec, PartyService, ValueKind, encode, register
    from ftl.federation.protocols import ProtocolSpec, register_protocol, unregister_protocol
    from ftl.federation.service import accepted_types, operation, request_limit, role

    register("zz.open", note=FieldSpec("str", ValueKind.PUBLIC, max_len=8))
    register("zz.rows", rows=FieldSpec("array", ValueKind.PUBLIC, ndim=1, per_sample=True))
    register("zz.count", count=FieldSpec("int", ValueKind.PUBLIC))
    seen = []

    @role("zz.host", opens=("zz.open",))
    class _Host:
        def __init__(self, party, request):
            pass

        @operation(accepts=("zz.count",))
        def tally(self, request):
            seen.append(request.type)
            return request

        @operation
        def anything(self, request):
            return request

    # a role is served once a registered protocol lists it
    register_protocol(ProtocolSpec("zz", "test", "zz.", roles=(_Host,)))
    request.addfinalizer(lambda: unregister_protocol("zz"))
    from ftl.federation import Message

    assert accepted_types("zz.host.tally") == {"zz.count"}
    assert accepted_types("zz.host.open") == {"zz.open"}
    assert accepted_types("zz.host.close") == {"ack"}
    # undeclared: its own protocol's types and ack
    assert accepted_types("zz.host.anything") >= {"zz.rows", "zz.count", "ack"}
    assert request_limit("zz.host.tally") == 1 << 20
    assert request_limit("zz.host.anything", 64 << 20) == 64 << 20

    class _Party:
        name = "p"

    service = PartyService(_Party())
    service.handle("s" * 32, "zz.host.open", encode(Message("zz.open", {"note": "hi"})))
    rows = encode(Message("zz.rows", {"rows": np.zeros(10)}))
    with pytest.raises(MessageError, match="does not accept 'zz.rows'"):
        service.handle("s" * 32, "zz.host.tally", rows)
    service.handle("s" * 32, "zz.host.tally", encode(Message("zz.count", {"count": 3})))
    assert seen == ["zz.count"]
