"""How a served party appears to each peer: its allowed columns, its own state.

A host serves every peer through a *view* of its party: a derived party that
shows only the columns the peer's policy rule allows and holds the model shards
and fitted transformers of that peer's runs, with the guard (privacy budget) the
protocol roles consult for that peer. A request may name a *path* of fitted
transformers: the view seen through them, in order.

The served party is a :class:`ServedParty`: what the server needs of
:class:`ftl.Party`, which lives in a higher layer and is never imported here.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from ftl.federation.budget import HostGuard
from ftl.federation.policy import PeerRule, Policy

__all__ = ["ColumnView", "ServedParty", "peer_view", "through", "with_derived"]


class ServedParty(Protocol):
    """What ``ftl serve`` needs of a party (:class:`ftl.Party` has all of it)."""

    name: str
    feature_names: list[str]

    @property
    def n_rows(self) -> int: ...

    @property
    def has_labels(self) -> bool: ...

    @property
    def endpoint(self) -> Any: ...

    def view(self, transform: Callable, feature_names: Sequence[str]) -> ServedParty: ...

    def derive(self, transformer_id: str) -> ServedParty: ...

    def derived(self, transformer_id: str) -> ServedParty: ...

    def derived_parties(self) -> list[ServedParty]: ...

    def expire_transformers(self, ttl: float, now: float | None = None) -> list[str]: ...

    def expire_kept(self, ttls: dict[str, float], now: float | None = None) -> list: ...

    def keep_own_alignments(self) -> None: ...

    def model_ids(self) -> list[str]: ...

    def export_model(self, model_id: str, path: str | os.PathLike) -> Path: ...

    def import_model(self, path: str | os.PathLike) -> str: ...

    def transformer_ids(self) -> list[str]: ...

    def export_transformer(self, transformer_id: str, path: str | os.PathLike) -> Path: ...

    def import_transformer(self, path: str | os.PathLike) -> str: ...


class ColumnView:
    """Picks a peer's allowed columns from the base party's feature rows."""

    def __init__(self, index: np.ndarray, names: list[str]):
        self.index = index
        self.feature_names_out = names

    def __call__(self, rows: np.ndarray) -> np.ndarray:
        return rows[:, self.index]


def peer_view(party: ServedParty, rule: PeerRule, policy: Policy) -> ServedParty:
    """The party as one peer may see it: allowed columns, its own models, and the
    guard (privacy budget) that the protocol roles consult for this peer."""
    names = list(party.feature_names)
    if rule.columns is None:
        keep = names
    else:
        missing = sorted(set(rule.columns) - set(names))
        if missing:
            raise ValueError(f"policy for {rule.identity!r} names unknown column(s) {missing}")
        keep = [c for c in names if c in set(rule.columns)]
    view = party.view(ColumnView(np.array([names.index(c) for c in keep]), keep), keep)
    # Read by the protocol roles, which enforce the budget themselves.
    view.guard = HostGuard.from_policy(policy, rule.identity)
    return view


def through(party: ServedParty, path: tuple[str, ...]) -> ServedParty:
    """``party`` seen through the fitted transformers named by ``path``, in order
    (``ValueError`` if one was never derived there)."""
    for transformer_id in path:
        party = party.derived(transformer_id)
    return party


def with_derived(party: ServedParty) -> Iterator[ServedParty]:
    """A party and every party derived from it through fitted transformers."""
    yield party
    for derived in party.derived_parties():
        yield from with_derived(derived)
