"""How a PSI host keeps its part of a named run and resumes it (``psi.resume``).

A guest that names its run (``psi.start``, a random run id) lets every host keep
its state where the party keeps checkpoints (:func:`~ftl.federation.checkpoints.
checkpoints_of`: ``ftl serve``'s ``checkpoint_dir``, in memory without one, or
the folder a simulation's driver attaches), under the authenticated peer's own
folder:

- once, at the start: its secret order (and, in cardinality mode, the secret
  shuffle of its final reply), as parts of the run;
- per batch the guest sends, *before* the host acknowledges it: the batch as the
  host stores it (``b*a*P(x)``, the guest's re-blinded ``a*b*P(y)`` or its tags),
  as a part written once;
- after every batch, the small state: the secret scalar ``b``, how far each list
  has come, and what the run is bound to (the peer, the open's fields, a digest
  of the host's ids).

A ``psi.resume`` re-opens the run exactly there. **The host decides where:** the
guest cannot name a step, so it can never go back to before a batch it sent. A
resumed run has the same scalar, order and shuffle, the same values received, and
the same counters, so it sends nothing it would not have sent in the run it
continues, and every value it sends again is the same byte for byte: the guest
cannot obtain the host's points under two scalars, have its own points blinded
twice, commit a second set after it saw the host's points, or have the
intersection counted again with other values. A resume is the same run, so it is
not charged again, but the host checks the guest's set size against its current
minimum intersection size again; the intersection is counted again from the same
values (the same count). Only the peer that started a run may resume it (its
folder, and the identity the state is bound to); a resume supersedes any live
session of the run; a finished run (committed, or its cardinality reply served
to the end) is removed, so it can never be resumed.
"""

from __future__ import annotations

import hashlib
from typing import Any

import numpy as np

from ftl.exceptions import CheckpointError
from ftl.federation.checkpoints import checkpoints_of, fingerprint, refuse_superseded, safe_id
from ftl.federation.messages import Message
from ftl.psi.curve import canonical_ids

__all__ = ["ResumableHost", "ids_digest", "points_from_json", "points_to_json"]

#: Under which protocol name the runs are kept (``<peer folder>/psi/<run id>.json``).
PROTOCOL_KEY = "psi"
#: The request fields a run is bound to (those of ``psi.open``).
OPEN_FIELDS = ("salt", "n_guest", "mode", "how", "order", "n_hosts", "batch_size")


def points_to_json(start: int, points: np.ndarray) -> dict:
    """A batch of points (or tags) as a compact part: hex, not a list of bytes."""
    points = np.ascontiguousarray(points, dtype=np.uint8)
    return {"start": int(start), "n": len(points), "hex": points.tobytes().hex()}


def points_from_json(part: Any, start: int, width: int) -> np.ndarray:
    """The batch kept by :func:`points_to_json`, checked to be the one at ``start``."""
    try:
        raw = bytes.fromhex(part["hex"])
        points = np.frombuffer(bytearray(raw), dtype=np.uint8).reshape(int(part["n"]), width)
        if int(part["start"]) != start:
            raise ValueError(f"batch at {part['start']}, expected {start}")
    except (KeyError, TypeError, ValueError) as exc:
        raise CheckpointError(f"a kept PSI batch is corrupted ({exc})") from None
    return points


def ids_digest(ids: Any) -> str:
    """SHA-256 of canonical ids (length-prefixed): binds a run to a party's data."""
    h = hashlib.sha256()
    for item in canonical_ids(ids):
        h.update(len(item).to_bytes(8, "little"))
        h.update(item)
    return h.hexdigest()


class ResumableHost:
    """The host's keeping and resuming, mixed into :class:`~ftl.psi.host.PSIHost`.

    The class using it has the scalar ``_beta``, the orders ``_order`` and
    ``_shuffle``, the arrays ``_guest_doubles``, ``_own_doubles`` and ``_tags`` and
    their counters ``_n_received``, ``_n_sent`` and ``_n_reblinded``.
    """

    #: Set when a resume (in another session) takes this session's run over.
    superseded = False
    #: The run's id (``psi.start``/``psi.resume``); ``None``: an unnamed run.
    run_id: str | None = None
    checkpoints: Any = None

    # -- the run ---------------------------------------------------------------------
    def _name_run(self, party: Any, request: Message, identity: str) -> None:
        """Bind a named run to this peer, its open and the host's ids (before any budget)."""
        if request.type == "psi.open":
            return
        self.run_id = safe_id(request["run_id"], "PSI run id")
        self.checkpoints = checkpoints_of(party)
        # The salt as hex: a fingerprint would count bytes by their type only, and a
        # resume under another salt would hash the host's ids anew under its scalar.
        opened = {k: request[k] for k in OPEN_FIELDS} | {"salt": request["salt"].hex()}
        self._bound = {
            "identity": identity,
            "open": fingerprint(opened),
            "ids": ids_digest(self._ids),
        }

    def _take_over(self) -> None:
        """This session now runs the named run; a live session that ran it stops.

        Claimed *before* a resume reads the kept state, so the session it
        supersedes answers nothing after that state is read.
        """
        if self.checkpoints is None:
            return
        self.checkpoints.claim(PROTOCOL_KEY, self.run_id, self)

    def _check_current(self) -> None:
        """Refuse every operation of a session whose run was resumed elsewhere."""
        refuse_superseded(self, "PSI host", "run", "run_id")

    def _keep_secrets(self) -> None:
        """At the start of a named run: the secret orders once, then step 0."""
        if self.checkpoints is None:
            return
        self._kept: dict[str, list[int]] = {"guest": [], "own": [], "tags": []}
        self._keep_part("order", {"order": self._order})
        if self._shuffle is not None:
            self._keep_part("shuffle", {"order": self._shuffle})
        self._step = 0
        self._keep_state()

    def _keep_batch(self, kind: str, start: int, values: np.ndarray) -> None:
        """A batch the guest sent, kept before the host acknowledges it."""
        if self.checkpoints is None:
            return
        self._keep_part(f"{kind}-{start}", points_to_json(start, values))
        self._kept[kind].append(start)
        self._keep_state()

    def _keep_progress(self) -> None:
        """The host sent further than before (its own points): keep the counter."""
        if self.checkpoints is not None:
            self._keep_state()

    def _keep_state(self) -> None:
        state = {
            "step": self._step,
            "rows": 0,
            "bound": self._bound,
            "beta": self._beta.hex(),
            "received": self._n_received,
            "sent": self._n_sent,
            "reblinded": self._n_reblinded,
            "batches": {k: list(v) for k, v in self._kept.items()},
        }
        self.checkpoints.keep(PROTOCOL_KEY, self.run_id, state, owner=self)
        self._step += 1

    def _keep_part(self, name: str, value: Any) -> None:
        # owner: a request in flight in a session a resume superseded keeps nothing
        self.checkpoints.keep_part(PROTOCOL_KEY, self.run_id, name, value, owner=self)

    def _finish(self) -> None:
        """The run is over: it can never be resumed."""
        if self.checkpoints is not None:
            self.checkpoints.discard(PROTOCOL_KEY, self.run_id)

    # -- resuming ----------------------------------------------------------------------
    def _restore(self) -> None:
        """Go on where this host's own checkpoint of the run left it."""
        if self.checkpoints is None:
            raise CheckpointError("PSI host: this party keeps no checkpoints to resume from")
        state = self.checkpoints.load(PROTOCOL_KEY, self.run_id)
        if state.get("bound") != self._bound:
            raise CheckpointError(
                f"PSI host: run {self.run_id} ran with another peer, other parameters or "
                "other ids than this resume asks for; refused"
            )
        try:
            self._beta = bytes.fromhex(state["beta"])
            self._order = self._load_order("order", self.n_host)
            if self.mode == "cardinality":
                self._shuffle = self._load_order("shuffle", self.n_guest)
            kept = {k: [int(s) for s in state["batches"][k]] for k in ("guest", "own", "tags")}
        except (KeyError, TypeError, ValueError) as exc:
            raise CheckpointError(f"PSI host: run {self.run_id} is corrupted ({exc})") from None
        self._n_received = self._load_batches("guest", kept, self._guest_doubles)
        self._n_reblinded = self._load_batches(
            "tags" if self.mode == "cardinality" else "own",
            kept,
            self._tags if self.mode == "cardinality" else self._own_doubles,
        )
        self._n_sent = int(state["sent"])
        if (self._n_received, self._n_reblinded) != (state["received"], state["reblinded"]):
            raise CheckpointError(f"PSI host: run {self.run_id} lacks some of its batches")
        self._kept, self._step = kept, int(state["step"]) + 1

    def _load_order(self, name: str, n: int) -> np.ndarray:
        order = np.asarray(
            self.checkpoints.load_part(PROTOCOL_KEY, self.run_id, name)["order"], dtype=np.int64
        )
        if order.shape != (n,) or not np.array_equal(np.sort(order), np.arange(n)):
            raise CheckpointError(f"PSI host: the kept {name} of run {self.run_id} is corrupted")
        return order

    def _load_batches(self, kind: str, kept: dict, into: np.ndarray) -> int:
        """Put the kept batches of ``kind`` back into ``into``; how many rows they hold."""
        count = 0
        for start in kept[kind]:
            part = self.checkpoints.load_part(PROTOCOL_KEY, self.run_id, f"{kind}-{start}")
            values = points_from_json(part, start, into.shape[1])
            if start != count or start + len(values) > len(into):
                raise CheckpointError(f"PSI host: the kept batches of run {self.run_id} overlap")
            into[start : start + len(values)] = values
            count += len(values)
        return count
