"""Vertical federated linear models."""

from ftl.linear_model import host as _host  # noqa: F401  (registers the host roles)
from ftl.linear_model._logistic import FederatedLogisticRegression

__all__ = ["FederatedLogisticRegression"]
