"""What the report and the plots accept: an estimator, a transcript, or its file."""

from __future__ import annotations

import os
from typing import Any

from ftl.federation.transcript import Transcript

__all__ = ["as_transcript"]


def as_transcript(obj: Any) -> tuple[Transcript, Any | None, str]:
    """Resolve what :func:`ftl.report` and :mod:`ftl.plot` accept into a transcript.

    Parameters
    ----------
    obj : estimator, Transcript, str or os.PathLike
        A fitted estimator with a ``transcript_`` attribute, a
        :class:`~ftl.federation.Transcript`, or the path of a transcript written
        by :meth:`Transcript.to_jsonl`.

    Returns
    -------
    transcript : Transcript
        The transcript to summarise.
    estimator : estimator or None
        ``obj`` when it is an estimator, else ``None``.
    source : str
        A short human-readable description of where the transcript came from.

    Raises
    ------
    sklearn.exceptions.NotFittedError
        If ``obj`` is an estimator without a ``transcript_`` (not fitted yet).
    TypeError
        If ``obj`` is none of the above.
    """
    if isinstance(obj, Transcript):
        return obj, None, "in-memory `Transcript`"
    if isinstance(obj, (str, os.PathLike)):
        path = os.fspath(obj)
        return Transcript.from_jsonl(path), None, f"transcript file `{path}`"
    transcript = getattr(obj, "transcript_", None)
    if isinstance(transcript, Transcript):
        return transcript, obj, f"`{type(obj).__name__}.transcript_` (fit and predict)"
    if hasattr(obj, "get_params"):
        from sklearn.exceptions import NotFittedError

        raise NotFittedError(
            f"this {type(obj).__name__} instance has no transcript_ yet; call fit first"
        )
    raise TypeError(
        "expected a fitted estimator, a Transcript or the path of a transcript .jsonl, "
        f"got {type(obj).__name__}"
    )
