"""What a party keeps besides its data: its model shards and fitted transformers.

Both stay at the party: a protocol role stores this party's shard of a model it
trained (weights, own key) and a preprocessing role the transformers it fitted on
this party's rows; the driver only ever holds their ids. :class:`ModelStore` and
:class:`TransformerStore` are the two halves of :class:`~ftl.data.party.Party`
that hold them.

Saving them to files and loading them back is the persistence layer's work,
which sits above this one: a party's ``export_*``/``import_*`` methods call the
:class:`PartyFiles` installed with :func:`install_party_files` (the package face,
``ftl/__init__.py``, installs :mod:`ftl.persistence`, imported on first use).
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, Protocol

from ftl._docstrings import WRITTEN_FILE, fill_doc

__all__ = [
    "ModelStore",
    "PartyFiles",
    "TransformerStore",
    "install_party_files",
    "party_files",
]

#: Serialises changes of the transformer stores (``ftl serve`` fits in threads).
_STORE_LOCK = threading.RLock()


class PartyFiles(Protocol):
    """Writes a party's shards and transformers to files and reads them back."""

    def export_shard(self, party: Any, model_id: str, path: str | os.PathLike) -> Path: ...

    def import_shard(self, party: Any, path: str | os.PathLike) -> str: ...

    def export_transformer(
        self, party: Any, transformer_id: str, path: str | os.PathLike
    ) -> Path: ...

    def import_transformer(self, party: Any, path: str | os.PathLike) -> str: ...


_files_provider: Callable[[], PartyFiles] | None = None


def install_party_files(provider: Callable[[], PartyFiles]) -> None:
    """Set what writes and reads party files: ``provider()`` returns it on first use.

    A provider rather than the object itself, so that the layer holding the file
    formats (and the estimators it knows) is imported only when a party saves or
    loads a file.
    """
    global _files_provider
    _files_provider = provider


def party_files() -> PartyFiles:
    """The installed :class:`PartyFiles` (``RuntimeError`` if none is)."""
    if _files_provider is None:
        raise RuntimeError(
            "no party file format is installed: import ftl (which installs ftl.persistence)"
        )
    return _files_provider()


class _Held:
    """A fitted transformer kept at a party, and when it was last used."""

    __slots__ = ("transform", "last_used")

    def __init__(self, transform: Callable, now: float):
        self.transform = transform
        self.last_used = now

    def touch(self, now: float | None = None) -> None:
        self.last_used = time.monotonic() if now is None else now


class ModelStore:
    """This party's shards of fitted models, by model id."""

    name: str
    _models: dict[str, dict]

    def store_model(self, model_id: str, shard: dict) -> None:
        """Keep this party's shard of a fitted model (weights, own key) locally."""
        self._models[model_id] = shard

    def load_model(self, model_id: str) -> dict:
        try:
            return self._models[model_id]
        except KeyError:
            raise ValueError(
                f"party {self.name!r} holds no model {model_id!r}; if it was saved, load "
                "this party's shard with Party.import_model first"
            ) from None

    def model_ids(self) -> list[str]:
        """Ids of the model shards this party holds (one per binary model trained).

        Returns
        -------
        list of str
        """
        return list(self._models)

    @fill_doc(written_file=WRITTEN_FILE)
    def export_model(self, model_id: str, path: str | os.PathLike) -> Path:
        """Save this party's own shard of a fitted model to a JSON file.

        The file holds only this party's shard -- its weight block and, for a
        logistic regression, its own key pair, private primes included -- so it
        is written with mode ``0o600`` and must be protected like a private key.
        :func:`ftl.persistence.export_shard` describes the file.

        Parameters
        ----------
        model_id : str
            Id of the model (``clf.models_[k]["model_id"]`` at the guest; see
            also :meth:`model_ids`).
        %(written_file)s
        """
        return party_files().export_shard(self, model_id, path)

    def import_model(self, path: str | os.PathLike) -> str:
        """Load a shard written by :meth:`export_model` (by a party of this name).

        Afterwards this party serves predictions for the model as it did right
        after training. :func:`ftl.persistence.import_shard` lists what it checks.

        Parameters
        ----------
        path : str or path-like
            A file written by :meth:`export_model`.

        Returns
        -------
        str
            The id of the model the shard belongs to.
        """
        return party_files().import_shard(self, path)


class TransformerStore:
    """The transformers fitted on this party's rows, and the party seen through them.

    A party derived through a transformer (:meth:`derive`) is kept with it, so
    that a model trained on transformed rows finds its shard again later.
    """

    name: str
    _transformers: dict[str, _Held]
    _derived: dict[str, Any]

    def view(self, transform: Callable, feature_names) -> Any:
        """This party's rows seen through ``transform`` (a new derived party)."""
        raise NotImplementedError

    def store_transformer(self, transformer_id: str, transform: Callable) -> None:
        """Keep a transformer fitted on this party's rows (it never leaves the party).

        ``transform`` maps raw feature rows to new feature rows and names its
        output in ``transform.feature_names_out``. The party remembers when it
        was last used (stored, derived, or named by a request), for
        :meth:`expire_transformers`.
        """
        with _STORE_LOCK:
            if transformer_id in self._transformers:
                raise ValueError(
                    f"party {self.name!r} already holds transformer {transformer_id!r}"
                )
            held = _Held(transform, time.monotonic())
            # copy on write: the server's threads iterate these dicts without the lock
            self._transformers = {**self._transformers, transformer_id: held}

    def load_transformer(self, transformer_id: str) -> Callable:
        held = self._transformers.get(transformer_id)
        if held is None:
            raise ValueError(
                f"party {self.name!r} holds no fitted transformer {transformer_id!r}; fit "
                "the transformer on a handle over this party first (a served party drops "
                "a transformer that no kept model needs once it is unused for its session "
                "time-out)"
            )
        return held.transform

    def derive(self, transformer_id: str):
        """This party seen through a transformer fitted here (built once, then reused).

        Reusing one derived party per fitted transformer lets a model trained on
        transformed training rows find its shard again when test rows are
        transformed by the same transformer.
        """
        with _STORE_LOCK:
            transform = self.load_transformer(transformer_id)
            self._transformers[transformer_id].touch()
            derived = self._derived.get(transformer_id)
            if derived is None:
                derived = self.view(transform, transform.feature_names_out)
                self._derived = {**self._derived, transformer_id: derived}
            return derived

    def derived(self, transformer_id: str):
        """The party derived by :meth:`derive` (for the driver, after the protocol ran).

        Every request a served party answers through a fitted transformer looks
        it up here, which marks the transformer as in use.
        """
        derived = self._derived.get(transformer_id)
        held = self._transformers.get(transformer_id)
        if derived is None or held is None:
            raise ValueError(
                f"party {self.name!r} has not derived its rows through transformer "
                f"{transformer_id!r} (or dropped it: a served party drops a transformer "
                "that no kept model needs once it is unused for its session time-out; fit "
                "it again)"
            )
        held.touch()
        return derived

    def derived_parties(self) -> list:
        """The parties derived here so far (without marking their transformers used)."""
        return list(self._derived.values())

    def transformer_ids(self) -> list[str]:
        """Ids of the fitted transformers this party holds (not those of derived parties).

        Returns
        -------
        list of str
        """
        return list(self._transformers)

    def drop_transformer(self, transformer_id: str) -> bool:
        """Forget a fitted transformer, the party derived through it and all beyond.

        Parameters
        ----------
        transformer_id : str
            The transformer's id.

        Returns
        -------
        bool
            Whether this party held it.
        """
        with _STORE_LOCK:
            if transformer_id not in self._transformers:
                return False
            self._transformers = {
                k: v for k, v in self._transformers.items() if k != transformer_id
            }
            self._derived = {k: v for k, v in self._derived.items() if k != transformer_id}
            return True

    def expire_transformers(self, ttl: float, now: float | None = None) -> list[str]:
        """Drop the fitted transformers a peer no longer uses (``ftl serve`` calls this).

        A transformer is kept while the party derived through it holds a model
        shard (the model needs it to serve predictions), a transformer chained
        after it is kept, or a protocol session is open there; otherwise it is
        dropped once it has not been used -- fitted, derived, or named by a
        request -- for ``ttl`` seconds. Runs down the chain of derived parties.

        Parameters
        ----------
        ttl : float
            Seconds without use after which an unneeded transformer is dropped
            (the server's session time-out).
        now : float, optional
            The current :func:`time.monotonic` time.

        Returns
        -------
        list of str
            The dropped transformers, as ``/``-joined paths from this party.
        """
        now = time.monotonic() if now is None else now
        dropped = []
        for transformer_id, held in list(self._transformers.items()):
            derived = self._derived.get(transformer_id)
            if derived is not None:
                deeper = derived.expire_transformers(ttl, now)
                dropped.extend(f"{transformer_id}/{d}" for d in deeper)
                if _in_use(derived):
                    held.touch(now)
                    continue
            if now - held.last_used > ttl and self.drop_transformer(transformer_id):
                dropped.append(transformer_id)
        return dropped

    @fill_doc(written_file=WRITTEN_FILE)
    def export_transformer(self, transformer_id: str, path: str | os.PathLike) -> Path:
        """Save a transformer fitted at this party to a JSON file (no pickle).

        The file holds the transformer's allowlisted class, its parameters and
        the statistics it learned from this party's rows (see
        :func:`ftl.persistence.export_transformer`); it is written with mode
        ``0o600``. The second transformer of a pipeline is held by the derived
        party: ``party.derive(first_id).export_transformer(second_id, path)``.
        To save a party's whole share of a fitted pipeline in one file, use
        :func:`ftl.persistence.export_party`.

        Parameters
        ----------
        transformer_id : str
            The transformer's id (``step.transformer_id_`` at the driver; see
            also :meth:`transformer_ids`).
        %(written_file)s
        """
        return party_files().export_transformer(self, transformer_id, path)

    def import_transformer(self, path: str | os.PathLike) -> str:
        """Load a transformer written by :meth:`export_transformer` (by this party).

        Afterwards :meth:`derive` serves this party's rows through it as right
        after fitting, and a model shard trained on those rows can be loaded
        with ``party.derive(transformer_id).import_model(shard_path)``.
        :func:`ftl.persistence.import_transformer` lists what it checks.

        Parameters
        ----------
        path : str or path-like
            A file written by :meth:`export_transformer`.

        Returns
        -------
        str
            The transformer id.
        """
        return party_files().import_transformer(self, path)


def _in_use(party) -> bool:
    """Whether a derived party is needed: a model shard, a chained transformer, a session."""
    service = party._service
    return bool(party._models or party._transformers) or (
        service is not None and service.open_sessions > 0
    )
