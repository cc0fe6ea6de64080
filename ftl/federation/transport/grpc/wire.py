"""What the gRPC transport puts on the wire, shared by server and client.

One gRPC service, ``ftl.Party``, with two methods and no protobuf schema: bytes
go in and out unchanged, because every payload already is an encoded, validated
:class:`~ftl.federation.Message` (see :mod:`ftl.federation.codec`).

``Call`` (bidirectional stream)
    One protocol operation. The request message is sent as a stream of chunks of
    at most :data:`CHUNK_BYTES`; the reply comes back the same way. The call's
    metadata names the session, the operation, the party path (a party seen
    through fitted transformers), the request's sequence number in its session,
    its length and its SHA-256 digest.
``Info`` (unary)
    Public facts about the served party: name, row count, column names, and the
    parts of the host's policy a driver needs to know up front.

Errors travel as gRPC status codes plus an ``ftl-error`` trailer naming the
error class, so the driver raises the same exception types as in-process runs.

A call the server put off because the peer already has its cap of calls in
flight (``max_streams_per_peer``) carries a second trailer, ``ftl-retry: busy``:
the server did not read the request, so sending the very same request again
(same session, sequence number and digest) is safe, and a driver does so with
jittered exponential back-off until the call's timeout. Every other refusal --
a policy refusal above all -- lacks it and must never be retried: the answer
would be the same, and a retried refusal is a probe. The busy call keeps its
``RESOURCE_EXHAUSTED`` status and ``ftl-error: PolicyError`` trailer, so that
drivers older than the retry trailer still see the clean policy error they
always saw; a new trailer, not a new status code, because gRPC itself sends
``RESOURCE_EXHAUSTED`` for oversized messages and ``UNAVAILABLE`` (the only
status gRPC clients retry on their own) would read as a host that is down.
"""

from __future__ import annotations

import os
import re

__all__ = [
    "CALL",
    "CHUNK_BYTES",
    "CLIENT_OPTIONS",
    "ERROR_KEY",
    "GRPC_MESSAGE_LIMIT",
    "INFO",
    "MAX_PATH_DEPTH",
    "RETRY_BUSY",
    "RETRY_KEY",
    "SERVER_OPTIONS",
    "SERVICE",
    "check_metadata",
    "chunks",
    "describe_call",
    "import_grpc",
    "parse_path",
]

SERVICE = "ftl.Party"
CALL = f"/{SERVICE}/Call"
INFO = f"/{SERVICE}/Info"
#: Request and reply messages travel in chunks of this size (well under gRPC's
#: default 4 MiB message limit), so that no single gRPC message is large.
CHUNK_BYTES = 1 << 20
#: gRPC's own per-message limit, set on both sides: one chunk plus framing.
GRPC_MESSAGE_LIMIT = CHUNK_BYTES + (64 << 10)
ERROR_KEY = "ftl-error"
#: Trailer of a call that was not run and may be sent again as it was (value
#: :data:`RETRY_BUSY`: the peer had its cap of calls in flight).
RETRY_KEY = "ftl-retry"
RETRY_BUSY = "busy"
MAX_PATH_DEPTH = 8

_SESSION = re.compile(r"[0-9a-f]{32}")
_OP = re.compile(r"[a-z][a-z_]*(\.[a-z][a-z_]*){1,3}")
_PATH_PART = re.compile(r"[0-9A-Za-z_-]{1,64}")
_DIGEST = re.compile(r"[0-9a-f]{64}")

#: gRPC channel options (both sides): chunk-sized messages, keepalive pings that
#: detect a silently dead peer without the server rejecting them as abusive.
CLIENT_OPTIONS = [
    ("grpc.max_send_message_length", GRPC_MESSAGE_LIMIT),
    ("grpc.max_receive_message_length", GRPC_MESSAGE_LIMIT),
    ("grpc.keepalive_time_ms", 60_000),
    ("grpc.keepalive_timeout_ms", 20_000),
]
SERVER_OPTIONS = [
    ("grpc.max_send_message_length", GRPC_MESSAGE_LIMIT),
    ("grpc.max_receive_message_length", GRPC_MESSAGE_LIMIT),
    ("grpc.http2.min_recv_ping_interval_without_data_ms", 30_000),
    ("grpc.keepalive_permit_without_calls", 1),
]


def check_metadata(metadata: dict[str, str], max_message_bytes: int) -> dict:
    """Validate a ``Call``'s metadata before anything else of the request is read.

    Returns the parsed fields; raises ``ValueError`` naming the first bad one.
    """
    session = metadata.get("ftl-session", "")
    if not _SESSION.fullmatch(session):
        raise ValueError("bad or missing session id")
    op = metadata.get("ftl-op", "")
    if len(op) > 80 or not _OP.fullmatch(op):
        raise ValueError("bad or missing operation name")
    path = parse_path(metadata)
    try:
        seq = int(metadata.get("ftl-seq", ""))
        length = int(metadata.get("ftl-length", ""))
    except ValueError:
        raise ValueError("bad or missing sequence number or length") from None
    if not 0 <= seq < 1 << 62:
        raise ValueError("sequence number out of range")
    if not 0 <= length <= max_message_bytes:
        raise ValueError(f"declared message length {length} exceeds {max_message_bytes} bytes")
    digest = metadata.get("ftl-digest", "")
    if not _DIGEST.fullmatch(digest):
        raise ValueError("bad or missing message digest")
    return {
        "session": session,
        "op": op,
        "path": path,
        "seq": seq,
        "length": length,
        "digest": digest,
    }


def describe_call(metadata: dict[str, str]) -> tuple[str, str | None, int]:
    """Session, operation and declared length of a call, each only if well formed
    (``""``, ``None``, ``0`` otherwise): what an audit record of a refused call
    may name."""
    session = metadata.get("ftl-session", "")
    op = metadata.get("ftl-op", "")
    length = metadata.get("ftl-length", "")
    return (
        session if _SESSION.fullmatch(session) else "",
        op if len(op) <= 80 and _OP.fullmatch(op) else None,
        int(length) if length.isdigit() and len(length) <= 12 else 0,
    )


def parse_path(metadata: dict[str, str]) -> tuple[str, ...]:
    """The party path of a call: the fitted transformers, in order, to see the party
    through (empty for the party itself); ``ValueError`` if malformed."""
    raw_path = metadata.get("ftl-path", "")
    path = tuple(raw_path.split("/")) if raw_path else ()
    if len(path) > MAX_PATH_DEPTH or not all(_PATH_PART.fullmatch(p) for p in path):
        raise ValueError("bad party path")
    return path


def chunks(payload: bytes):
    """Yield ``payload`` in :data:`CHUNK_BYTES` pieces (one empty piece if empty)."""
    view = memoryview(payload)
    if not len(view):
        yield b""
        return
    for start in range(0, len(view), CHUNK_BYTES):
        yield bytes(view[start : start + CHUNK_BYTES])


def import_grpc():
    """Import grpc, keeping its C core quiet below errors unless the user asked."""
    # gRPC logs connection shutdowns at INFO by default, which reads like an error.
    os.environ.setdefault("GRPC_VERBOSITY", "ERROR")
    import grpc

    return grpc
