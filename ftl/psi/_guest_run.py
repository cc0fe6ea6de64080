"""The guest's state of a named PSI run, kept per batch so that the run resumes.

With ``checkpoint_dir`` (:func:`ftl.align`) the guest names its run (128 random
bits, sent in ``psi.start``) and keeps, in
``<checkpoint_dir>/psi-guest/<fingerprint>.json`` and its ``.parts`` folder:

- once per host: its secret scalar ``a`` and secret order for that host (and, in
  cardinality mode, the secret shuffle of its tags);
- per batch: the host's points it has blinded (``a*b*P(y)``) and the final values
  it has received (``b*a*P(x)``), each written once, before the next request;
- which hosts have stored the alignment, and its id.

The fingerprint covers the guest's ids, the hosts' names, the join, order, mode,
batch size and salt (if given), so a restarted driver that calls ``align`` again
with the same data finds the run. The in-process hosts of a simulation keep theirs
in ``psi-guest-hosts/<fingerprint>/<host>/``. A finished run removes all of it. What the
guest sends is a function of what it keeps (the same scalar and order give the
same points), so a host that is ahead of the guest's checkpoint receives nothing
new and a host that is behind receives the same bytes again.
Design and protection: :mod:`ftl.federation.checkpoints`, :mod:`ftl.psi._resume`.
"""

from __future__ import annotations

import logging
import shutil
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ftl.exceptions import CheckpointError
from ftl.federation.checkpoints import PartyCheckpoints, fingerprint
from ftl.psi._resume import ids_digest, points_from_json, points_to_json
from ftl.psi.curve import POINT_BYTES, batches

__all__ = ["GuestRun", "Progress"]

log = logging.getLogger("ftl.checkpoint")

#: Under which protocol name the guest keeps its runs.
KIND = "psi-guest"


@dataclass
class Progress:
    """The guest's exchange with one host: its secrets and how far each list came.

    ``received`` and ``reblinded`` count what the host acknowledged (guest points,
    step-4 values); ``fetched`` the host's points the guest holds blinded in
    ``host_doubles``; ``n_final`` the final values it holds in ``final`` (in the
    order it sent its points).
    """

    alpha: bytes
    order: np.ndarray
    n_rows: int
    host_doubles: np.ndarray = field(init=False)
    final: np.ndarray = field(init=False)
    fetched: int = 0
    n_final: int = 0
    received: int = 0
    reblinded: int = 0
    tag_order: np.ndarray | None = None
    #: ``keep(kind, start, values)``: called with every batch the guest gains.
    keep: Any = None

    def __post_init__(self) -> None:
        self.host_doubles = np.empty((self.n_rows, POINT_BYTES), dtype=np.uint8)
        self.final = np.empty((len(self.order), POINT_BYTES), dtype=np.uint8)

    def gained(self, kind: str, start: int, values: np.ndarray) -> None:
        if self.keep is not None:
            self.keep(kind, start, values)


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

    def resumed(self, index: int, info: Any) -> None:
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

    def host_store(self, name: str, identity: str) -> PartyCheckpoints | None:
        """Where a simulation's in-process host ``name`` keeps its part of the run."""
        if self.store is None:
            return None
        return PartyCheckpoints(self._hosts_folder() / name, identity)

    def _hosts_folder(self) -> Path:
        return self.store.root / f"{KIND}-hosts" / self.key

    # -- keeping -----------------------------------------------------------------------
    def add_host(self, info: dict, alpha: bytes, order: np.ndarray, batch_size: int) -> Progress:
        """A host's exchange starts: keep its secrets once."""
        index = len(self.progress)
        self.batch_size = batch_size
        progress = Progress(alpha, order, int(info["n_rows"]))
        progress.keep = self._keeper(index)
        self.hosts.append(dict(info))
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
