"""Driver side of preprocessing: ask every party to fit or transform, build new handles.

The driver runs at the guest and talks to each party -- the guest included --
through its endpoint and the channel, so every call is recorded in the
transcript. It learns only what the parties return: counts and positional
feature names (no category, bin edge or other statistic of a party).
"""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np

from ftl.data.handles import Alignment, PartyRows, VerticalData
from ftl.federation.channel import Channel
from ftl.federation.messages import Message
from ftl.preprocessing import _messages as msg

__all__ = ["derive_parties", "fit_parties", "handle_parties", "with_parties"]


def handle_parties(X: VerticalData | PartyRows) -> list:
    """The parties a handle spans (guest first for aligned rows)."""
    return list(X.parties) if isinstance(X, VerticalData) else [X.party]


def _rows_request(X: VerticalData | PartyRows) -> tuple[str, np.ndarray]:
    if isinstance(X, VerticalData):
        return X.alignment.id, X.positions
    return "", X.rows  # the party's own row numbers (it selected them itself)


def _session(channel: Channel, party, transformer_id: str, op: str, request: Message) -> Message:
    endpoint = party.endpoint
    channel.call(
        endpoint, "prep.party.open", Message(msg.OPEN.name, {"transformer_id": transformer_id})
    )
    try:
        return channel.call(endpoint, f"prep.party.{op}", request)
    finally:
        channel.call(endpoint, "prep.party.close", Message("ack", {}))


def fit_parties(
    X: VerticalData | PartyRows,
    names: Iterable[str],
    spec: dict,
    transformer_id: str,
    channel: Channel,
) -> dict[str, dict]:
    """Have each named party of ``X`` fit ``spec`` on its own rows of ``X``.

    Returns, per party, the public metadata it replied: ``n_samples`` and
    ``feature_names`` (of its output).
    """
    alignment, positions = _rows_request(X)
    request = Message(
        msg.FIT.name,
        {
            "spec": spec,
            "alignment": alignment,
            "positions": np.asarray(positions, dtype=np.int64),
        },
    )
    wanted = set(names)
    out = {}
    for party in handle_parties(X):
        if party.name not in wanted:
            continue
        reply = _session(channel, party, transformer_id, "fit", request)
        if reply.type != msg.FITTED.name:
            raise ValueError(f"party {party.name!r} answered fit with {reply.type!r}")
        out[party.name] = {
            "n_samples": int(reply["n_samples"]),
            "feature_names": [str(c) for c in reply["feature_names"]],
        }
    return out


def derive_parties(
    parties: Iterable, names: Iterable[str], transformer_id: str, channel: Channel
) -> list:
    """The parties as seen through the fitted transformer (untouched if not named)."""
    wanted = set(names)
    out = []
    for party in parties:
        if party.name not in wanted:
            out.append(party)
            continue
        reply = _session(channel, party, transformer_id, "transform", Message("ack", {}))
        if reply.type != msg.DERIVED.name:
            raise ValueError(f"party {party.name!r} answered transform with {reply.type!r}")
        derived = party.derived(transformer_id)  # the local object the party just made
        if list(derived.feature_names) != list(reply["feature_names"]):
            raise ValueError(f"party {party.name!r}: derived features disagree with its reply")
        out.append(derived)
    return out


def with_parties(X: VerticalData | PartyRows, parties: list) -> VerticalData | PartyRows:
    """The same rows of ``X`` over other parties (same names, same row numbering)."""
    if isinstance(X, PartyRows):
        return PartyRows(parties[0], X.rows)
    old = X.alignment
    alignment = Alignment(
        id=old.id,
        guest=parties[0],
        hosts=tuple(parties[1:]),
        ids=old.ids,
        n_features=tuple(p.n_features for p in parties),
        feature_names=tuple(f"{p.name}__{c}" for p in parties for c in p.feature_names),
        overlap=old.overlap,
        how=old.how,
        psi=old.psi,
    )
    return VerticalData(alignment, X.positions)
