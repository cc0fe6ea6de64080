"""Errors shared across ftl's layers (the lowest layer: imports nothing from ftl)."""

from __future__ import annotations

__all__ = ["FTLError", "PolicyError"]


class FTLError(Exception):
    """Base class of the errors ftl raises on purpose."""


class PolicyError(FTLError, PermissionError):
    """A party refused a request because its data-use policy forbids it."""
