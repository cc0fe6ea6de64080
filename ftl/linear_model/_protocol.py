"""Vertical logistic regression's declaration in the protocol registry (family ``"lr"``).

Its host roles, the policy setting ``allow_lbfgs`` and the check of the
optimiser a guest asks for, the guest's model-file codec and the host's shard.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from ftl.exceptions import PolicyError
from ftl.federation.protocols import EstimatorSpec, ProtocolSpec, ShardCodec, register_protocol
from ftl.linear_model import _codec
from ftl.linear_model._disclosure import DISCLOSURE
from ftl.linear_model._logistic import FederatedLogisticRegression
from ftl.linear_model._regression import FederatedLinearRegression, FederatedPoissonRegressor
from ftl.linear_model.host import LogisticHost, LogisticHostPredictor


def check_params(params: Mapping, policy: Any, rule: Any) -> None:
    """Refuse L-BFGS training where the host's policy sets ``allow_lbfgs = false``.

    With ``optimizer="lbfgs"`` the host reveals, every iteration, the inner
    products of its own weight and gradient changes (docs/protocols.md §3.8).
    """
    if params.get("optimizer") == "lbfgs" and not policy.setting("allow_lbfgs"):
        # the regressors (link identity/log) train with L-BFGS only
        remedy = (
            "the federated regressors train with L-BFGS only"
            if params.get("link", "logit") != "logit"
            else "train with optimizer='adam' or 'sgd'"
        )
        raise PolicyError(
            "optimizer='lbfgs' (the host reveals inner products of its weight and "
            "gradient changes every iteration) is not allowed by this host's policy "
            f"(peer {rule.identity!r}); {remedy}"
        )


def _check_instances() -> list:
    # plaintext protocol with one host, and with two (host-to-host cross terms
    # relayed by the guest)
    return [
        FederatedLogisticRegression(encryption=None, random_state=0),
        FederatedLogisticRegression(encryption=None, random_state=0, simulated_hosts=2),
    ]


def _regressor_spec(cls: type, instances: Callable[[], list]) -> EstimatorSpec:
    """A federated regressor: same protocol and host shard, one model per fit."""
    return EstimatorSpec(
        cls,
        driver_role="guest",
        to_json=_codec.regressor_attributes_to_json,
        from_json=_codec.regressor_attributes_from_json,
        shard_ids=_codec.shard_ids,
        check_instances=instances,
    )


SPEC = register_protocol(
    ProtocolSpec(
        family="lr",
        title="vertical logistic regression",
        message_prefix="lr.",
        roles=(LogisticHost, LogisticHostPredictor),
        check_params=check_params,
        # allow_lbfgs = false in a host's [policy] admits only the mini-batch
        # optimisers, which reveal two weight norms per epoch (check_params)
        policy_settings={"allow_lbfgs": True},
        estimators=(
            EstimatorSpec(
                FederatedLogisticRegression,
                driver_role="guest",
                to_json=_codec.attributes_to_json,
                from_json=_codec.attributes_from_json,
                shard_ids=_codec.shard_ids,
                check_instances=_check_instances,
            ),
            _regressor_spec(
                FederatedLinearRegression,
                lambda: [
                    FederatedLinearRegression(encryption=None, random_state=0),
                    FederatedLinearRegression(encryption=None, random_state=0, simulated_hosts=2),
                ],
            ),
            _regressor_spec(
                FederatedPoissonRegressor,
                lambda: [FederatedPoissonRegressor(encryption=None, random_state=0)],
            ),
        ),
        shards=(
            ShardCodec(
                _codec.HOST_SHARD_KIND,
                role="host",
                to_json=_codec.host_shard_to_json,
                from_json=_codec.host_shard_from_json,
            ),
        ),
        report=DISCLOSURE,
        docs="docs/protocols.md §3",
    )
)
