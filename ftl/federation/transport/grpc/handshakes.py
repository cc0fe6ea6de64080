"""What a served party can tell about TLS handshakes that failed: little, said plainly.

gRPC Python tells the application nothing about a connection whose TLS handshake
fails (a client certificate from a CA the host does not trust, or expired; a
client that does not trust the host's certificate): no callback, no error, and
its C core logs ``Handshake failed`` only at ``INFO``, without the peer's
address, to stderr rather than to Python's logging. Server interceptors and
``context.peer()`` see only connections whose handshake succeeded.

The one hook it offers is the certificate fetcher of dynamic server credentials,
which gRPC calls, without arguments, as each connection starts its handshake.
:class:`HandshakeWatcher` builds on it: at each such call it notes the
connections to the served port that the operating system lists (on Linux,
``/proc/net/tcp`` and ``tcp6``; elsewhere their addresses are unknown), and logs
each connection that made no call within ``grace`` seconds. An ftl driver calls
as soon as it connects, so such a connection most likely failed its handshake;
the driver's own error says which side refused which certificate.
"""

from __future__ import annotations

import ipaddress
import itertools
import logging
import sys
import threading
import time
import urllib.parse
from pathlib import Path

__all__ = ["HandshakeWatcher", "established_peers", "grpc_peer_address"]

#: Seconds a new connection has to make its first call before it is logged.
GRACE_SECONDS = 10.0
#: At most one line per client host in this many seconds (a port scanner, or a
#: load balancer's TCP health check, would otherwise fill the log).
QUIET_SECONDS = 60.0

_TCP_TABLES = ("/proc/net/tcp", "/proc/net/tcp6")
_ESTABLISHED = "01"
_UNKNOWN_HOST = "an address this system does not list"


def _address(ip: ipaddress.IPv4Address | ipaddress.IPv6Address, port: int) -> str:
    """``ip:port``, or ``[ip]:port`` for IPv6; an IPv4 client of a dual-stack socket
    as IPv4, as gRPC names it."""
    if ip.version == 6 and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    return f"{ip}:{port}" if ip.version == 4 else f"[{ip}]:{port}"


def grpc_peer_address(peer: str) -> str | None:
    """The client address in gRPC's ``context.peer()`` (``ipv4:10.0.0.7:50312``,
    ``ipv6:%5B::1%5D:50312``) as ``ip:port``; ``None`` for other transports."""
    kind, _, rest = urllib.parse.unquote(peer).partition(":")
    host, _, port = rest.rpartition(":")
    if kind not in ("ipv4", "ipv6") or not port.isdigit():
        return None
    try:
        return _address(ipaddress.ip_address(host.strip("[]")), int(port))
    except ValueError:
        return None


def _proc_address(field: str) -> str:
    """``ip:port`` of an address in ``/proc/net/tcp``: hex, the IP in 32-bit words
    of the machine's byte order."""
    hex_ip, _, hex_port = field.partition(":")
    raw = bytes.fromhex(hex_ip)
    if sys.byteorder == "little":
        raw = b"".join(raw[i : i + 4][::-1] for i in range(0, len(raw), 4))
    return _address(ipaddress.ip_address(raw), int(hex_port, 16))


def established_peers(port: int) -> set[str] | None:
    """Client addresses of the established TCP connections to local ``port``.

    ``None`` where the system does not list them in ``/proc/net/tcp`` (not Linux).
    """
    peers: set[str] = set()
    listed = False
    for table in _TCP_TABLES:
        try:
            rows = Path(table).read_text().splitlines()[1:]
        except OSError:
            continue
        listed = True
        for row in rows:
            fields = row.split()  # sl, local_address, rem_address, st, ...
            if len(fields) > 3 and fields[3] == _ESTABLISHED:
                if int(fields[1].rpartition(":")[2], 16) == port:
                    peers.add(_proc_address(fields[2]))
    return peers if listed else None


class HandshakeWatcher:
    """Logs connections to a served port that made no call: most likely a failed
    TLS handshake (see the module docstring).

    Parameters
    ----------
    log : logging.Logger
        Where the lines go (``ftl serve``'s log).
    grace : float
        Seconds a connection has to make its first call.
    quiet : float
        At most one line per client host in this many seconds; the next line
        counts the connections not logged in between.

    Attributes
    ----------
    port : int or None
        The served port; set once the server is bound.
    """

    def __init__(
        self, log: logging.Logger, grace: float = GRACE_SECONDS, quiet: float = QUIET_SECONDS
    ):
        self.port: int | None = None
        self.grace = float(grace)
        self.quiet = float(quiet)
        self._log = log
        self._lock = threading.Lock()
        # connection (its client address, or a number where unknown) -> when it started
        self._pending: dict[str | int, float] = {}
        # clients that made a call, forgotten when their connection closes
        self._called: set[str] = set()
        self._anonymous = itertools.count()
        # client host -> (time of its last line, connections not logged since)
        self._last_line: dict[str, tuple[float, int]] = {}
        self._checker: threading.Thread | None = None

    def connection_started(self) -> None:
        """Note the connections that are new (gRPC calls this as each one starts its
        handshake). Never raises: it runs inside gRPC's handshake."""
        try:
            peers = None if self.port is None else established_peers(self.port)
            now = time.monotonic()
            with self._lock:
                if peers is None:
                    self._pending[next(self._anonymous)] = now
                else:
                    self._called &= peers
                    for peer in peers - self._called - self._pending.keys():
                        self._pending[peer] = now
                if self._checker is None:
                    self._checker = threading.Thread(
                        target=self._check, name="ftl-handshake-watch", daemon=True
                    )
                    self._checker.start()
        except Exception:  # noqa: BLE001 - a failing watcher must not fail a handshake
            self._log.debug("handshake watcher failed", exc_info=True)

    def call_from(self, peer: str) -> None:
        """Note that the connection of ``peer`` (gRPC's ``context.peer()``) made a call."""
        address = grpc_peer_address(peer)
        if address is None:
            return
        with self._lock:
            if address in self._called:
                return
            self._called.add(address)
            if self._pending.pop(address, None) is None:
                # its address was not listed when it started: it is one of the unknown
                unknown = next((k for k in self._pending if isinstance(k, int)), None)
                self._pending.pop(unknown, None)
            if len(self._called) > 4096:  # only where the system lists no connections
                self._called.clear()

    def _check(self) -> None:
        """Log the connections whose grace has passed; end when none is pending."""
        while True:
            with self._lock:
                now = time.monotonic()
                due = [k for k, started in self._pending.items() if now - started >= self.grace]
                for key in due:
                    del self._pending[key]
                self._report(due, now)
                if not self._pending:
                    self._checker = None
                    return
                wake = min(self._pending.values()) + self.grace
            time.sleep(max(0.0, wake - time.monotonic()))

    def _report(self, connections: list[str | int], now: float) -> None:
        """One line per client host, at most one per ``quiet`` seconds (lock held)."""
        by_host: dict[str, list[str]] = {}
        for conn in connections:
            host, port = conn.rpartition(":")[::2] if isinstance(conn, str) else (_UNKNOWN_HOST, "")
            by_host.setdefault(host, []).append(port)
        for host, ports in by_host.items():
            last, skipped = self._last_line.get(host, (-self.quiet, 0))
            if now - last < self.quiet:
                self._last_line[host] = (last, skipped + len(ports))
                continue
            if len(self._last_line) > 1024:
                self._last_line.clear()
            self._last_line[host] = (now, 0)
            if host == _UNKNOWN_HOST:
                what = f"{len(ports)} connection(s) from {host}"
            elif len(ports) == 1:
                what = f"a connection from {host}:{ports[0]}"
            else:
                what = f"{len(ports)} connections from {host} (ports {', '.join(ports)})"
            earlier = f" (and {skipped} earlier, not logged)" if skipped else ""
            self._log.warning(
                "%s to port %s made no call within %g s%s: most likely the TLS handshake "
                "failed -- a client certificate not issued by this host's CA (tls.ca), or "
                "expired, or a client that does not trust this host's certificate. gRPC does "
                "not report which; the driver's error says",
                what,
                self.port,
                self.grace,
                earlier,
            )
