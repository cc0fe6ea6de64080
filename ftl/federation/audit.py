"""A served party's audit log: every request with its outcome, every reply.

Each request is appended with its operation and outcome -- accepted, repeated
(an exact retransmission answered from the stored reply), refused and why,
:data:`BUSY` (put off: the peer had its cap of calls in flight; nothing was
read or run, the driver sends it again) or :data:`IGNORED` (a close of a
session the party does not hold: nothing to free) -- together with every reply,
as the same records as an estimator's ``transcript_``, to a JSON-lines file that
``ftl report`` reads. An auditor counts refusals as the records whose outcome is
``"refused"``: a busy call is no refusal, and the close a driver sends after a
refused open is no second one. After a peer's run is admitted, the peer's
privacy-budget readings are logged too, and state the party kept for the peer
and dropped once its lease ran out (an alignment, a model shard in memory) as a
:meth:`AuditLog.expired` line.
"""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass

from ftl.federation.codec import Header
from ftl.federation.transcript import Transcript

__all__ = ["BUSY", "IGNORED", "AuditLog", "RequestRecord"]

log = logging.getLogger("ftl.serve")

#: In-memory audit records kept (the audit log file keeps every one).
_KEEP_RECORDS = 10_000
#: Outcome of a call put off because its peer had its cap of calls in flight.
BUSY = "busy"
#: Outcome of a close of a session the party does not hold (refused at its open,
#: expired, or never opened): answered, nothing to free.
IGNORED = "ignored"


@dataclass
class RequestRecord:
    """What is known of one request so far, for its audit record."""

    session: str = ""
    op: str | None = None
    nbytes: int = 0
    header: Header | None = None


class AuditLog:
    """The audit transcript of one served party, safe to write from many threads.

    Parameters
    ----------
    party : str
        The served party's name (the receiver of every request).
    path : path, optional
        JSON-lines file every record is appended to.
    """

    def __init__(self, party: str, path=None):
        self.party = party
        self.transcript = Transcript(log_path=path, keep=_KEEP_RECORDS)
        self._lock = threading.Lock()

    def request(
        self,
        identity: str | None,
        request: RequestRecord,
        error: str | None = None,
        *,
        outcome: str | None = None,
        budget: dict | None = None,
    ) -> None:
        """Log a request with its ``outcome`` (default: accepted, or refused with
        ``error``), and then ``budget``, the peer's budget readings after an
        admitted run."""
        try:
            with self._lock:
                self.transcript.record_request(
                    request.session,
                    identity or "<unknown>",
                    self.party,
                    op=request.op,
                    nbytes=request.nbytes,
                    header=request.header,
                    error=error,
                    outcome=outcome,
                )
                if budget is not None:
                    self.transcript.record_budget(identity, budget)
        except OSError as err:  # a full disk must not turn a refusal into a crash
            log.error("cannot write the audit log: %s", err)

    def reply(self, session: str, sender: str, identity: str, reply: bytes) -> None:
        """Log a reply sent to peer ``identity`` (read from its header only)."""
        with self._lock:
            self.transcript.record_encoded(session, sender, identity, reply)

    def expired(self, identity: str, kind: str, key: str, idle_seconds: float) -> None:
        """Log that the party dropped what it kept for peer ``identity`` (``kind``:
        ``"alignment"``, ``"model"``) after ``idle_seconds`` unused: its lease ran
        out. The audit log gets an ``{"expired": ...}`` line, the server's log a line
        "expired alignment X of peer P"."""
        log.info(
            "expired %s %s of peer %s (unused for %.1f h)", kind, key, identity, idle_seconds / 3600
        )
        try:
            with self._lock:
                self.transcript.record_expiry(identity, kind, key, idle_seconds)
        except OSError as err:
            log.error("cannot write the audit log: %s", err)
