"""The guest's checkpoint of a federated linear fit (``checkpoint_dir``).

One file per fit, ``<checkpoint_dir>/lr-<fingerprint>.json``, holds the results
of the binary models already trained (one-vs-rest) and the state of the one in
progress at its last iteration boundary (:meth:`LogisticGuest._state
<ftl.linear_model.guest.LogisticGuest>`). The in-process hosts of a simulation
keep theirs in ``lr-<fingerprint>.parties/<host>/``. A finished fit removes both.
Format, protection and fingerprints: :mod:`ftl.federation.checkpoints`.
"""

from __future__ import annotations

import logging
import shutil
import warnings
from pathlib import Path
from typing import Any

import numpy as np

from ftl.exceptions import CheckpointError
from ftl.federation.checkpoints import (
    PartyCheckpoints,
    digest,
    fingerprint,
    read_checkpoint,
    remove_checkpoint,
    write_checkpoint,
)

__all__ = ["FitCheckpoint", "ModelCheckpoint", "fit_checkpoint"]

log = logging.getLogger("ftl.checkpoint")

#: The kind of the guest's checkpoint files.
KIND = "lr.guest"
#: Parameters that do not change the fit (left out of its fingerprint).
_NOT_FINGERPRINTED = ("verbose", "n_jobs", "checkpoint_dir", "predict_batch_rows")


def fit_checkpoint(estimator: Any, handle: Any, targets: list) -> FitCheckpoint | None:
    """The checkpoint of fitting ``estimator`` on ``handle`` with ``targets``, or
    ``None`` without ``checkpoint_dir``.

    Its fingerprint covers the estimator's class and parameters (not ``verbose``,
    ``n_jobs`` or the folder), the alignment (in a simulation, whose alignment is
    new each time, the hosts' data instead), the guest's training features, the
    binary targets and positions, and the hosts' names.
    """
    folder = getattr(estimator, "checkpoint_dir", None)
    if folder is None:
        return None
    alignment = handle.alignment

    def features(party) -> np.ndarray:
        return party.local_features(party.aligned_rows(alignment.id, handle.positions))

    simulated = alignment.how == "simulated"
    params = estimator.get_params(deep=False)
    identity = {
        "estimator": type(estimator).__name__,
        "params": {k: v for k, v in params.items() if k not in _NOT_FINGERPRINTED},
        "alignment": [digest(features(h)) for h in alignment.hosts] if simulated else alignment.id,
        "data": digest(handle.positions, features(alignment.guest), *targets),
        "hosts": [h.name for h in alignment.hosts],
    }
    return FitCheckpoint(folder, fingerprint(identity), len(targets))


class FitCheckpoint:
    """The guest's checkpoint file of one fit (see the module docstring).

    Parameters
    ----------
    folder : path
        The estimator's ``checkpoint_dir`` (made, mode 0700, when first written).
    fingerprint : str
        The fit's fingerprint (:func:`fit_checkpoint`).
    n_models : int
        Binary models of the fit.

    Raises
    ------
    CheckpointError
        If the file of this fingerprint is corrupted, was modified, or does not
        belong to this fit.
    """

    def __init__(self, folder: str | Path, fingerprint: str, n_models: int):
        self.folder = Path(folder)
        self.fingerprint = fingerprint
        name = f"lr-{fingerprint[:32]}"
        self.path = self.folder / f"{name}.json"
        self.parties = self.folder / f"{name}.parties"
        self.body: dict = {"models": [None] * n_models, "current": None}
        if self.path.exists():
            self.body = read_checkpoint(self.path, KIND, fingerprint)
            if len(self.body.get("models", ())) != n_models:
                raise CheckpointError(f"checkpoint {self.path} is of a fit with other models")
            log.warning("fit resumes from its checkpoint %s", self.path)
        elif self.folder.is_dir():
            others = sorted(p.name for p in self.folder.glob("lr-*.json"))
            if others:
                warnings.warn(
                    f"checkpoint_dir {str(self.folder)!r} holds {len(others)} checkpoint(s) of "
                    f"other fits (other parameters, data or parties: {', '.join(others[:3])}"
                    f"{', ...' if len(others) > 3 else ''}); ignored, this fit starts afresh",
                    UserWarning,
                    stacklevel=4,
                )

    def model(self, k: int) -> ModelCheckpoint:
        """The checkpoint of binary model ``k``."""
        return ModelCheckpoint(self, k)

    def write(self) -> None:
        write_checkpoint(self.path, KIND, self.fingerprint, self.body)

    def remove(self) -> None:
        """Forget the finished fit (its hosts' checkpoints in a simulation too)."""
        remove_checkpoint(self.path)
        shutil.rmtree(self.parties, ignore_errors=True)


class ModelCheckpoint:
    """One binary model's part of a :class:`FitCheckpoint`."""

    def __init__(self, fit: FitCheckpoint, k: int):
        self.fit, self.k = fit, k

    @property
    def result(self) -> dict | None:
        """The model's training result if it was finished before."""
        return self.fit.body["models"][self.k]

    @property
    def saved(self) -> dict | None:
        """The model's state at its last iteration boundary, if any."""
        current = self.fit.body["current"]
        return current["state"] if current is not None and current["model"] == self.k else None

    def keep(self, state: dict) -> None:
        """Write ``state``, the model's latest iteration boundary."""
        self.fit.body["current"] = {"model": self.k, "state": state}
        self.fit.write()

    def finished(self, result: dict) -> None:
        """Record the model's result; the fit's last one removes the checkpoint."""
        self.fit.body["models"][self.k] = result
        self.fit.body["current"] = None
        if all(m is not None for m in self.fit.body["models"]):
            self.fit.remove()
        else:
            self.fit.write()

    def party_store(self, name: str, identity: str) -> PartyCheckpoints:
        """Where the simulation's in-process host ``name`` keeps its checkpoints."""
        return PartyCheckpoints(self.fit.parties / name, identity)
