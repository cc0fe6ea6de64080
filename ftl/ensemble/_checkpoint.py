"""What a host keeps of a SecureBoost fit at every step, and how a resume restores it.

:class:`ResumableHost` is mixed into :class:`~ftl.ensemble.host.BoostingHost`. A
step is the end of a boosting iteration (all of its trees, one per class, and the
validation walk of early stopping); step 0 is the open. Guests name each fit
(``fit_id``); where the party keeps checkpoints (``ftl serve``'s ``checkpoint_dir``,
or a simulation's driver, :mod:`ftl.federation.checkpoints`), the host keeps its
state at the open and at every ``sbt.iteration_end``, before it answers: its secret
feature order (the pseudonyms), its split table (column and real threshold per
opaque id), the validation walk so far, its tree counters, and what the fit is
bound to -- the peer, the parameters, the guest's public key, the training and
validation rows and its own features. The binning is not kept: it is drawn again
from the fit's seed on the same rows.

A session opened with ``sbt.resume`` restores the step the guest names (the host's
latest or the one before: the host keeps a step before the guest does), checked
again against the policy (row minimum; every tree started, replayed ones too,
counts against the pass cap ``max_epochs``), not charged again, and supersedes the
session that ran the fit before. A step is resumed at most :data:`RESUMES_PER_STEP`
times, and each of the host's trees is started at most :data:`STARTS_PER_TREE` times
(the guest could otherwise keep steps that grew no tree, and resume each once).
"""

from __future__ import annotations

import numpy as np

from ftl.data.fit_checkpoint import count_resume, load_bound_step, take_over
from ftl.ensemble._decisions import SplitTable, WalkLedger
from ftl.exceptions import CheckpointError
from ftl.federation.checkpoints import checkpoints_of, digest, fingerprint, safe_id

__all__ = ["PROTOCOL", "RESUMES_PER_STEP", "STARTS_PER_TREE", "ResumableHost", "splits_digest"]

#: The host's checkpoints of its fits are kept under this name.
PROTOCOL = "sbt"
#: How often one step of a fit may be resumed. A resumed step grows the next
#: iteration's trees again, each with new gradients the guest chooses: every
#: resume of a step gives a deviating guest the histograms of one more
#: iteration's trees beyond what ``max_trees`` declares (docs/protocols.md §7).
RESUMES_PER_STEP = 1
#: How often the host starts each of its trees (its ``k``-th tree of the fit): once,
#: and once more after a resume. A step that grew no tree at this host (a guest-only
#: iteration, or a deviating guest's empty ``iteration_end``) leaves the host where
#: it was, so counting resumes per step alone would not bound a tree's histograms.
STARTS_PER_TREE = 1 + RESUMES_PER_STEP


def splits_digest(ids) -> str:
    """SHA-256 of a host's split ids (sorted): what a resuming guest checks."""
    return fingerprint(sorted(str(i) for i in ids))


class ResumableHost:
    """A host's steps of one fit: what it keeps at each, and how it goes back to one.

    The class using it has ``party``, ``name``, ``guard``, ``order``, ``splits``,
    ``ledger``, ``n_trees``, ``tree`` and ``trees_started``.
    """

    #: Set when a resume (in another session) takes this session's fit over.
    superseded = False

    def _bind(self, request, features: np.ndarray) -> None:
        """Name the fit's checkpoints and what they are bound to (before any budget:
        the ids name files)."""
        params = request["params"]
        self.fit_id = params.get("fit_id")
        self.checkpoints = None if self.fit_id is None else checkpoints_of(self.party)
        if self.checkpoints is not None:
            safe_id(self.fit_id, "fit id")
            safe_id(request["alignment"], "alignment id")
        self.bound = {
            "identity": self.guard.identity,
            "params": fingerprint(params),
            "guest_key": fingerprint(request["public_key"]),
            "positions": digest(np.asarray(request["positions"], dtype=np.int64)),
            "validation": digest(np.asarray(request["validation"], dtype=np.int64)),
            "features": digest(features),
        }
        self.step = 0

    def _load_step(self, step: int, n_rows: int, n_features: int) -> dict:
        """Step ``step`` of this peer's fit (same parameters, key, rows and data),
        checked again against the policy, not charged again; each step resumes at
        most :data:`RESUMES_PER_STEP` times."""
        state = load_bound_step(self, PROTOCOL, step)
        self.guard.check_fit_rows(PROTOCOL, n_rows, n_features)
        # the trees started, those after the step too (kept as each one starts)
        state["rows"] = max(int(state["rows"]), sum(self._starts()))
        self.guard.cap("epochs", state["rows"])
        count_resume(self, PROTOCOL, step, RESUMES_PER_STEP, "docs/protocols.md §7")
        order = np.asarray(state["order"], dtype=np.intp)
        if sorted(order.tolist()) != list(range(n_features)):
            raise CheckpointError(f"{self.name}: the kept feature order is not of this fit")
        return state

    def _starts(self) -> list[int]:
        """How often each of this host's trees of the fit was started (kept as each
        one starts, so that a restart mid-tree does not forget it)."""
        try:
            kept = self.checkpoints.load_part(PROTOCOL, self.fit_id, "starts")
        except CheckpointError:
            return []
        return [int(n) for n in kept["starts"]]

    def _count_tree(self) -> None:
        """One more tree started: one more pass over the guest's values of every
        training row, capped by the policy's ``max_epochs`` with the trees a resume
        grows again; this host's next tree at most :data:`STARTS_PER_TREE` times."""
        starts = [] if self.checkpoints is None else self._starts()
        k = self.n_trees
        starts += [0] * (k + 1 - len(starts))
        if starts[k] >= STARTS_PER_TREE:
            raise CheckpointError(
                f"{self.name}: this host's tree {k + 1} of fit {self.fit_id} was started "
                f"{starts[k]} times already; refused (docs/protocols.md §7)"
            )
        self.guard.cap("epochs", self.trees_started + 1)
        self.trees_started += 1
        if self.checkpoints is not None:
            starts[k] += 1
            self.checkpoints.keep_part(
                PROTOCOL, self.fit_id, "starts", {"starts": starts}, owner=self
            )

    def _restore_step(self, state: dict) -> None:
        """Go back to a loaded step: split table, walk and tree counters."""
        table = state["splits"]
        self.splits = SplitTable(
            ids=list(table["ids"]),
            tree=np.asarray(table["tree"], dtype=np.int64),
            depth=np.asarray(table["depth"], dtype=np.int64),
            feature=np.asarray(table["feature"], dtype=np.int64),
            threshold=np.asarray(table["threshold"], dtype=np.float64),
        )
        self.ledger = WalkLedger.from_state(state["ledger"])
        self.n_trees, self.tree = int(state["n_trees"]), int(state["tree"])
        self.trees_started, self.step = int(state["rows"]), int(state["step"])

    def _take_over(self, request, opening: bool) -> None:
        """Run the fit in this session (a resume supersedes the one before, whose
        trees started count here too); at the open, keep step 0."""
        if self.checkpoints is None:
            return
        previous = take_over(self, PROTOCOL, request, self.party, opening)
        if previous is not None:
            self.trees_started = max(self.trees_started, previous.trees_started)
        if opening:
            self._keep()

    def _keep(self) -> None:
        """Keep this step, while this session runs the fit (``rows``: the trees
        started, which never go back)."""
        table = self.splits
        state = {
            "step": self.step,
            "rows": self.trees_started,
            "bound": self.bound,
            "order": np.asarray(self.order, dtype=np.int64),
            "splits": {
                "ids": list(table.ids),
                "tree": table.tree,
                "depth": table.depth,
                "feature": table.feature,
                "threshold": table.threshold,
            },
            "ledger": self.ledger.state(),
            "n_trees": self.n_trees,
            "tree": self.tree,
        }
        self.checkpoints.keep(PROTOCOL, self.fit_id, state, owner=self)

    def _end_step(self, step: int) -> None:
        """The guest ended the iteration that leads to ``step``: keep it."""
        if self.checkpoints is None:
            raise ValueError(f"{self.name}: this fit keeps no steps")
        if step != self.step + 1:
            raise ValueError(f"{self.name}: step {step} does not follow step {self.step}")
        self.step = step
        self._keep()

    def _finished(self) -> None:
        """A finished fit cannot be resumed."""
        if self.checkpoints is not None:
            self.checkpoints.discard(PROTOCOL, self.fit_id)
