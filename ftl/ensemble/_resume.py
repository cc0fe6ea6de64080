"""How the guest keeps its state after every boosting iteration and resumes a fit.

:class:`ResumableBoosting` is mixed into :class:`~ftl.ensemble.guest.BoostingGuest`.
A step is the end of a boosting iteration: all of its trees (one per class, so a
fit of ``K`` classes keeps a step every ``K`` trees, and a crash mid-iteration
grows that iteration's trees again) and, with early stopping, the validation walk
of them; step 0 is the open. After the sessions open and after every iteration --
once every host that keeps steps has kept its own (``sbt.iteration_end``) -- the
guest keeps its state: the protocol parameters (the binning seed, the tree plan,
the fit id), its own key pair, the hosts' bins per feature, the trees so far
(with the hosts' opaque split ids), the training rows' raw predictions, the
scores and validation raw predictions of early stopping and whether it stopped;
in memory, and with ``checkpoint_dir`` in ``<checkpoint_dir>/sbt-<fingerprint>.json``
(:class:`BoostingCheckpoint`). A fit resumes from it

- when ``fit`` starts with a checkpoint of the same fit (a restarted driver): the
  guest restores its state and re-opens every host's session as a resume
  (``sbt.resume``); a host that cannot resume (its state is gone, or it resumed
  that step already) makes the fit start afresh, with a warning;
- when a host's session is lost mid-fit (its restarted ``ftl serve`` refuses the
  next call as an unknown session): the guest goes back to its last step and
  resumes every host there, once per step (one log line).

A resumed host answers with the step it restored, its bins per feature and the
digest of its split ids; the guest refuses a host whose answer differs from what
it kept (the ids in its own trees). The host's part:
:mod:`ftl.ensemble._checkpoint`; design and protection:
:mod:`ftl.federation.checkpoints`.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from ftl.data.fit_checkpoint import ResumableRun, StepCheckpoint, fit_fingerprint
from ftl.ensemble import _messages as msg
from ftl.ensemble._boosting import BoostingResult
from ftl.ensemble._checkpoint import splits_digest
from ftl.ensemble._tree import Tree
from ftl.exceptions import CheckpointError, ProtocolError
from ftl.federation.json_forms import key_from_json, key_to_json
from ftl.federation.messages import Message

__all__ = ["BoostingCheckpoint", "ResumableBoosting", "boosting_checkpoint"]

#: The kind of the guest's checkpoint files.
KIND = "sbt.guest"
#: The node arrays of a tree.
_TREE_FIELDS = tuple(Tree.__dataclass_fields__)


def boosting_checkpoint(estimator: Any, handle: Any, y: np.ndarray) -> BoostingCheckpoint | None:
    """The checkpoint of fitting ``estimator`` on ``handle`` with the encoded
    targets ``y``, or ``None`` without ``checkpoint_dir``."""
    folder = getattr(estimator, "checkpoint_dir", None)
    if folder is None:
        return None
    return BoostingCheckpoint(folder, fit_fingerprint(estimator, handle, y))


class BoostingCheckpoint(StepCheckpoint):
    """The guest's file of one boosting fit, ``sbt-<fingerprint>.json``: its state
    after the last iteration, with the binning seed the fit drew.

    Parameters
    ----------
    folder, fingerprint
        As for :class:`~ftl.data.fit_checkpoint.GuestCheckpoint`.
    """

    def __init__(self, folder, fingerprint: str):
        super().__init__(folder, fingerprint, KIND, "sbt")

    @property
    def seed(self) -> int | None:
        """The binning seed the kept fit drew (``None``: nothing kept)."""
        if self.saved is None:
            return None
        seed = self.saved.get("params", {}).get("seed")
        if isinstance(seed, bool) or not isinstance(seed, int):
            raise CheckpointError(f"checkpoint {self.path} is corrupted (no seed)")
        return seed


def _trees_to_state(trees: list[list[Tree]]) -> dict:
    """The trees as a checkpoint keeps them: each node array of every tree, in
    order, concatenated (a few arrays, whatever the number of trees)."""
    flat = [tree for per_iteration in trees for tree in per_iteration]
    return {
        "iterations": len(trees),
        "n_nodes": np.array([tree.value.shape[0] for tree in flat], dtype=np.int64),
        **{
            name: np.concatenate([getattr(tree, name) for tree in flat]) if flat else []
            for name in _TREE_FIELDS
        },
    }


def _trees_from_state(state: dict) -> list[list[Tree]]:
    """The inverse of :func:`_trees_to_state`."""
    n_nodes = np.asarray(state["n_nodes"], dtype=np.int64)
    ends = np.cumsum(n_nodes)
    fields = {name: np.asarray(state[name]) for name in _TREE_FIELDS}
    if n_nodes.size and any(a.shape != (int(ends[-1]),) for a in fields.values()):
        raise ValueError("the kept trees' node arrays differ in length")
    flat = [
        Tree(**{name: a[end - n : end].copy() for name, a in fields.items()})
        for n, end in zip(n_nodes.tolist(), ends.tolist(), strict=True)
    ]
    iterations = int(state["iterations"])
    if iterations == 0:
        return []
    per = len(flat) // iterations
    if per * iterations != len(flat):
        raise ValueError("the kept trees do not make whole iterations")
    return [flat[i * per : (i + 1) * per] for i in range(iterations)]


def _host_split_ids(trees: list, block: int) -> list[str]:
    """The split ids of host ``block``'s nodes in ``trees``."""
    return [
        str(tree.split_id[i])
        for per_iteration in trees
        for tree in per_iteration
        for i in np.flatnonzero(~tree.is_leaf & (tree.block == block))
    ]


class ResumableBoosting(ResumableRun):
    """The guest's steps: what it keeps after each, and how it goes back to one.

    The class using it has ``checkpoint`` (a :class:`BoostingCheckpoint` or
    ``None``), ``params``, ``own_key``, ``remote`` (the hosts' blocks),
    ``stepping`` (which hosts keep steps), ``stopping`` (early stopping or
    ``None``), ``alignment``, ``channel`` and ``_open_sessions(resume_step=None)``.
    """

    def _reset_steps(self) -> None:
        """No step yet: no tree, not stopped."""
        self.step = -1
        self.trees: list[list] = []
        self.raw: np.ndarray | None = None
        self.stopped = False
        self._kept_hosts: list[dict] | None = None
        self._last_state: dict | None = None
        self._resumed: set[int] = set()

    @property
    def progress(self) -> BoostingResult | None:
        """The iterations grown so far, for the boosting loop to go on from."""
        if not self.trees:
            return None
        return BoostingResult(None, self.trees, self.raw)

    def _scores(self) -> dict | None:
        """Early stopping's scores so far and the validation rows' raw predictions."""
        stopping = self.stopping
        if stopping is None:
            return None
        return {
            "train": list(stopping.train_score),
            "validation": list(stopping.validation_score),
            "raw_val": None if stopping.raw_val is None else stopping.raw_val.copy(),
        }

    def _set_scores(self, scores: dict | None) -> None:
        """Early stopping back at ``scores`` (:meth:`_scores`)."""
        if (scores is None) != (self.stopping is None):
            raise ValueError("early stopping differs from the kept fit's")
        if scores is not None:
            self.stopping.train_score = [float(s) for s in scores["train"]]
            self.stopping.validation_score = [float(s) for s in scores["validation"]]
            if scores["raw_val"] is not None:
                self.stopping.raw_val = np.array(scores["raw_val"], dtype=np.float64)

    def _state(self) -> dict:
        """Everything the guest holds at this step, as a checkpoint keeps it."""
        return {
            "step": self.step,
            "params": self.params,
            "own_key": key_to_json(self.own_key),
            "hosts": [
                {"n_bins": block.n_bins_non_missing.copy(), "splits": self._splits_of(party)}
                for party, block in enumerate(self.remote, start=1)
            ],
            "trees": _trees_to_state(self.trees),
            "raw": None if self.raw is None else np.array(self.raw),
            "stopped": self.stopped,
            "scores": self._scores(),
        }

    def _splits_of(self, party: int) -> str:
        return splits_digest(_host_split_ids(self.trees, party))

    def _restore_state(self, state: dict) -> None:
        """Go back to a step kept by :meth:`_state` (before the sessions re-open)."""
        self.params = p = dict(state["params"])
        insecure = bool(p.get("insecure_for_tests", False))
        self.own_key = key_from_json(state["own_key"], insecure, p.get("n_jobs"))
        self.trees = _trees_from_state(state["trees"])
        self.raw = None if state["raw"] is None else np.array(state["raw"], dtype=np.float64)
        self.stopped = bool(state["stopped"])
        self._kept_hosts = [dict(host) for host in state["hosts"]]
        if len(self._kept_hosts) != len(self.alignment.hosts):
            raise ValueError("the kept fit has other hosts")
        self._set_scores(state["scores"])
        self.step = int(state["step"])

    def _check_resumed(self, party: int, reply: Message, step: int) -> None:
        """Refuse a host whose resumed session is not the one the guest kept: another
        step, other bins, or other split ids than those in the guest's trees."""
        name = self.alignment.hosts[party - 1].name
        kept = self._kept_hosts[party - 1]
        if (
            reply.type != msg.OPENED_STEPS.name
            or reply["step"] != step
            or not np.array_equal(reply["n_bins_non_missing"], kept["n_bins"])
            or reply["splits"] != kept["splits"]
        ):
            raise ProtocolError(
                f"{name} resumed the fit at another step, or with other bins or splits than "
                "the guest kept; refused"
            )

    def _end_iteration(self) -> None:
        """Every host that keeps steps keeps the next one, then the guest keeps it."""
        for block, keeps in zip(self.remote, self.stepping, strict=True):
            if keeps:
                self.channel.call(
                    block.endpoint,
                    "sbt.host.iteration_end",
                    Message(msg.ITERATION_END.name, {"step": self.step + 1}),
                )
        self._keep()

    def _start_sessions(self) -> None:
        """Open the hosts' sessions (step 0), or resume them from the checkpoint."""
        saved = None if self.checkpoint is None else self.checkpoint.saved
        self._reset_steps()
        if saved is None:
            self._open_or_resume(None)
            return
        fresh = self.params, self._scores()

        def start_over() -> None:
            self.params = fresh[0]
            self._set_scores(fresh[1])
            self._reset_steps()

        self._restore(saved)
        self._open_or_resume(start_over)
