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
  refused as soon as it exceeds the limit;
- **audit**: every message in and out is appended to a JSON-lines transcript
  (the same records as ``transcript_``), which ``ftl report`` reads.

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
from ftl.federation.messages import FORMAT_VERSION, MessageError
from ftl.federation.policy import PeerRule, Policy, PolicyError
from ftl.federation.service import ProtocolError
from ftl.federation.tls import TLSConfig
from ftl.federation.transcript import Transcript
from ftl.federation.wire import (
    ERROR_KEY,
    SERVER_OPTIONS,
    SERVICE,
    check_metadata,
    chunks,
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
    view.min_intersection = policy.min_intersection
    return view


@dataclass
class _Session:
    """Transport state of one (peer, session, party path)."""

    expected_seq: int = 0
    last_digest: str | None = None
    last_reply: bytes | None = None
    last_used: float = field(default_factory=time.monotonic)
    lock: threading.Lock = field(default_factory=threading.Lock)


class _Abort(Exception):
    def __init__(self, code, error: str, message: str):
        super().__init__(message)
        self.code, self.error, self.message = code, error, message


class PartyServer:
    """The gRPC servicer of one party (see the module docstring).

    Parameters
    ----------
    party : ftl.Party
        The served party (features only: a host or transfer target).
    policy : ftl.federation.policy.Policy
        The data-use policy enforced for every request.
    max_message_bytes : int, default=512 MiB
        Largest request or reply accepted.
    session_ttl : float, default=3600
        Seconds of inactivity after which a session's state is freed.
    max_sessions_per_peer : int, default=16
        Open sessions one peer may hold at once.
    audit_log : path, optional
        JSON-lines file every message in and out is appended to.
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
        self.transcript = Transcript(log_path=audit_log)
        self._views: dict[str, DerivedParty] = {}
        self._sessions: dict[tuple[str, str, tuple[str, ...]], _Session] = {}
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

        Returns
        -------
        server : grpc.Server
            The running server (``server.stop(grace)`` stops it).
        port : int
            The bound port.
        """
        grpc = import_grpc()

        server = grpc.server(
            futures.ThreadPoolExecutor(max_workers=max_workers, thread_name_prefix="ftl-serve"),
            handlers=[self.handlers()],
            options=SERVER_OPTIONS,
        )
        port = server.add_secure_port(address, tls.server_credentials())
        if port == 0:
            raise OSError(f"cannot listen on {address!r}")
        server.start()
        return server, port

    @staticmethod
    def _identity(context) -> str | None:
        names = context.auth_context().get("x509_common_name") or []
        return names[0].decode("utf-8", "replace") if names else None

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
        try:
            reply = self._serve_call(
                identity, dict(context.invocation_metadata()), request_iterator
            )
        except _Abort as exc:
            self._fail(context, exc, identity, "a request")
        yield from chunks(reply)

    def _serve_call(self, identity: str | None, metadata: dict, request_iterator) -> bytes:
        grpc = import_grpc()

        try:
            rule = self._rule(identity)
            head = check_metadata(metadata, self.max_message_bytes)
            self.policy.check_operation(rule, head["op"])
            party = self._resolve(rule, head["path"])
            payload = self._receive(request_iterator, head)
        except (ValueError, PolicyError) as exc:
            raise self._abort_for(exc) from None
        key = (identity, head["session"], head["path"])
        state = self._session(key, head)
        with state.lock:
            try:
                cached = self._check_sequence(state, head)
            except ReplayError as exc:
                raise _Abort(grpc.StatusCode.FAILED_PRECONDITION, "ReplayError", str(exc)) from None
            if cached is not None:
                return cached  # an exact retransmission: same reply, no state change
            reply = self._dispatch(rule, party, head, payload)
            state.expected_seq = max(state.expected_seq, head["seq"] + 1)
            state.last_digest = head["digest"]
            # Kept for one exact retransmission; a closed role needs none.
            state.last_reply = None if head["op"].endswith(".close") else reply
            state.last_used = time.monotonic()
        return reply

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

    def _receive(self, request_iterator, head: dict) -> bytes:
        """Reassemble the chunked request, refusing it as soon as it is too long."""
        buffer = bytearray()
        for chunk in request_iterator:
            if len(buffer) + len(chunk) > head["length"]:
                raise MessageError(
                    f"request longer than its declared {head['length']} bytes; refused"
                )
            buffer += chunk
        if len(buffer) != head["length"]:
            raise MessageError(
                f"request of {len(buffer)} bytes, declared {head['length']}; truncated?"
            )
        payload = bytes(buffer)
        if hashlib.sha256(payload).hexdigest() != head["digest"]:
            raise MessageError("request digest does not match its content")
        return payload

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
                open_here = len(self._active_sessions(key[0]))
                if open_here >= self.max_sessions_per_peer:
                    raise _Abort(
                        grpc.StatusCode.RESOURCE_EXHAUSTED,
                        "PolicyError",
                        f"peer {key[0]!r} already has {open_here} open sessions (limit "
                        f"{self.max_sessions_per_peer})",
                    )
                state = self._sessions[key] = _Session()
            state.last_used = now
            return state

    def _active_sessions(self, identity: str) -> set[str]:
        """Sessions of a peer that hold protocol state (lock held)."""
        view = self._views.get(identity)
        if view is None:
            return set()
        return set().union(*(p.endpoint.session_ids() for p in _with_derived(view)))

    def _expire(self, now: float) -> None:
        """Free the state of sessions idle for longer than the TTL (lock held)."""
        stale = [k for k, s in self._sessions.items() if now - s.last_used > self.session_ttl]
        for identity, session, path in stale:
            del self._sessions[(identity, session, path)]
            view = self._views.get(identity)
            if view is None:
                continue
            try:
                party = _through(view, path)
            except ValueError:
                continue
            dropped = party.endpoint.end_session(session)
            log.info(
                "session %s of %s expired (%d role state(s) freed)", session, identity, dropped
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

    def _dispatch(self, rule: PeerRule, party: Party, head: dict, payload: bytes) -> bytes:
        grpc = import_grpc()

        session, op = head["session"], head["op"]
        try:
            with self._audit_lock:
                self.transcript.record_encoded(session, rule.identity, party.name, payload)
            # every request passes the policy first (decoded once, by the service)
            check = partial(self.policy.check_request, rule)
            reply = party.endpoint.handle(session, op, payload, check=check)
            if len(reply) > self.max_message_bytes:
                raise MessageError(f"reply of {len(reply)} bytes exceeds the limit")
            with self._audit_lock:
                self.transcript.record_encoded(session, party.name, rule.identity, reply)
            if op.endswith(".finish"):
                self._keep_models(rule, party, head["path"])
            return reply
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
