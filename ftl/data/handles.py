"""Data handles: row references that pass through scikit-learn unchanged.

A handle holds *which rows*, never another party's values. It has ``shape``,
``len()`` and row indexing (int, slice, int or bool array, ``(array, Ellipsis)``),
which is all that ``train_test_split``, CV splitters and ``GridSearchCV`` need. It
deliberately defines no ``fit``, ``iloc`` or ``__array__``, so scikit-learn never
mistakes it for an estimator or a DataFrame, nor copies it into a dense array.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

__all__ = ["Alignment", "PartyRows", "VerticalData"]


@dataclass(eq=False)
class Alignment:
    """The outcome of PSI: parties and the agreed order of the shared rows.

    ``ids`` are the guest's ids of the aligned rows (every party learns the
    intersection in the default PSI mode). ``row_labels`` marks, for
    ``how="left"`` alignments, which aligned rows the other party also has.
    """

    id: str
    guest: Any
    hosts: tuple[Any, ...]
    ids: np.ndarray
    n_features: tuple[int, ...]
    feature_names: tuple[str, ...]
    overlap: np.ndarray | None = None
    how: str = "inner"
    psi: dict = field(default_factory=dict)

    @property
    def parties(self) -> tuple[Any, ...]:
        return (self.guest, *self.hosts)

    @property
    def n_rows(self) -> int:
        return len(self.ids)


def _normalise_index(key: Any, n: int) -> np.ndarray:
    if isinstance(key, tuple):
        if len(key) == 2 and key[1] is Ellipsis:
            key = key[0]
        else:
            raise IndexError("data handles support row indexing only (rows, ...)")
    if isinstance(key, (int, np.integer)):
        if not -n <= key < n:
            raise IndexError(f"row {key} out of range for {n} rows")
        return np.array([key % n])
    if isinstance(key, slice):
        return np.arange(n)[key]
    arr = np.asarray(key)
    if arr.dtype == bool:
        if arr.shape != (n,):
            raise IndexError(f"boolean index of shape {arr.shape} for {n} rows")
        return np.flatnonzero(arr)
    if arr.dtype.kind not in "iu" or arr.ndim != 1:
        raise IndexError("rows must be selected by int, slice, int array or bool array")
    if arr.size and (arr.min() < -n or arr.max() >= n):
        raise IndexError(f"row index out of range for {n} rows")
    return arr % n if arr.size else arr.astype(np.int64)


class VerticalData:
    """Rows of an alignment across parties (guest first, then hosts).

    Obtained from :func:`ftl.align`; index it like an array of rows.

    Attributes
    ----------
    shape : tuple of int
        ``(n_rows, n_features_total)`` over all parties.
    ids : ndarray
        The aligned ids of these rows, in row order.
    """

    def __init__(self, alignment: Alignment, positions: np.ndarray | None = None):
        self.alignment = alignment
        if positions is None:
            positions = np.arange(alignment.n_rows)
        self.positions = np.asarray(positions, dtype=np.int64)

    @property
    def shape(self) -> tuple[int, int]:
        return (len(self.positions), int(sum(self.alignment.n_features)))

    @property
    def ndim(self) -> int:
        return 2

    def __len__(self) -> int:
        return len(self.positions)

    def __getitem__(self, key: Any) -> VerticalData:
        sel = _normalise_index(key, len(self.positions))
        return VerticalData(self.alignment, self.positions[sel])

    @property
    def ids(self) -> np.ndarray:
        return self.alignment.ids[self.positions]

    @property
    def parties(self) -> tuple[Any, ...]:
        return self.alignment.parties

    @property
    def feature_names(self) -> tuple[str, ...]:
        return self.alignment.feature_names

    def __repr__(self) -> str:
        names = ", ".join(p.name for p in self.parties)
        return f"VerticalData({len(self)} rows x {self.shape[1]} features over [{names}])"


class PartyRows:
    """Rows of a single party, not aligned with anyone (see :meth:`Party.select`).

    For a :class:`~ftl.RemoteParty` the driver knows the rows only by the ids it
    was given (``ids``); ``rows`` then just numbers them.
    """

    def __init__(self, party: Any, rows: np.ndarray, ids: np.ndarray | None = None):
        self.party = party
        self.rows = np.asarray(rows, dtype=np.int64)
        self._ids = None if ids is None else np.asarray(ids)

    @property
    def shape(self) -> tuple[int, int]:
        return (len(self.rows), self.party.n_features)

    @property
    def ndim(self) -> int:
        return 2

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, key: Any) -> PartyRows:
        sel = _normalise_index(key, len(self.rows))
        ids = None if self._ids is None else self._ids[sel]
        return PartyRows(self.party, self.rows[sel], ids)

    @property
    def ids(self) -> np.ndarray:
        if self._ids is not None:
            return self._ids
        return self.party.local_ids()[self.rows]

    def __repr__(self) -> str:
        return f"PartyRows({self.party.name!r}, {len(self)} rows)"
