"""How ``ftl serve`` ends a call it will not answer, and how long a transfer may take.

A refused call ends with a gRPC status and the ``ftl-error`` trailer naming the
error class (:func:`abort_for`); a call put off as busy adds ``ftl-retry``
(:mod:`~ftl.federation.transport.grpc.wire`). A :class:`Deadline` cancels a call
whose request does not arrive, or whose reply is not taken, in time.
"""

from __future__ import annotations

import threading

from ftl.exceptions import MessageError, PolicyError, ProtocolError, SessionLimitError
from ftl.federation.transport.grpc.wire import RETRY_BUSY, import_grpc

__all__ = ["Deadline", "abort_for", "put_off"]


class _Abort(Exception):
    """Ends a call with a gRPC status and the ``ftl-error`` trailer naming the error;
    ``retry`` (the ``ftl-retry`` trailer) if the request was not run and may be sent
    again as it was. Private control flow of the server, never raised to users."""

    def __init__(self, code, error: str, message: str, retry: str | None = None):
        super().__init__(message)
        self.code, self.error, self.message, self.retry = code, error, message, retry


class Deadline:
    """Cancels a call that has not finished a transfer in time.

    A request iterator blocks while the peer sends nothing; cancelling the call
    makes it raise, which frees the worker thread.
    """

    def __init__(self, context):
        self._context = context
        self._timer: threading.Timer | None = None
        self.expired = False

    def arm(self, seconds: float) -> None:
        self.disarm()
        self._timer = threading.Timer(seconds, self._expire)
        self._timer.daemon = True
        self._timer.start()

    def _expire(self) -> None:
        self.expired = True
        self._context.cancel()

    @property
    def active(self) -> bool:
        """Whether the call is still live (the peer has not cancelled or left)."""
        return self._context.is_active()

    def disarm(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None


def abort_for(exc: Exception) -> _Abort:
    """The gRPC status and ``ftl-error`` name a refusal travels with."""
    grpc = import_grpc()

    if isinstance(exc, SessionLimitError):
        return _Abort(grpc.StatusCode.RESOURCE_EXHAUSTED, "PolicyError", str(exc))
    if isinstance(exc, PolicyError):
        return _Abort(grpc.StatusCode.PERMISSION_DENIED, "PolicyError", str(exc))
    if isinstance(exc, ProtocolError):
        return _Abort(grpc.StatusCode.FAILED_PRECONDITION, type(exc).__name__, str(exc))
    if isinstance(exc, MessageError):
        return _Abort(grpc.StatusCode.INVALID_ARGUMENT, "MessageError", str(exc))
    return _Abort(grpc.StatusCode.INVALID_ARGUMENT, "ValueError", str(exc))


def put_off(exc: SessionLimitError) -> _Abort:
    """A call put off because its peer has its cap of calls in flight: not read, so
    the driver may send it again as it was (``ftl-retry: busy``). Status and
    ``ftl-error`` stay those of the refusal older drivers know."""
    refused = abort_for(exc)
    return _Abort(refused.code, refused.error, refused.message, retry=RETRY_BUSY)
