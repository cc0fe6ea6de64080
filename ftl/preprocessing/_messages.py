"""Message types of per-party preprocessing: public metadata only, in both directions."""

from ftl.federation.messages import (
    ALIGNED_POSITIONS,
    PUBLIC_INT,
    PUBLIC_JSON,
    FieldSpec,
    ValueKind,
    register,
)

_PUBLIC = ValueKind.PUBLIC

OPEN = register(
    "prep.open",
    "Driver opens a preprocessing session for one transformer (a fresh random id).",
    transformer_id=FieldSpec("str", _PUBLIC, max_len=64),
)
FIT = register(
    "prep.fit",
    "Fit the transformer `spec` describes (an allowlisted scikit-learn class, its JSON "
    "parameters and optionally the columns it applies to) on the party's own rows: the "
    "aligned `positions` of `alignment`, or the party's own row numbers when `alignment` "
    "is empty (a handle from Party.select).",
    spec=PUBLIC_JSON,
    alignment=FieldSpec("str", _PUBLIC, max_len=64),
    positions=ALIGNED_POSITIONS,
)
FITTED = register(
    "prep.fitted",
    "How many of its rows the party fitted on, and the positional names of the features "
    "it will output (an input column's name, or `<column>_<k>` for the k-th output "
    "derived from it): counts only, no category or bin edge.",
    n_samples=PUBLIC_INT,
    feature_names=PUBLIC_JSON,
)
DERIVED = register(
    "prep.derived",
    "The party now serves its rows through the fitted transformer, as these features.",
    feature_names=PUBLIC_JSON,
)
