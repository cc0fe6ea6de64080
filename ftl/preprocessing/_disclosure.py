"""What per-party preprocessing declares about itself to the audit report.

Its messages carry public metadata only -- the transformer's specification, the
aligned positions it is fitted on, row counts and positional output names -- and
the report's generic checks and data categories cover them. It declares no key
ownership, no section and no leakage rows of its own: what a guest can still learn
by differencing fits (docs/protocols.md §5.8, item 1) is not among the leakages
the report has listed so far.
"""

from __future__ import annotations

from ftl.federation.disclosure import Disclosure

__all__ = ["DISCLOSURE"]

DISCLOSURE = Disclosure(listed="when_present")
