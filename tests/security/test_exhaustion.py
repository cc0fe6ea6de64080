"""Exhaustion attacks on ``ftl serve`` by a listed peer (issue 13, item 7).

- A peer sprays first requests that are refused, or that succeed without opening
  any protocol state: the host must not keep a transport session for each.
- A peer opens slow or stalled uploads on every worker thread: another peer must
  still be served promptly.
- A stalled or trickling upload must be cancelled after the read deadline,
  freeing its thread.
"""

from __future__ import annotations

import threading
import time

import pytest
from _serving import (
    RawClient,
    grpc,
    make_certs,
    metadata,
    outcome,
    psi_open,
    stalling,
    start_server,
)

from ftl.federation import Message, encode


@pytest.fixture(scope="module")
def certs(tmp_path_factory):
    return make_certs(tmp_path_factory.mktemp("exhaust") / "certs")


def spray(client, n: int, payload: bytes, op: str, prefix: str) -> list:
    """``n`` first requests, each in a new session; their status codes."""
    return [
        outcome(lambda i=i: client.send(payload, session=f"{prefix}{i:08x}".rjust(32, "0"), op=op))[
            0
        ]
        for i in range(n)
    ]


def test_refused_first_requests_leave_no_sessions_behind(certs):
    server, grpc_server, address = start_server(certs, max_sessions_per_peer=2)
    client = RawClient(certs, address)
    try:
        junk = spray(client, 40, b"\x00\x00\x00\x02{}", "psi.host.open", "a")
        refused_by_role = spray(client, 10, psi_open(mode="nope"), "psi.host.open", "b")
        left = server.open_sessions
    finally:
        client.close()
        grpc_server.stop(0)
    assert grpc.StatusCode.OK not in junk + refused_by_role
    assert left == 0, f"{left} transport sessions left behind by refused first requests"


def test_sessions_without_protocol_state_are_bounded_per_peer(certs):
    """``close`` on a fresh session succeeds and opens nothing; spraying them must
    not grow the host's session table without bound."""
    server, grpc_server, address = start_server(certs, max_sessions_per_peer=2)
    client = RawClient(certs, address)
    try:
        codes = spray(client, 60, encode(Message("ack", {})), "psi.host.close", "c")
        held = server.open_sessions
    finally:
        client.close()
        grpc_server.stop(0)
    assert set(codes) == {grpc.StatusCode.OK}
    assert held <= 8, f"{held} stateless sessions kept for one peer"


def test_stateless_sessions_expire_quickly(certs):
    server, grpc_server, address = start_server(certs, session_ttl=3600, idle_session_ttl=0.3)
    client = RawClient(certs, address)
    try:
        client.send(encode(Message("ack", {})), session="1" * 32, op="psi.host.close")
        time.sleep(0.6)
        client.send(encode(Message("ack", {})), session="2" * 32, op="psi.host.close")
        held = server.open_sessions
    finally:
        client.close()
        grpc_server.stop(0)
    assert held == 1, "a session that never held state outlived its idle time"


def stalled_uploads(certs, address, n: int, release: threading.Event, **kw):
    """``n`` uploads by eve of a valid ``psi.open`` that send its first 10 bytes
    (part of the header), then stall (or trickle)."""
    eve = RawClient(certs, address, name="eve")
    payload = psi_open()
    calls = [
        eve.stream(
            stalling(payload[:10], release, **kw),
            metadata(payload, session=f"{i:032x}"),
            timeout=30,
        )
        for i in range(n)
    ]
    return eve, calls


def finish(calls) -> list:
    codes = []
    for call in calls:
        try:
            list(call)
            codes.append(grpc.StatusCode.OK)
        except grpc.RpcError as err:
            codes.append(err.code())
    return codes


def test_one_peer_cannot_starve_another_with_stalled_uploads(certs):
    server, grpc_server, address = start_server(certs, peers=("bank", "eve"), max_workers=8)
    release = threading.Event()
    eve, calls = stalled_uploads(certs, address, 8, release)
    bank = RawClient(certs, address)
    try:
        time.sleep(1.0)  # eve's streams now hold the worker threads they could get
        start = time.monotonic()
        code, _, details = outcome(lambda: bank.send(psi_open(), timeout=5))
        waited = time.monotonic() - start
    finally:
        release.set()
        eve_codes = finish(calls)
        bank.close()
        eve.close()
        grpc_server.stop(0)
    assert code == grpc.StatusCode.OK, f"bank was not served ({code}: {details})"
    assert waited < 3
    assert grpc.StatusCode.OK not in eve_codes


def test_a_stalled_upload_is_cancelled_after_the_read_deadline(certs):
    server, grpc_server, address = start_server(certs, peers=("bank", "eve"), read_timeout=1.0)
    release = threading.Event()
    eve, calls = stalled_uploads(certs, address, 2, release)
    eve2, trickle = stalled_uploads(certs, address, 1, release, trickle=0.2)
    start = time.monotonic()
    try:
        codes = finish(calls + trickle)  # blocks until the server ends them (or 30 s)
        took = time.monotonic() - start
    finally:
        release.set()
        eve.close()
        eve2.close()
    try:
        assert took < 5, f"stalled uploads held their threads for {took:.1f} s"
        assert grpc.StatusCode.OK not in codes
        # the thread is free again: eve is served
        bank = RawClient(certs, address, name="eve")
        bank.send(psi_open(), session="e" * 32)
        bank.close()
    finally:
        grpc_server.stop(0)


def test_a_cancelled_upload_is_audited_as_cancelled_by_the_peer(certs):
    """A client that gives up mid-upload (or dies) is audited as having left, not as
    a malformed request or a timeout: an auditor must not read it as an attack."""
    server, grpc_server, address = start_server(certs, peers=("bank",), read_timeout=30.0)
    release = threading.Event()
    client = RawClient(certs, address)
    payload = psi_open()
    call = client.stream(stalling(payload[:10], release), metadata(payload), timeout=30)
    try:
        time.sleep(0.5)  # the server holds the first 10 bytes
        call.cancel()
        for _ in range(50):  # the server notices the cancellation asynchronously
            records = [r for r in server.transcript.records if r.op == "psi.host.open"]
            if records:
                break
            time.sleep(0.1)
    finally:
        release.set()
        client.close()
        grpc_server.stop(0)
    assert len(records) == 1
    assert records[0].outcome == "refused"
    cancelled = "ConnectionError: the peer cancelled the request after 10 of"
    assert records[0].error.startswith(cancelled)
