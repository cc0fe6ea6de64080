"""The driver's retries of an unavailable party are timed, not only counted
(issue 17): an outage shorter than ``retry_for`` is survived, a longer one fails
after about ``retry_for``, and ``retries=0`` fails at once. A call the host put
off as busy (the ``ftl-retry: busy`` trailer) is sent again with jittered
exponential back-off until the call's timeout, and so is a call gRPC's own server
refused unread above its ``maximum_concurrent_rpcs``; no other refusal is."""

from __future__ import annotations

import grpc
import pytest

from ftl.exceptions import PartyUnavailableError, PolicyError
from ftl.federation.transport.grpc import client as client_module
from ftl.federation.transport.grpc.client import PartyClient


class _RpcError(grpc.RpcError):
    def __init__(self, code):
        self._code = code

    def code(self):
        return self._code

    def details(self):
        return "connection refused"

    def trailing_metadata(self):
        return ()


class _Clock:
    """A fake monotonic clock that ``sleep`` advances, so no test waits."""

    def __init__(self):
        self.now = 0.0
        self.sleeps = []

    def monotonic(self):
        return self.now

    def sleep(self, seconds):
        self.sleeps.append(seconds)
        self.now += seconds


@pytest.fixture
def clock(monkeypatch):
    fake = _Clock()
    monkeypatch.setattr(client_module.time, "monotonic", fake.monotonic)
    monkeypatch.setattr(client_module.time, "sleep", fake.sleep)
    return fake


def _client(retries=2, retry_for=30.0):
    client = PartyClient(
        "lab",
        "127.0.0.1:1",
        tls=None,
        server_name="lab.ftl",
        path=(),
        timeout=60,
        connect_timeout=5,
        retries=retries,
        retry_for=retry_for,
    )
    # the unavailable party's diagnosis probes TLS: not wanted here
    client._error = lambda what, exc: PartyUnavailableError(f"{what}: {exc.code().name}")
    return client


def _outage(clock, seconds, code=grpc.StatusCode.UNAVAILABLE):
    """An attempt that fails with ``code`` until ``seconds`` of fake time passed."""
    calls = []

    def attempt():
        calls.append(clock.now)
        if clock.now < seconds:
            raise _RpcError(code)
        return "reply"

    return attempt, calls


def test_an_outage_shorter_than_retry_for_is_survived(clock):
    attempt, calls = _outage(clock, 10.0)
    assert _client(retries=2, retry_for=30)._with_retries("update", attempt) == "reply"
    # counted retries alone (0.25 s + 1 s) would have given up after 1.25 s
    assert clock.now >= 10.0 and len(calls) > 3
    assert max(clock.sleeps) == 3.0  # capped back-off


def test_an_outage_longer_than_retry_for_fails_after_about_retry_for(clock):
    attempt, _ = _outage(clock, 1e9)
    with pytest.raises(PartyUnavailableError):
        _client(retries=2, retry_for=30)._with_retries("update", attempt)
    assert 27.0 <= clock.now <= 30.0


def test_retries_zero_fails_at_the_first_outage(clock):
    attempt, calls = _outage(clock, 1e9)
    with pytest.raises(PartyUnavailableError):
        _client(retries=0)._with_retries("update", attempt)
    assert len(calls) == 1 and clock.sleeps == []


def test_other_failures_are_not_retried(clock):
    attempt, calls = _outage(clock, 1e9, code=grpc.StatusCode.PERMISSION_DENIED)
    client = _client()
    client._error = lambda what, exc: PolicyError(what)
    with pytest.raises(PolicyError):
        client._with_retries("update", attempt)
    assert len(calls) == 1


class _Busy(_RpcError):
    """A call the server put off: ``RESOURCE_EXHAUSTED`` with the retry trailer."""

    def __init__(self):
        super().__init__(grpc.StatusCode.RESOURCE_EXHAUSTED)

    def trailing_metadata(self):
        return (("ftl-error", "PolicyError"), ("ftl-retry", "busy"))


class _ServerFull(_RpcError):
    """gRPC's own refusal of a call above the server's ``maximum_concurrent_rpcs``:
    ``RESOURCE_EXHAUSTED`` with gRPC's message and no trailer of ours."""

    def __init__(self, trailers=(), details=client_module._SERVER_FULL):
        super().__init__(grpc.StatusCode.RESOURCE_EXHAUSTED)
        self._trailers, self._details = trailers, details

    def details(self):
        return self._details

    def trailing_metadata(self):
        return self._trailers


def _busy_until(clock, seconds, busy=_Busy):
    calls = []

    def attempt():
        calls.append(clock.now)
        if clock.now < seconds:
            raise busy()
        return "reply"

    return attempt, calls


# gRPC's own refusal above the server's maximum_concurrent_rpcs comes before any
# handler runs: unread, as a busy call, and sent again the same way
PUT_OFF = pytest.mark.parametrize("busy", [_Busy, _ServerFull], ids=["busy", "server-full"])


@PUT_OFF
def test_a_busy_call_is_sent_again_with_growing_jittered_waits(clock, busy):
    attempt, calls = _busy_until(clock, 5.0, busy)
    # busy retries do not depend on retries / retry_for (those are for outages)
    client = _client(retries=0, retry_for=0)
    assert client._with_retries("update", attempt, busy_for=60) == "reply"
    waits = clock.sleeps
    assert len(calls) == len(waits) + 1 and clock.now >= 5.0
    # each wait is half to all of 50 ms doubled per try, capped at 2 s
    for i, wait in enumerate(waits):
        assert 0.5 * min(2.0, 0.05 * 2**i) <= wait <= min(2.0, 0.05 * 2**i)
    assert len(set(waits)) == len(waits)  # jittered


@PUT_OFF
def test_a_busy_call_gives_up_at_the_calls_timeout(clock, busy):
    attempt, _ = _busy_until(clock, 1e9, busy)
    client = _client()
    client._error = lambda what, exc: PolicyError(what)
    with pytest.raises(PolicyError):
        client._with_retries("update", attempt, busy_for=10)
    assert 8.0 <= clock.now <= 10.0


def test_a_long_busy_period_keeps_waiting_at_the_cap(clock):
    """Over a thousand put-offs (a host busy for an hour): the waits stay at the
    2 s cap instead of overflowing a float."""
    attempt, calls = _busy_until(clock, 3000.0)
    client = _client(retries=0, retry_for=0)
    assert client._with_retries("update", attempt, busy_for=3600) == "reply"
    assert len(calls) > 1100 and max(clock.sleeps) <= 2.0


def test_without_the_retry_trailer_resource_exhausted_is_not_retried(clock):
    """A refusal for open sessions (or any policy refusal) is not busy."""
    attempt, calls = _outage(clock, 1e9, code=grpc.StatusCode.RESOURCE_EXHAUSTED)
    client = _client()
    client._error = lambda what, exc: PolicyError(what)
    with pytest.raises(PolicyError):
        client._with_retries("update", attempt, busy_for=60)
    assert len(calls) == 1


@pytest.mark.parametrize(
    "refusal",
    [
        # a refusal of ours names its error: never resent, whatever its message says
        lambda: _ServerFull(trailers=(("ftl-error", "PolicyError"),)),
        # gRPC's size limit: the same request would only fail again
        lambda: _ServerFull(details="Received message larger than max (9 vs. 4)"),
    ],
)
def test_other_resource_exhausted_answers_are_not_taken_for_grpcs_limit(clock, refusal):
    attempt, calls = _busy_until(clock, 1e9, busy=refusal)
    client = _client()
    client._error = lambda what, exc: PolicyError(what)
    with pytest.raises(PolicyError):
        client._with_retries("update", attempt, busy_for=60)
    assert len(calls) == 1
