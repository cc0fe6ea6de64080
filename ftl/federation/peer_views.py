"""What ``ftl serve`` keeps for each peer, and for how long.

Each peer sees the served party through its own view (:mod:`ftl.federation.views`):
its allowed columns, and its own fitted transformers, model shards, alignment
tables and fit checkpoints. :class:`PeerViews` makes each view on first use (and
every configured peer's at start-up, reloading what ``checkpoint_dir`` and
``model_dir`` kept across a restart), frees the protocol state of expired
sessions and the fits' steps in memory that no request used for ``session_ttl``
(:meth:`PeerViews.forget_idle_checkpoints`), and ends *leases*: an alignment
table or a model shard in memory that no request used for the host's
time-to-live of its kind is dropped and audited (:meth:`PeerViews.expire_leases`);
a shard kept in ``model_dir`` is loaded again when it is next used. Nothing here
depends on the transport.
"""

from __future__ import annotations

import logging
import threading
from functools import partial
from pathlib import Path

from ftl.federation.audit import AuditLog
from ftl.federation.checkpoints import PartyCheckpoints, safe_id
from ftl.federation.model_store import ModelDirectory
from ftl.federation.policy import PeerRule, Policy
from ftl.federation.sessions import SessionKey, TransportSession
from ftl.federation.views import ServedParty, peer_view, through, with_derived

__all__ = ["LEASE_SECONDS", "PeerViews"]

log = logging.getLogger("ftl.serve")

#: Default lease of an alignment table or a model shard in memory: a week.
LEASE_SECONDS = 7 * 24 * 3600.0
#: Longest time between two sweeps of expired leases (while requests arrive).
_SWEEP_SECONDS = 60.0


class PeerViews:
    """Every peer's view of a served party, and what the views keep.

    Parameters
    ----------
    party : ServedParty
        The served party.
    policy : Policy
        Its policy (a view per peer rule).
    lock : threading.Lock
        The server's session-table lock: views are made under it, and the session
        table calls :meth:`active_sessions` and :meth:`free_expired` with it held.
    audit : AuditLog
        Where expired leases are logged.
    session_ttl : float
        Seconds after which an unused transformer, and a fit's state in memory,
        is dropped.
    lease_ttls : dict
        Seconds per kind (``"alignment"``, ``"model"``) after which an unused
        alignment table or model shard in memory is dropped.
    checkpoint_dir, model_dir : path, optional
        Where fits' checkpoints and trained shards are kept across restarts.
    """

    def __init__(
        self,
        party: ServedParty,
        policy: Policy,
        *,
        lock: threading.Lock,
        audit: AuditLog,
        session_ttl: float,
        lease_ttls: dict[str, float],
        checkpoint_dir=None,
        model_dir=None,
    ):
        if min(lease_ttls.values()) <= 0:
            raise ValueError("alignment_ttl and model_ttl must be > 0")
        self.party = party
        self.policy = policy
        self.lease_ttls = dict(lease_ttls)
        self.session_ttl = session_ttl
        self.checkpoint_dir = None if checkpoint_dir is None else Path(checkpoint_dir)
        self.model_dir = None if model_dir is None else Path(model_dir)
        self.kept = None if model_dir is None else ModelDirectory(model_dir)
        self._lock = lock
        self._audit = audit
        self._views: dict[str, ServedParty] = {}
        self._next_sweep = 0.0
        for rule in policy.peers.values():  # fail at start-up on a bad column list
            view = self.view(rule)
            view.checkpoints.reload_alignments(view)
            if self.kept is not None:
                self.kept.reload(rule.identity, view)

    def get(self, identity: str | None) -> ServedParty | None:
        """The view of ``identity``, if it was made."""
        return self._views.get(identity or "")

    def view(self, rule: PeerRule) -> ServedParty:
        """The peer's view, made on first use."""
        with self._lock:
            view = self._views.get(rule.identity)
            if view is None:
                view = peer_view(self.party, rule, self.policy)
                # its alignments are its own: another peer cannot name, renew or
                # overwrite them, even if it learned an id
                view.keep_own_alignments()
                # the peer's own runs' checkpoints (found by its protocol roles)
                view.checkpoints = PartyCheckpoints.for_peer(
                    self.checkpoint_dir, rule.identity, self.session_ttl
                )
                if self.kept is not None:  # for a shard whose copy in memory expired
                    view.reload_model = partial(self._reload_model, rule.identity)
                self._views[rule.identity] = view
            return view

    def resolve(self, rule: PeerRule, path: tuple[str, ...]) -> ServedParty:
        """The peer's view, seen through the fitted transformers named by ``path``
        (reloaded from ``model_dir`` if a kept model needs them and they expired
        with its copy in memory); ``ValueError`` if one is unknown."""
        view = self.view(rule)
        try:
            return through(view, path)
        except ValueError:
            folder = None if self.model_dir is None else self.model_dir / rule.identity
            # path parts are checked names (wire.parse_path): safe in a pattern
            if folder is None or not any(folder.glob(f"*/t00-{path[0]}.json")):
                raise
        log.info("reloading the kept models of %s (transformer %s expired)", rule.identity, path)
        self.kept.reload(rule.identity, view)
        return through(view, path)

    def keep_models(self, rule: PeerRule, party: ServedParty, path: tuple[str, ...]) -> None:
        """Write the shards a finished fit left at ``party`` to ``model_dir``, if set."""
        if self.kept is not None:
            self.kept.keep(rule.identity, self.view(rule), party, path)

    def _reload_model(self, identity: str, party: ServedParty, model_id: str) -> None:
        """Load a shard kept in ``model_dir`` whose copy in memory expired, into
        ``party`` (the peer's view, or a party derived from it)."""
        folder = self.model_dir / identity
        model_id = safe_id(model_id, "model id")
        for path in (folder / f"{model_id}.json", folder / model_id / "model.json"):
            if path.is_file():
                party.import_model(path)
                log.info("reloaded model shard %s of %s (expired in memory)", model_id, identity)
                return

    # -- expiry (the session table's lock held) ------------------------------------------
    def active_sessions(self, identity: str) -> set[str]:
        """Sessions of a peer that hold protocol state."""
        view = self._views.get(identity)
        if view is None:
            return set()
        return set().union(*(p.endpoint.session_ids() for p in with_derived(view)))

    def free_expired(self, stale: list[tuple[SessionKey, TransportSession]], now: float):
        """Free the protocol state of expired sessions, then the transformers no peer
        uses any more, then (at most every minute) what the views kept whose lease
        ran out and the fit checkpoints in memory idle for ``session_ttl``."""
        for (identity, session, path), state in stale:
            view = self._views.get(identity)
            if view is None or not state.holds_state:
                continue
            try:
                party = through(view, path)
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
        if now >= self._next_sweep:
            self.expire_leases(now)
            self.forget_idle_checkpoints(now)

    def expire_leases(self, now: float) -> None:
        """Drop the alignment tables and model shards in memory whose lease ran out;
        each is audited."""
        # a quarter of the shortest TTL: nothing is kept much longer than its TTL
        shortest = min(*self.lease_ttls.values(), self.session_ttl)
        self._next_sweep = now + min(_SWEEP_SECONDS, shortest / 4)
        for identity, view in self._views.items():
            for party in with_derived(view):
                for kind, key, idle in party.expire_kept(self.lease_ttls, now):
                    self._audit.expired(identity, kind, key, idle)

    def forget_idle_checkpoints(self, now: float) -> None:
        """Drop the fits' steps kept in memory that no request kept or loaded for
        ``session_ttl`` (files in ``checkpoint_dir`` stay). Without this sweep a step
        would only go when its peer next keeps or loads one: an abandoned fit's
        keys and weights would stay in memory while that peer is away."""
        for identity, view in self._views.items():
            forgotten = view.checkpoints.forget_idle(now)
            if forgotten:
                log.info("%d idle fit checkpoint(s) of %s freed from memory", forgotten, identity)

    def role_states(self) -> int:
        """Protocol role states held over all peers' views (and derived parties)."""
        with self._lock:
            views = list(self._views.values())
        return sum(p.endpoint.open_sessions for view in views for p in with_derived(view))
