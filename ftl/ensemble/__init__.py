"""Vertical federated gradient boosting (SecureBoost)."""

from ftl.ensemble import _protocol  # noqa: F401 - registers the "sbt" protocol
from ftl.ensemble._gradient_boosting import (
    FederatedGradientBoostingClassifier,
    FederatedGradientBoostingRegressor,
)

__all__ = ["FederatedGradientBoostingClassifier", "FederatedGradientBoostingRegressor"]
