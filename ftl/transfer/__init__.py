"""Federated transfer learning (Liu et al., arXiv 1812.03337)."""

from ftl.transfer import target as _target  # noqa: F401 - registers the target roles
from ftl.transfer._classifier import FederatedTransferClassifier

__all__ = ["FederatedTransferClassifier"]
