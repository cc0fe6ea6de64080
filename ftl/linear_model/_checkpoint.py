"""The guest's checkpoint of a federated linear fit (``checkpoint_dir``).

One file per fit, ``<checkpoint_dir>/lr-<fingerprint>.json``, holds the results
of the binary models already trained (one-vs-rest) and the state of the one in
progress at its last iteration boundary (:meth:`LogisticGuest._state
<ftl.linear_model.guest.LogisticGuest>`). The in-process hosts of a simulation
keep theirs in ``lr-<fingerprint>.parties/<host>/``. A finished fit removes both.
Format, protection and fingerprints: :mod:`ftl.federation.checkpoints`.
"""

from __future__ import annotations

from typing import Any

from ftl.data.fit_checkpoint import GuestCheckpoint, fit_fingerprint
from ftl.exceptions import CheckpointError
from ftl.federation.checkpoints import PartyCheckpoints

__all__ = ["FitCheckpoint", "ModelCheckpoint", "fit_checkpoint"]

#: The kind of the guest's checkpoint files.
KIND = "lr.guest"


def fit_checkpoint(estimator: Any, handle: Any, targets: list) -> FitCheckpoint | None:
    """The checkpoint of fitting ``estimator`` on ``handle`` with ``targets``, or
    ``None`` without ``checkpoint_dir``; its fingerprint covers the binary targets
    (:func:`~ftl.data.fit_checkpoint.fit_fingerprint`)."""
    folder = getattr(estimator, "checkpoint_dir", None)
    if folder is None:
        return None
    return FitCheckpoint(folder, fit_fingerprint(estimator, handle, *targets), len(targets))


class FitCheckpoint(GuestCheckpoint):
    """The guest's checkpoint file of one fit (see the module docstring): the
    results of its binary models, and the current one's state.

    Parameters
    ----------
    folder, fingerprint
        As for :class:`~ftl.data.fit_checkpoint.GuestCheckpoint`.
    n_models : int
        Binary models of the fit.

    Raises
    ------
    CheckpointError
        If the file of this fingerprint is corrupted, was modified, or does not
        belong to this fit.
    """

    def __init__(self, folder, fingerprint: str, n_models: int):
        super().__init__(
            folder, fingerprint, KIND, "lr", {"models": [None] * n_models, "current": None}
        )
        if len(self.body.get("models", ())) != n_models:
            raise CheckpointError(f"checkpoint {self.path} is of a fit with other models")

    def model(self, k: int) -> ModelCheckpoint:
        """The checkpoint of binary model ``k``."""
        return ModelCheckpoint(self, k)


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
        return self.fit.party_store(name, identity)
