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
import warnings
from collections.abc import Callable
from contextlib import ExitStack

import numpy as np

from ftl.exceptions import CheckpointError, PartyUnavailableError, ProtocolError
from ftl.federation.budget import guard_of
from ftl.federation.channel import new_session_id
from ftl.federation.checkpoints import attached
from ftl.federation.json_forms import key_from_json, key_to_json
from ftl.federation.service import PartyService
from ftl.linear_model import _lbfgs

__all__ = ["ResumableGuest"]

log = logging.getLogger("ftl.checkpoint")


class ResumableGuest:
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

    def _restore(self, state: dict) -> None:
        """Go back to a step kept by :meth:`_state` (before the sessions re-open)."""
        try:
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
        except (KeyError, TypeError, ValueError) as exc:
            raise CheckpointError(
                f"the guest's checkpoint is not a state of this fit ({exc})"
            ) from None
        self._last_state = state

    def _keep(self) -> None:
        """The next step is reached: keep the state (in the checkpoint file too)."""
        self.step += 1
        self._last_state = self._state()
        if self.checkpoint is not None:
            self.checkpoint.keep(self._last_state)

    # -- starting and resuming -----------------------------------------------------------
    def _local_host_checkpoints(self) -> ExitStack:
        """With a checkpoint file, the in-process hosts (a simulation's, whose data
        the driver holds anyway) keep their checkpoints next to it."""
        stack = ExitStack()
        if self.checkpoint is not None:
            for host in self.hosts:
                if isinstance(host.endpoint, PartyService):
                    store = self.checkpoint.party_store(host.name, guard_of(host).identity)
                    stack.enter_context(attached(host, store))
        return stack

    def _start_sessions(self) -> None:
        """Open the hosts' sessions (step 0), or resume them from the checkpoint."""
        saved = None if self.checkpoint is None else self.checkpoint.saved
        if saved is not None:
            fresh = self.block.state(), self.rng.bit_generator.state, self.params
            self._restore(saved)
            try:
                self._open_sessions(resume_step=self.step)
                return
            except (ValueError, ProtocolError) as exc:
                warnings.warn(
                    f"the fit's checkpoint (step {self.step}) cannot be resumed ({exc}); this "
                    "model starts afresh",
                    UserWarning,
                    stacklevel=5,
                )
                self.channel.session = new_session_id()
                self.block.restore(fresh[0])
                self.rng.bit_generator.state, self.params = fresh[1:]
        self._reset_steps()
        self._open_sessions()
        self._keep()

    def _run_resuming(self, run: Callable[[], list]) -> list:
        """``run()`` (the training loop), going back to the last step and resuming the
        hosts' sessions there when one is lost mid-fit; once per step."""
        while True:
            try:
                return run()
            except ProtocolError as exc:
                self._resume_after(exc)

    def _resume_after(self, exc: Exception) -> None:
        state = self._last_state
        if state is None or state["step"] in self._resumed:
            raise exc
        self._resumed.add(state["step"])
        log.warning(
            "%s; resuming the fit at its last step (%d) in a new session", exc, state["step"]
        )
        self.channel.session = new_session_id()
        self._restore(state)
        try:
            self._open_sessions(resume_step=self.step)
        except (ValueError, ProtocolError, PartyUnavailableError) as failed:
            log.warning("the fit cannot be resumed: %s", failed)
            raise exc from failed
