"""Former home of the privacy report, kept so that old imports keep working.

The report is the :mod:`ftl.reporting` package; what it says about each protocol
is the protocol's own declaration (``ftl/<package>/_disclosure.py``).
"""

from ftl.crypto.keys import MIN_SECURE_KEY_SIZE
from ftl.reporting import KIND_ORDER, as_transcript, payload_kind, report
from ftl.reporting import human_bytes as _human_bytes
from ftl.transfer._disclosure import FTL_PROTOCOL

__all__ = [
    "FTL_PROTOCOL",
    "KIND_ORDER",
    "MIN_SECURE_KEY_SIZE",
    "_human_bytes",
    "as_transcript",
    "payload_kind",
    "report",
]
