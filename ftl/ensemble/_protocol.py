"""Vertical gradient boosting's declaration in the protocol registry (family ``"sbt"``).

Its host roles, the policy settings ``sbt_min_samples_leaf``, ``sbt_max_leaf_nodes``
and ``sbt_max_trees`` and the check of the trees a guest asks for, the guest's
model-file codec and the host's shard.
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


#: The host policy's default cap on leaves per tree: a depth-6 tree, twice
#: scikit-learn's default ``max_leaf_nodes``.
DEFAULT_MAX_LEAF_NODES = 64

#: The host policy's default cap on the trees of one fit: the trees its guard's
#: default ``max_epochs`` already allowed (scikit-learn's default 100 iterations of
#: up to 10 classes).
DEFAULT_MAX_TREES = 1000


def _leaf_bound(params: Mapping) -> float:
    """The most leaves a tree of these parameters can have (``inf``: unbounded)."""
    bounds = [float("inf")]
    leaves, depth = params.get("max_leaf_nodes"), params.get("max_depth")
    if isinstance(leaves, int) and not isinstance(leaves, bool):
        bounds.append(leaves)
    if isinstance(depth, int) and not isinstance(depth, bool) and depth < 64:
        bounds.append(2**depth)
    return min(bounds)


def _check_trees(params: Mapping, policy: Any, rule: Any) -> None:
    """Refuse a fit that may grow more trees than ``sbt_max_trees`` (the host's role
    refuses any tree beyond the fit's declared ``max_trees``)."""
    cap = policy.setting("sbt_max_trees")
    trees = params.get("max_trees")
    if isinstance(trees, bool) or not isinstance(trees, int):
        raise PolicyError(
            f"the fit does not declare how many trees it grows (max_trees={trees!r}; an "
            f"earlier guest version): this host caps trees per fit at {cap} (policy key "
            f"'sbt_max_trees'; peer {rule.identity!r})"
        )
    if trees > cap:
        raise PolicyError(
            f"a fit of {trees} trees (max_iter times the classes) is more than this host's "
            f"{cap} trees per fit (policy key 'sbt_max_trees'; peer {rule.identity!r}): fit "
            f"with fewer iterations"
        )


def check_params(params: Mapping, policy: Any, rule: Any) -> None:
    """Refuse a fit whose leaves may be smaller or more, or whose trees more, than the
    host's policy allows.

    Every node the host builds a histogram for, and both children of every split,
    have at least the fit's ``min_samples_leaf`` rows (the host's role enforces it);
    this check makes that value at least the host's ``sbt_min_samples_leaf``. The
    host's role also enforces the fit's ``max_leaf_nodes`` and ``max_depth``; this
    check bounds the leaves they allow by ``sbt_max_leaf_nodes``: every leaf is a
    node whose histogram a guest that crafts its gradients can read rows from
    (docs/protocols.md §7.7). Every tree is one more such read, so
    ``sbt_max_trees`` bounds the trees of a fit.
    """
    _check_trees(params, policy, rule)
    cap = policy.setting("sbt_max_leaf_nodes")
    if _leaf_bound(params) > cap:
        raise PolicyError(
            f"trees of max_leaf_nodes={params.get('max_leaf_nodes')!r}, "
            f"max_depth={params.get('max_depth')!r} may have more than this host's "
            f"{cap} leaves (policy key 'sbt_max_leaf_nodes'; peer {rule.identity!r}): "
            f"fit with max_leaf_nodes <= {cap}"
        )
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
        # and sbt_max_leaf_nodes: the most leaves a tree may have
        # and sbt_max_trees: the most trees one fit may grow
        policy_settings={
            "sbt_min_samples_leaf": DEFAULT_MIN_SAMPLES_LEAF,
            "sbt_max_leaf_nodes": DEFAULT_MAX_LEAF_NODES,
            "sbt_max_trees": DEFAULT_MAX_TREES,
        },
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
