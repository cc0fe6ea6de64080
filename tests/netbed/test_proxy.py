"""The fault-injecting proxy on its own, in this process, over loopback (no root needed).

An echo server stands for the host; each test checks one behaviour the network
tests rely on: delay without lost throughput or reordering, stalls that hold and
then deliver, resets that are RSTs, partitions that hold or refuse new connections.
"""

from __future__ import annotations

import asyncio
import time
from contextlib import suppress

import pytest

from .proxy import Fault, Proxy


async def _echo(reader, writer):
    with suppress(ConnectionError):  # the proxy resets it in some tests
        while data := await reader.read(1 << 16):
            writer.write(data)
            await writer.drain()
    writer.close()


def run_proxied(scenario, first: dict | None = None, **conditions) -> None:
    """Run ``await scenario(proxy, reader, writer)`` on a connection to an echo server
    through a proxy with ``conditions``; the fault ``first`` starts before connecting."""

    async def main():
        echo = await asyncio.start_server(_echo, "127.0.0.1", 0)
        proxy = Proxy(echo.sockets[0].getsockname()[:2], **conditions)
        server = await asyncio.start_server(proxy.accept, "127.0.0.1", 0)
        if first is not None:
            proxy.schedule(Fault.from_json(first))
            await asyncio.sleep(0)
        reader, writer = await asyncio.open_connection(*server.sockets[0].getsockname()[:2])
        try:
            await scenario(proxy, reader, writer)
        finally:
            writer.close()
            for conn in list(proxy.connections):
                conn.close()
            server.close()
            echo.close()

    asyncio.run(main())


async def round_trip(reader, writer, data: bytes) -> float:
    started = time.monotonic()
    writer.write(data)
    await writer.drain()
    assert await reader.readexactly(len(data)) == data
    return time.monotonic() - started


async def fault_now(proxy: Proxy, spec: dict) -> None:
    proxy.schedule(Fault.from_json(spec))
    await asyncio.sleep(0.05)  # it starts


def test_delay_adds_latency_but_neither_cuts_throughput_nor_reorders():
    async def scenario(proxy, reader, writer):
        assert await round_trip(reader, writer, b"ping") >= 2 * (0.05 - 0.02)
        # 8 MiB in 128 chunks: one chunk at a time would take 128 round trips
        payload = bytes(range(256)) * (1 << 15)
        assert await round_trip(reader, writer, payload) < 3.0

    run_proxied(scenario, delay=0.05, jitter=0.02)


def test_stall_holds_traffic_on_open_connections_then_delivers_it():
    async def scenario(proxy, reader, writer):
        await round_trip(reader, writer, b"before")
        await fault_now(proxy, {"stall": 0.5})
        assert await round_trip(reader, writer, b"during") >= 0.4
        assert proxy.stats["held"] > 0 and proxy.stats["resets"] == 0

    run_proxied(scenario)


def test_reset_closes_every_connection_with_rst():
    async def scenario(proxy, reader, writer):
        await round_trip(reader, writer, b"hello")
        await fault_now(proxy, {"reset": True})
        with pytest.raises(ConnectionResetError):
            await round_trip(reader, writer, b"again")
        assert proxy.stats["resets"] == 1

    run_proxied(scenario)


def test_lost_reply_is_dropped_and_resets_the_connection():
    async def scenario(proxy, reader, writer):
        await fault_now(proxy, {"reset": "reply"})
        await round_trip(reader, writer, b"short control frame")  # under REPLY_BYTES
        writer.write(b"r" * 1000)  # the echo's answer is the "reply"
        with pytest.raises((ConnectionResetError, asyncio.IncompleteReadError)):
            await reader.readexactly(1000)
        assert proxy.stats["resets"] == 1

    run_proxied(scenario)


def test_partition_holds_new_connections_until_it_ends():
    started = time.monotonic()

    async def scenario(proxy, reader, writer):
        await round_trip(reader, writer, b"hello")
        assert time.monotonic() - started >= 0.4

    run_proxied(scenario, first={"partition": 0.5, "new": "hold"})


def test_partition_refusing_new_connections_resets_them():
    async def scenario(proxy, reader, writer):
        with pytest.raises((ConnectionResetError, asyncio.IncompleteReadError)):
            await round_trip(reader, writer, b"hello")
        assert proxy.stats["refused"] == 1

    run_proxied(scenario, first={"partition": 0.5, "new": "refuse"})


def test_byte_trigger_fires_after_that_many_bytes():
    async def scenario(proxy, reader, writer):
        proxy.schedule(Fault.from_json({"after_bytes": 10_000, "reset": True}))
        await round_trip(reader, writer, b"x" * 4000)  # 8000 bytes both ways
        assert proxy.stats["resets"] == 0
        with pytest.raises(ConnectionResetError):  # at 10 000, before the echo
            await round_trip(reader, writer, b"x" * 2000)
        assert proxy.stats["resets"] == 1

    run_proxied(scenario)


@pytest.mark.parametrize(
    "spec",
    [
        {"at": 1},  # no action
        {"stall": 1, "reset": True},  # two
        {"stall": -1},
        {"partition": 1, "new": "drop"},
        {"reset": "later"},
        {"stall": 1, "when": 3},
    ],
)
def test_fault_specs_are_checked(spec):
    with pytest.raises(ValueError):
        Fault.from_json(spec)
