"""Typed messages, the channel, the transcript and the party-side service."""

from ftl.federation.channel import Channel, Endpoint, PartyUnavailableError, new_session_id
from ftl.federation.messages import (
    CiphertextArray,
    FieldSpec,
    Message,
    MessageError,
    PlainArray,
    ValueKind,
    decode,
    encode,
    register,
)
from ftl.federation.service import PartyService, ProtocolError, operation, role
from ftl.federation.transcript import FieldRecord, Transcript, TranscriptRecord

register("ack")

__all__ = [
    "Channel",
    "CiphertextArray",
    "Endpoint",
    "FieldRecord",
    "FieldSpec",
    "Message",
    "MessageError",
    "PartyService",
    "PartyUnavailableError",
    "PlainArray",
    "ProtocolError",
    "Transcript",
    "TranscriptRecord",
    "ValueKind",
    "decode",
    "encode",
    "new_session_id",
    "operation",
    "register",
    "role",
]
