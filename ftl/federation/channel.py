"""The channel: every cross-party call goes through here as bytes.

The driver (at the guest) calls named operations on other parties' endpoints.
Each request and response is encoded to bytes, recorded in the transcript and
decoded again on the other side -- in-process too -- so that simulation and
deployment run the same code and communication is counted exactly.
"""

from __future__ import annotations

import uuid
from typing import Protocol

from ftl.exceptions import PartyUnavailableError
from ftl.federation.codec import MAX_MESSAGE_BYTES, decode, encode
from ftl.federation.schema import Message
from ftl.federation.transcript import Transcript

__all__ = ["Channel", "Endpoint", "PartyUnavailableError", "new_session_id"]


class Endpoint(Protocol):
    """Anything that can answer a protocol operation for one party."""

    name: str

    def handle(self, session: str, op: str, payload: bytes) -> bytes:
        """Run registered operation ``op`` in ``session`` on the encoded request."""


def new_session_id() -> str:
    return uuid.uuid4().hex


class Channel:
    """Carries typed messages between the driver's party and remote endpoints.

    Parameters
    ----------
    local : str
        Name of the party that runs the driver.
    transcript : Transcript, optional
        Where every message is recorded; a new one by default.
    session : str, optional
        Session id shared by all calls of one protocol run.
    max_message_bytes : int
        Messages above this size are refused on both sides.
    """

    def __init__(
        self,
        local: str,
        transcript: Transcript | None = None,
        session: str | None = None,
        max_message_bytes: int = MAX_MESSAGE_BYTES,
    ):
        self.local = local
        self.transcript = transcript if transcript is not None else Transcript()
        self.session = session or new_session_id()
        self.max_message_bytes = max_message_bytes

    def call(
        self, endpoint: Endpoint, op: str, request: Message, origin: str | None = None
    ) -> Message:
        """Send ``request`` to ``endpoint``'s operation ``op``; return its reply.

        ``origin`` names another party when the driver only forwards a message that
        party produced (e.g. one host's ciphertexts for another host); the
        transcript then records the true sender, relayed via the driver's party.
        """
        payload = encode(request, self.max_message_bytes)
        if origin is None:
            self.transcript.record(self.session, self.local, endpoint.name, request, len(payload))
        else:
            self.transcript.record(
                self.session, origin, endpoint.name, request, len(payload), via=self.local
            )
        try:
            raw = endpoint.handle(self.session, op, payload)
        except PartyUnavailableError:
            raise
        except (ConnectionError, TimeoutError, EOFError) as exc:
            raise PartyUnavailableError(
                f"party {endpoint.name!r} did not answer {op!r}: {exc}"
            ) from exc
        reply = decode(raw, self.max_message_bytes)
        self.transcript.record(self.session, endpoint.name, self.local, reply, len(raw))
        return reply
