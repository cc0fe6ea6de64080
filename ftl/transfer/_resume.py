"""How the source keeps its state at every epoch and resumes a transfer fit from it.

:class:`ResumableSource` is mixed into :class:`~ftl.transfer.source.TransferSource`.
After the target's session opens (step 0) and after every epoch, the source keeps
its state (:meth:`~ResumableSource._keep`): its pretrained hidden layers, output
layer, optimiser, epoch counter and the weights at the epoch's start, the
batch-order generator, the history, its own key pair, the target's public key and
the protocol parameters (with the seed and fit id sent to the target) -- in memory,
and in its checkpoint file ``<checkpoint_dir>/ftl-<fingerprint>.json`` with
``checkpoint_dir`` (:class:`SourceCheckpoint`). A fit
resumes from it

- when ``fit`` starts with a checkpoint of the same fit (a restarted driver): the
  source restores its state without pre-training again and re-opens the target's
  session as a resume (``ftl.resume``); a target that cannot resume (its state is
  gone, or it resumed that step already) makes the fit start afresh, with a
  warning;
- when the target's session is lost mid-fit (its restarted ``ftl serve`` refuses
  the next call as an unknown session): the source goes back to its last step and
  resumes the target there, once per step (one log line).

The target keeps its own part (:class:`~ftl.transfer.target.TransferTarget`): it
replays the batches of a resumed step in their order, and resumes each step at
most once. Design and protection: :mod:`ftl.federation.checkpoints`.
"""

from __future__ import annotations

import numpy as np

from ftl.data.fit_checkpoint import ResumableRun, StepCheckpoint
from ftl.federation.json_forms import key_from_json, key_to_json
from ftl.transfer._network import HiddenStack, make_optimizer

__all__ = ["ResumableSource", "SourceCheckpoint"]

#: The kind of the source's checkpoint files.
KIND = "ftl.source"


class SourceCheckpoint(StepCheckpoint):
    """The source's checkpoint file of one fit: its state at the last step.

    Parameters
    ----------
    folder : path
        The estimator's ``checkpoint_dir``.
    fingerprint : str
        The fit's fingerprint (:func:`~ftl.data.fit_checkpoint.fit_fingerprint`).
    """

    def __init__(self, folder, fingerprint: str):
        super().__init__(folder, fingerprint, KIND, "ftl")


class ResumableSource(ResumableRun):
    """The source's steps: what it keeps after each, and how it goes back to one.

    The class using it has ``checkpoint`` (a :class:`SourceCheckpoint` or
    ``None``), ``params``, ``rng``, ``channel``, ``_initialise()``,
    ``_set_hidden()`` and ``_open_sessions(resume_step=None)``.
    """

    driver = "source"
    afresh = "the fit starts afresh"

    def _reset_steps(self) -> None:
        """No step yet: epoch 0, an empty history."""
        self.step, self.epoch, self.converged = -1, 0, False
        self.history: list = []
        self.start_w = self.w.copy()
        self._last_state: dict | None = None
        self._resumed: set[int] = set()

    def _state(self) -> dict:
        """Everything the source holds at this step, as a checkpoint keeps it."""
        return {
            "step": self.step,
            "params": self.params,
            "own_key": key_to_json(self.own),
            "peer_key": self.peer_public,
            "target_inputs": self.target_inputs,
            "hidden": list(self.stack.weights),
            "weights": self.w.copy(),
            "optimizer": self.opt.state(),
            "epoch": self.epoch,
            "converged": self.converged,
            "start_weights": self.start_w.copy(),
            "rng": self.rng.bit_generator.state,
            "history": [dict(entry) for entry in self.history],
        }

    def _restore_state(self, state: dict) -> None:
        """Go back to a step kept by :meth:`_state` (before the session re-opens)."""
        self.params = p = dict(state["params"])
        insecure = bool(p.get("insecure_for_tests", False))
        self.own = key_from_json(state["own_key"], insecure, p.get("n_jobs"))
        self.peer_public = state["peer_key"]
        self.target_inputs = int(state["target_inputs"])
        self.stack = HiddenStack.from_dict(
            {"activation": p["activation"], "weights": state["hidden"]}
        )
        self._set_hidden()
        self.w = np.array(state["weights"], dtype=np.float64)
        self.opt = make_optimizer(p["optimizer"], [self.w], p["learning_rate"])
        self.opt.restore(state["optimizer"])
        self.epoch, self.converged = int(state["epoch"]), bool(state["converged"])
        self.start_w = np.array(state["start_weights"], dtype=np.float64)
        self.rng.bit_generator.state = state["rng"]
        self.history = [dict(entry) for entry in state["history"]]
        self.step = int(state["step"])

    def _start_sessions(self) -> None:
        """Open the target's session (step 0), or resume it from the checkpoint."""
        self._open_or_resume(None if self._last_state is None else self._initialise)
