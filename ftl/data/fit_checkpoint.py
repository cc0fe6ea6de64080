"""The guest's checkpoint file of a federated fit (an estimator's ``checkpoint_dir``).

One file per fit, ``<checkpoint_dir>/<prefix>-<fingerprint>.json``, holds what the
estimator's guest (driver) role keeps at its last step; the in-process hosts of a
simulation keep theirs in ``<prefix>-<fingerprint>.parties/<host>/``. A finished
fit removes both. Each estimator family names its own prefix and kind (``lr``,
``ftl``) and decides what its body holds. Format, protection and fingerprints:
:mod:`ftl.federation.checkpoints`.
"""

from __future__ import annotations

import functools
import logging
import shutil
import warnings
from collections.abc import Callable
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import numpy as np

from ftl.exceptions import CheckpointError, PartyUnavailableError, ProtocolError
from ftl.federation.budget import guard_of
from ftl.federation.channel import new_session_id
from ftl.federation.checkpoints import (
    PartyCheckpoints,
    attached,
    digest,
    fingerprint,
    read_checkpoint,
    refuse_superseded,
    remove_checkpoint,
    write_checkpoint,
)
from ftl.federation.service import PartyService

__all__ = [
    "GuestCheckpoint",
    "ResumableRun",
    "StepCheckpoint",
    "count_resume",
    "fit_fingerprint",
    "in_current_run",
    "kept_count",
    "load_bound_step",
    "local_party_checkpoints",
    "take_over",
]

log = logging.getLogger("ftl.checkpoint")

#: Parameters that do not change a fit (left out of its fingerprint).
NOT_FINGERPRINTED = ("verbose", "n_jobs", "checkpoint_dir", "predict_batch_rows")


def fit_fingerprint(estimator: Any, handle: Any, *arrays: np.ndarray) -> str:
    """The fingerprint of fitting ``estimator`` on ``handle`` with the guest's own
    ``arrays`` (its targets or labels).

    It covers the estimator's class and parameters (not ``verbose``, ``n_jobs``,
    ``predict_batch_rows`` or the folder), the alignment (in a simulation, whose
    alignment is new each time, the hosts' data instead), the guest's training
    features, ``arrays`` and the positions, and the hosts' names.
    """
    alignment = handle.alignment

    def features(party) -> np.ndarray:
        return party.local_features(party.aligned_rows(alignment.id, handle.positions))

    simulated = alignment.how == "simulated"
    params = estimator.get_params(deep=False)
    return fingerprint(
        {
            "estimator": type(estimator).__name__,
            "params": {k: v for k, v in params.items() if k not in NOT_FINGERPRINTED},
            "alignment": [digest(features(h)) for h in alignment.hosts]
            if simulated
            else alignment.id,
            "data": digest(handle.positions, features(alignment.guest), *arrays),
            "hosts": [h.name for h in alignment.hosts],
        }
    )


class GuestCheckpoint:
    """The guest's checkpoint file of one fit (see the module docstring).

    Parameters
    ----------
    folder : path
        The estimator's ``checkpoint_dir`` (made, mode 0700, when first written).
    fingerprint : str
        The fit's fingerprint (:func:`fit_fingerprint`).
    kind : str
        The files' kind (``"lr.guest"``, ``"ftl.source"``).
    prefix : str
        The files' name prefix (``"lr"``, ``"ftl"``).
    body : dict
        What a fit that starts afresh keeps; replaced by the file's if there is one.

    Attributes
    ----------
    body : dict
        What the fit keeps; :meth:`write` writes it.
    resumed : bool
        Whether the body was read from the fit's file.

    Raises
    ------
    CheckpointError
        If the file of this fingerprint is corrupted, was modified, or does not
        belong to this fit.
    """

    def __init__(self, folder, fingerprint: str, kind: str, prefix: str, body: dict):
        self.folder = Path(folder)
        self.fingerprint = fingerprint
        self.kind = kind
        name = f"{prefix}-{fingerprint[:32]}"
        self.path = self.folder / f"{name}.json"
        self.parties = self.folder / f"{name}.parties"
        self.body = body
        self.resumed = self.path.exists()
        if self.resumed:
            self.body = read_checkpoint(self.path, kind, fingerprint)
            log.warning("fit resumes from its checkpoint %s", self.path)
        elif self.folder.is_dir():
            others = sorted(p.name for p in self.folder.glob(f"{prefix}-*.json"))
            if others:
                warnings.warn(
                    f"checkpoint_dir {str(self.folder)!r} holds {len(others)} checkpoint(s) of "
                    f"other fits (other parameters, data or parties: {', '.join(others[:3])}"
                    f"{', ...' if len(others) > 3 else ''}); ignored, this fit starts afresh",
                    UserWarning,
                    stacklevel=5,
                )

    def write(self) -> None:
        write_checkpoint(self.path, self.kind, self.fingerprint, self.body)

    def remove(self) -> None:
        """Forget the finished fit (its hosts' checkpoints in a simulation too)."""
        remove_checkpoint(self.path)
        shutil.rmtree(self.parties, ignore_errors=True)

    def party_store(self, name: str, identity: str) -> PartyCheckpoints:
        """Where the simulation's in-process party ``name`` keeps its checkpoints."""
        return PartyCheckpoints(self.parties / name, identity)


class StepCheckpoint(GuestCheckpoint):
    """A guest's checkpoint file that holds its state at the fit's last step.

    Parameters
    ----------
    folder, fingerprint, kind, prefix
        As for :class:`GuestCheckpoint`.
    """

    def __init__(self, folder, fingerprint: str, kind: str, prefix: str):
        super().__init__(folder, fingerprint, kind, prefix, {"state": None})

    @property
    def saved(self) -> dict | None:
        """The state at the fit's last step, if any."""
        return self.body["state"]

    def keep(self, state: dict) -> None:
        """Write ``state``, the fit's latest step."""
        self.body["state"] = state
        self.write()


def local_party_checkpoints(checkpoint: Any, parties: list) -> ExitStack:
    """With a checkpoint (a :class:`GuestCheckpoint`, or anything with its
    ``party_store``), the in-process ``parties`` (a simulation's, whose data the
    driver holds anyway) keep their checkpoints next to it, for the block's duration."""
    stack = ExitStack()
    if checkpoint is not None:
        for party in parties:
            if isinstance(party.endpoint, PartyService):
                store = checkpoint.party_store(party.name, guard_of(party).identity)
                stack.enter_context(attached(party, store))
    return stack


class ResumableRun:
    """A driver's steps: it keeps its state after each, and goes back to the last
    one when a party's session is lost.

    The class using it has ``checkpoint`` (with ``keep(state)``, or ``None``),
    ``step``, ``_last_state`` (its state at the last step, or ``None``),
    ``_resumed`` (the steps resumed so far), a ``channel``, ``_state()``,
    ``_restore_state(state)`` and ``_open_sessions(resume_step)``.
    """

    #: Whose state it is, as an error names it ("guest", "source").
    driver = "guest"

    def _restore(self, state: dict) -> None:
        """Go back to a step kept by ``_state`` (before the sessions re-open)."""
        try:
            self._restore_state(state)
        except (KeyError, TypeError, ValueError) as exc:
            raise CheckpointError(
                f"the {self.driver}'s checkpoint is not a state of this fit ({exc})"
            ) from None
        self._last_state = state

    def _keep(self) -> None:
        """The next step is reached: keep the state (in the checkpoint file too)."""
        self.step += 1
        self._last_state = self._state()
        if self.checkpoint is not None:
            self.checkpoint.keep(self._last_state)

    #: What a fit that cannot resume does, as its warning says.
    afresh = "this model starts afresh"

    def _open_or_resume(self, start_over: Callable[[], None] | None) -> None:
        """Open the sessions at step 0; or, when a step was restored from the
        checkpoint file (``start_over`` undoes that), re-open them there as a
        resume -- a party that cannot resume makes the fit start afresh, warned."""
        if start_over is not None:
            try:
                self._open_sessions(resume_step=self.step)
                return
            except (ValueError, ProtocolError) as exc:
                warnings.warn(
                    f"the fit's checkpoint (step {self.step}) cannot be resumed ({exc}); "
                    f"{self.afresh}",
                    UserWarning,
                    stacklevel=6,
                )
            self.channel.session = new_session_id()
            start_over()
        self._open_sessions()
        self._keep()

    def _run_resuming(self, run: Callable[[], Any]) -> Any:
        """``run()`` (the training loop), going back to the last step and resuming the
        parties' sessions there when one is lost mid-fit; once per step."""
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
            self._open_sessions(resume_step=state["step"])
        except (ValueError, ProtocolError, PartyUnavailableError) as failed:
            log.warning("the fit cannot be resumed: %s", failed)
            raise exc from failed


def take_over(session: Any, protocol: str, request: Any, party: Any, opening: bool) -> Any:
    """Make ``session`` (a role with ``checkpoints`` and ``fit_id``) the one that runs
    its fit: the session it supersedes, if still alive, answers no more (and is
    returned). At the fit's ``opening``, keep the alignment table its steps use."""
    previous = session.checkpoints.claim(protocol, session.fit_id, session)
    if opening:
        alignment = request["alignment"]
        session.checkpoints.keep_alignment(alignment, party.alignment_table(alignment))
    return previous


def in_current_run(method):
    """Refuse a role's operation in a session whose fit a resume has taken over
    (the role sets ``superseded``, and has a ``name`` and ``fit_id``)."""

    @functools.wraps(method)
    def guarded(self, request):
        refuse_superseded(self, self.name, "fit", "fit_id")
        return method(self, request)

    return guarded


def load_bound_step(session: Any, protocol: str, step: int) -> dict:
    """Step ``step`` of the fit a role's ``session`` resumes (the role has
    ``checkpoints``, ``fit_id``, ``bound`` and ``name``): refused unless the fit ran
    bound to what the session is -- the peer, parameters, keys, rows and data.

    Raises
    ------
    CheckpointError
        If the party keeps no checkpoints, not of this step, or of another binding.
    """
    if session.checkpoints is None:
        raise CheckpointError(f"{session.name}: this party keeps no checkpoints to resume from")
    state = session.checkpoints.load(protocol, session.fit_id, step)
    if state.get("bound") != session.bound:
        raise CheckpointError(
            f"{session.name}: fit {session.fit_id} ran with other parameters, keys, rows or "
            "data than this resume asks for; refused"
        )
    return state


def kept_count(session: Any, protocol: str, part: str) -> int:
    """A count the session's fit keeps as part ``part`` (0 if none)."""
    try:
        return int(session.checkpoints.load_part(protocol, session.fit_id, part)["count"])
    except CheckpointError:
        return 0


def count_resume(session: Any, protocol: str, step: int, limit: int, docs: str) -> None:
    """Count one more resume of step ``step`` of the session's fit, refused once the
    step was resumed ``limit`` times: a resumed step answers its requests again
    (``docs`` names where the protocol says what that gives a peer).

    Raises
    ------
    CheckpointError
        If the step was resumed ``limit`` times already.
    """
    name = f"resumed-{int(step)}"
    resumes = kept_count(session, protocol, name)
    if resumes >= limit:
        raise CheckpointError(
            f"{session.name}: step {step} of fit {session.fit_id} was resumed {resumes} "
            f"time(s) already; refused ({docs})"
        )
    session.checkpoints.keep_part(protocol, session.fit_id, name, {"count": resumes + 1})
