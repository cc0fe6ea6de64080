"""Checkpoints: each party's own state of a protocol run, kept so that the run resumes.

Design
------
**Steps.** A long run is a sequence of *steps*: step 0 when a session is open,
then one per completed iteration (an L-BFGS iteration, an epoch of Adam or SGD).
At a step boundary no party holds a ciphertext, a mask or any per-batch value of
another party -- only its own weights, optimiser and counters -- so that state is
all a party needs to go on from there, and it is exactly what it holds between
iterations anyway.

**Each party keeps its own part, under its own protection.** After every step:

- the *guest* keeps its weight block, its optimiser (L-BFGS memory, or Adam/SGD
  moments and step size), the driver's state (the summed Gram matrix, counters,
  history, the batch-order generator), its own key pair and the protocol
  parameters, in memory and, with the estimator's ``checkpoint_dir``, in one file
  per fit named by the fit's *fingerprint* (below);
- a *host* keeps its weight block and optimiser, its own key pair, the peers'
  public keys, the parameters, the rows it has processed (its pass cap), and what
  the run is bound to: the peer's identity, the alignment, digests of the
  positions and of its own training features; in memory and, with ``ftl serve``'s
  ``checkpoint_dir``, in ``<checkpoint_dir>/<peer identity>/`` -- with the
  alignment tables those runs use, which ``ftl serve`` reloads at start-up
  (:class:`PartyCheckpoints`).

In a simulation (parties in the driver's process) the driver keeps the local
hosts' checkpoints too, each in a folder of its own next to the guest's file.

**Format, files, fingerprints** (:mod:`ftl.federation.checkpoint_files`). Strict
JSON in an envelope with a digest, written atomically with mode ``0600``; a file
whose format, version, kind, digest or fingerprint does not match is refused: a
checkpoint is never half-trusted. The guest's file is named by its fit's
fingerprint, a host's by the *fit id* the guest chose at open, in the folder of
the authenticated peer.

**Resume.** The guest re-opens each host's session with a resume message (a new
message type that the role's ``open`` accepts: the wire protocol is otherwise
unchanged), naming the fit and the step to go on from. Each party keeps its last
two steps: a host keeps step ``k`` before it answers the request that ends it, the
guest after every host has answered, so a host is at the guest's step or one
ahead, and restores the guest's. The guest resumes when a host's session is lost
mid-fit (the host restarted: its next call is refused as an unknown session after
the transport's retries, ``RemoteParty(retry_for=...)``), and when ``fit`` is
called again in a new process with the same fingerprint. It resumes once per
step: a failure before the next step raises the error.

**Identity and budget.** Only the identity that ran a fit may resume it: a peer's
checkpoints are looked up in its own folder (another identity's fit id finds
nothing, and is refused exactly like an unknown one), and each file records and is
checked against the identity. A resume is the same fit, never a new one: the
privacy budget is not charged again, but the host checks the row minimum and the
pass cap again under its current policy (and the server checks the resume
message's parameters and keys like an open). Rows processed never go back: a
resume continues the count of the last step, or of the session it replaces if
that is still alive. A resume *supersedes* any live session of the fit (it
answers nothing more: :mod:`ftl.federation.checkpoint_claims`), so a fit never
runs twice in parallel; only the last two steps can be resumed, and a finished
fit's checkpoint is removed.

**Other protocols.** Nothing here is specific to logistic regression: a role keeps
``{"step", "rows", ...}`` states under ``(protocol, run id)`` with
:meth:`PartyCheckpoints.keep`, restores one with :meth:`~PartyCheckpoints.load`,
and takes its run over with :meth:`~PartyCheckpoints.claim`; what a run gathers
piece by piece is kept once with :meth:`~PartyCheckpoints.keep_part`. PSI keeps,
per batch, its secret scalar and order and the batches already blinded
(:mod:`ftl.psi._resume`). Transfer learning keeps, per epoch, both parties'
networks and optimisers (``ftl.resume``); its target also keeps, with
:meth:`~PartyCheckpoints.keep_part`, the digests of the batches answered since the
step and how often the step was resumed. SecureBoost keeps, per boosting iteration,
the host's feature order, split table and validation walk (``sbt.resume``), and with
:meth:`~PartyCheckpoints.keep_part` how often each of its trees was started. Each
needs a driver that names its run and a resume message, as ``lr.resume`` and
``psi.resume`` do. Batch prediction needs neither:
the guest alone keeps the scores of its finished batches
(:mod:`ftl.data.batch_scoring`), and every batch is a new, complete request.
"""

from __future__ import annotations

import logging
import os
import shutil
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np

from ftl.exceptions import CheckpointError

# The file format and the claims live in their own modules; every name stays
# importable from here, where the protocols have always found it.
from ftl.federation.checkpoint_claims import (
    RunClaims,
    attached,
    checkpoints_of,
    refuse_superseded,
)
from ftl.federation.checkpoint_files import (
    FORMAT,
    VERSION,
    _dumps,  # noqa: F401  (tests hash an envelope as written)
    digest,
    fingerprint,
    read_checkpoint,
    remove_checkpoint,
    safe_id,
    state_from_json,
    state_to_json,
    write_checkpoint,
    write_private,
)

__all__ = [
    "FORMAT",
    "VERSION",
    "PartyCheckpoints",
    "attached",
    "checkpoints_of",
    "digest",
    "fingerprint",
    "read_checkpoint",
    "refuse_superseded",
    "remove_checkpoint",
    "safe_id",
    "state_from_json",
    "state_to_json",
    "write_checkpoint",
    "write_private",
]

log = logging.getLogger("ftl.checkpoint")


class PartyCheckpoints:
    """The checkpoints of one party's runs for one peer (the host's side).

    Each run, named by its fit id, keeps its last two steps (:meth:`keep`), in
    memory and, with a ``root`` folder, in ``<root>/<protocol>/<fit id>.json``;
    a resumed run supersedes the session that ran it before (:meth:`claim`).
    The alignment tables of the runs are kept in ``<root>/alignments/`` and
    reloaded into the party at start-up (:meth:`reload_alignments`).

    Parameters
    ----------
    root : path or None
        The peer's folder; ``None`` keeps checkpoints in memory only (a restart
        loses them, a driver that restarts can still resume).
    identity : str
        The peer (certificate identity) whose runs these are.
    ttl : float, default=3600
        Seconds after which a run's state kept in memory is forgotten if the run
        did not go on (its file, if any, stays).
    """

    def __init__(self, root: str | os.PathLike | None, identity: str, ttl: float = 3600.0):
        self.root = None if root is None else Path(root)
        self.identity = identity
        self.ttl = float(ttl)
        self._lock = threading.Lock()
        # fit id -> (last use, {"latest": state, "previous": state or None, "rows": int})
        self._runs: dict[str, tuple[float, dict]] = {}
        self._claims = RunClaims()  # used with self._lock held
        # fit id -> {part name: value} of runs kept in memory only (keep_part), and
        # when each run last kept one (a run may keep parts before its first step)
        self._parts: dict[str, dict[str, Any]] = {}
        self._parts_used: dict[str, float] = {}

    @classmethod
    def for_peer(cls, folder: str | os.PathLike | None, identity: str, ttl: float = 3600.0):
        """The checkpoints of peer ``identity`` under ``folder`` (or in memory)."""
        if folder is None:
            return cls(None, identity, ttl)
        if Path(identity).name != identity or identity in (".", ".."):
            raise ValueError(f"peer identity {identity!r} cannot name a checkpoint folder")
        return cls(Path(folder) / identity, identity, ttl)

    def __getstate__(self) -> dict:
        # a copy made for a worker process keeps nothing (locks and sessions are local)
        return {"root": self.root, "identity": self.identity, "ttl": self.ttl}

    def __setstate__(self, state: dict) -> None:
        self.__init__(state["root"], state["identity"], state["ttl"])

    def _path(self, protocol: str, fit_id: str) -> Path:
        return self.root / safe_id(protocol, "protocol") / f"{safe_id(fit_id, 'fit id')}.json"

    def _key(self, protocol: str, fit_id: str) -> str:
        return f"{protocol}/{fit_id}"

    def _fingerprint(self, protocol: str, fit_id: str) -> str:
        return fingerprint({"identity": self.identity, "protocol": protocol, "fit": fit_id})

    # -- runs ----------------------------------------------------------------------------
    def keep(self, protocol: str, fit_id: str, state: dict, owner: Any = None) -> None:
        """Keep ``state`` (a dict with an int ``"step"`` and ``"rows"``) as the run's
        latest step, and the step before it (if kept) as its previous one. With
        ``owner`` (a session), only if it still runs the run (:meth:`claim`)."""
        key = self._key(protocol, safe_id(fit_id, "fit id"))
        now = time.monotonic()
        with self._lock:
            self._check_owner(key, owner)
            self._forget_idle(now)
            held = self._runs.get(key)
            kept = [] if held is None else [s for s in held[1].values() if s is not None]
            before = [s for s in kept if s["step"] == state["step"] - 1]
            run = {"latest": state, "previous": before[0] if before else None}
            self._runs[key] = (now, run)
            if self.root is not None:
                body = {"identity": self.identity, "protocol": protocol, "fit": fit_id, **run}
                path = self._path(protocol, fit_id)
                write_checkpoint(path, protocol, self._fingerprint(protocol, fit_id), body)

    def load(self, protocol: str, fit_id: str, step: int | None = None) -> dict:
        """The run's state at ``step`` (its latest or previous step; ``None``: its
        latest), with the most rows processed of either (rows never go back).
        Changes nothing: the run's next :meth:`keep` goes on from there.

        Raises
        ------
        CheckpointError
            If this peer has no checkpoint of the run, or not of that step, or its
            file is corrupted or belongs to another peer or run.
        """
        key = self._key(protocol, safe_id(fit_id, "fit id"))
        with self._lock:
            now = time.monotonic()
            self._forget_idle(now)
            held = self._runs.get(key)
            run = held[1] if held is not None else self._read(protocol, fit_id)
            self._runs[key] = (now, run)
            states = [s for s in run.values() if s is not None]
            found = [s for s in states if s["step"] == step or step is None]
            if not found:
                have = sorted(s["step"] for s in states)
                raise CheckpointError(
                    f"run {fit_id} of peer {self.identity!r} keeps steps {have}, not step "
                    f"{step}; it cannot resume from there"
                )
            return {**found[0], "rows": max(int(s["rows"]) for s in states)}

    def _read(self, protocol: str, fit_id: str) -> dict:
        """The run's two steps from its file (lock held)."""
        missing = CheckpointError(
            f"no resumable {protocol} run {fit_id} of peer {self.identity!r} here (never "
            "started by this peer, finished, or not kept across a restart: see "
            "checkpoint_dir)"
        )
        if self.root is None:
            raise missing
        path = self._path(protocol, fit_id)
        if not path.exists():
            raise missing
        body = read_checkpoint(path, protocol, self._fingerprint(protocol, fit_id))
        if body.get("identity") != self.identity or body.get("fit") != fit_id:
            raise CheckpointError(f"checkpoint {path} belongs to another peer or run; refused")
        latest = body.get("latest")
        if not isinstance(latest, dict) or not isinstance(latest.get("step"), int):
            raise CheckpointError(f"checkpoint {path} is corrupted (no latest step)")
        return {"latest": latest, "previous": body.get("previous")}

    def has(self, protocol: str, fit_id: str) -> bool:
        """Whether a step of the run is kept here (in memory or in its file)."""
        key = self._key(protocol, safe_id(fit_id, "fit id"))
        with self._lock:
            held = key in self._runs
        return held or (self.root is not None and self._path(protocol, fit_id).exists())

    def discard(self, protocol: str, fit_id: str) -> None:
        """Forget a finished run (its files too)."""
        key = self._key(protocol, safe_id(fit_id, "fit id"))
        with self._lock:
            self._runs.pop(key, None)
            self._claims.release(key)
            self._parts.pop(key, None)
            self._parts_used.pop(key, None)
            if self.root is not None:
                remove_checkpoint(self._path(protocol, fit_id))
                shutil.rmtree(self._parts_folder(protocol, fit_id), ignore_errors=True)

    def __len__(self) -> int:
        """How many runs have their steps kept in memory (files are not counted)."""
        with self._lock:
            return len(self._runs)

    def forget_idle(self, now: float | None = None) -> int:
        """Drop the states kept in memory of runs idle for longer than ``ttl`` (their
        files, if any, stay), as of ``now`` (a :func:`time.monotonic` reading; default:
        the present). ``ftl serve`` sweeps with it as it sweeps expired sessions, so that
        an abandoned run's keys and weights leave memory then, not when the peer next
        keeps or loads a step. Returns how many runs were dropped."""
        with self._lock:
            return self._forget_idle(time.monotonic() if now is None else now)

    def _forget_idle(self, now: float) -> int:
        """Drop states kept in memory of runs idle for longer than ``ttl``, with their
        parts, parts of runs that kept no step and were idle as long, and the claims
        of sessions that ended (lock held)."""
        idle = [k for k, (used, _) in self._runs.items() if now - used > self.ttl]
        for key in idle:
            del self._runs[key]
        stale = [k for k, used in self._parts_used.items() if now - used > self.ttl]
        for key in {*idle, *(k for k in stale if k not in self._runs)}:
            self._parts.pop(key, None)
            self._parts_used.pop(key, None)
        self._claims.prune()
        return len(idle)

    # -- parts written once --------------------------------------------------------------
    def _parts_folder(self, protocol: str, fit_id: str) -> Path:
        return self._path(protocol, fit_id).with_suffix(".parts")

    def keep_part(
        self, protocol: str, fit_id: str, name: str, value: Any, owner: Any = None
    ) -> None:
        """Keep ``value`` (a state, :func:`state_to_json`) as part ``name`` of the run,
        beside its steps: what a run gathers piece by piece (a PSI run's batches) is
        written once, not again with every step. Keep a part before the step that
        names it, so that a kept step never lacks one. ``owner`` as for :meth:`keep`."""
        key = self._key(protocol, safe_id(fit_id, "fit id"))
        safe_id(name, "part")
        with self._lock:
            self._check_owner(key, owner)
            if self.root is None:
                self._parts.setdefault(key, {})[name] = value
                self._parts_used[key] = time.monotonic()
                return
            path = self._parts_folder(protocol, fit_id) / f"{name}.json"
            write_checkpoint(path, f"{protocol}.part", self._fingerprint(protocol, fit_id), value)

    def _check_owner(self, key: str, owner: Any) -> None:
        """Refuse to keep for a session that no longer runs the run (lock held;
        :meth:`~ftl.federation.checkpoint_claims.RunClaims.check`)."""
        self._claims.check(key, owner)

    def load_part(self, protocol: str, fit_id: str, name: str) -> Any:
        """Part ``name`` of the run (:meth:`keep_part`).

        Raises
        ------
        CheckpointError
            If it is not kept, or its file is corrupted or of another peer or run.
        """
        key = self._key(protocol, safe_id(fit_id, "fit id"))
        safe_id(name, "part")
        if self.root is None:
            with self._lock:
                value = self._parts.get(key, {}).get(name)
            if value is None:
                raise CheckpointError(f"run {fit_id} of peer {self.identity!r} lacks {name}")
            return value
        path = self._parts_folder(protocol, fit_id) / f"{name}.json"
        if not path.exists():
            raise CheckpointError(f"run {fit_id} of peer {self.identity!r} lacks {path}")
        return read_checkpoint(path, f"{protocol}.part", self._fingerprint(protocol, fit_id))

    # -- which session runs a fit --------------------------------------------------------
    def claim(self, protocol: str, fit_id: str, session: Any) -> Any:
        """Make ``session`` (a role object) the one that runs the fit; return the one
        it supersedes, if that is still alive. That one answers no more: its
        ``superseded`` flag is set (see :func:`refuse_superseded`)."""
        with self._lock:
            return self._claims.claim(self._key(protocol, fit_id), session)

    # -- alignments ----------------------------------------------------------------------
    def keep_alignment(self, alignment_id: str, rows: np.ndarray) -> None:
        """Keep an alignment table (aligned position -> local row) a run uses, once."""
        if self.root is None:
            return
        path = self.root / "alignments" / f"{safe_id(alignment_id, 'alignment id')}.json"
        if not path.exists():
            body = {"alignment": alignment_id, "rows": np.asarray(rows, dtype=np.int64)}
            write_checkpoint(path, "alignment", self._fingerprint("alignment", alignment_id), body)

    def reload_alignments(self, party: Any) -> int:
        """Give ``party`` back the kept alignment tables (at start-up); a file that
        cannot be read is logged and skipped. Returns how many were reloaded."""
        folder = None if self.root is None else self.root / "alignments"
        if folder is None or not folder.is_dir():
            return 0
        count = 0
        for path in sorted(folder.glob("*.json")):
            try:
                alignment_id = safe_id(path.stem, "alignment id")
                body = read_checkpoint(
                    path, "alignment", self._fingerprint("alignment", alignment_id)
                )
                party.remember_alignment(alignment_id, np.asarray(body["rows"], dtype=np.int64))
                count += 1
            except (CheckpointError, KeyError, TypeError, ValueError) as exc:
                log.error("cannot reload alignment %s: %s", path, exc)
        return count
