"""Parties and data handles."""

from ftl.data.handles import Alignment, PartyRows, VerticalData
from ftl.data.party import Party

__all__ = ["Alignment", "Party", "PartyRows", "VerticalData"]
