"""Federated transfer learning (Liu et al., arXiv 1812.03337)."""

from ftl.transfer import _protocol  # noqa: F401 - registers the "transfer" protocol
from ftl.transfer._classifier import FederatedTransferClassifier

__all__ = ["FederatedTransferClassifier"]
