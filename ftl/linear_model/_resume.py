"""How the guest keeps its state at every step and resumes a fit from it.

:class:`ResumableGuest` is mixed into :class:`~ftl.linear_model.guest.LogisticGuest`.
After the sessions open (step 0) and after every completed L-BFGS iteration or
epoch, the guest keeps its state (:meth:`~ResumableGuest._keep`): in memory, and
in its checkpoint file with ``checkpoint_dir``. A fit resumes from it

- when ``fit`` starts with a checkpoint of the same fit (a restarted driver): the
  guest restores its state and re-opens every host's session as a resume
  (``lr.resume``); a host that cannot resume (its state is gone) makes the model
  start afresh, with a warning;
- when a host's session is lost mid-fit (its restarted ``ftl serve`` refuses the
  next call as an unknown session): the guest goes back to its last step and
  resumes every host there, once per step (one log line).

Design and protection: :mod:`ftl.federation.checkpoints`.
"""

from __future__ import annotations

import logging
from contextlib import ExitStack

import numpy as np

from ftl.data.fit_checkpoint import ResumableRun, local_party_checkpoints
from ftl.federation.json_forms import key_from_json, key_to_json
from ftl.linear_model import _lbfgs

__all__ = ["ResumableGuest"]

log = logging.getLogger("ftl.checkpoint")


class ResumableGuest(ResumableRun):
    """The guest's steps: what it keeps after each, and how it goes back to one.

    The class using it sets ``checkpoint`` (a
    :class:`~ftl.linear_model._checkpoint.ModelCheckpoint` or ``None``) and has the
    guest's ``block``, ``params``, ``own`` key, ``rng``, ``hosts`` and ``channel``,
    and ``_open_sessions(resume_step=None)``.
    """

    def _reset_steps(self) -> None:
        """No step yet: an empty history, L-BFGS not started, no epoch run."""
        self.step = -1
        self.history: list = []
        self.passes, self.pass_loss = 0, None
        self.epoch, self.converged = 0, False
        self.boundary: _lbfgs.Boundary | None = None
        self._last_state: dict | None = None
        self._resumed: set[int] = set()

    # -- the state at a step -------------------------------------------------------------
    def _state(self) -> dict:
        """Everything the guest holds at this step, as a checkpoint keeps it."""
        b = self.boundary
        return {
            "step": self.step,
            "params": self.params,
            "own_key": key_to_json(self.own),
            "block": self.block.state(),
            "history": [dict(entry) for entry in self.history],
            "passes": self.passes,
            "epoch": self.epoch,
            "converged": self.converged,
            "rng": self.rng.bit_generator.state,
            "lbfgs": None
            if b is None
            else {"gram": b.gram.copy(), "n_pairs": b.n_pairs, "iteration": b.iteration},
        }

    def _restore_state(self, state: dict) -> None:
        """Go back to a step kept by :meth:`_state` (before the sessions re-open)."""
        self.params = dict(state["params"])
        insecure = bool(self.params.get("insecure_for_tests", False))
        self.own = key_from_json(state["own_key"], insecure, self.params.get("n_jobs"))
        self.block.restore(state["block"])
        self.history = [dict(entry) for entry in state["history"]]
        self.passes, self.pass_loss = int(state["passes"]), None
        self.epoch, self.converged = int(state["epoch"]), bool(state["converged"])
        self.rng.bit_generator.state = state["rng"]
        b = state["lbfgs"]
        self.boundary = (
            None
            if b is None
            else _lbfgs.Boundary(
                np.asarray(b["gram"], dtype=np.float64), int(b["n_pairs"]), int(b["iteration"])
            )
        )
        self.step = int(state["step"])

    # -- starting and resuming -----------------------------------------------------------
    def _local_host_checkpoints(self) -> ExitStack:
        """With a checkpoint file, the in-process hosts (a simulation's, whose data
        the driver holds anyway) keep their checkpoints next to it."""
        return local_party_checkpoints(self.checkpoint, self.hosts)

    def _start_sessions(self) -> None:
        """Open the hosts' sessions (step 0), or resume them from the checkpoint."""
        saved = None if self.checkpoint is None else self.checkpoint.saved
        if saved is None:
            self._reset_steps()
            self._open_or_resume(None)
            return
        fresh = self.block.state(), self.rng.bit_generator.state, self.params

        def start_over() -> None:
            self.block.restore(fresh[0])
            self.rng.bit_generator.state, self.params = fresh[1:]
            self._reset_steps()

        self._restore(saved)
        self._open_or_resume(start_over)
