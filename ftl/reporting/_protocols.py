"""The registered protocols, as the report reads them."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from ftl.federation.disclosure import Disclosure
from ftl.federation.protocols import load_protocols

__all__ = ["Declared", "declared", "facts_of"]

#: Listed protocols appear in this order of ``Disclosure.listed``: the alignment,
#: which precedes every run, first; then the protocols of docs/protocols.md.
_LISTING_ORDER = ("always", "unless_framed", "when_present")


@dataclass(frozen=True)
class Declared:
    """One registered protocol: what the report needs of its spec."""

    family: str
    title: str
    prefix: str
    disclosure: Disclosure
    estimator_classes: tuple[type, ...]

    def owns(self, name: str) -> bool:
        """Whether a message type (or ``"type.field"``) belongs to this protocol."""
        return name.startswith(self.prefix)


def declared() -> tuple[Declared, ...]:
    """Every registered protocol (built-ins and plug-ins), in listing order.

    A protocol registered without a disclosure is reported generically: its
    messages are counted and checked, and it adds no leakages or section.
    """
    items = [
        Declared(
            family=spec.family,
            title=spec.title,
            prefix=spec.message_prefix,
            disclosure=spec.report if spec.report is not None else Disclosure(),
            estimator_classes=tuple(e.cls for e in spec.estimators),
        )
        for spec in load_protocols()
    ]
    return tuple(sorted(items, key=lambda d: _LISTING_ORDER.index(d.disclosure.listed)))


def facts_of(estimator: Any, protocols: tuple[Declared, ...]) -> list[tuple[str, str]]:
    """Summary rows that the protocol of ``estimator``'s class declares about it."""
    for d in protocols:
        hook = d.disclosure.estimator_facts
        if hook is not None and isinstance(estimator, d.estimator_classes):
            return list(hook(estimator))
    return []
