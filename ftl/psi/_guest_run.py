"""The guest's state of a named PSI run, kept per batch so that the run resumes.

With ``checkpoint_dir`` (:func:`ftl.align`, :func:`ftl.intersection_size`) the guest
names its run (128 random bits, sent in ``psi.start``) and keeps, in
``<checkpoint_dir>/psi-guest/<fingerprint>.json`` and its ``.parts`` folder:

- once per host: its secret scalar ``a`` and secret order for that host (and, in
  cardinality mode, the secret shuffle of its tags);
- per batch: the host's points it has blinded (``a*b*P(y)``) and the final values
  it has received (``b*a*P(x)``), each written once, before the next request;
- which hosts have stored the alignment, and its id.

The fingerprint covers the guest's ids, the hosts' names, the join, order, mode,
batch size and salt (if given), so a restarted driver that calls ``align`` (or
``intersection_size``) again with the same data finds the run. The in-process hosts
of a simulation keep theirs in ``psi-guest-hosts/<fingerprint>/<host>/``. A finished
run removes all of it. What the guest sends is a function of what it keeps (the same
scalar and order give the same points), so a host that is ahead of the guest's
checkpoint receives nothing new and a host that is behind receives the same bytes
again. :func:`run_named` runs a named run to its end, resuming it where every
party's checkpoint left it.
Design and protection: :mod:`ftl.federation.checkpoints`, :mod:`ftl.psi._resume`.
"""

from __future__ import annotations

import logging
import shutil
import uuid
import warnings
from collections.abc import Callable, Sequence
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import numpy as np

from ftl.exceptions import CheckpointError, PolicyError, ProtocolError
from ftl.federation.budget import guard_of
from ftl.federation.channel import Channel, Endpoint, new_session_id
from ftl.federation.checkpoints import PartyCheckpoints, attached, checkpoints_of, fingerprint
from ftl.federation.service import PartyService
from ftl.psi._guest_steps import HostInfo, Progress
from ftl.psi._resume import ids_digest, points_from_json, points_to_json
from ftl.psi.curve import POINT_BYTES, batches

__all__ = ["GuestRun", "run_named"]

log = logging.getLogger("ftl.checkpoint")

#: Under which protocol name the guest keeps its runs.
KIND = "psi-guest"


class GuestRun:
    """A named PSI run at the guest: its id, salt, per-host progress and checkpoint.

    Parameters
    ----------
    run_id : str
        The run's name at every host.
    salt : bytes
        The run's public salt.
    store : PartyCheckpoints or None
        Where the guest keeps the run (``None``: in memory only, which still lets
        the driver resume after a host restarts).
    key : str
        The run's fingerprint (names its files).
    """

    def __init__(self, run_id: str, salt: bytes, store: PartyCheckpoints | None, key: str):
        self.run_id, self.salt, self.store, self.key = run_id, salt, store, key
        self.hosts: list[dict] = []  # name, n_rows, feature_names per host
        self.progress: list[Progress] = []
        self.alignment_id: str | None = None
        self.committed: list[str] = []
        self.batch_size = 0
        #: How many hosts' sessions the current attempt has opened.
        self.opened = 0
        self._step = 0

    @property
    def folder(self) -> Path | None:
        return None if self.store is None else self.store.root

    def mark(self) -> tuple:
        """How far the run has come (a resume must make progress before the next)."""
        counts = [(p.received, p.fetched, p.reblinded, p.n_final) for p in self.progress]
        return tuple(counts), len(self.committed)

    def resumed(self, index: int, info: HostInfo) -> None:
        """Host ``index`` resumed the run: go on from the counts it holds."""
        if info.n_rows != self.hosts[index]["n_rows"]:
            raise CheckpointError(
                f"host {info.name!r} resumed PSI run {self.run_id} with another set size"
            )
        progress = self.progress[index]
        progress.received, progress.reblinded = info.received, info.reblinded

    def name_alignment(self) -> str:
        """The alignment's id: drawn once, kept before any host stages it."""
        if self.alignment_id is None:
            self.alignment_id = uuid.uuid4().hex
            self.keep()
        return self.alignment_id

    def stored(self, host: str) -> None:
        """``host`` stored the alignment: it is not asked again after a resume."""
        self.committed.append(host)
        self.keep()

    # -- finding the run -------------------------------------------------------------
    @staticmethod
    def key_of(ids: Any, hosts: list[str], settings: dict) -> str:
        """The fingerprint of aligning ``ids`` with ``hosts`` under ``settings``."""
        return fingerprint({"ids": ids_digest(ids), "hosts": hosts, **settings})[:32]

    @classmethod
    def saved(cls, folder: Any, guest: str, key: str) -> GuestRun | None:
        """The run kept in ``folder`` under ``key``, or ``None`` if there is none."""
        store = PartyCheckpoints(Path(folder), guest)
        if not store.has(KIND, key):
            return None
        state = store.load(KIND, key)
        run = cls(str(state["run_id"]), bytes.fromhex(state["salt"]), store, key)
        run._restore(state)
        log.warning("PSI run %s resumes from its checkpoint in %s", run.run_id, folder)
        return run

    @classmethod
    def new(cls, folder: Any, guest: str, key: str, salt: bytes) -> GuestRun:
        """A new run (kept in ``folder`` if given)."""
        store = None if folder is None else PartyCheckpoints(Path(folder), guest)
        return cls(uuid.uuid4().hex, salt, store, key)

    @classmethod
    def of(cls, folder: Any, guest: str, key: str, salt: bytes) -> GuestRun:
        """The run kept in ``folder`` under ``key`` (a restarted driver's), else a new one."""
        run = cls.saved(folder, guest, key)
        return run if run is not None else cls.new(folder, guest, key, salt)

    def host_store(self, name: str, identity: str) -> PartyCheckpoints | None:
        """Where a simulation's in-process host ``name`` keeps its part of the run."""
        if self.store is None:
            return None
        return PartyCheckpoints(self._hosts_folder() / name, identity)

    def _hosts_folder(self) -> Path:
        return self.store.root / f"{KIND}-hosts" / self.key

    # -- keeping -----------------------------------------------------------------------
    def add_host(
        self, info: HostInfo, alpha: bytes, order: np.ndarray, batch_size: int
    ) -> Progress:
        """A host's exchange starts: keep its secrets once."""
        index = len(self.progress)
        self.batch_size = batch_size
        progress = Progress(alpha, order, info.n_rows)
        progress.keep = self._keeper(index)
        self.hosts.append(
            {"name": info.name, "n_rows": info.n_rows, "feature_names": info.feature_names}
        )
        self.progress.append(progress)
        if self.store is not None:
            self.store.keep_part(KIND, self.key, f"h{index}-order", {"order": order})
            self.keep()
        return progress

    def _keeper(self, index: int):
        def keep(kind: str, start: int, values: np.ndarray) -> None:
            if self.store is None:
                return
            if kind == "tags":
                self.store.keep_part(KIND, self.key, f"h{index}-tags", {"order": values})
            else:
                self.store.keep_part(
                    KIND, self.key, f"h{index}-{kind}-{start}", points_to_json(start, values)
                )
            self.keep()

        return keep

    def keep(self) -> None:
        """Keep the run's small state (after every batch it gained)."""
        if self.store is None:
            return
        state = {
            "step": self._step,
            "rows": 0,
            "run_id": self.run_id,
            "salt": self.salt.hex(),
            "batch_size": self.batch_size,
            "alignment_id": self.alignment_id,
            "committed": list(self.committed),
            "hosts": [
                {
                    **info,
                    "alpha": p.alpha.hex(),
                    "fetched": p.fetched,
                    "n_final": p.n_final,
                    "tags": p.tag_order is not None,
                }
                for info, p in zip(self.hosts, self.progress, strict=True)
            ],
        }
        self.store.keep(KIND, self.key, state)
        self._step += 1

    def finish(self) -> None:
        """The run is over: its checkpoint (and its in-process hosts') goes."""
        if self.store is not None:
            self.store.discard(KIND, self.key)
            shutil.rmtree(self._hosts_folder(), ignore_errors=True)

    # -- restoring ---------------------------------------------------------------------
    def _restore(self, state: dict) -> None:
        try:
            self.batch_size = int(state["batch_size"])
            self.alignment_id = state["alignment_id"]
            self.committed = [str(c) for c in state["committed"]]
            for index, saved in enumerate(state["hosts"]):
                self._restore_host(index, saved)
            self._step = int(state["step"]) + 1
        except (KeyError, TypeError, ValueError) as exc:
            raise CheckpointError(f"the guest's PSI checkpoint is corrupted ({exc})") from None

    def _restore_host(self, index: int, saved: dict) -> None:
        order = np.asarray(self._part(f"h{index}-order")["order"], dtype=np.int64)
        info = {k: saved[k] for k in ("name", "n_rows", "feature_names")}
        progress = Progress(bytes.fromhex(saved["alpha"]), order, int(info["n_rows"]))
        progress.keep = self._keeper(index)
        progress.fetched = self._restore_batches(
            index, "own", int(saved["fetched"]), progress.host_doubles
        )
        progress.n_final = self._restore_batches(
            index, "final", int(saved["n_final"]), progress.final
        )
        if saved["tags"]:
            progress.tag_order = np.asarray(self._part(f"h{index}-tags")["order"], np.int64)
        self.hosts.append(info)
        self.progress.append(progress)

    def _restore_batches(self, index: int, kind: str, count: int, into: np.ndarray) -> int:
        for start, stop in batches(count, self.batch_size):
            part = self._part(f"h{index}-{kind}-{start}")
            into[start:stop] = points_from_json(part, start, POINT_BYTES)
        return count

    def _part(self, name: str) -> Any:
        return self.store.load_part(KIND, self.key, name)


def run_named(
    channel: Channel,
    guest: str,
    endpoints: Sequence[Endpoint],
    run: GuestRun,
    attempt: Callable[[GuestRun, bool], Any],
) -> Any:
    """Run the named ``run`` with ``endpoints`` to its end: ``attempt(run, resume)``
    does all of it or, with ``resume``, what is left.

    The run is resumed, in a new session, where every party's checkpoint left it
    when a host's session is lost (once per point of progress) and, from the start,
    when ``run`` was kept by a driver that restarted; a kept run that a host cannot
    go on with starts afresh, with a warning. A refusal ends the run.
    """
    resume, seen = bool(run.progress), None
    with _local_host_stores(run, endpoints):
        while True:
            run.opened = 0
            try:
                return attempt(run, resume)
            except PolicyError:  # a host refused: the run is over
                run.finish()
                raise
            except (ValueError, ProtocolError) as exc:
                if resume and seen is None and run.opened < len(endpoints):
                    # A kept run that a host cannot go on with (its state is gone).
                    warnings.warn(
                        f"PSI run {run.run_id} cannot be resumed ({exc}); it starts afresh",
                        UserWarning,
                        stacklevel=4,
                    )
                    run.finish()
                    run = GuestRun.new(run.folder, guest, run.key, run.salt)
                    channel.session, resume = new_session_id(), False
                    continue
                mark = run.mark()
                lost = isinstance(exc, ProtocolError) and run.opened == len(endpoints)
                if not lost:  # refused or misbehaving: resuming cannot help
                    run.finish()
                    raise
                if mark == seen:
                    raise
                seen = mark
                log.warning(
                    "%s; resuming PSI run %s where it left off, in a new session", exc, run.run_id
                )
                channel.session, resume = new_session_id(), True


def _local_host_stores(run: GuestRun, endpoints: Sequence[Endpoint]) -> ExitStack:
    """The in-process hosts of a simulation (whose data the driver holds anyway) keep
    their part of a named run next to the guest's, unless they keep checkpoints."""
    stack = ExitStack()
    for endpoint in endpoints:
        party = getattr(endpoint, "party", None)
        if isinstance(endpoint, PartyService) and checkpoints_of(party) is None:
            store = run.host_store(endpoint.name, guard_of(party).identity)
            if store is not None:
                stack.enter_context(attached(party, store))
    return stack
