"""The party side of the channel: registered protocol roles and their operations.

A party answers only operations that a protocol role registered here; a peer can
name an operation but never send code. Each protocol run is a *session* with its
own role state (keys, weights, optimiser), opened by ``<role>.open`` and removed by
``<role>.close``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from ftl.federation.messages import MAX_MESSAGE_BYTES, Message, MessageError, decode, encode

__all__ = ["PartyService", "ProtocolError", "operation", "role"]

_ROLES: dict[str, type] = {}


class ProtocolError(RuntimeError):
    """A protocol operation was called out of order or on an unknown session."""


def role(name: str) -> Callable[[type], type]:
    """Register a class as the party-side implementation of protocol role ``name``.

    The class is constructed as ``cls(party, open_message)`` and its methods marked
    with :func:`operation` become callable as ``"<name>.<method>"``.
    """

    def decorate(cls: type) -> type:
        _ROLES[name] = cls
        cls.role_name = name
        return cls

    return decorate


def operation(fn: Callable[[Any, Message], Message]) -> Callable[[Any, Message], Message]:
    """Mark a role method as a remotely callable protocol operation."""
    fn._ftl_operation = True
    return fn


class PartyService:
    """Dispatches encoded requests to the sessions of one local party."""

    def __init__(self, party: Any, max_message_bytes: int = MAX_MESSAGE_BYTES):
        self.party = party
        self.name = party.name
        self.max_message_bytes = max_message_bytes
        self._sessions: dict[tuple[str, str], Any] = {}

    def handle(
        self,
        session: str,
        op: str,
        payload: bytes,
        check: Callable[[str, Message], None] | None = None,
    ) -> bytes:
        """Decode ``payload``, run ``op`` in ``session`` and return the encoded reply.

        ``check(op, request)``, if given, sees the decoded request first and may
        raise to refuse it (the server's policy checks of session-opening requests),
        so a payload is decoded once.
        """
        role_name, _, method = op.rpartition(".")
        cls = _ROLES.get(role_name)
        if cls is None:
            raise ProtocolError(f"{self.name}: unknown protocol role {role_name!r}")
        request = decode(payload, self.max_message_bytes)
        if check is not None:
            check(op, request)
        key = (session, role_name)
        if method == "open":
            if key in self._sessions:
                raise ProtocolError(f"{self.name}: session {session} already open")
            state = cls(self.party, request)
            self._sessions[key] = state
            reply = state.opened() if hasattr(state, "opened") else Message("ack", {})
        elif method == "close":
            self._sessions.pop(key, None)
            reply = Message("ack", {})
        else:
            state = self._sessions.get(key)
            if state is None:
                raise ProtocolError(f"{self.name}: no open {role_name} session {session}")
            fn = getattr(state, method, None)
            if fn is None or not getattr(fn, "_ftl_operation", False):
                raise ProtocolError(f"{self.name}: {op!r} is not a registered operation")
            reply = fn(request)
        if not isinstance(reply, Message):
            raise MessageError(f"{op} returned {type(reply).__name__}, not a Message")
        return encode(reply, self.max_message_bytes)

    def session_ids(self) -> set[str]:
        """Ids of the sessions that hold role state here."""
        # list() copies the keys in one step: other sessions' threads may add
        # or remove entries meanwhile (``ftl serve`` serves sessions concurrently).
        return {k[0] for k in list(self._sessions)}

    def end_session(self, session: str) -> int:
        """Drop every role state of ``session`` (expiry, or a driver that vanished)."""
        keys = [k for k in list(self._sessions) if k[0] == session]
        for k in keys:
            self._sessions.pop(k, None)
        return len(keys)

    @property
    def open_sessions(self) -> int:
        return len(self._sessions)
