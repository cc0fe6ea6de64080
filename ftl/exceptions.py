"""Every error ftl raises on purpose, under one base class.

This is the lowest layer: it imports nothing from ftl, so that every other layer
may raise these. Each class keeps the builtin base it had before it moved here
(``except ValueError`` still catches a :class:`MessageError`), and stays
importable from the module that used to define it.
"""

from __future__ import annotations

__all__ = [
    "CheckpointError",
    "FTLError",
    "FixedPointOverflowError",
    "InsecureKeyError",
    "MessageError",
    "MissingFieldError",
    "PartyUnavailableError",
    "PeerIdentityError",
    "PolicyError",
    "ProtocolError",
    "RegistryError",
    "ReplayError",
    "SessionLimitError",
    "TLSHandshakeError",
]


class FTLError(Exception):
    """Base class of the errors ftl raises on purpose."""


# -- crypto ---------------------------------------------------------------------------
class InsecureKeyError(FTLError, ValueError):
    """A key smaller than :data:`~ftl.crypto.keys.MIN_SECURE_KEY_SIZE` was asked for
    outside tests."""


class FixedPointOverflowError(FTLError, OverflowError):
    """A value does not fit the fixed-point range of the key."""


# -- messages and protocols -----------------------------------------------------------
class MessageError(FTLError, ValueError):
    """A message is malformed, unregistered, oversized or violates its schema."""


class MissingFieldError(MessageError, KeyError):
    """A protocol role asked a message for a field its type does not have."""

    __str__ = Exception.__str__


class ProtocolError(FTLError, RuntimeError):
    """A protocol operation was called out of order or on an unknown session."""


class CheckpointError(FTLError, ValueError):
    """A checkpoint cannot be used: corrupted, modified, of another run or party, or
    of a step that is no longer kept."""


class RegistryError(FTLError, ValueError):
    """A protocol, role, estimator or shard kind was registered twice, or is unknown."""


class ReplayError(ProtocolError):
    """A request repeated or skipped a sequence number of its session."""


class PartyUnavailableError(FTLError, RuntimeError):
    """A party stopped answering (crashed, disconnected or timed out) mid-protocol."""


class TLSHandshakeError(PartyUnavailableError):
    """The TLS handshake with a party failed: the party refused this driver's
    certificate, or this driver's CA did not verify the party's (the message says
    which)."""


# -- a party's own protection ---------------------------------------------------------
class PolicyError(FTLError, PermissionError):
    """A party refused a request because its data-use policy forbids it."""


class SessionLimitError(PolicyError):
    """A peer asked for more sessions or concurrent calls than a served party allows."""


class PeerIdentityError(PolicyError):
    """The server's certificate does not name the party the driver meant to reach.

    Raised before any request is sent: the TLS handshake itself failed.
    """
