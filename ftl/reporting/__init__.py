"""The auditor-facing privacy report of a transcript: what crossed, between whom, how.

:func:`report` renders a :class:`~ftl.federation.Transcript` (from a fitted
estimator, an in-memory transcript or a ``.jsonl`` file) as Markdown or as a
standalone HTML page, from message *metadata* only.

The package never names a protocol: it reads what every registered protocol
declares about itself (``ProtocolSpec.report``, a
:class:`ftl.federation.disclosure.Disclosure`). Its layers, lowest first:

* ``_input``: what is accepted (estimator, transcript, path) → a transcript;
* ``_protocols``: the registered protocols as the report reads them;
* ``_analysis``: what the transcript shows (kinds, data categories, directions,
  key owners and sizes);
* ``_checks``: the automatic checks;
* ``_document``: the sections of the report;
* ``_markdown``, ``_html``: the renderers; ``_report``: :func:`report`.
"""

from ftl.reporting._analysis import KIND_ORDER, payload_kind
from ftl.reporting._document import human_bytes
from ftl.reporting._input import as_transcript
from ftl.reporting._report import report

__all__ = ["KIND_ORDER", "as_transcript", "human_bytes", "payload_kind", "report"]
