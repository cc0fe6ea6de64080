"""Party role of preprocessing (runs where the party's data is): ``prep.party``.

Message sequence, as seen from a party P (the driver calls every party alike):

1. ``open``: the driver names a fresh transformer id.
2. ``fit``: P builds the transformer from its JSON spec -- only an allowlisted
   scikit-learn class (see ``_spec.py``) -- fits it on its own rows of the
   handle (rows it does not have in a ``how="left"`` alignment are skipped)
   and keeps it. P returns how many rows it fitted on and its output feature
   names; the fitted statistics stay at P.
3. ``transform``: P derives a party that serves its rows through the fitted
   transformer (:meth:`ftl.Party.derive`) and returns the derived feature
   names. The driver, which holds P's local object, takes the derived party
   with :meth:`ftl.Party.derived` and builds a handle over it.

Only public metadata crosses: the spec, row positions, counts, feature names.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from scipy import sparse
from sklearn import config_context

from ftl.federation.messages import Message
from ftl.federation.service import operation, role
from ftl.preprocessing import _messages as msg
from ftl.preprocessing._spec import build_transformer

__all__ = ["FittedTransform", "PreprocessingParty"]

#: A party refuses a transformer that would widen its table beyond this many features.
MAX_OUTPUT_FEATURES = 100_000


class FittedTransform:
    """A transformer fitted at a party, applied to that party's raw feature rows.

    Rows are passed with the party's column names, so ``columns`` can name them
    and output names derive from them. Output is always a dense float array,
    whatever scikit-learn's global output configuration says.
    """

    def __init__(self, transformer, input_names: list[str], feature_names_out: list[str]):
        self.transformer = transformer
        self.input_names = list(input_names)
        self.feature_names_out = list(feature_names_out)

    @classmethod
    def fit(cls, transformer, features: np.ndarray, input_names: list[str]) -> FittedTransform:
        with config_context(transform_output="default"):
            transformer.fit(pd.DataFrame(features, columns=list(input_names)))
        names = [str(c) for c in transformer.get_feature_names_out()]
        return cls(transformer, input_names, names)

    def __call__(self, features: np.ndarray) -> np.ndarray:
        frame = pd.DataFrame(features, columns=self.input_names)
        with config_context(transform_output="default"):
            out = self.transformer.transform(frame)
        if sparse.issparse(out):
            out = out.toarray()
        return np.asarray(out, dtype=np.float64)


def _own_rows(party, alignment: str, positions: np.ndarray) -> np.ndarray:
    """The party's local rows behind the request (rows it lacks are skipped)."""
    if alignment:
        rows = party.aligned_rows(alignment, positions)
        return rows[rows >= 0]  # how="left": the guest's rows this party does not have
    if positions.size and (positions.min() < 0 or positions.max() >= party.n_rows):
        raise ValueError(f"party {party.name!r}: row number out of range")
    return positions


def _check_columns(party, columns: list | None) -> None:
    if columns is None:
        return
    if isinstance(columns[0], str):
        missing = [c for c in columns if c not in party.feature_names]
    else:
        missing = [c for c in columns if not -party.n_features <= c < party.n_features]
    if missing:
        raise ValueError(
            f"party {party.name!r} has no feature column(s) {missing}; its features are "
            f"{party.feature_names}"
        )


@role("prep.party")
class PreprocessingParty:
    """One transformer at one party: fit it on own rows, derive the transformed party."""

    def __init__(self, party, request: Message):
        if request.type != msg.OPEN.name:
            raise ValueError("prep.party sessions open with a prep.open message")
        self.party = party
        self.transformer_id = request["transformer_id"]

    @operation
    def fit(self, request: Message) -> Message:
        """Fit the described transformer on this party's rows; keep it here."""
        if request.type != msg.FIT.name:
            raise ValueError("prep.party.fit expects a prep.fit message")
        party = self.party
        transformer = build_transformer(request["spec"])  # allowlist first, before any data
        _check_columns(party, request["spec"]["columns"])
        rows = _own_rows(party, request["alignment"], request["positions"])
        if rows.size == 0:
            raise ValueError(f"party {party.name!r} has none of the rows to fit on")
        fitted = FittedTransform.fit(transformer, party.raw_features(rows), party.feature_names)
        n_out = len(fitted.feature_names_out)
        if n_out > MAX_OUTPUT_FEATURES:
            raise ValueError(
                f"party {party.name!r}: the transformer would output {n_out} features, more "
                f"than the {MAX_OUTPUT_FEATURES} a party accepts"
            )
        party.store_transformer(self.transformer_id, fitted)
        return Message(
            msg.FITTED.name,
            {"n_samples": int(rows.size), "feature_names": fitted.feature_names_out},
        )

    @operation
    def transform(self, request: Message) -> Message:
        """Serve this party's rows through the fitted transformer from now on."""
        derived = self.party.derive(self.transformer_id)
        return Message(msg.DERIVED.name, {"feature_names": list(derived.feature_names)})
