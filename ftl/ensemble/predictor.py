"""Prediction role of vertical gradient boosting (runs where the host's data is).

The guest walks all trees level by level; at each level it asks every host, in
one ``decide``, which way the rows go that sit at that host's split nodes. The
host answers from its stored split table (opaque id -> feature, threshold) for
those (row, split) pairs only, at most once per row, tree and depth
(:mod:`ftl.ensemble._decisions`; docs/protocols.md §7.5).
"""

from __future__ import annotations

from ftl.ensemble import _messages as msg
from ftl.ensemble._decisions import WalkLedger, answer_walk
from ftl.ensemble.host import SHARD_KIND, aligned_rows
from ftl.federation.budget import guard_of
from ftl.federation.messages import Message
from ftl.federation.service import operation, role

__all__ = ["BoostingPredictor"]


@role("sbt.predict", opens=(msg.PREDICT_OPEN.name,))
class BoostingPredictor:
    """One prediction session: a stored split table and the rows being scored."""

    def __init__(self, party, request: Message):
        model = party.load_model(request["model_id"])
        if model.get("kind") != SHARD_KIND:
            raise ValueError(f"model {request['model_id']!r} is not a gradient boosting shard")
        self.splits = model["splits"]
        if model["n_features"] != party.n_features:
            raise ValueError(
                f"the model was fitted on {model['n_features']} columns, the party has "
                f"{party.n_features}"
            )
        rows = aligned_rows(party, request["alignment"], request["positions"], "prediction rows")
        guard_of(party).admit_prediction("sbt", request["alignment"], len(rows))
        self.features = party.local_features(rows)
        self.ledger = WalkLedger()

    @operation(accepts=(msg.DECIDE.name,))
    def decide(self, request: Message) -> Message:
        """Which asked rows go left at the named split nodes (one level of the walk)."""
        return answer_walk(self.splits, self.ledger, self.features, request)
