"""A host's split table and its answers to the prediction walk (fit and predict).

The host keeps, for every split it made, an opaque id, the tree and depth of the
node, its feature and real threshold; the guest's trees hold the id only. In the
walk the guest asks, level by level, which way rows go at the host's nodes
(``sbt.decide``). An honest walk asks about a row at most once per tree and
depth, one depth after the other, so the host refuses anything else: a guest that
deviates can still choose *which* node of a depth it asks about, but never gets
more than one answer per row, tree and depth (docs/protocols.md §7.5).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from ftl.ensemble import _messages as msg
from ftl.federation.messages import Message

__all__ = ["SplitTable", "WalkLedger", "answer_walk"]


@dataclass
class SplitTable:
    """The splits one host made, in the order it made them.

    Attributes
    ----------
    ids : list of str
        Opaque split ids (what the guest's trees hold).
    tree, depth, feature : ndarray of int64
        The split's tree (in fit order), node depth and feature (this party's column).
    threshold : ndarray of float64
        Rows with ``x <= threshold`` go left.
    """

    ids: list[str] = field(default_factory=list)
    tree: np.ndarray = field(default_factory=lambda: np.empty(0, dtype=np.int64))
    depth: np.ndarray = field(default_factory=lambda: np.empty(0, dtype=np.int64))
    feature: np.ndarray = field(default_factory=lambda: np.empty(0, dtype=np.int64))
    threshold: np.ndarray = field(default_factory=lambda: np.empty(0, dtype=np.float64))

    def __post_init__(self):
        self._index = {split_id: i for i, split_id in enumerate(self.ids)}
        if len(self._index) != len(self.ids):
            raise ValueError("split ids repeat")
        n = len(self.ids)
        if any(a.shape != (n,) for a in (self.tree, self.depth, self.feature, self.threshold)):
            raise ValueError("the split table's columns differ in length")

    def add(self, split_id: str, tree: int, depth: int, feature: int, threshold: float) -> None:
        """Record one split (its id must be new)."""
        if split_id in self._index:
            raise ValueError(f"split id {split_id!r} already recorded")
        self._index[split_id] = len(self.ids)
        self.ids.append(split_id)
        self.tree = np.append(self.tree, np.int64(tree))
        self.depth = np.append(self.depth, np.int64(depth))
        self.feature = np.append(self.feature, np.int64(feature))
        self.threshold = np.append(self.threshold, np.float64(threshold))

    def lookup(self, split_ids) -> np.ndarray:
        """Table positions of ``split_ids``; ``ValueError`` for an unknown id."""
        if not isinstance(split_ids, list) or not all(isinstance(s, str) for s in split_ids):
            raise ValueError("split_ids must be a list of strings")
        try:
            return np.array([self._index[s] for s in split_ids], dtype=np.int64)
        except KeyError:
            raise ValueError("unknown split id") from None

    def counts(self, n_features: int) -> np.ndarray:
        """Splits per feature of this party (its own feature importance)."""
        return np.bincount(self.feature, minlength=n_features).astype(np.int64)


#: The depth of a tree whose walk is over (:meth:`WalkLedger.close`).
_CLOSED = np.iinfo(np.int64).max


class WalkLedger:
    """Which rows a walk has asked about, per tree, at the tree's current depth."""

    def __init__(self):
        # tree -> (depth, sorted rows already answered at that depth)
        self._asked: dict[int, tuple[int, np.ndarray]] = {}

    def close(self) -> None:
        """No more answers about the trees asked so far (their iteration's walk is
        over): a later question about one of them is refused as going back."""
        for t in self._asked:
            self._asked[t] = (_CLOSED, np.empty(0, dtype=np.int64))

    def state(self) -> list:
        """The walk so far as a checkpoint keeps it: ``[tree, depth, rows]`` per tree."""
        return [[t, d, rows.copy()] for t, (d, rows) in sorted(self._asked.items())]

    @classmethod
    def from_state(cls, state: list) -> WalkLedger:
        """The ledger :meth:`state` kept."""
        ledger = cls()
        for t, d, rows in state:
            ledger._asked[int(t)] = (int(d), np.asarray(rows, dtype=np.int64))
        return ledger

    def admit(self, rows: np.ndarray, tree: np.ndarray, depth: np.ndarray) -> None:
        """Record the (row, tree) pairs asked at ``depth``; ``ValueError`` (nothing
        recorded) if a tree's depth went back or a row is asked twice at one depth."""
        updates = {}
        for t in np.unique(tree):
            here = tree == t
            depths = np.unique(depth[here])
            if depths.shape[0] != 1:
                raise ValueError("one request asks about one depth of each tree")
            d = int(depths[0])
            known_depth, asked = self._asked.get(int(t), (d, np.empty(0, dtype=np.int64)))
            if d < known_depth:
                raise ValueError("the walk went back to a shallower depth")
            if d > known_depth:
                asked = np.empty(0, dtype=np.int64)
            new = np.sort(rows[here])
            if (new[1:] == new[:-1]).any() or np.isin(new, asked, assume_unique=True).any():
                raise ValueError("a row is asked about twice at one node depth")
            updates[int(t)] = (d, np.union1d(asked, new))
        self._asked.update(updates)


def answer_walk(
    table: SplitTable, ledger: WalkLedger, features: np.ndarray, request: Message
) -> Message:
    """Answer one ``sbt.decide``: which asked rows go left at the named splits.

    Parameters
    ----------
    table : SplitTable
    ledger : WalkLedger
        This session's record of the walk (checked and updated).
    features : ndarray of shape (n_rows, n_features)
        This party's columns of the rows being walked (row ``i`` of the request).
    request : Message
        An ``sbt.decide`` message.
    """
    index = table.lookup(request["split_ids"])
    pairs = request["pairs"]
    if pairs.ndim != 2 or pairs.shape[1] != 2:
        raise ValueError("pairs must be (row, split) pairs")
    rows, which = pairs[:, 0], pairs[:, 1]
    if rows.size and (rows.min() < 0 or rows.max() >= features.shape[0]):
        raise ValueError("a walked row is out of range")
    if which.size and (which.min() < 0 or which.max() >= index.shape[0]):
        raise ValueError("a pair names no split of the request")
    at = index[which]
    ledger.admit(rows, table.tree[at], table.depth[at])
    left = features[rows, table.feature[at]] <= table.threshold[at]
    return Message(msg.DECISIONS.name, {"left": np.asarray(left, dtype=bool)})
