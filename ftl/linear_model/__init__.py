"""Vertical federated linear models."""

from ftl.linear_model import _protocol  # noqa: F401 - registers the "lr" protocol
from ftl.linear_model._logistic import FederatedLogisticRegression
from ftl.linear_model._regression import FederatedLinearRegression, FederatedPoissonRegressor

__all__ = ["FederatedLinearRegression", "FederatedLogisticRegression", "FederatedPoissonRegressor"]
