"""Busy is not a refusal (issue 17): a call put off by the cap of calls in flight
per peer says so on the wire, the driver sends it again, and the host stays capped.

The server puts a call off (``ftl-retry: busy``) before reading it, so the very
same request may come again; so does gRPC's own server, above its
``maximum_concurrent_rpcs``, before any handler runs; a policy refusal carries no
such trailer and the driver never repeats it. A deviating client that ignores the back-off and
hammers the server never has more than ``max_streams_per_peer`` calls in flight:
the server enforces the cap, not the client.
"""

from __future__ import annotations

import threading
import time

import pytest

import ftl
from ftl.exceptions import PolicyError
from ftl.federation import Message, encode
from ftl.federation.sessions import StreamCounter
from ftl.federation.transport.grpc import client as client_module
from ftl.federation.wire import RETRY_BUSY, RETRY_KEY
from tests.security._serving import (
    RawClient,
    grpc,
    make_certs,
    metadata,
    psi_open,
    start_server,
    tls_for,
)

CAP = 2


@pytest.fixture(scope="module")
def certs(tmp_path_factory):
    return make_certs(tmp_path_factory.mktemp("busy") / "certs")


@pytest.fixture
def capped(certs):
    """A served shop that lets a peer have ``CAP`` calls in flight."""
    server, grpc_server, address = start_server(certs, max_streams_per_peer=CAP)
    yield server, address
    grpc_server.stop(0)


class _Peak:
    """Records the most calls a peer had in flight at once at the server."""

    def __init__(self, server):
        self.most = 0
        self._counter = server._streams
        take = self._counter.take

        def counted(identity):
            taken = take(identity)
            self.most = max(self.most, self._counter._busy.get(identity, 0))
            return taken

        self._counter.take = counted


def hold_calls(client: RawClient, server, n: int) -> threading.Event:
    """Start ``n`` calls of the bank that stay in flight until the returned event is
    set (each sends half of a PSI open, then waits)."""
    release = threading.Event()
    for i in range(n):
        payload = psi_open()
        session = f"{0xF0 + i:032x}"

        def stalled(payload=payload):
            yield payload[:8]
            release.wait(30)
            yield payload[8:]

        call = client.stream(stalled(), metadata(payload, session=session))
        threading.Thread(target=_drain, args=(call,), daemon=True).start()
    wait_for(lambda: server._streams._busy.get("bank", 0) == n)
    return release


def _drain(call) -> None:
    """Take a call's reply, or its end when the test closes the channel."""
    try:
        list(call)
    except grpc.RpcError:
        pass


def wait_for(condition, seconds=10.0) -> None:
    deadline = time.monotonic() + seconds
    while not condition() and time.monotonic() < deadline:
        time.sleep(0.01)
    assert condition()


def test_a_call_above_the_cap_is_put_off_as_busy_not_refused(certs, capped):
    server, address = capped
    client = RawClient(certs, address)
    release = hold_calls(client, server, CAP)
    try:
        with pytest.raises(grpc.RpcError) as err:
            client.send(psi_open(), session="1" * 32)
        trailers = dict(err.value.trailing_metadata())
        assert err.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        # an older driver still sees the policy error it always saw; a new one retries
        assert trailers["ftl-error"] == "PolicyError" and trailers[RETRY_KEY] == RETRY_BUSY
        # nothing of it was read: no session, no role state
        assert server.role_states() == 0
    finally:
        release.set()
    wait_for(lambda: not server._streams._busy)
    # the very same request, sent again once the peer has room, opens the session
    client.send(psi_open(), session="1" * 32)
    record = [r for r in server.transcript.records if r.session == "1" * 32]
    assert [r.outcome for r in record if r.op] == ["busy", "accepted"]
    client.close()


@pytest.mark.parametrize("enforced", [True, False])
def test_a_client_hammering_busy_retries_never_gets_more_than_the_cap(
    certs, capped, monkeypatch, enforced
):
    """A deviating client that sends again at once, from many threads, holds at most
    ``CAP`` calls; with the server's check disabled it would hold them all."""
    server, address = capped
    if not enforced:
        monkeypatch.setattr(StreamCounter, "take", lambda self, identity: identity)
    peak = _Peak(server)
    client = RawClient(certs, address)
    release = hold_calls(client, server, CAP) if enforced else threading.Event()
    threads, busy = [], []

    def hammer(i):
        payload = psi_open()

        def stalled():
            yield payload[:8]
            release.wait(5)
            yield payload[8:]

        for _ in range(20):  # no back-off at all
            try:
                list(client.stream(stalled(), metadata(payload, session=f"{i:032x}")))
                return
            except grpc.RpcError as exc:
                busy.append(dict(exc.trailing_metadata() or ()).get(RETRY_KEY))

    for i in range(12):
        threads.append(threading.Thread(target=hammer, args=(i,), daemon=True))
        threads[-1].start()
    time.sleep(1.0)
    most = peak.most if enforced else len(threads)
    release.set()
    for thread in threads:
        thread.join(30)
    client.close()
    if enforced:
        assert most == CAP and busy and set(busy) == {RETRY_BUSY}
    else:  # the attack without the check: every hammering call in flight at once
        assert most > CAP


def test_the_driver_sends_a_busy_call_again_until_it_is_served(certs, capped, tmp_path):
    server, address = capped
    client = RawClient(certs, address)
    release = hold_calls(client, server, CAP)
    threading.Timer(1.0, release.set).start()  # the held calls end after a second
    shop = ftl.RemoteParty("shop", address, tls=tls_for(certs, "bank"))
    bank = ftl.Party("bank", [[0.0]] * 50, ids=range(50), labels=[0, 1] * 25)
    X, _ = ftl.align(bank, shop)  # put off at first, then served
    assert len(X) == 50
    outcomes = [r.outcome for r in server.transcript.records if r.op == "psi.host.open"]
    assert "busy" in outcomes and "refused" not in outcomes
    client.close()


def test_the_driver_sends_a_call_grpc_refused_above_its_server_wide_limit_again(certs):
    """With one worker thread gRPC holds at most 4 calls (one served, three queued)
    and refuses more unread, with its own message and none of our trailers; the
    driver sends such a call again, as a busy one, until it is served."""
    server, grpc_server, address = start_server(certs, max_workers=1, max_streams_per_peer=4)
    client = RawClient(certs, address)
    try:
        release = threading.Event()
        for i in range(4):
            payload = psi_open()

            def stalled(payload=payload):
                yield payload[:8]
                release.wait(30)
                yield payload[8:]

            call = client.stream(stalled(), metadata(payload, session=f"{0xE0 + i:032x}"))
            threading.Thread(target=_drain, args=(call,), daemon=True).start()
        wait_for(lambda: grpc_server._state.active_rpc_count == 4)  # gRPC's own count
        with pytest.raises(grpc.RpcError) as err:
            client.send(psi_open(), session="2" * 32)
        assert err.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        assert err.value.details() == client_module._SERVER_FULL
        assert not err.value.trailing_metadata() and server.role_states() == 0  # unread
        threading.Timer(1.0, release.set).start()  # the held calls end after a second
        shop = ftl.RemoteParty("shop", address, tls=tls_for(certs, "bank"))
        bank = ftl.Party("bank", [[0.0]] * 50, ids=range(50), labels=[0, 1] * 25)
        X, _ = ftl.align(bank, shop)  # refused by gRPC at first, then served
        assert len(X) == 50
    finally:
        client.close()
        grpc_server.stop(0)


def test_a_policy_refusal_is_never_sent_again(certs, tmp_path):
    """A refusal without the retry trailer reaches the driver at once: one request,
    one refusal in the host's audit log."""
    server, grpc_server, address = start_server(
        certs, max_streams_per_peer=CAP, rule={"protocols": ("lr",)}
    )
    try:
        shop = ftl.RemoteParty("shop", address, tls=tls_for(certs, "bank"))
        bank = ftl.Party("bank", [[0.0]] * 50, ids=range(50), labels=[0, 1] * 25)
        with pytest.raises(PolicyError):
            ftl.align(bank, shop)
        refused = [r for r in server.transcript.records if r.outcome == "refused"]
        assert [r.op for r in refused] == ["psi.host.open"]
    finally:
        grpc_server.stop(0)


def test_a_refused_open_and_the_drivers_close_count_as_one_refusal(certs):
    """The driver closes every session it opened, also one whose open was refused:
    that close finds nothing to free and is audited as ignored, not refused."""
    server, grpc_server, address = start_server(certs, max_sessions_per_peer=1)
    try:
        client = RawClient(certs, address)
        client.send(psi_open(), session="1" * 32)  # the one session allowed
        shop = ftl.RemoteParty("shop", address, tls=tls_for(certs, "bank"))
        bank = ftl.Party("bank", [[0.0]] * 50, ids=range(50), labels=[0, 1] * 25)
        with pytest.raises(PolicyError, match="open sessions"):
            ftl.align(bank, shop)
        records = [r for r in server.transcript.records if r.op and r.session != "1" * 32]
        assert [(r.op, r.outcome) for r in records] == [
            ("psi.host.open", "refused"),
            ("psi.host.close", "ignored"),
        ]
        assert sum(r.refused for r in server.transcript.records) == 1
        assert server.open_sessions == 1  # the close left nothing behind either
        client.send(encode(Message("ack", {})), session="1" * 32, op="psi.host.close", seq=1)
        client.close()
    finally:
        grpc_server.stop(0)


def test_another_peers_close_of_a_live_session_is_ignored_and_frees_nothing(certs):
    """A close of a session the party does not hold *for that peer* is ignored: eve,
    naming the bank's live session, closes nothing of the bank's."""
    server, grpc_server, address = start_server(certs, peers=("bank", "eve"))
    try:
        bank, eve = RawClient(certs, address), RawClient(certs, address, name="eve")
        bank.send(psi_open(), session="1" * 32)
        eve.send(encode(Message("ack", {})), session="1" * 32, op="psi.host.close", seq=1)
        assert server.role_states() == 1
        assert server.transcript.records[-2].outcome == "ignored"
        bank.send(encode(Message("ack", {})), session="1" * 32, op="psi.host.close", seq=1)
        assert server.role_states() == 0
        bank.close()
        eve.close()
    finally:
        grpc_server.stop(0)
