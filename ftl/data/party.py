"""A party: one organisation's own data, validated once, never handed to peers."""

from __future__ import annotations

import os
import secrets
import threading
import time
import uuid
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from ftl.federation.service import PartyService

__all__ = ["DerivedParty", "Party"]

#: Serialises changes of the transformer stores (``ftl serve`` fits in threads).
_STORE_LOCK = threading.RLock()


class _Held:
    """A fitted transformer kept at a party, and when it was last used."""

    __slots__ = ("transform", "last_used")

    def __init__(self, transform: Callable, now: float):
        self.transform = transform
        self.last_used = now

    def touch(self, now: float | None = None) -> None:
        self.last_used = time.monotonic() if now is None else now


def _in_use(party: Party) -> bool:
    """Whether a derived party is needed: a model shard, a chained transformer, a session."""
    service = party._service
    return bool(party._models or party._transformers) or (
        service is not None and service.open_sessions > 0
    )


def _clean_ids(ids: Any, name: str) -> np.ndarray:
    arr = np.asarray(ids)
    if arr.ndim != 1:
        raise ValueError(f"party {name!r}: ids must be one-dimensional, got shape {arr.shape}")
    missing = pd.isna(arr)
    if missing.any():
        raise ValueError(f"party {name!r}: {int(missing.sum())} missing id(s)")
    if arr.dtype.kind == "f":
        if not np.all(np.mod(arr, 1) == 0):
            raise ValueError(f"party {name!r}: float ids must be whole numbers")
        arr = arr.astype(np.int64)
    if arr.dtype.kind not in "iuUSO":
        raise ValueError(f"party {name!r}: ids must be integers or strings, got {arr.dtype}")
    if arr.dtype.kind == "O":
        bad = [v for v in arr[:1000] if not isinstance(v, (str, int, np.integer))]
        if bad:
            raise ValueError(f"party {name!r}: ids must be integers or strings, got {bad[0]!r}")
    as_text = pd.Series(arr.astype(str))
    dup = as_text.duplicated(keep=False)
    if dup.any():
        examples = ", ".join(as_text[dup].unique()[:3])
        raise ValueError(
            f"party {name!r}: {int(dup.sum())} rows share duplicate ids (e.g. {examples})"
        )
    return arr


def _check_features(frame: pd.DataFrame, name: str, allow_missing: bool = False) -> np.ndarray:
    non_numeric = [
        str(c)
        for c in frame.columns
        if not (pd.api.types.is_numeric_dtype(frame[c]) or pd.api.types.is_bool_dtype(frame[c]))
    ]
    if non_numeric:
        raise ValueError(
            f"party {name!r}: non-numeric feature column(s) {non_numeric}; encode them first "
            "(e.g. with ftl.preprocessing or pandas.get_dummies)"
        )
    values = frame.to_numpy(dtype=np.float64, na_value=np.nan)
    bad = np.isinf(values) if allow_missing else ~np.isfinite(values)
    if bad.any():
        cols = [
            f"{frame.columns[j]!s} ({int(bad[:, j].sum())} rows)"
            for j in np.flatnonzero(bad.any(0))
        ]
        if allow_missing:
            raise ValueError(
                f"party {name!r}: infinite values in feature column(s) {', '.join(cols)}"
            )
        raise ValueError(
            f"party {name!r}: NaN or infinite values in feature column(s) {', '.join(cols)}; "
            "impute or drop them first, or pass allow_missing=True and impute them with "
            "ftl.preprocessing.FederatedSimpleImputer"
        )
    return values


def _refuse_missing(name: str, features: np.ndarray) -> None:
    """Protocols train on complete rows only: say how to get there."""
    if np.isnan(features).any():
        raise ValueError(
            f"party {name!r} has missing values in the rows used; impute them first, e.g. "
            "with ftl.preprocessing.FederatedSimpleImputer"
        )


class Party:
    """One organisation's data: ids, feature columns and optionally labels.

    The data stays inside this object; protocols reach it only through the
    party's registered operations, and only encrypted or masked values leave.

    Parameters
    ----------
    name : str
        Name of the organisation, unique within a federation.
    data : pandas.DataFrame or array-like of shape (n_rows, n_columns)
        The party's table. With a DataFrame, every column other than
        ``id_column`` and ``label_column`` is a feature.
    id_column : str, optional
        Column of ``data`` holding the join key (int or str). Required for a
        DataFrame unless ``ids`` is given.
    label_column : str, optional
        Column holding the labels; only the guest (or transfer source) has one.
    ids : array-like of shape (n_rows,), optional
        Ids for a plain 2-D array ``data`` (or to override ``id_column``).
    feature_names : sequence of str, optional
        Column names for a plain array ``data``.
    labels : array-like of shape (n_rows,), optional
        Labels for a plain array ``data``.
    allow_missing : bool, default=False
        Accept missing (NaN) feature values. Protocols refuse rows with missing
        values, so impute them first where the data is, e.g. with
        :class:`ftl.preprocessing.FederatedSimpleImputer` in a pipeline.

    Raises
    ------
    ValueError
        On duplicate or missing ids, non-numeric feature columns, infinite
        feature values, NaN feature values (unless ``allow_missing``), missing
        labels, or an unknown column name.

    Examples
    --------
    >>> import pandas as pd, ftl
    >>> df = pd.DataFrame({"id": [1, 2, 3], "x": [0.1, 0.2, 0.3], "y": [0, 1, 0]})
    >>> bank = ftl.Party("bank", df, id_column="id", label_column="y")
    >>> bank.n_rows, bank.n_features, bank.has_labels
    (3, 1, True)
    """

    def __init__(
        self,
        name: str,
        data: Any,
        id_column: str | None = None,
        label_column: str | None = None,
        *,
        ids: Any = None,
        feature_names: Sequence[str] | None = None,
        labels: Any = None,
        allow_missing: bool = False,
    ):
        if not isinstance(name, str) or not name:
            raise ValueError("party name must be a non-empty string")
        self.name = name
        frame = self._as_frame(data, feature_names)
        for col, what in ((id_column, "id_column"), (label_column, "label_column")):
            if col is not None and col not in frame.columns:
                raise ValueError(
                    f"party {name!r}: {what} {col!r} not in columns {list(frame.columns)}"
                )
        if ids is None:
            if id_column is None:
                raise ValueError(f"party {name!r}: give id_column (DataFrame) or ids (array)")
            ids = frame[id_column].to_numpy()
        elif len(ids) != len(frame):
            raise ValueError(f"party {name!r}: {len(ids)} ids for {len(frame)} rows")
        self._ids = _clean_ids(ids, name)
        if label_column is not None:
            labels = frame[label_column].to_numpy()
        if labels is not None:
            labels = np.asarray(labels)
            if labels.shape != (len(frame),):
                raise ValueError(f"party {name!r}: labels must have shape ({len(frame)},)")
            if pd.isna(labels).any():
                raise ValueError(f"party {name!r}: {int(pd.isna(labels).sum())} missing label(s)")
        self._labels = labels
        drop = [c for c in (id_column, label_column) if c is not None]
        features = frame.drop(columns=drop)
        self.feature_names = [str(c) for c in features.columns]
        self._features = _check_features(features, name, allow_missing)
        self._has_missing = bool(allow_missing and np.isnan(self._features).any())
        self.id_column = id_column
        self.label_column = label_column
        self.token = uuid.uuid4().hex
        # never leaves the party: seeds what its peers must not reproduce (the
        # guest's random start and label noise: ftl.linear_model.guest.guest_secret)
        self._secret = secrets.token_bytes(32)
        self._alignments: dict[str, np.ndarray] = {}
        self._models: dict[str, dict] = {}
        self._transformers: dict[str, Any] = {}
        self._derived: dict[str, DerivedParty] = {}
        self._service: PartyService | None = None

    @staticmethod
    def _as_frame(data: Any, feature_names: Sequence[str] | None) -> pd.DataFrame:
        if isinstance(data, pd.DataFrame):
            if data.columns.duplicated().any():
                raise ValueError("data has duplicate column names")
            return data.reset_index(drop=True)
        arr = np.asarray(data)
        if arr.ndim != 2:
            raise ValueError(f"data must be a DataFrame or a 2-D array, got shape {arr.shape}")
        names = (
            list(feature_names)
            if feature_names is not None
            else [f"x{j}" for j in range(arr.shape[1])]
        )
        if len(names) != arr.shape[1]:
            raise ValueError(f"{len(names)} feature names for {arr.shape[1]} columns")
        return pd.DataFrame(arr, columns=names)

    # -- what anyone may know about the party ------------------------------------
    @property
    def n_rows(self) -> int:
        return len(self._ids)

    @property
    def n_features(self) -> int:
        return self._features.shape[1]

    @property
    def has_labels(self) -> bool:
        return self._labels is not None

    def __repr__(self) -> str:
        role = "labelled" if self.has_labels else "features only"
        return f"Party({self.name!r}, {self.n_rows} rows, {self.n_features} features, {role})"

    # -- local access, used only by this party's own protocol roles ----------------
    @property
    def endpoint(self) -> PartyService:
        """The in-process service answering protocol operations for this party."""
        if self._service is None:
            self._service = PartyService(self)
        return self._service

    def local_ids(self) -> np.ndarray:
        return self._ids

    def local_labels(self, rows: np.ndarray) -> np.ndarray:
        if self._labels is None:
            raise ValueError(f"party {self.name!r} has no labels")
        return self._labels[rows]

    def local_features(self, rows: np.ndarray) -> np.ndarray:
        """Feature rows for a protocol; refuses rows with missing values."""
        features = self.raw_features(rows)
        if self._has_missing:
            _refuse_missing(self.name, features)
        return features

    def raw_features(self, rows: np.ndarray) -> np.ndarray:
        """Feature rows as stored, missing values included (for preprocessing)."""
        return self._features[rows]

    def aligned_rows(self, alignment_id: str, positions: np.ndarray) -> np.ndarray:
        """Local row numbers of aligned positions (the mapping never leaves the party)."""
        try:
            table = self._alignments[alignment_id]
        except KeyError:
            raise ValueError(f"party {self.name!r} has no alignment {alignment_id!r}") from None
        positions = np.asarray(positions, dtype=np.int64)
        if positions.size and (positions.min() < 0 or positions.max() >= len(table)):
            raise ValueError(f"party {self.name!r}: aligned row position out of range")
        return table[positions]

    def remember_alignment(self, alignment_id: str, local_rows: np.ndarray) -> None:
        self._alignments[alignment_id] = np.asarray(local_rows, dtype=np.int64)

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

    def export_model(self, model_id: str, path: str | os.PathLike) -> Path:
        """Save this party's own shard of a fitted model to a JSON file.

        The file holds only this party's shard: format and version, the model
        id, this party's weight block, the encryption scheme and this party's
        own key pair (public ``n`` and ``hs``, private ``p`` and ``q``). The key
        pair is this party's secret: the file is written with mode ``0o600``
        and must be protected like a private key. See :mod:`ftl.persistence`.

        Parameters
        ----------
        model_id : str
            Id of the model (``clf.models_[k]["model_id"]`` at the guest; see
            also :meth:`model_ids`).
        path : str or path-like
            Where to write the file (replaced if it exists).

        Returns
        -------
        pathlib.Path
            The written path.

        Raises
        ------
        ValueError
            If this party holds no model ``model_id``.
        """
        from ftl.persistence import export_shard

        return export_shard(self, model_id, path)

    def import_model(self, path: str | os.PathLike) -> str:
        """Load a shard written by :meth:`export_model` (by a party of this name).

        Afterwards this party serves predictions for the model as it did right
        after training.

        Parameters
        ----------
        path : str or path-like
            A file written by :meth:`export_model`.

        Returns
        -------
        str
            The model id of the imported shard.

        Raises
        ------
        ValueError
            If the file is corrupted, has another format or version, belongs to
            a party of another name, or does not fit this party's features.
        """
        from ftl.persistence import import_shard

        return import_shard(self, path)

    def rows_for_ids(self, ids: Any) -> np.ndarray:
        """Local row numbers of the given ids (all must exist).

        The error never says which ids, or how many, are missing: a peer that
        names ids must not learn which of them are this party's customers.
        """
        wanted = pd.Index(np.asarray(ids).astype(str))
        index = pd.Index(self._ids.astype(str))
        rows = index.get_indexer(wanted)
        if (rows < 0).any():
            raise ValueError(f"party {self.name!r}: some requested ids were not found")
        return rows

    def select(self, ids: Any = None):
        """A handle over some of this party's rows, without alignment.

        Parameters
        ----------
        ids : array-like, optional
            Ids to select, in the wanted order; all rows when omitted.

        Returns
        -------
        PartyRows
        """
        from ftl.data.handles import PartyRows

        rows = np.arange(self.n_rows) if ids is None else self.rows_for_ids(ids)
        return PartyRows(self, rows)

    # -- preprocessing: transformers fitted here, and the party seen through them --
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

    def derive(self, transformer_id: str) -> DerivedParty:
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
                derived = DerivedParty(self, transform, transform.feature_names_out)
                self._derived = {**self._derived, transformer_id: derived}
            return derived

    def derived(self, transformer_id: str) -> DerivedParty:
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
        path : str or path-like
            Where to write the file (replaced if it exists).

        Returns
        -------
        pathlib.Path
            The written path.

        Raises
        ------
        ValueError
            If this party holds no transformer ``transformer_id`` or it cannot
            be saved faithfully.
        """
        from ftl.persistence import export_transformer

        return export_transformer(self, transformer_id, path)

    def import_transformer(self, path: str | os.PathLike) -> str:
        """Load a transformer written by :meth:`export_transformer` (by this party).

        Afterwards :meth:`derive` serves this party's rows through it as right
        after fitting, and a model shard trained on those rows can be loaded
        with ``party.derive(transformer_id).import_model(shard_path)``.

        Parameters
        ----------
        path : str or path-like
            A file written by :meth:`export_transformer`.

        Returns
        -------
        str
            The transformer id.

        Raises
        ------
        ValueError
            If the file is corrupted, has another format or version, belongs to
            a party of another name, takes other features than this party's
            columns, names a class that is not allowlisted, or this party
            already holds a transformer of that id.
        """
        from ftl.persistence import import_transformer

        return import_transformer(self, path)

    def __getstate__(self) -> dict:
        state = self.__dict__.copy()
        state["_service"] = None  # sessions are process-local
        return state


class DerivedParty(Party):
    """A party's rows seen through a transformer fitted at that party.

    Same name, ids, labels and alignment tables as its base party (row ``i`` is
    the base's row ``i``), with the transformer's output as features. Features
    are computed from the base's rows when a protocol reads them, at the party,
    so no second copy of the table is kept. Made by :meth:`Party.derive` (see
    :mod:`ftl.preprocessing`); it serves protocols and pickles like any party.

    Parameters
    ----------
    base : Party
        The party whose rows are transformed.
    transform : callable
        Maps an array of the base's raw feature rows to the derived rows.
    feature_names : sequence of str
        Names of the derived features.
    """

    def __init__(self, base: Party, transform: Callable, feature_names: Sequence[str]):
        self.name = base.name
        self.feature_names = [str(c) for c in feature_names]
        self.id_column = base.id_column
        self.label_column = base.label_column
        self.token = uuid.uuid4().hex
        self._base = base
        self._transform = transform
        self._ids = base._ids
        self._labels = base._labels
        # shared, not copied: rows are the base's rows, so every alignment of the
        # base (also one made later) holds for the derived party too
        self._alignments = base._alignments
        self._has_missing = True  # unknown until rows are transformed: always check
        self._models = {}
        self._transformers = {}
        self._derived = {}
        self._service = None

    @property
    def base(self) -> Party:
        """The party whose rows this one transforms."""
        return self._base

    @property
    def n_features(self) -> int:
        return len(self.feature_names)

    def raw_features(self, rows: np.ndarray) -> np.ndarray:
        rows = np.asarray(rows, dtype=np.int64)
        if rows.size == 0:
            return np.empty((0, self.n_features))
        out = np.asarray(self._transform(self._base.raw_features(rows)), dtype=np.float64)
        if out.shape != (len(rows), self.n_features):
            raise ValueError(
                f"party {self.name!r}: the fitted transformer returned shape {out.shape}, "
                f"expected {(len(rows), self.n_features)}"
            )
        if np.isinf(out).any():
            raise ValueError(f"party {self.name!r}: preprocessing produced infinite values")
        return out

    def __repr__(self) -> str:
        return super().__repr__()[:-1] + ", preprocessed)"
