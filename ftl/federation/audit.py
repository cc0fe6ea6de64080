"""A served party's audit log: every request with its outcome, every reply.

Each request is appended with its operation and outcome -- accepted, repeated
(an exact retransmission answered from the stored reply), or refused and why --
together with every reply, as the same records as an estimator's
``transcript_``, to a JSON-lines file that ``ftl report`` reads. After a peer's
run is admitted, the peer's privacy-budget readings are logged too.
"""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass

from ftl.federation.codec import Header
from ftl.federation.transcript import REPEATED, Transcript

__all__ = ["AuditLog", "RequestRecord"]

log = logging.getLogger("ftl.serve")

#: In-memory audit records kept (the audit log file keeps every one).
_KEEP_RECORDS = 10_000


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
        repeated: bool = False,
        budget: dict | None = None,
    ) -> None:
        """Log a request with its outcome (refused: ``error``), and then ``budget``,
        the peer's budget readings after an admitted run."""
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
                    outcome=REPEATED if repeated else None,
                )
                if budget is not None:
                    self.transcript.record_budget(identity, budget)
        except OSError as err:  # a full disk must not turn a refusal into a crash
            log.error("cannot write the audit log: %s", err)

    def reply(self, session: str, sender: str, identity: str, reply: bytes) -> None:
        """Log a reply sent to peer ``identity`` (read from its header only)."""
        with self._lock:
            self.transcript.record_encoded(session, sender, identity, reply)
