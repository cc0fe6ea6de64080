"""The public entry point: :func:`report`."""

from __future__ import annotations

from typing import Any, Literal

from ftl.reporting._analysis import analyse
from ftl.reporting._document import build
from ftl.reporting._html import render_html
from ftl.reporting._markdown import render_markdown

__all__ = ["report"]


def report(
    obj: Any,
    format: Literal["markdown", "html"] = "markdown",
    *,
    title: str = "ftl privacy report",
) -> str:
    """Privacy report of what crossed party boundaries, for an auditor.

    The report lists the parties, the total number of messages and bytes, one row
    per message type (count, bytes, sender → receiver directions, value kinds and
    the type's registered description), the categories of data exchanged
    (per-sample ciphertexts, masked values, PSI points, public metadata,
    plaintext), automatic checks with a **WARNING** section when one fails
    (plaintext values, per-sample values neither encrypted nor masked,
    ciphertexts returned to their key owner, keys below 2048 bits), the key size
    when known, each protocol's own section (the PSI mode, and what crossed in
    each message of a protocol documented outside docs/protocols.md), and the
    documented leakages of docs/protocols.md §4-5 and of the protocols that
    appear, marked by whether they apply to this transcript.

    What is protocol-specific -- which messages carry values under their
    sender's own key, which ciphertexts return to their key owner by design
    (e.g. prediction scores to the party that opened the prediction session),
    the leakage rows, a protocol's own section and the facts only its estimator
    knows -- is what each registered protocol declares about itself
    (:class:`ftl.federation.disclosure.Disclosure`).

    Parameters
    ----------
    obj : estimator, Transcript, str or os.PathLike
        A fitted estimator (its ``transcript_`` and its ``encryption``,
        ``key_size`` and protocol-specific parameters are used), a
        :class:`~ftl.Transcript`, or the path of a transcript ``.jsonl`` file
        (:meth:`Transcript.to_jsonl <ftl.Transcript.to_jsonl>`). For the last
        two the key size is read from the width of the ciphertexts the
        transcript records (transcripts written before ftl recorded it say "not
        recorded").
    format : {"markdown", "html"}, default="markdown"
        GitHub-flavoured Markdown, or a standalone HTML page (inline CSS, no
        external assets, every text HTML-escaped).
    title : str, default="ftl privacy report"
        Heading of the report.

    Returns
    -------
    str
        The rendered report.

    Raises
    ------
    ValueError
        If ``format`` is not "markdown" or "html".
    sklearn.exceptions.NotFittedError
        If ``obj`` is an unfitted estimator.

    Notes
    -----
    Only metadata is analysed: a transcript never holds values. Kinds are
    declared by the message schemas, except that values sent with
    ``encryption=None`` are recorded as ``plaintext`` (docs/protocols.md §5.7).
    To cover PSI and training in one report, combine the transcripts first::

        t = ftl.Transcript()
        t.extend(X.alignment.psi["transcript"])
        t.extend(clf.transcript_)

    Examples
    --------
    >>> import ftl
    >>> X, y = ftl.align(*ftl.datasets.load_breast_cancer())
    >>> clf = ftl.FederatedLogisticRegression(encryption=None, max_iter=2).fit(X, y)
    >>> text = ftl.report(clf)
    >>> "WARNING: plaintext values crossed party boundaries" in text
    True
    """
    if format not in ("markdown", "html"):
        raise ValueError(f"format must be 'markdown' or 'html', got {format!r}")
    title, sections = build(analyse(obj), title)
    if format == "html":
        from ftl import __version__  # the package's version, named in the footer

        return render_html(title, sections, __version__)
    return render_markdown(title, sections)
