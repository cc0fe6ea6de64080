"""A served party's transport sessions: sequence numbers, replies kept for retries,
expiry, and how many sessions and calls each peer may hold.

One session per (peer, protocol session, party path). Each request carries its
sequence number in the session: a replayed or out-of-order request is refused
(:class:`~ftl.exceptions.ReplayError`); an exact retransmission of the last
request gets the stored reply again, so a driver may retry after a network error.
Sessions that hold protocol state expire after ``session_ttl`` seconds without a
request; sessions that hold none (closed, or never opened) after
``idle_session_ttl``, and a peer keeps at most ``4 * max_sessions_per_peer`` of
those. Nothing here depends on the transport that carries the requests.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from ftl.exceptions import ProtocolError, ReplayError, SessionLimitError

__all__ = ["SessionKey", "SessionTable", "StreamCounter", "TransportSession"]

#: (peer identity, protocol session id, party path)
SessionKey = tuple[str, str, tuple[str, ...]]

#: Sessions without protocol state a peer may leave behind, per open session allowed.
_IDLE_PER_SESSION = 4


@dataclass
class TransportSession:
    """Transport state of one (peer, session, party path)."""

    expected_seq: int = 0
    last_digest: str | None = None
    last_reply: bytes | None = None
    last_used: float = field(default_factory=time.monotonic)
    #: its last request left protocol role state at the party (else: idle TTL)
    holds_state: bool = False
    #: dropped from the table (its first request was refused): callers start over
    removed: bool = False
    lock: threading.Lock = field(default_factory=threading.Lock)

    def check_sequence(self, head: dict) -> bytes | None:
        """The stored reply if ``head`` retransmits the last request, ``None`` if it
        is the next one; :class:`~ftl.exceptions.ReplayError` otherwise."""
        seq = head["seq"]
        if seq == self.expected_seq:
            return None
        if seq == self.expected_seq - 1 and head["digest"] == self.last_digest:
            return self.last_reply
        if head["op"].endswith(".close") and seq >= self.expected_seq - 1:
            return None  # closing (again, or after a lost request) only frees: always allowed
        raise ReplayError(
            f"request {seq} of session {head['session']} is replayed or out of order "
            f"(expected {self.expected_seq}); refused without any state change"
        )

    def answered(self, head: dict, reply: bytes, holds_state: bool) -> None:
        """Record that the request ``head`` was run and answered with ``reply``."""
        self.expected_seq = max(self.expected_seq, head["seq"] + 1)
        self.last_digest = head["digest"]
        # Kept for one exact retransmission; a closed role needs none.
        self.last_reply = None if head["op"].endswith(".close") else reply
        self.holds_state = holds_state
        self.last_used = time.monotonic()


class SessionTable:
    """Every peer's transport sessions at one served party.

    Parameters
    ----------
    session_ttl : float
        Seconds of inactivity after which a session's protocol state is freed.
    idle_session_ttl : float
        Seconds after which a session without protocol state is forgotten.
    max_sessions_per_peer : int
        Open sessions one peer may hold at once.
    active_sessions : callable
        ``active_sessions(identity)``: the protocol sessions that hold role state
        at the party for that peer (called with :attr:`lock` held).
    expired : callable
        ``expired(stale, now)``: frees the protocol state of the sessions just
        dropped, a list of ``(key, session)`` (called with :attr:`lock` held).

    Attributes
    ----------
    lock : threading.Lock
        Guards the table. The server takes it for its peer views too, so that
        expiry frees a peer's state before any new request of that peer is seen.
    """

    def __init__(
        self,
        *,
        session_ttl: float,
        idle_session_ttl: float,
        max_sessions_per_peer: int,
        active_sessions: Callable[[str], set[str]],
        expired: Callable[[list[tuple[SessionKey, TransportSession]], float], None],
    ):
        self.session_ttl = session_ttl
        self.idle_session_ttl = idle_session_ttl
        self.max_sessions_per_peer = max_sessions_per_peer
        self._active_sessions = active_sessions
        self._expired = expired
        self._sessions: dict[SessionKey, TransportSession] = {}
        self.lock = threading.Lock()

    def __len__(self) -> int:
        with self.lock:
            return len(self._sessions)

    def session(self, key: SessionKey, head: dict) -> TransportSession:
        """The session of a request, opened by its first request (``seq`` 0).

        Raises
        ------
        ProtocolError
            If a later request names a session that does not exist (any more).
        SessionLimitError
            If a first request would exceed the peer's open sessions.
        """
        now = time.monotonic()
        with self.lock:
            self._expire(now)
            state = self._sessions.get(key)
            if state is None:
                if head["seq"] != 0:
                    raise ProtocolError(
                        f"unknown or expired session {head['session']} (the host may have "
                        "restarted or the session idled out); start the fit again"
                    )
                open_here = self._open_sessions(key[0])
                if key[1] not in open_here and len(open_here) >= self.max_sessions_per_peer:
                    raise SessionLimitError(
                        f"peer {key[0]!r} already has {len(open_here)} open sessions (limit "
                        f"{self.max_sessions_per_peer})"
                    )
                state = self._sessions[key] = TransportSession()
            state.last_used = now
            return state

    def holds(self, key: SessionKey) -> bool:
        """Whether the session of ``key`` is in the table (after dropping the
        expired ones)."""
        with self.lock:
            self._expire(time.monotonic())
            return key in self._sessions

    def drop(self, key: SessionKey, state: TransportSession) -> None:
        """Remove the entry of a session whose first request was refused."""
        with self.lock:
            if self._sessions.get(key) is state:
                del self._sessions[key]
            state.removed = True

    def evict_idle(self, identity: str) -> None:
        """Forget a peer's oldest sessions without protocol state beyond its allowance:
        they only serve a retransmitted close."""
        with self.lock:
            idle = sorted(
                (s.last_used, k)
                for k, s in self._sessions.items()
                if k[0] == identity and not s.holds_state and s.expected_seq > 0
            )
            excess = len(idle) - _IDLE_PER_SESSION * self.max_sessions_per_peer
            for _, k in idle[: max(excess, 0)]:
                if not self._sessions[k].lock.locked():
                    del self._sessions[k]

    def _open_sessions(self, identity: str) -> set[str]:
        """Sessions of a peer that hold protocol state, or whose first request is
        being served (lock held)."""
        pending = {
            k[1]
            for k, s in self._sessions.items()
            if k[0] == identity and s.expected_seq == 0 and not s.holds_state
        }
        return pending | self._active_sessions(identity)

    def _expire(self, now: float) -> None:
        """Drop the sessions idle for longer than their TTL (lock held):
        ``session_ttl`` if they hold protocol state, else ``idle_session_ttl``.
        Sessions serving a request right now are left alone."""
        stale = [
            k
            for k, s in self._sessions.items()
            if now - s.last_used > (self.session_ttl if s.holds_state else self.idle_session_ttl)
            and not s.lock.locked()
        ]
        dropped = []
        for key in stale:
            state = self._sessions.pop(key)
            state.removed = True
            dropped.append((key, state))
        self._expired(dropped, now)


class StreamCounter:
    """Calls each peer has in flight, capped so that no peer holds every worker.

    Parameters
    ----------
    cap : int
        Calls one peer may have in flight at once.
    """

    def __init__(self, cap: int):
        self.cap = cap
        self._busy: dict[str, int] = {}
        self._lock = threading.Lock()

    def take(self, identity: str) -> str:
        """Count a call of ``identity``; :class:`~ftl.exceptions.SessionLimitError`
        above the cap."""
        with self._lock:
            busy = self._busy.get(identity, 0)
            if busy >= self.cap:
                raise SessionLimitError(
                    f"peer {identity!r} already has {busy} calls in flight (limit "
                    f"{self.cap}, max_streams_per_peer)"
                )
            self._busy[identity] = busy + 1
        return identity

    def release(self, identity: str) -> None:
        """Count a call of ``identity`` as finished."""
        with self._lock:
            left = self._busy.get(identity, 1) - 1
            if left > 0:
                self._busy[identity] = left
            else:
                self._busy.pop(identity, None)
