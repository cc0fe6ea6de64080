"""Vertical gradient boosting's declaration in the protocol registry (family ``"sbt"``).

Its host roles, the policy setting ``sbt_min_samples_leaf`` and the check of the
leaf size a guest asks for, the guest's model-file codec and the host's shard.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from ftl.ensemble import _codec
from ftl.ensemble._disclosure import DISCLOSURE
from ftl.ensemble._gradient_boosting import (
    FederatedGradientBoostingClassifier,
    FederatedGradientBoostingRegressor,
)
from ftl.ensemble.host import SHARD_KIND, BoostingHost
from ftl.ensemble.predictor import BoostingPredictor
from ftl.exceptions import PolicyError
from ftl.federation.protocols import EstimatorSpec, ProtocolSpec, ShardCodec, register_protocol

#: The host policy's default minimum leaf size: scikit-learn's default ``min_samples_leaf``.
DEFAULT_MIN_SAMPLES_LEAF = 20


def check_params(params: Mapping, policy: Any, rule: Any) -> None:
    """Refuse a fit whose ``min_samples_leaf`` is below the host's policy minimum.

    Every node the host builds a histogram for, and both children of every split,
    have at least the fit's ``min_samples_leaf`` rows (the host's role enforces it);
    this check makes that value at least the host's ``sbt_min_samples_leaf``.
    """
    minimum = policy.setting("sbt_min_samples_leaf")
    leaf = params.get("min_samples_leaf")
    if isinstance(leaf, bool) or not isinstance(leaf, int) or leaf < minimum:
        raise PolicyError(
            f"min_samples_leaf={leaf!r} is below this host's minimum leaf size of {minimum} "
            f"rows (policy key 'sbt_min_samples_leaf'; peer {rule.identity!r}): fit with "
            f"min_samples_leaf >= {minimum}"
        )


def _spec(cls: type) -> EstimatorSpec:
    return EstimatorSpec(
        cls,
        driver_role="guest",
        to_json=_codec.attributes_to_json,
        from_json=_codec.attributes_from_json,
        shard_ids=_codec.shard_ids,
        # plaintext protocol with one host, and with two; 10 iterations (every one
        # is a round trip per split and host) are enough for the checks' accuracy
        check_instances=lambda: [
            cls(encryption=None, random_state=0, max_iter=10),
            cls(encryption=None, random_state=0, max_iter=10, simulated_hosts=2),
        ],
    )


SPEC = register_protocol(
    ProtocolSpec(
        family="sbt",
        title="vertical gradient boosting (SecureBoost)",
        message_prefix="sbt.",
        roles=(BoostingHost, BoostingPredictor),
        check_params=check_params,
        # a host's [policy] sbt_min_samples_leaf: the smallest leaf (and node) a
        # guest may ask its histograms and partitions for
        policy_settings={"sbt_min_samples_leaf": DEFAULT_MIN_SAMPLES_LEAF},
        estimators=(
            _spec(FederatedGradientBoostingClassifier),
            _spec(FederatedGradientBoostingRegressor),
        ),
        shards=(
            ShardCodec(
                SHARD_KIND,
                role="host",
                to_json=_codec.host_shard_to_json,
                from_json=_codec.host_shard_from_json,
            ),
        ),
        report=DISCLOSURE,
        docs="docs/protocols.md §7",
    )
)
