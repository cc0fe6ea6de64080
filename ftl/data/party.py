"""A party: one organisation's own data, validated once, never handed to peers."""

from __future__ import annotations

import os
import secrets
import uuid
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from ftl.data.leases import Leased, Leases
from ftl.data.stores import ModelStore, TransformerStore
from ftl.federation.service import PartyService

__all__ = ["DerivedParty", "Party"]


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
    if arr.dtype.kind in "iu":
        # integers: a sort finds repeats (text keys of a million ids take seconds)
        ordered = np.sort(arr)
        repeated = ordered[1:][ordered[1:] == ordered[:-1]]
        dup = np.isin(arr, repeated) if repeated.size else np.zeros(arr.shape, dtype=bool)
        as_text = pd.Series(arr[dup].astype(str))
    else:
        # strings, or objects that may mix 1 and "1": compared as text
        as_text = pd.Series(arr.astype(str))
        dup = as_text.duplicated(keep=False).to_numpy()
        as_text = as_text[dup]
    if dup.any():
        examples = ", ".join(as_text.unique()[:3])
        raise ValueError(
            f"party {name!r}: {int(dup.sum())} rows share duplicate ids (e.g. {examples})"
        )
    return arr


def _clean_labels(labels: Any, n_rows: int, name: str) -> np.ndarray | None:
    if labels is None:
        return None
    labels = np.asarray(labels)
    if labels.shape != (n_rows,):
        raise ValueError(f"party {name!r}: labels must have shape ({n_rows},)")
    if pd.isna(labels).any():
        raise ValueError(f"party {name!r}: {int(pd.isna(labels).sum())} missing label(s)")
    return labels


def _array_names(arr: np.ndarray, feature_names: Sequence[str] | None) -> list:
    """The column names of a 2-d array's features (``x0, x1, ...`` by default)."""
    if arr.ndim != 2:
        raise ValueError(f"data must be a DataFrame or a 2-D array, got shape {arr.shape}")
    names = list(feature_names) if feature_names is not None else None
    names = names if names is not None else [f"x{j}" for j in range(arr.shape[1])]
    if len(names) != arr.shape[1]:
        raise ValueError(f"{len(names)} feature names for {arr.shape[1]} columns")
    return names


def _plain_numbers(data: Any) -> bool:
    """Whether ``data`` is a numpy array of numbers (not a table, not objects)."""
    return isinstance(data, np.ndarray) and data.dtype.kind in "biuf"


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
    return _check_values(values, [str(c) for c in frame.columns], name, allow_missing)


def _check_values(
    values: np.ndarray, columns: list[str], name: str, allow_missing: bool = False
) -> np.ndarray:
    """``values`` (float64), refused if it holds infinities, or NaN unless allowed."""
    bad = np.isinf(values) if allow_missing else ~np.isfinite(values)
    if bad.any():
        cols = [f"{columns[j]} ({int(bad[:, j].sum())} rows)" for j in np.flatnonzero(bad.any(0))]
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


def _listing(columns, limit: int = 30) -> str:
    """The column names of a data file, for an error message (the party's own file:
    its operator reads this, no peer does)."""
    names = [str(c) for c in columns]
    shown = ", ".join(repr(n) for n in names[:limit])
    return shown + (f", ... ({len(names)} in all)" if len(names) > limit else "")


def _refuse_missing(name: str, features: np.ndarray) -> None:
    """Protocols train on complete rows only: say how to get there."""
    if np.isnan(features).any():
        raise ValueError(
            f"party {name!r} has missing values in the rows used; impute them first, e.g. "
            "with ftl.preprocessing.FederatedSimpleImputer"
        )


class Party(Leased, ModelStore, TransformerStore):
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
        if _plain_numbers(data) and id_column is None and label_column is None:
            # an array of numbers (a simulation's columns): no table to go through,
            # one copy of the values instead of three
            self._from_array(np.asarray(data), ids, feature_names, labels, allow_missing)
            return
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
        self._labels = _clean_labels(labels, len(frame), name)
        drop = [c for c in (id_column, label_column) if c is not None]
        features = frame.drop(columns=drop)
        self.feature_names = [str(c) for c in features.columns]
        self._finish(_check_features(features, name, allow_missing), allow_missing)
        self.id_column = id_column
        self.label_column = label_column

    def _from_array(self, arr: np.ndarray, ids, feature_names, labels, allow_missing: bool):
        """:meth:`__init__` for a 2-d array of numbers with ``ids`` (same checks)."""
        name = self.name
        names = [str(c) for c in _array_names(arr, feature_names)]
        if len(set(names)) != len(names):
            raise ValueError("data has duplicate column names")
        if ids is None:
            raise ValueError(f"party {name!r}: give id_column (DataFrame) or ids (array)")
        if len(ids) != len(arr):
            raise ValueError(f"party {name!r}: {len(ids)} ids for {len(arr)} rows")
        self._ids = _clean_ids(ids, name)
        self._labels = _clean_labels(labels, len(arr), name)
        self.feature_names = names
        values = np.array(arr, dtype=np.float64, order="C")  # the party's own copy
        self._finish(_check_values(values, names, name, allow_missing), allow_missing)
        self.id_column = None
        self.label_column = None

    def _finish(self, features: np.ndarray, allow_missing: bool) -> None:
        """What every party holds besides its data: its secret, token, stores."""
        self._features = features
        self._has_missing = bool(allow_missing and np.isnan(features).any())
        self.token = uuid.uuid4().hex
        # never leaves the party: seeds what its peers must not reproduce (the
        # guest's random start and label noise: ftl.linear_model.guest.guest_secret)
        self._secret = secrets.token_bytes(32)
        self._alignments: dict[str, np.ndarray] = {}
        self._empty_stores()

    @classmethod
    def from_file(
        cls,
        path: str | os.PathLike,
        name: str,
        id_column: str,
        *,
        columns: Sequence[str] | None = None,
        allow_missing: bool = False,
    ) -> Party:
        """Read a party's table from a CSV (or Parquet) file; features only.

        Parameters
        ----------
        path : str or path-like
            A ``.csv`` file, or a ``.parquet``/``.pq`` file (needs pyarrow).
        name : str
            Name of the organisation.
        id_column : str
            Column holding the join key.
        columns : sequence of str, optional
            Load only these feature columns (default: every other column).
        allow_missing : bool, default=False
            Accept missing feature values (see :class:`Party`).

        Returns
        -------
        Party

        Raises
        ------
        ValueError
            If the file cannot be read, or lacks ``id_column`` or one of
            ``columns`` (the error lists the file's columns: it goes to the
            party's own operator).
        """
        path = Path(path)
        try:
            if path.suffix.lower() in (".parquet", ".pq"):
                frame = pd.read_parquet(path)
            else:
                frame = pd.read_csv(path)
        except (OSError, ValueError, ImportError) as exc:
            raise ValueError(f"cannot read the party's data {str(path)!r}: {exc}") from None
        if id_column not in frame.columns:
            raise ValueError(
                f"id_column {id_column!r} is not a column of {path}; "
                f"its columns: {_listing(frame.columns)}"
            )
        if columns is not None:
            missing = sorted(set(columns) - set(frame.columns))
            if missing:
                raise ValueError(
                    f"columns not in {path}: {missing}; its columns: {_listing(frame.columns)}"
                )
            frame = frame[[id_column, *columns]]
        return cls(name, frame, id_column=id_column, allow_missing=allow_missing)

    @staticmethod
    def _as_frame(data: Any, feature_names: Sequence[str] | None) -> pd.DataFrame:
        if isinstance(data, pd.DataFrame):
            if data.columns.duplicated().any():
                raise ValueError("data has duplicate column names")
            return data.reset_index(drop=True)
        arr = np.asarray(data)
        return pd.DataFrame(arr, columns=_array_names(arr, feature_names))

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
            raise self._not_held("alignment", alignment_id) from None
        self._touch("alignment", alignment_id)
        positions = np.asarray(positions, dtype=np.int64)
        if positions.size and (positions.min() < 0 or positions.max() >= len(table)):
            raise ValueError(f"party {self.name!r}: aligned row position out of range")
        return table[positions]

    def alignment_table(self, alignment_id: str) -> np.ndarray:
        """The local row of every aligned position (kept by a served party's
        checkpoints, so that a restarted host still knows the alignment)."""
        size = len(self._alignments.get(alignment_id, ()))
        return self.aligned_rows(alignment_id, np.arange(size))

    def remember_alignment(self, alignment_id: str, local_rows: np.ndarray) -> None:
        self._alignments[alignment_id] = np.asarray(local_rows, dtype=np.int64)
        self._leases.touch("alignment", alignment_id)

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
    def view(self, transform: Callable, feature_names: Sequence[str]) -> DerivedParty:
        """This party's rows seen through ``transform``, computed here when read.

        Parameters
        ----------
        transform : callable
            Maps an array of this party's raw feature rows to the viewed rows.
        feature_names : sequence of str
            Names of the viewed features.

        Returns
        -------
        DerivedParty
            A new party that shares this party's ids, labels and alignments.
        """
        return DerivedParty(self, transform, feature_names)

    def _empty_stores(self) -> None:
        """No model shards, no transformers, no open protocol sessions yet."""
        self._models: dict[str, dict] = {}
        self._lease_book = Leases()
        self._transformers = {}
        self._derived: dict[str, DerivedParty] = {}
        self._service: PartyService | None = None

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
        self._empty_stores()

    @property
    def base(self) -> Party:
        """The party whose rows this one transforms."""
        return self._base

    def keep_own_alignments(self) -> None:
        """From now on, keep alignment tables apart from the base's: a served party's
        view for one peer, whose alignments no other peer may name (parties derived
        from this one share this one's)."""
        self._alignments = {}

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
