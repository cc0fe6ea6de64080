"""``ftl serve``: a party's protocol roles behind gRPC with mutual TLS and a policy.

The server answers exactly what :class:`~ftl.federation.PartyService` answers in
a simulation -- registered operations of registered protocol roles, on typed
messages -- and adds what a boundary between organisations needs:

- **authentication**: mutual TLS; the peer's identity is the common name of its
  client certificate, and every session belongs to the identity that opened it;
- **policy** (:class:`~ftl.federation.policy.Policy`): which peers, protocols
  and columns, minimum key size, no plaintext mode, minimum intersection,
  alignments per day -- checked before a request touches any state;
- **sessions**: one per protocol run (the driver's channel session id), several
  at once, each with an expected sequence number: a replayed or out-of-order
  request is refused; an exact retransmission of the last request gets the
  stored reply again (so a driver may retry after a network error); idle
  sessions expire and their state is freed;
- **bounded messages**: chunked streaming with a declared length and digest,
  refused as soon as it exceeds the limit; the declared length is checked
  against the operation's own limit (small for operations whose request types
  carry no per-row data) and the message's header against the operation's
  request types and the schema's bounds as soon as its first bytes arrive, so a
  request is refused before its body is read, and never decoded unchecked;
- **bounded resources**: a peer may have at most ``max_streams_per_peer`` calls in
  flight (so it cannot hold every worker thread), a request must arrive (and a
  reply be taken) within a read deadline, a refused first request leaves no
  session behind, and sessions that hold no protocol state are forgotten after
  ``idle_session_ttl`` seconds (at most ``4 * max_sessions_per_peer`` per peer);
- **audit**: every request is appended, with its operation and outcome (accepted,
  repeated, or refused and why), to a JSON-lines transcript together with every
  reply (the same records as ``transcript_``), which ``ftl report`` reads.

Each peer sees the party through its own view: only its allowed columns, and
its own fitted transformers and model shards.
"""

from __future__ import annotations

import hashlib
import logging
import threading
import time
import traceback
from concurrent import futures
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path

import numpy as np

from ftl.data.party import DerivedParty, Party
from ftl.federation.budget import HostGuard, guard_of
from ftl.federation.certs import certificate_identity
from ftl.federation.messages import (
    FORMAT_VERSION,
    Header,
    MessageError,
    header_size,
    max_encoded_bytes,
)
from ftl.federation.policy import PeerRule, Policy, PolicyError
from ftl.federation.service import ProtocolError, request_limit
from ftl.federation.tls import TLSConfig
from ftl.federation.transcript import REPEATED, Transcript
from ftl.federation.wire import (
    ERROR_KEY,
    SERVER_OPTIONS,
    SERVICE,
    check_metadata,
    chunks,
    describe_call,
    import_grpc,
    parse_path,
)

__all__ = ["PartyServer", "ReplayError"]

log = logging.getLogger("ftl.serve")


class ReplayError(ProtocolError):
    """A request repeated or skipped a sequence number of its session."""


class _ColumnView:
    """Picks a peer's allowed columns from the base party's feature rows."""

    def __init__(self, index: np.ndarray, names: list[str]):
        self.index = index
        self.feature_names_out = names

    def __call__(self, rows: np.ndarray) -> np.ndarray:
        return rows[:, self.index]


def peer_view(party: Party, rule: PeerRule, policy: Policy) -> DerivedParty:
    """The party as one peer may see it: allowed columns, its own models, and the
    guard (privacy budget) that the protocol roles consult for this peer."""
    names = list(party.feature_names)
    if rule.columns is None:
        keep = names
    else:
        missing = sorted(set(rule.columns) - set(names))
        if missing:
            raise ValueError(f"policy for {rule.identity!r} names unknown column(s) {missing}")
        keep = [c for c in names if c in set(rule.columns)]
    view = DerivedParty(party, _ColumnView(np.array([names.index(c) for c in keep]), keep), keep)
    # Read by the protocol roles, which enforce the budget themselves.
    view.guard = HostGuard.from_policy(policy, rule.identity)
    return view


#: Transfer deadlines scale with the size above this (``read_timeout`` per 64 MiB).
_DEADLINE_UNIT = 64 << 20
#: Sessions without protocol state a peer may leave behind, per open session allowed.
_IDLE_PER_SESSION = 4
#: In-memory audit records kept (the audit log file keeps every one).
_KEEP_RECORDS = 10_000


@dataclass
class _Session:
    """Transport state of one (peer, session, party path)."""

    expected_seq: int = 0
    last_digest: str | None = None
    last_reply: bytes | None = None
    last_used: float = field(default_factory=time.monotonic)
    #: its last request left protocol role state at the party (else: idle TTL)
    holds_state: bool = False
    #: dropped from the table (its first request was refused): callers start over
    removed: bool = False
    lock: threading.Lock = field(default_factory=threading.Lock)


class _Abort(Exception):
    def __init__(self, code, error: str, message: str):
        super().__init__(message)
        self.code, self.error, self.message = code, error, message


@dataclass
class _Request:
    """What is known of one call so far, for its audit record."""

    session: str = ""
    op: str | None = None
    nbytes: int = 0
    header: Header | None = None


class _Deadline:
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

    def disarm(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None


class PartyServer:
    """The gRPC servicer of one party (see the module docstring).

    Parameters
    ----------
    party : ftl.Party
        The served party (features only: a host or transfer target).
    policy : ftl.federation.policy.Policy
        The data-use policy enforced for every request.
    max_message_bytes : int, default=512 MiB
        Largest request or reply accepted. Operations whose request types carry
        no per-row data accept at most
        :data:`~ftl.federation.messages.SMALL_MESSAGE_BYTES` (1 MiB).
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
        Calls one peer may have in flight at once; more are refused with
        ``RESOURCE_EXHAUSTED``. Default: half of :meth:`start`'s ``max_workers``,
        between 1 and 4, so that one peer never holds every worker thread.
    audit_log : path, optional
        JSON-lines file every request (with its operation and outcome: accepted,
        repeated, or refused and why) and every reply is appended to.
    model_dir : path, optional
        Where the party keeps its shards of models trained by each peer (one
        JSON file per model, under a folder per peer identity, written with
        :meth:`ftl.Party.export_model`) and reloads them from at start-up, so
        that a restarted host still serves predictions. A model trained on
        preprocessed rows is kept with the fitted transformers it needs.
    """

    def __init__(
        self,
        party: Party,
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
        self._stream_cap = int(max_streams_per_peer or 4)
        if min(self.read_timeout, self.idle_session_ttl, self._stream_cap) <= 0:
            raise ValueError("read_timeout, idle_session_ttl and max_streams_per_peer must be > 0")
        self.transcript = Transcript(log_path=audit_log, keep=_KEEP_RECORDS)
        self._views: dict[str, DerivedParty] = {}
        self._sessions: dict[tuple[str, str, tuple[str, ...]], _Session] = {}
        self._streams: dict[str, int] = {}
        self._lock = threading.Lock()
        self._audit_lock = threading.Lock()
        self.model_dir = None if model_dir is None else Path(model_dir)
        for rule in policy.peers.values():  # fail at start-up on a bad column list
            self._reload_models(rule, self._view(rule))

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
            self._stream_cap = max(1, min(4, max_workers // 2))
        server = grpc.server(
            futures.ThreadPoolExecutor(max_workers=max_workers, thread_name_prefix="ftl-serve"),
            handlers=[self.handlers()],
            options=SERVER_OPTIONS,
            # calls beyond this wait for no thread: they are refused at once
            maximum_concurrent_rpcs=4 * max_workers,
        )
        port = server.add_secure_port(address, tls.server_credentials())
        if port == 0:
            raise OSError(f"cannot listen on {address!r}")
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
        log.warning("refused %s from %s: %s", what, identity or "<unknown>", exc.message)
        context.set_trailing_metadata(((ERROR_KEY, exc.error),))
        context.abort(exc.code, exc.message)

    # -- Info --------------------------------------------------------------------------
    def _info(self, request: bytes, context) -> bytes:
        import json

        identity = self._identity(context)
        try:
            rule = self._rule(identity)
            party = self._resolve(rule, parse_path(dict(context.invocation_metadata())))
        except _Abort as exc:
            self._fail(context, exc, identity, "info")
        except ValueError as exc:
            self._fail(context, self._abort_for(exc), identity, "info")
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
            # the peer may know its own budget (and plan its work within it)
            "budget": guard_of(party).readings(),
            "max_message_bytes": self.max_message_bytes,
        }
        return json.dumps(info).encode("utf-8")

    # -- Call ----------------------------------------------------------------------------
    def _call(self, request_iterator, context):
        identity = self._identity(context)
        request = _Request()
        deadline = _Deadline(context)
        peer = None
        try:
            try:
                rule = self._rule(identity)
                peer = self._take_stream(rule.identity)
                reply = self._serve_call(
                    rule, dict(context.invocation_metadata()), request_iterator, deadline, request
                )
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
                self._release_stream(peer)

    def _take_stream(self, identity: str) -> str:
        """Count a call of ``identity`` in flight; refuse it above the per-peer cap."""
        grpc = import_grpc()

        with self._lock:
            busy = self._streams.get(identity, 0)
            if busy >= self._stream_cap:
                raise _Abort(
                    grpc.StatusCode.RESOURCE_EXHAUSTED,
                    "PolicyError",
                    f"peer {identity!r} already has {busy} calls in flight (limit "
                    f"{self._stream_cap}, max_streams_per_peer)",
                )
            self._streams[identity] = busy + 1
        return identity

    def _release_stream(self, identity: str) -> None:
        with self._lock:
            left = self._streams.get(identity, 1) - 1
            if left > 0:
                self._streams[identity] = left
            else:
                self._streams.pop(identity, None)

    def _transfer_seconds(self, nbytes: int) -> float:
        """The deadline to receive a request (or have a reply taken) of ``nbytes``."""
        return self.read_timeout * max(1.0, nbytes / _DEADLINE_UNIT)

    def _audit(
        self,
        identity: str | None,
        request: _Request,
        exc: _Abort | None = None,
        *,
        repeated: bool = False,
    ) -> None:
        """Log a request with its outcome (refused: ``exc``) in the audit transcript."""
        try:
            with self._audit_lock:
                self.transcript.record_request(
                    request.session,
                    identity or "<unknown>",
                    self.party.name,
                    op=request.op,
                    nbytes=request.nbytes,
                    header=request.header,
                    error=None if exc is None else f"{exc.error}: {exc.message}",
                    outcome=REPEATED if repeated else None,
                )
                view = self._views.get(identity or "")
                if exc is None and not repeated and view is not None and request.op:
                    if request.op.endswith(".open"):  # a run was admitted: budget moved
                        self.transcript.record_budget(identity, guard_of(view).readings())
        except OSError as err:  # a full disk must not turn a refusal into a crash
            log.error("cannot write the audit log: %s", err)

    def _serve_call(
        self,
        rule: PeerRule,
        metadata: dict,
        request_iterator,
        deadline: _Deadline,
        request: _Request,
    ) -> bytes:
        grpc = import_grpc()

        request.session, request.op, request.nbytes = describe_call(metadata)
        try:
            head = check_metadata(metadata, self.max_message_bytes)
            self.policy.check_operation(rule, head["op"])
            party = self._resolve(rule, head["path"])
            self._admit(party, head)
            payload, request.header = self._receive(request_iterator, head, party, deadline)
        except (ValueError, PolicyError, ProtocolError) as exc:
            raise self._abort_for(exc) from None
        key = (rule.identity, head["session"], head["path"])
        while True:
            state = self._session(key, head)
            with state.lock:
                if state.removed:
                    continue  # a concurrent first request was refused and dropped it
                try:
                    cached = self._check_sequence(state, head)
                except ReplayError as exc:
                    raise _Abort(
                        grpc.StatusCode.FAILED_PRECONDITION, "ReplayError", str(exc)
                    ) from None
                if cached is not None:
                    # an exact retransmission: same reply, no state change
                    self._audit(rule.identity, request, None, repeated=True)
                    self._record_reply(rule, party, head, cached)
                    return cached
                try:
                    reply = self._dispatch(rule, party, head, payload, request)
                except _Abort:
                    if state.expected_seq == 0:
                        self._drop(key, state)  # a refused first request leaves nothing
                    raise
                state.expected_seq = max(state.expected_seq, head["seq"] + 1)
                state.last_digest = head["digest"]
                # Kept for one exact retransmission; a closed role needs none.
                state.last_reply = None if head["op"].endswith(".close") else reply
                state.holds_state = party.endpoint.has_session(head["session"])
                state.last_used = time.monotonic()
            if not state.holds_state:
                with self._lock:
                    self._evict_idle(rule.identity)
            return reply

    def _admit(self, party: Party, head: dict) -> None:
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

    def _rule(self, identity: str | None) -> PeerRule:
        grpc = import_grpc()

        try:
            return self.policy.peer(identity)
        except PolicyError as exc:
            raise _Abort(grpc.StatusCode.PERMISSION_DENIED, "PolicyError", str(exc)) from None

    def _view(self, rule: PeerRule) -> DerivedParty:
        with self._lock:
            view = self._views.get(rule.identity)
            if view is None:
                view = peer_view(self.party, rule, self.policy)
                self._views[rule.identity] = view
            return view

    def _reload_models(self, rule: PeerRule, view: DerivedParty) -> None:
        """Load the shards kept in ``model_dir`` for this peer (at start-up)."""
        folder = None if self.model_dir is None else self.model_dir / rule.identity
        if folder is None or not folder.is_dir():
            return
        for path in sorted(folder.iterdir()):
            try:
                if path.suffix == ".json":
                    view.import_model(path)
                elif path.is_dir():  # a model on preprocessed rows: transformers first
                    party: Party = view
                    for file in sorted(path.glob("t*-*.json")):
                        transformer_id = file.stem.partition("-")[2]
                        if transformer_id not in party.transformer_ids():
                            party.import_transformer(file)
                        party = party.derive(transformer_id)
                    party.import_model(path / "model.json")
            except ValueError as exc:
                log.error("cannot reload model shard %s: %s", path, exc)

    def _keep_models(self, rule: PeerRule, party: Party, path: tuple[str, ...]) -> None:
        """Write newly finished model shards of a peer's view to ``model_dir``.

        A model trained on preprocessed rows is kept with the fitted transformers
        it needs, in pipeline order, in a folder of its own.
        """
        if self.model_dir is None:
            return
        folder = self.model_dir / rule.identity
        folder.mkdir(parents=True, exist_ok=True)
        for model_id in party.model_ids():
            if not path:
                target = folder / f"{model_id}.json"
                if not target.exists():
                    party.export_model(model_id, target)
                    log.info("kept model shard %s for %s", model_id, rule.identity)
                continue
            target = folder / model_id
            if target.exists():
                continue
            target.mkdir()
            for i, transformer_id in enumerate(path):
                holder = _through(self._view(rule), path[:i])
                holder.export_transformer(
                    transformer_id, target / f"t{i:02d}-{transformer_id}.json"
                )
            party.export_model(model_id, target / "model.json")
            log.info("kept model shard %s (on preprocessed rows) for %s", model_id, rule.identity)

    def _resolve(self, rule: PeerRule, path: tuple[str, ...]) -> Party:
        """The peer's view, seen through the fitted transformers named by ``path``."""
        return _through(self._view(rule), path)

    def _receive(
        self, request_iterator, head: dict, party: Party, deadline: _Deadline
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
            code = (
                grpc.StatusCode.DEADLINE_EXCEEDED if deadline.expired else grpc.StatusCode.CANCELLED
            )
            raise _Abort(code, "TimeoutError", "request stream cancelled") from None
        finally:
            deadline.disarm()
        if len(buffer) != head["length"]:
            raise MessageError(
                f"request of {len(buffer)} bytes, declared {head['length']}; truncated?"
            )
        if hashlib.sha256(buffer).hexdigest() != head["digest"]:
            raise MessageError("request digest does not match its content")
        if header is None:
            header = self._check_header(buffer, head, party)
        return buffer, header

    def _check_header(self, data, head: dict, party: Party) -> Header:
        """The request's header, checked against its schema, the declared length and
        the operation (``MessageError`` otherwise)."""
        header = party.endpoint.read_request_header(head["op"], data, length=head["length"])
        limit = max_encoded_bytes(header.schema)
        if limit is not None and header.length > limit:
            raise MessageError(f"{header.type} messages are at most {limit} bytes")
        return header

    def _session(self, key: tuple, head: dict) -> _Session:
        grpc = import_grpc()

        now = time.monotonic()
        with self._lock:
            self._expire(now)
            state = self._sessions.get(key)
            if state is None:
                if head["seq"] != 0:
                    raise _Abort(
                        grpc.StatusCode.FAILED_PRECONDITION,
                        "ProtocolError",
                        f"unknown or expired session {head['session']} (the host may have "
                        "restarted or the session idled out); start the fit again",
                    )
                open_here = self._open_sessions(key[0])
                if key[1] not in open_here and len(open_here) >= self.max_sessions_per_peer:
                    raise _Abort(
                        grpc.StatusCode.RESOURCE_EXHAUSTED,
                        "PolicyError",
                        f"peer {key[0]!r} already has {len(open_here)} open sessions (limit "
                        f"{self.max_sessions_per_peer})",
                    )
                state = self._sessions[key] = _Session()
            state.last_used = now
            return state

    def _open_sessions(self, identity: str) -> set[str]:
        """Sessions of a peer that hold protocol state, or whose first request is
        being served (lock held)."""
        pending = {
            k[1]
            for k, s in self._sessions.items()
            if k[0] == identity and s.expected_seq == 0 and not s.holds_state
        }
        return pending | self._active_sessions(identity)

    def _evict_idle(self, identity: str) -> None:
        """Forget a peer's oldest sessions without protocol state beyond its allowance
        (lock held): they only serve a retransmitted close."""
        idle = sorted(
            (s.last_used, k)
            for k, s in self._sessions.items()
            if k[0] == identity and not s.holds_state and s.expected_seq > 0
        )
        excess = len(idle) - _IDLE_PER_SESSION * self.max_sessions_per_peer
        for _, k in idle[: max(excess, 0)]:
            if not self._sessions[k].lock.locked():
                del self._sessions[k]

    def _drop(self, key: tuple, state: _Session) -> None:
        """Remove the entry of a session whose first request was refused."""
        with self._lock:
            if self._sessions.get(key) is state:
                del self._sessions[key]
            state.removed = True

    def _active_sessions(self, identity: str) -> set[str]:
        """Sessions of a peer that hold protocol state (lock held)."""
        view = self._views.get(identity)
        if view is None:
            return set()
        return set().union(*(p.endpoint.session_ids() for p in _with_derived(view)))

    def _expire(self, now: float) -> None:
        """Free the state of sessions idle for longer than their TTL (lock held):
        ``session_ttl`` if they hold protocol state, else ``idle_session_ttl``.
        Sessions serving a request right now are left alone."""
        stale = [
            k
            for k, s in self._sessions.items()
            if now - s.last_used > (self.session_ttl if s.holds_state else self.idle_session_ttl)
            and not s.lock.locked()
        ]
        for identity, session, path in stale:
            state = self._sessions.pop((identity, session, path))
            state.removed = True
            view = self._views.get(identity)
            if view is None or not state.holds_state:
                continue
            try:
                party = _through(view, path)
            except ValueError:
                continue
            dropped = party.endpoint.end_session(session)
            log.info(
                "session %s of %s expired (%d role state(s) freed)", session, identity, dropped
            )
        # Fitted transformers are leased: dropped once unused for the TTL unless a kept
        # model, a later transformer or an open session still needs them.
        for identity, view in self._views.items():
            for path in view.expire_transformers(self.session_ttl, now):
                log.info(
                    "transformer %s of %s expired (unused; no kept model needs it)", path, identity
                )

    @staticmethod
    def _check_sequence(state: _Session, head: dict) -> bytes | None:
        seq = head["seq"]
        if seq == state.expected_seq:
            return None
        if seq == state.expected_seq - 1 and head["digest"] == state.last_digest:
            return state.last_reply
        if head["op"].endswith(".close") and seq >= state.expected_seq - 1:
            return None  # closing (again, or after a lost request) only frees: always allowed
        raise ReplayError(
            f"request {seq} of session {head['session']} is replayed or out of order "
            f"(expected {state.expected_seq}); refused without any state change"
        )

    def _dispatch(
        self, rule: PeerRule, party: Party, head: dict, payload: bytes, request: _Request
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
            raise self._abort_for(exc) from None
        except Exception as exc:  # noqa: BLE001 - reported, never leaked in detail
            log.error("internal error in %s for %s:\n%s", op, rule.identity, traceback.format_exc())
            raise _Abort(
                grpc.StatusCode.INTERNAL,
                "RuntimeError",
                f"internal error in {op} ({type(exc).__name__}); see the host's log",
            ) from None
        self._audit(rule.identity, request)
        self._record_reply(rule, party, head, reply)
        if op.endswith(".finish"):
            self._keep_models(rule, party, head["path"])
        return reply

    def _record_reply(self, rule: PeerRule, party: Party, head: dict, reply: bytes) -> None:
        with self._audit_lock:
            self.transcript.record_encoded(head["session"], party.name, rule.identity, reply)

    @staticmethod
    def _abort_for(exc: Exception) -> _Abort:
        grpc = import_grpc()

        if isinstance(exc, PolicyError):
            return _Abort(grpc.StatusCode.PERMISSION_DENIED, "PolicyError", str(exc))
        if isinstance(exc, ProtocolError):
            return _Abort(grpc.StatusCode.FAILED_PRECONDITION, type(exc).__name__, str(exc))
        if isinstance(exc, MessageError):
            return _Abort(grpc.StatusCode.INVALID_ARGUMENT, "MessageError", str(exc))
        return _Abort(grpc.StatusCode.INVALID_ARGUMENT, "ValueError", str(exc))

    # -- what tests and operators may look at -----------------------------------------
    @property
    def open_sessions(self) -> int:
        """Transport sessions currently held (not yet closed or expired)."""
        with self._lock:
            return len(self._sessions)

    def role_states(self) -> int:
        """Protocol role states held over all peers' views (and derived parties)."""
        with self._lock:
            views = list(self._views.values())
        return sum(p.endpoint.open_sessions for view in views for p in _with_derived(view))


def _through(party: Party, path: tuple[str, ...]) -> Party:
    """``party`` seen through the fitted transformers named by ``path``, in order
    (``ValueError`` if one was never derived there)."""
    for transformer_id in path:
        party = party.derived(transformer_id)
    return party


def _with_derived(party: Party):
    """A party and every party derived from it through fitted transformers."""
    yield party
    for derived in party._derived.values():
        yield from _with_derived(derived)
