"""Per-party preprocessing's declaration in the protocol registry (family
``"preprocessing"``): its party role and its transformers, which are pipeline
steps (saved within a pipeline's file, see :mod:`ftl.persistence`)."""

from __future__ import annotations

from sklearn.preprocessing import StandardScaler

from ftl.federation.protocols import EstimatorSpec, ProtocolSpec, register_protocol
from ftl.preprocessing._disclosure import DISCLOSURE
from ftl.preprocessing._transformers import (
    FederatedSimpleImputer,
    FederatedStandardScaler,
    PerParty,
)
from ftl.preprocessing.party import PreprocessingParty

SPEC = register_protocol(
    ProtocolSpec(
        family="preprocessing",
        title="per-party preprocessing",
        message_prefix="prep.",
        roles=(PreprocessingParty,),
        # Given a plain array (local data, no party boundary) each transformer is
        # the scikit-learn transformer it runs at each party; the checks hold it to that.
        estimators=(
            EstimatorSpec(FederatedStandardScaler),
            EstimatorSpec(FederatedSimpleImputer),
            EstimatorSpec(PerParty, check_instances=lambda: [PerParty(StandardScaler())]),
        ),
        report=DISCLOSURE,
        docs="docs/api/preprocessing.rst",
    )
)
