"""The party side of the channel: protocol roles and their operations.

A party answers only operations of a role that a registered protocol lists
(:mod:`ftl.federation.protocols`; :func:`role` marks a class as a role, the
protocol's spec makes it servable); a peer can name an operation but never send
code. Each protocol run is a *session* with its
own role state (keys, weights, optimiser), opened by ``<role>.open`` and removed by
``<role>.close``.

Each operation accepts a declared set of request message types, checked from the
message's header before its payload is decoded (a deviating peer cannot make the
party decode megabytes of ciphertexts under an operation that takes a counter):
``@operation(accepts=("lr.batch",))`` on a method, ``@role(name, opens=("lr.open",))``
for the session-opening request; ``<role>.close`` takes ``ack`` only. Where a role
declares nothing, an operation accepts ``ack`` and the message types of its own
protocol (those whose name starts with the protocol's message prefix, e.g.
``lr.`` for ``lr.host.update``).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

from ftl.exceptions import ProtocolError
from ftl.federation.messages import (
    MAX_MESSAGE_BYTES,
    Header,
    Message,
    MessageError,
    decode,
    encode,
    max_encoded_bytes,
    parse_header,
    read_header,
    registered_types,
    schema_for,
)
from ftl.federation.protocols import (
    RegistryError,
    load_protocols,
    protocol_of_role,
    role_class,
)

__all__ = [
    "PartyService",
    "ProtocolError",
    "accepted_types",
    "operation",
    "request_limit",
    "role",
]


def role(name: str, *, opens: Iterable[str] | None = None) -> Callable[[type], type]:
    """Mark a class as the party-side implementation of protocol role ``name``.

    The class is constructed as ``cls(party, open_message)`` and its methods marked
    with :func:`operation` become callable as ``"<name>.<method>"`` once a
    registered :class:`~ftl.federation.protocols.ProtocolSpec` lists the class
    (a role name listed twice is a
    :class:`~ftl.federation.protocols.RegistryError`).

    Parameters
    ----------
    name : str
        The role's name, e.g. ``"lr.host"``.
    opens : iterable of str, optional
        Message types ``<name>.open`` accepts (see the module docstring for the
        default).
    """

    def decorate(cls: type) -> type:
        cls.role_name = name
        cls._ftl_opens = None if opens is None else frozenset(opens)
        return cls

    return decorate


def operation(fn: Callable | None = None, *, accepts: Iterable[str] | None = None) -> Callable:
    """Mark a role method as a remotely callable protocol operation.

    Use as ``@operation`` or ``@operation(accepts=("lr.batch",))``; ``accepts``
    names the request message types the operation takes (see the module
    docstring for the default).
    """

    def mark(method: Callable) -> Callable:
        method._ftl_operation = True
        method._ftl_accepts = None if accepts is None else frozenset(accepts)
        return method

    return mark if fn is None else mark(fn)


def _resolve(op: str) -> tuple[type, str, str]:
    """The role class, role name and method of ``op``; ``ProtocolError`` if unknown."""
    role_name, _, method = op.rpartition(".")
    try:
        cls = role_class(role_name)
    except RegistryError:
        raise ProtocolError(f"unknown protocol role {role_name!r}") from None
    if method not in ("open", "close"):
        fn = getattr(cls, method, None)
        if fn is None or not getattr(fn, "_ftl_operation", False):
            raise ProtocolError(f"{op!r} is not a registered operation")
    return cls, role_name, method


def accepted_types(op: str) -> frozenset[str]:
    """The request message types operation ``op`` accepts.

    Raises
    ------
    ProtocolError
        If ``op`` is not a registered operation.
    """
    cls, role_name, method = _resolve(op)
    if method == "close":
        return frozenset({"ack"})
    declared = (
        getattr(cls, "_ftl_opens", None)
        if method == "open"
        else getattr(getattr(cls, method), "_ftl_accepts", None)
    )
    if declared is not None:
        return declared
    prefix = protocol_of_role(role_name).message_prefix
    return frozenset(t for t in registered_types() if t == "ack" or t.startswith(prefix))


def request_limit(op: str, max_message_bytes: int = MAX_MESSAGE_BYTES) -> int:
    """The largest request ``op`` accepts: small if none of its request types can
    carry per-row data (:func:`~ftl.federation.messages.is_small`)."""
    limits = [max_encoded_bytes(schema_for(t)) for t in accepted_types(op)]
    if not limits or any(limit is None for limit in limits):
        return max_message_bytes
    return min(max_message_bytes, max(limits))


class PartyService:
    """Dispatches encoded requests to the sessions of one local party.

    It serves the roles of every registered protocol: the built-in ones and the
    ``ftl.protocols`` plug-ins are loaded when the first service is made.
    """

    def __init__(self, party: Any, max_message_bytes: int = MAX_MESSAGE_BYTES):
        load_protocols()
        self.party = party
        self.name = party.name
        self.max_message_bytes = max_message_bytes
        self._sessions: dict[tuple[str, str], Any] = {}

    def admit(self, session: str, op: str) -> frozenset[str]:
        """What can be refused before a request is read: an unknown operation, or
        one other than ``open``/``close`` in a session without that role's state.

        Returns the message types ``op`` accepts.
        """
        try:
            _, role_name, method = _resolve(op)
        except ProtocolError as exc:
            raise ProtocolError(f"{self.name}: {exc}") from None
        if method not in ("open", "close") and (session, role_name) not in self._sessions:
            raise ProtocolError(f"{self.name}: no open {role_name} session {session}")
        return accepted_types(op)

    def check_type(self, op: str, msg_type: Any) -> None:
        """Refuse a request whose header names a type ``op`` does not take."""
        if not isinstance(msg_type, str) or msg_type not in accepted_types(op):
            shown = msg_type if isinstance(msg_type, str) else type(msg_type).__name__
            raise MessageError(f"{self.name}: {op} does not accept {shown[:80]!r} messages")

    def read_request_header(self, op: str, data, length: int | None = None) -> Header:
        """The checked header of a request for ``op``: its type first (from the parsed
        JSON alone), then its fields, shapes and sizes (:func:`read_header`).

        ``data`` may be a prefix of the request that holds the header, ``length``
        the request's total size.
        """
        header, _ = parse_header(data)
        self.check_type(op, header.get("type"))
        return read_header(data, length=length, max_bytes=self.max_message_bytes)

    def handle(
        self,
        session: str,
        op: str,
        payload: bytes,
        check: Callable[[str, Message], None] | None = None,
    ) -> bytes:
        """Decode ``payload``, run ``op`` in ``session`` and return the encoded reply.

        The operation, the session's role state and the request's header are
        checked before the payload is decoded. ``check(op, request)``, if given,
        sees the decoded request first and may raise to refuse it (the server's
        policy checks), so a payload is decoded once.
        """
        self.admit(session, op)
        cls, role_name, method = _resolve(op)
        header = self.read_request_header(op, payload)
        request = decode(payload, self.max_message_bytes, header=header)
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
            if state is None:  # closed meanwhile (expiry)
                raise ProtocolError(f"{self.name}: no open {role_name} session {session}")
            reply = getattr(state, method)(request)
        if not isinstance(reply, Message):
            raise MessageError(f"{op} returned {type(reply).__name__}, not a Message")
        return encode(reply, self.max_message_bytes)

    def has_session(self, session: str) -> bool:
        """Whether ``session`` holds role state here."""
        return any(k[0] == session for k in list(self._sessions))

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
