"""``ftl serve``: a party's protocol roles behind gRPC with mutual TLS and a policy.

The server answers exactly what :class:`~ftl.federation.PartyService` answers in
a simulation -- registered operations of registered protocol roles, on typed
messages -- and adds what a boundary between organisations needs:

- **authentication**: mutual TLS; the peer's identity is the common name of its
  client certificate, and every session belongs to the identity that opened it;
- **policy** (:class:`~ftl.federation.policy.Policy`): which peers, protocols
  and columns, minimum key size, no plaintext mode, minimum intersection,
  alignments per day -- checked before a request touches any state;
- **sessions** (:mod:`ftl.federation.sessions`): one per protocol run (the
  driver's channel session id), several at once, each with an expected sequence
  number: a replayed or out-of-order request is refused; an exact retransmission
  of the last request gets the stored reply again (so a driver may retry after a
  network error); idle sessions expire and their state is freed;
- **bounded messages**: chunked streaming with a declared length and digest,
  refused as soon as it exceeds the limit; the declared length is checked
  against the operation's own limit (small for operations whose request types
  carry no per-row data) and the message's header against the operation's
  request types and the schema's bounds as soon as its first bytes arrive, so a
  request is refused before its body is read, and never decoded unchecked;
- **bounded resources**: a peer may have at most ``max_streams_per_peer`` calls in
  flight (so it cannot hold every worker thread; more are put off as busy, unread,
  and the driver sends them again: :mod:`~ftl.federation.transport.grpc.wire`),
  a request must arrive (and a reply be taken) within a read deadline, a refused
  first request leaves no session behind, and sessions that hold no protocol
  state are forgotten after ``idle_session_ttl`` seconds (at most
  ``4 * max_sessions_per_peer`` per peer);
- **audit** (:mod:`ftl.federation.audit`): every request is appended, with its
  operation and outcome (accepted, repeated, refused and why, busy, or ignored: a
  close of a session the party does not hold), to a JSON-lines transcript
  together with every reply (the same records as ``transcript_``), which
  ``ftl report`` reads; a connection that makes no call (most likely a failed
  TLS handshake, which gRPC does not report) is logged with its client address
  (:mod:`~ftl.federation.transport.grpc.handshakes`).

Each peer sees the party through its own view (:mod:`ftl.federation.peer_views`):
only its allowed columns, and its own fitted transformers and model shards, which
``model_dir`` keeps across restarts (:mod:`ftl.federation.model_store`), its own
runs' checkpoints, which ``checkpoint_dir`` keeps across restarts
(:mod:`ftl.federation.checkpoints`), and its alignment tables. What a view keeps
in memory between sessions is leased: dropped, and audited, once unused for the
host's time-to-live of its kind.
"""

from __future__ import annotations

import hashlib
import json
import logging
import traceback
from concurrent import futures
from functools import partial

from ftl.exceptions import (
    MessageError,
    PolicyError,
    ProtocolError,
    ReplayError,
    SessionLimitError,
)
from ftl.federation.audit import BUSY, IGNORED, AuditLog, RequestRecord
from ftl.federation.budget import guard_of
from ftl.federation.codec import FORMAT_VERSION, Header, header_size
from ftl.federation.identity import certificate_identity
from ftl.federation.messages import Message, encode
from ftl.federation.peer_views import LEASE_SECONDS, PeerViews
from ftl.federation.policy import PeerRule, Policy
from ftl.federation.schema import max_encoded_bytes
from ftl.federation.service import request_limit
from ftl.federation.sessions import SessionKey, SessionTable, StreamCounter, TransportSession
from ftl.federation.transcript import REPEATED
from ftl.federation.transport.grpc.calls import Deadline, _Abort, abort_for, put_off
from ftl.federation.transport.grpc.handshakes import HandshakeWatcher
from ftl.federation.transport.grpc.tls import TLSConfig
from ftl.federation.transport.grpc.wire import (
    ERROR_KEY,
    RETRY_KEY,
    SERVER_OPTIONS,
    SERVICE,
    check_metadata,
    chunks,
    describe_call,
    import_grpc,
    parse_path,
)
from ftl.federation.views import ServedParty

__all__ = ["PartyServer", "ReplayError"]

log = logging.getLogger("ftl.serve")

#: Transfer deadlines scale with the size above this (``read_timeout`` per 64 MiB).
_DEADLINE_UNIT = 64 << 20


class PartyServer:
    """The gRPC servicer of one party (see the module docstring).

    Parameters
    ----------
    party : ftl.Party
        The served party (features only: a host or transfer target); anything
        with the methods of :class:`~ftl.federation.views.ServedParty`.
    policy : ftl.federation.policy.Policy
        The data-use policy enforced for every request.
    max_message_bytes : int, default=512 MiB
        Largest request or reply accepted. Operations whose request types carry
        no per-row data accept at most
        :data:`~ftl.federation.schema.SMALL_MESSAGE_BYTES` (1 MiB).
    session_ttl : float, default=3600
        Seconds of inactivity after which a session's state is freed.
    max_sessions_per_peer : int, default=16
        Open sessions one peer may hold at once.
    idle_session_ttl : float, default=60
        Seconds after which a session that holds no protocol state (closed, or
        never opened) is forgotten; a peer keeps at most
        ``4 * max_sessions_per_peer`` of them (the oldest go first).
    read_timeout : float, default=120
        Seconds within which a request must arrive completely, and a reply be
        taken, per 64 MiB (at least this long for smaller messages): a stalled or
        trickling stream is cancelled after that and frees its worker thread.
    max_streams_per_peer : int, optional
        Calls one peer may have in flight at once; more are put off, unread, with
        ``RESOURCE_EXHAUSTED`` and the ``ftl-retry: busy`` trailer (the driver
        sends them again). Default: half of :meth:`start`'s ``max_workers``,
        between 1 and 4, so that one peer never holds every worker thread.
    audit_log : path, optional
        JSON-lines file every request (with its operation and outcome: accepted,
        repeated, refused and why, busy, or ignored), every reply, and every
        expired lease is appended to.
    model_dir : path, optional
        Where the party keeps its shards of models trained by each peer (one
        JSON file per model, under a folder per peer identity, written with
        :meth:`ftl.Party.export_model`) and reloads them from at start-up, so
        that a restarted host still serves predictions. A model trained on
        preprocessed rows is kept with the fitted transformers it needs.
    checkpoint_dir : path, optional
        Where the party keeps its state of each peer's fits after every iteration
        (its weights, optimiser, own key pair; mode 0600, a folder per peer
        identity) and the alignments they use, reloaded at start-up: a driver
        resumes a fit after this server restarted. Without it the state is kept
        in memory only (a driver that restarts can still resume; ``session_ttl``
        bounds how long).
    alignment_ttl, model_ttl : float, default=7 days
        Seconds after which an alignment table a peer made, and a model shard it
        trained, are dropped from memory if no request used them meanwhile (their
        *lease*; swept while requests arrive, no thread of its own, and written to
        the audit log). A peer that names one later is told to align, or fit,
        again; a shard kept in ``model_dir`` stays there and is loaded again when
        it is next used.

    Attributes
    ----------
    handshakes : HandshakeWatcher
        Logs connections that made no call within ``handshakes.grace`` seconds
        (10): most likely failed TLS handshakes.
    """

    def __init__(
        self,
        party: ServedParty,
        policy: Policy,
        *,
        max_message_bytes: int = 512 << 20,
        session_ttl: float = 3600.0,
        max_sessions_per_peer: int = 16,
        idle_session_ttl: float = 60.0,
        read_timeout: float = 120.0,
        max_streams_per_peer: int | None = None,
        audit_log=None,
        model_dir=None,
        checkpoint_dir=None,
        alignment_ttl: float = LEASE_SECONDS,
        model_ttl: float = LEASE_SECONDS,
    ):
        if party.has_labels:
            raise ValueError(
                f"party {party.name!r} has labels; a served party holds features only "
                "(the labelled party runs the driver)"
            )
        self.party = party
        self.policy = policy
        self.max_message_bytes = int(max_message_bytes)
        self.session_ttl = float(session_ttl)
        self.max_sessions_per_peer = int(max_sessions_per_peer)
        self.idle_session_ttl = float(idle_session_ttl)
        self.read_timeout = float(read_timeout)
        self.max_streams_per_peer = max_streams_per_peer
        self._streams = StreamCounter(int(max_streams_per_peer or 4))
        if min(self.read_timeout, self.idle_session_ttl, self._streams.cap) <= 0:
            raise ValueError("read_timeout, idle_session_ttl and max_streams_per_peer must be > 0")
        self.audit = AuditLog(party.name, audit_log)
        self.handshakes = HandshakeWatcher(log)
        self._sessions = SessionTable(
            session_ttl=self.session_ttl,
            idle_session_ttl=self.idle_session_ttl,
            max_sessions_per_peer=self.max_sessions_per_peer,
            active_sessions=lambda identity: self.peers.active_sessions(identity),
            expired=lambda stale, now: self.peers.free_expired(stale, now),
        )
        self.peers = PeerViews(
            party,
            policy,
            lock=self._sessions.lock,
            audit=self.audit,
            session_ttl=self.session_ttl,
            lease_ttls={"alignment": float(alignment_ttl), "model": float(model_ttl)},
            checkpoint_dir=checkpoint_dir,
            model_dir=model_dir,
        )
        self.model_dir, self.checkpoint_dir = self.peers.model_dir, self.peers.checkpoint_dir

    @property
    def transcript(self):
        """The audit transcript (:class:`~ftl.federation.transcript.Transcript`)."""
        return self.audit.transcript

    # -- gRPC plumbing -------------------------------------------------------------
    def handlers(self):
        grpc = import_grpc()

        return grpc.method_handlers_generic_handler(
            SERVICE,
            {
                "Call": grpc.stream_stream_rpc_method_handler(self._call),
                "Info": grpc.unary_unary_rpc_method_handler(self._info),
            },
        )

    def start(self, address: str, tls: TLSConfig, max_workers: int = 8):
        """Start serving on ``address`` (``host:port``; port 0 picks a free one).

        ``max_workers`` threads serve calls; each peer may use at most
        ``max_streams_per_peer`` of them at once.

        Returns
        -------
        server : grpc.Server
            The running server (``server.stop(grace)`` stops it).
        port : int
            The bound port.
        """
        grpc = import_grpc()

        if self.max_streams_per_peer is None:
            self._streams.cap = max(1, min(4, max_workers // 2))
        server = grpc.server(
            futures.ThreadPoolExecutor(max_workers=max_workers, thread_name_prefix="ftl-serve"),
            handlers=[self.handlers()],
            options=SERVER_OPTIONS,
            # calls beyond this wait for no thread: gRPC refuses them at once, unread,
            # and the driver sends them again (as a busy call)
            maximum_concurrent_rpcs=4 * max_workers,
        )
        credentials = tls.server_credentials(on_connection=self.handshakes.connection_started)
        port = server.add_secure_port(address, credentials)
        if port == 0:
            raise OSError(f"cannot listen on {address!r}")
        self.handshakes.port = port
        server.start()
        return server, port

    @staticmethod
    def _identity(context) -> str | None:
        # The identity from the whole verified certificate, not gRPC's first common
        # name: a certificate claiming two identities is nobody.
        pems = context.auth_context().get("x509_pem_cert") or []
        if len(pems) != 1:
            return None
        try:
            return certificate_identity(pems[0])
        except ValueError as exc:
            log.warning("refused a peer certificate: %s", exc)
            return None

    def _fail(self, context, exc: _Abort, identity: str | None, what: str):
        trailers = [(ERROR_KEY, exc.error)]
        if exc.retry is None:
            log.warning("refused %s from %s: %s", what, identity or "<unknown>", exc.message)
        else:  # the driver sends it again: routine under load, not a warning
            log.info("put off %s from %s: %s", what, identity or "<unknown>", exc.message)
            trailers.append((RETRY_KEY, exc.retry))
        context.set_trailing_metadata(tuple(trailers))
        context.abort(exc.code, exc.message)

    # -- Info --------------------------------------------------------------------------
    def _info(self, request: bytes, context) -> bytes:
        self.handshakes.call_from(context.peer())
        identity = self._identity(context)
        try:
            rule = self._rule(identity)
            party = self.peers.resolve(rule, parse_path(dict(context.invocation_metadata())))
        except _Abort as exc:
            self._fail(context, exc, identity, "info")
        except ValueError as exc:
            self._fail(context, abort_for(exc), identity, "info")
        info = {
            "format_version": FORMAT_VERSION,
            "name": party.name,
            "n_rows": party.n_rows,
            "feature_names": list(party.feature_names),
            "protocols": list(rule.protocols),
            "min_key_size": self.policy.min_key_size,
            "allow_plaintext": self.policy.allow_plaintext,
            "min_intersection": self.policy.min_intersection,
            "allow_lbfgs": self.policy.allow_lbfgs,
            # every registered protocol's policy setting (its value here or its default)
            "protocol_settings": self.policy.protocol_settings(),
            # the peer may know its own budget (and plan its work within it)
            "budget": guard_of(party).readings(),
            "max_message_bytes": self.max_message_bytes,
        }
        return json.dumps(info).encode("utf-8")

    # -- Call ----------------------------------------------------------------------------
    def _call(self, request_iterator, context):
        self.handshakes.call_from(context.peer())
        identity = self._identity(context)
        metadata = dict(context.invocation_metadata())
        # what an audit record of the call may name, also if it is put off or refused
        request = RequestRecord(*describe_call(metadata))
        deadline = Deadline(context)
        peer = None
        try:
            try:
                rule = self._rule(identity)
                peer = self._take_stream(rule.identity)
                reply = self._serve_call(rule, metadata, request_iterator, deadline, request)
            except _Abort as exc:
                if deadline.expired:
                    exc = _Abort(
                        exc.code,
                        "TimeoutError",
                        f"request not received within {self._transfer_seconds(request.nbytes):g} "
                        "s; cancelled",
                    )
                self._audit(identity, request, exc)
                self._fail(context, exc, identity, "a request")
            # a peer that does not take its reply holds the thread no longer than this
            deadline.arm(self._transfer_seconds(len(reply)))
            yield from chunks(reply)
        finally:
            deadline.disarm()
            if peer is not None:
                self._streams.release(peer)

    def _take_stream(self, identity: str) -> str:
        """Count a call of ``identity`` in flight; put it off above the per-peer cap.

        A call put off was not read: the driver may send it again as it was (the
        ``ftl-retry: busy`` trailer, see :mod:`~ftl.federation.transport.grpc.wire`),
        and however often it does, the peer never has more than the cap in flight.
        """
        try:
            return self._streams.take(identity)
        except SessionLimitError as exc:
            raise put_off(exc) from None

    def _transfer_seconds(self, nbytes: int) -> float:
        """The deadline to receive a request (or have a reply taken) of ``nbytes``."""
        return self.read_timeout * max(1.0, nbytes / _DEADLINE_UNIT)

    def _audit(
        self,
        identity: str | None,
        request: RequestRecord,
        exc: _Abort | None = None,
        *,
        outcome: str | None = None,
    ) -> None:
        """Log a request with its outcome (refused: ``exc``; put off: ``exc`` with a
        retry) in the audit log; after an admitted run, the peer's budget readings
        too (the budget moved)."""
        if exc is not None and exc.retry is not None:
            outcome = BUSY
        view = self.peers.get(identity)
        admitted = exc is None and outcome is None and view is not None and request.op
        opened = admitted and request.op.endswith(".open")
        self.audit.request(
            identity,
            request,
            None if exc is None else f"{exc.error}: {exc.message}",
            outcome=outcome,
            budget=guard_of(view).readings() if opened else None,
        )

    def _serve_call(
        self,
        rule: PeerRule,
        metadata: dict,
        request_iterator,
        deadline: Deadline,
        request: RequestRecord,
    ) -> bytes:
        try:
            head = check_metadata(metadata, self.max_message_bytes)
            key = (rule.identity, head["session"], head["path"])
            # a close of a session the party does not hold frees nothing: it needs no
            # permission and no transformer on its path (see _close_unknown)
            unknown = head["op"].endswith(".close") and not self._sessions.holds(key)
            if unknown and head["seq"] > 0:
                party = self.peers.view(rule)
            else:
                self.policy.check_operation(rule, head["op"])
                party = self.peers.resolve(rule, head["path"])
            self._admit(party, head)
            payload, request.header = self._receive(request_iterator, head, party, deadline)
        except (ValueError, PolicyError, ProtocolError) as exc:
            raise abort_for(exc) from None
        if unknown and head["seq"] > 0:
            return self._close_unknown(rule, party, head, request)
        while True:
            state = self._session(key, head)
            with state.lock:
                if state.removed:
                    continue  # a concurrent first request was refused and dropped it
                try:
                    cached = state.check_sequence(head)
                except ReplayError as exc:
                    raise abort_for(exc) from None
                if cached is not None:
                    # an exact retransmission: same reply, no state change
                    self._audit(rule.identity, request, outcome=REPEATED)
                    self.audit.reply(head["session"], party.name, rule.identity, cached)
                    return cached
                try:
                    reply = self._dispatch(rule, party, head, payload, request)
                except _Abort:
                    if state.expected_seq == 0:
                        self._sessions.drop(key, state)  # a refused first request leaves nothing
                    raise
                state.answered(head, reply, party.endpoint.has_session(head["session"]))
            if not state.holds_state:
                self._sessions.evict_idle(rule.identity)
            return reply

    def _close_unknown(
        self,
        rule: PeerRule,
        party: ServedParty,
        head: dict,
        request: RequestRecord,
    ) -> bytes:
        """A close of a session this party does not hold -- its open was refused, it
        expired, or it never was: nothing to free, nothing is touched. Answered as
        any close is, and audited as ignored, not refused, so that an auditor counts
        a refused open (which every driver follows with a close) as one refusal."""
        reply = encode(Message("ack", {}), self.max_message_bytes)
        self._audit(rule.identity, request, outcome=IGNORED)
        self.audit.reply(head["session"], party.name, rule.identity, reply)
        return reply

    def _session(self, key: SessionKey, head: dict) -> TransportSession:
        try:
            return self._sessions.session(key, head)
        except (ProtocolError, SessionLimitError) as exc:
            raise abort_for(exc) from None

    def _admit(self, party: ServedParty, head: dict) -> None:
        """Checks before the request is read: the operation exists, its session holds
        the role's state (but for open and close), the declared length fits the
        operation's limit."""
        party.endpoint.admit(head["session"], head["op"])
        limit = request_limit(head["op"], self.max_message_bytes)
        if head["length"] > limit:
            raise MessageError(
                f"{head['op']} takes requests of at most {limit} bytes, this one declares "
                f"{head['length']}; refused before reading it"
            )

    def _view(self, rule: PeerRule) -> ServedParty:
        """The peer's view of the party (:meth:`PeerViews.view`)."""
        return self.peers.view(rule)

    def _rule(self, identity: str | None) -> PeerRule:
        try:
            return self.policy.peer(identity)
        except PolicyError as exc:
            raise abort_for(exc) from None

    def _receive(
        self, request_iterator, head: dict, party: ServedParty, deadline: Deadline
    ) -> tuple[bytearray, Header]:
        """Reassemble the chunked request within its deadline; refuse it as soon as it
        is too long, or as soon as its header is in and not one the operation takes."""
        grpc = import_grpc()

        deadline.arm(self._transfer_seconds(head["length"]))
        buffer = bytearray()
        header = None
        try:
            for chunk in request_iterator:
                if len(buffer) + len(chunk) > head["length"]:
                    raise MessageError(
                        f"request longer than its declared {head['length']} bytes; refused"
                    )
                buffer += chunk
                if header is None:
                    size = header_size(buffer)
                    # check as soon as the header is in (or cannot fit the length)
                    if size is not None and (size <= len(buffer) or size > head["length"]):
                        header = self._check_header(bytes(buffer[:size]), head, party)
        except grpc.RpcError:  # cancelled: the deadline passed, or the peer left
            if deadline.expired:
                raise _Abort(
                    grpc.StatusCode.DEADLINE_EXCEEDED, "TimeoutError", "request stream cancelled"
                ) from None
            raise self._peer_left(buffer, head) from None
        finally:
            deadline.disarm()
        if len(buffer) != head["length"] and not deadline.active:
            # the stream ended because the peer cancelled it (or its process died),
            # not because it sent a short request: audit it as what it was
            raise self._peer_left(buffer, head)
        if len(buffer) != head["length"]:
            raise MessageError(
                f"request of {len(buffer)} bytes, declared {head['length']}; truncated?"
            )
        if hashlib.sha256(buffer).hexdigest() != head["digest"]:
            raise MessageError("request digest does not match its content")
        if header is None:
            header = self._check_header(buffer, head, party)
        return buffer, header

    @staticmethod
    def _peer_left(buffer: bytearray, head: dict) -> _Abort:
        return _Abort(
            import_grpc().StatusCode.CANCELLED,
            "ConnectionError",
            f"the peer cancelled the request after {len(buffer)} of {head['length']} bytes",
        )

    def _check_header(self, data, head: dict, party: ServedParty) -> Header:
        """The request's header, checked against its schema, the declared length and
        the operation (``MessageError`` otherwise)."""
        header = party.endpoint.read_request_header(head["op"], data, length=head["length"])
        limit = max_encoded_bytes(header.schema)
        if limit is not None and header.length > limit:
            raise MessageError(f"{header.type} messages are at most {limit} bytes")
        return header

    def _dispatch(
        self,
        rule: PeerRule,
        party: ServedParty,
        head: dict,
        payload: bytes,
        request: RequestRecord,
    ) -> bytes:
        grpc = import_grpc()

        session, op = head["session"], head["op"]
        try:
            # every request passes the policy first (decoded once, by the service)
            check = partial(self.policy.check_request, rule)
            reply = party.endpoint.handle(session, op, payload, check=check)
            if len(reply) > self.max_message_bytes:
                raise MessageError(f"reply of {len(reply)} bytes exceeds the limit")
        except (PolicyError, MessageError, ProtocolError, ValueError) as exc:
            if op.endswith(".open"):
                # A refused open leaves no role state behind.
                party.endpoint.end_session(session)
            raise abort_for(exc) from None
        except Exception as exc:  # noqa: BLE001 - reported, never leaked in detail
            log.error("internal error in %s for %s:\n%s", op, rule.identity, traceback.format_exc())
            raise _Abort(
                grpc.StatusCode.INTERNAL,
                "RuntimeError",
                f"internal error in {op} ({type(exc).__name__}); see the host's log",
            ) from None
        self._audit(rule.identity, request)
        self.audit.reply(session, party.name, rule.identity, reply)
        if op.endswith(".finish"):
            self.peers.keep_models(rule, party, head["path"])
        return reply

    # -- what tests and operators may look at -----------------------------------------
    @property
    def open_sessions(self) -> int:
        """Transport sessions currently held (not yet closed or expired)."""
        return len(self._sessions)

    def role_states(self) -> int:
        """Protocol role states held over all peers' views (and derived parties)."""
        return self.peers.role_states()
