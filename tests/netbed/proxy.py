"""A fault-injecting TCP proxy: delay, jitter, stalls, partitions and resets.

The test bed's kernel has no ``netem`` qdisc, so the network's misbehaviour
comes from this proxy, which runs in the guest's namespace between the driver
and ``ftl serve``. It forwards bytes only: TLS runs end to end through it, so the
driver still verifies the real host's certificate.

Every chunk read from one side is written to the other ``delay`` seconds later
(plus a uniform ``jitter``), each direction of each connection through its own
queue of timestamped chunks: the reader keeps reading while the writer waits, so
a delay adds latency without cutting throughput, and a chunk never overtakes an
earlier one (TCP could not reorder within a stream either). Round-trip time is
twice the delay.

Faults are JSON objects, one action each, started by a trigger counted from the
moment the proxy learns of the fault (its start for ``--faults``, the receipt of
a control message otherwise)::

    {"at": 0.5, "stall": 3}            # 0.5 s from now: forward nothing for 3 s
    {"after_bytes": 20000, "reset": true}  # once 20 000 more bytes went through:
                                           # reset (RST) every connection
    {"reset": "reply"}                 # at the host's next reply: drop it and reset
                                       # every connection (the host ran the request)
    {"partition": 10, "new": "hold"}   # now: stall 10 s, and hold new connections
                                       # ("refuse": reset them at once)

A stall keeps connections open and buffers what arrives; a partition also stops
new connections from reaching the host. Control messages arrive, one JSON object
per line, on a Unix socket (``--control``): ``{"fault": {...}}`` schedules a
fault, ``{"stats": true}`` answers the counters. Every fault's start and end is
appended to ``--events`` (JSON lines) with what it caught: the connections reset,
the bytes held back.

Usage::

    python proxy.py --listen 127.0.0.1:0 --upstream 10.0.0.2:50051 --delay-ms 20 \
        [--jitter-ms 2] [--faults '[{"at": 1, "stall": 3}]'] [--control ctl.sock] \
        [--events events.jsonl] [--seed 0]

The first line on stdout is ``listening on HOST:PORT``. Standard library only.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import random
import socket
import struct
import sys
import time
from dataclasses import dataclass

__all__ = ["Fault", "Proxy", "main"]

#: Bytes read at once from a socket; each read is one timestamped chunk.
CHUNK = 64 << 10
#: Chunks queued per direction before the reader waits (bounds the proxy's memory).
QUEUE_CHUNKS = 256
#: A chunk from the host at least this long is a reply: HTTP/2 control frames the
#: host sends on its own (PING, WINDOW_UPDATE, SETTINGS) make shorter TLS records.
REPLY_BYTES = 256
_ACTIONS = ("stall", "partition", "reset")


@dataclass(frozen=True)
class Fault:
    """One scripted fault: an action and the trigger that starts it.

    Parameters
    ----------
    action : {"stall", "partition", "reset"}
        What happens.
    seconds : float
        How long a stall or partition lasts.
    at : float
        Seconds after the proxy learned of the fault at which it starts.
    after_bytes : int, optional
        Start instead once this many more bytes were forwarded (both directions).
    new : {"hold", "refuse"}
        What a partition does to new connections: hold them until it ends (as a
        network that drops packets does) or reset them at once.
    on_reply : bool
        For a reset: wait, once triggered, for the host's next reply, drop it and
        reset then (a reply lost after the host ran the request).
    """

    action: str
    seconds: float = 0.0
    at: float = 0.0
    after_bytes: int | None = None
    new: str = "hold"
    on_reply: bool = False

    @classmethod
    def from_json(cls, spec: dict) -> Fault:
        """The fault a JSON object describes; ``ValueError`` naming what is wrong."""
        actions = [a for a in _ACTIONS if a in spec]
        if len(actions) != 1:
            raise ValueError(f"a fault names exactly one of {_ACTIONS}: {spec!r}")
        unknown = set(spec) - {*_ACTIONS, "at", "after_bytes", "new"}
        if unknown:
            raise ValueError(f"unknown fault keys {sorted(unknown)}: {spec!r}")
        action = actions[0]
        if action == "reset" and spec["reset"] not in (True, "reply"):
            raise ValueError(f"'reset' is true or \"reply\", not {spec['reset']!r}")
        seconds = 0.0 if action == "reset" else float(spec[action])
        fault = cls(
            action,
            seconds,
            float(spec.get("at", 0.0)),
            None if spec.get("after_bytes") is None else int(spec["after_bytes"]),
            spec.get("new", "hold"),
            on_reply=spec.get("reset") == "reply",
        )
        if fault.seconds < 0 or fault.at < 0 or (fault.after_bytes or 0) < 0:
            raise ValueError(f"negative time or byte count in {spec!r}")
        if fault.new not in ("hold", "refuse"):
            raise ValueError(f"'new' is 'hold' or 'refuse', not {fault.new!r}")
        return fault


def reset(writer: asyncio.StreamWriter) -> None:
    """Close a connection with RST (``SO_LINGER`` 0) instead of an orderly FIN."""
    sock = writer.get_extra_info("socket")
    if sock is not None:
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    writer.transport.abort()


class Pump:
    """One direction of one connection: read, timestamp, queue; wait, then write."""

    def __init__(self, proxy: Proxy, reader, writer, from_host: bool):
        self.proxy, self.reader, self.writer = proxy, reader, writer
        self.from_host = from_host
        self.queue: asyncio.Queue = asyncio.Queue(QUEUE_CHUNKS)
        self._last_due = 0.0

    async def read(self) -> None:
        while data := await self.reader.read(CHUNK):
            if self.from_host and len(data) >= REPLY_BYTES and self.proxy.lose_reply():
                return  # every connection, this one too, is being reset
            due = max(time.monotonic() + self.proxy.one_way_delay(), self._last_due)
            self._last_due = due
            await self.queue.put((due, data))
        await self.queue.put((self._last_due, b""))  # end of stream

    async def write(self) -> None:
        while True:
            due, data = await self.queue.get()
            wait = due - time.monotonic()
            if wait > 0:
                await asyncio.sleep(wait)
            await self.proxy.flowing(len(data))
            if not data:
                if self.writer.can_write_eof():
                    self.writer.write_eof()
                return
            self.writer.write(data)
            await self.writer.drain()
            self.proxy.forwarded(len(data))


class Connection:
    """A client connection and its upstream one, forwarded both ways."""

    def __init__(self, proxy: Proxy, client: tuple, upstream: tuple):
        self.writers = (client[1], upstream[1])
        self.pumps = (
            Pump(proxy, client[0], upstream[1], from_host=False),
            Pump(proxy, upstream[0], client[1], from_host=True),
        )
        self.tasks: list[asyncio.Task] = []

    async def run(self) -> None:
        self.tasks = [
            asyncio.ensure_future(step()) for pump in self.pumps for step in (pump.read, pump.write)
        ]
        # Returns when both directions ended in order, or at the first failure.
        done, _ = await asyncio.wait(self.tasks, return_when=asyncio.FIRST_EXCEPTION)
        failed = any(not t.cancelled() and t.exception() is not None for t in done)
        if failed:
            self.reset()  # one side failed: the other learns it as from a real network
        else:
            self.close()

    def reset(self) -> None:
        for writer in self.writers:
            reset(writer)
        self.close()

    def close(self) -> None:
        for task in self.tasks:
            task.cancel()
        for writer in self.writers:
            writer.close()


class Proxy:
    """The proxy's state: network conditions, active faults, live connections.

    Parameters
    ----------
    upstream : tuple of (str, int)
        Where every accepted connection is forwarded.
    delay : float
        One-way delay in seconds added to every chunk (round trip: twice this).
    jitter : float
        Half-width in seconds of the uniform jitter added to the delay.
    seed : int
        Seed of the jitter.
    events : path, optional
        JSON-lines file each fault's start and end is appended to.
    """

    def __init__(self, upstream, delay=0.0, jitter=0.0, seed=0, events=None):
        self.upstream = upstream
        self.delay, self.jitter = float(delay), float(jitter)
        self._rng = random.Random(seed)
        self._events = events
        self._started = time.monotonic()
        self._holds = 0  # stalls and partitions in force
        self._partitions: list[str] = []  # their policies for new connections
        self._open = asyncio.Event()
        self._open.set()
        self._byte_triggers: list[tuple[int, Fault]] = []
        self._replies_to_lose = 0
        self.connections: set[Connection] = set()
        self.stats = {"connections": 0, "forwarded": 0, "held": 0, "resets": 0, "refused": 0}

    # -- conditions ---------------------------------------------------------------
    def one_way_delay(self) -> float:
        if not self.jitter:
            return self.delay
        return max(0.0, self.delay + self._rng.uniform(-self.jitter, self.jitter))

    async def flowing(self, nbytes: int) -> None:
        """Return once no stall or partition holds traffic back."""
        if not self._open.is_set():
            self.stats["held"] += nbytes
            await self._open.wait()

    def forwarded(self, nbytes: int) -> None:
        self.stats["forwarded"] += nbytes
        due = [f for limit, f in self._byte_triggers if self.stats["forwarded"] >= limit]
        self._byte_triggers = [
            (limit, f) for limit, f in self._byte_triggers if self.stats["forwarded"] < limit
        ]
        for fault in due:
            asyncio.ensure_future(self._run(fault))

    def lose_reply(self) -> bool:
        """Whether a reply from the host is to be lost (then every connection is reset)."""
        if not self._replies_to_lose:
            return False
        self._replies_to_lose -= 1
        self._reset_all(lost_reply=True)
        return True

    # -- faults ---------------------------------------------------------------------
    def schedule(self, fault: Fault) -> None:
        """Start ``fault`` when its trigger fires (counted from now)."""
        if fault.after_bytes is not None:
            self._byte_triggers.append((self.stats["forwarded"] + fault.after_bytes, fault))
        else:
            asyncio.ensure_future(self._run(fault, fault.at))

    async def _run(self, fault: Fault, wait: float = 0.0) -> None:
        if wait:
            await asyncio.sleep(wait)
        if fault.action == "reset":
            if fault.on_reply:
                self._replies_to_lose += 1
            else:
                self._reset_all()
            return
        held = self.stats["held"]
        self._holds += 1
        if fault.action == "partition":
            self._partitions.append(fault.new)
        self._open.clear()
        self._event(f"{fault.action}-start", seconds=fault.seconds)
        try:
            await asyncio.sleep(fault.seconds)
        finally:
            self._holds -= 1
            if fault.action == "partition":
                self._partitions.remove(fault.new)
            if not self._holds:
                self._open.set()
            self._event(f"{fault.action}-end", held_bytes=self.stats["held"] - held)

    def _reset_all(self, **fields) -> None:
        caught = list(self.connections)
        for conn in caught:
            conn.reset()
        self.stats["resets"] += len(caught)
        self._event("reset", connections=len(caught), **fields)

    def _event(self, name: str, **fields) -> None:
        if self._events is None:
            return
        now = time.monotonic()  # the system's clock: comparable with the driver's
        record = {"t": round(now - self._started, 3), "clock": now, "event": name, **fields}
        with open(self._events, "a", encoding="utf-8") as out:
            out.write(json.dumps(record) + "\n")

    # -- serving ------------------------------------------------------------------------
    async def accept(self, reader, writer) -> None:
        self.stats["connections"] += 1
        if "refuse" in self._partitions:
            self.stats["refused"] += 1
            reset(writer)
            return
        await self._open.wait()  # a held connection reaches the host after the partition
        try:
            upstream = await asyncio.open_connection(*self.upstream)
        except OSError:
            reset(writer)  # the host is down: the client sees its connection reset
            return
        conn = Connection(self, (reader, writer), upstream)
        self.connections.add(conn)
        try:
            await conn.run()
        finally:
            self.connections.discard(conn)

    async def control(self, reader, writer) -> None:
        """Answer control messages, one JSON object per line."""
        while line := await reader.readline():
            try:
                message = json.loads(line)
                if "fault" in message:
                    self.schedule(Fault.from_json(message["fault"]))
                    answer = {"ok": True}
                else:
                    answer = {"ok": True, "stats": self.stats}
            except (ValueError, TypeError) as exc:
                answer = {"ok": False, "error": str(exc)}
            writer.write(json.dumps(answer).encode() + b"\n")
            await writer.drain()
        writer.close()


def address(text: str) -> tuple[str, int]:
    host, _, port = text.rpartition(":")
    return host, int(port)


async def serve(args: argparse.Namespace) -> None:
    proxy = Proxy(
        address(args.upstream),
        delay=args.delay_ms / 1000,
        jitter=args.jitter_ms / 1000,
        seed=args.seed,
        events=args.events,
    )
    server = await asyncio.start_server(proxy.accept, *address(args.listen))
    if args.control:
        await asyncio.start_unix_server(proxy.control, args.control)
    for spec in json.loads(args.faults):
        proxy.schedule(Fault.from_json(spec))
    host, port = server.sockets[0].getsockname()[:2]
    print(f"listening on {host}:{port}", flush=True)
    async with server:
        await server.serve_forever()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.partition("\n\n")[0])
    parser.add_argument("--listen", required=True, help="HOST:PORT to accept on (port 0: any)")
    parser.add_argument("--upstream", required=True, help="HOST:PORT to forward to")
    parser.add_argument("--delay-ms", type=float, default=0.0, help="one-way delay per chunk")
    parser.add_argument("--jitter-ms", type=float, default=0.0, help="uniform jitter half-width")
    parser.add_argument("--faults", default="[]", help="JSON list of faults, timed from start")
    parser.add_argument("--control", help="Unix socket path for control messages")
    parser.add_argument("--events", help="JSON-lines file of fault starts and ends")
    parser.add_argument("--seed", type=int, default=0, help="seed of the jitter")
    args = parser.parse_args(argv)
    for spec in json.loads(args.faults):
        Fault.from_json(spec)  # a bad script fails before listening
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(serve(args))


if __name__ == "__main__":
    sys.exit(main())
