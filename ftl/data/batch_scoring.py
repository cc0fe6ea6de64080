"""Batch prediction: a large table scored in batches of rows, resumable after a crash.

Design
------
**Batches.** The rows to score are cut into ``n_rows // batch_rows`` batches of
nearly equal size, none shorter than ``batch_rows`` (:func:`batch_bounds`; the
remainder joins the other batches, so a host whose ``min_prediction_rows`` admits
``batch_rows`` admits every batch). Each batch is scored by a callable the
estimator gives -- one complete, independent prediction session at every host
through the protocol's existing prediction role (``lr.predict``, ``sbt.predict``,
``ftl.target_predict``), unchanged. The outputs are the raw scores of the rows
(margins, raw predictions), from which ``predict``, ``predict_proba`` and
``decision_function`` all derive.

**The guest keeps its own outputs.** With a ``checkpoint_dir`` the guest writes
each finished batch's scores to ``<checkpoint_dir>/scores-<fingerprint>/<k>.json``
(:func:`~ftl.federation.checkpoints.write_checkpoint`: strict JSON, floats in
their shortest round-trip form, atomic, mode 0600, a SHA-256 digest of the
content). A later call with the same fingerprint -- after the driver or a host
crashed -- reads them back and scores only the batches that are missing, so its
result is the uninterrupted one (bit-identical in plaintext mode). The last batch
removes the folder. A file that is corrupted, was edited, belongs to another run
or claims another batch is refused with
:class:`~ftl.exceptions.CheckpointError`: never half-trusted.

**Fingerprint.** It covers what the estimator says identifies the run -- the
scoring protocol, the model (the hosts' model ids and the guest's own
parameters), the rows (:func:`rows_identity`: the alignment and the positions)
-- and the batches' bounds. Another model, other rows or another ``batch_rows``
start afresh.

**The hosts keep nothing new, and trust nothing.** No message says that a batch
is a retry: a re-scored batch is a new prediction request like any other, which
each host admits or refuses under its own policy and counts against its privacy
budget (``min_prediction_rows``, ``max_predictions_per_alignment``,
``max_predictions_per_day``, ``max_rows_scored_per_day``). A guest cannot use
"resume" to be charged less; an interrupted batch that a host had admitted is
paid for twice.
"""

from __future__ import annotations

import logging
import os
import shutil
from collections.abc import Callable
from numbers import Integral
from pathlib import Path
from typing import Any

import numpy as np

from ftl.exceptions import CheckpointError
from ftl.federation.checkpoints import digest, fingerprint, read_checkpoint, write_checkpoint

__all__ = ["batch_bounds", "rows_identity", "score_in_batches", "scoring_settings"]

log = logging.getLogger("ftl.checkpoint")

#: The kind of a batch's checkpoint file.
KIND = "batch_scores"


def batch_bounds(n_rows: int, batch_rows: int | None) -> list[tuple[int, int]]:
    """``(start, stop)`` of each batch of ``n_rows`` rows.

    ``batch_rows=None`` gives one batch of every row; otherwise there are
    ``max(1, n_rows // batch_rows)`` batches of nearly equal size, each at least
    ``batch_rows`` long unless ``n_rows`` itself is shorter.
    """
    if batch_rows is not None and (
        isinstance(batch_rows, bool) or not isinstance(batch_rows, Integral) or batch_rows < 1
    ):
        raise ValueError(
            f"predict_batch_rows must be a positive integer or None, got {batch_rows!r}"
        )
    n_batches = 1 if batch_rows is None else max(1, n_rows // int(batch_rows))
    edges = np.linspace(0, n_rows, n_batches + 1).round().astype(int)
    return [(int(a), int(b)) for a, b in zip(edges[:-1], edges[1:], strict=True)]


def rows_identity(handle: Any, positions: np.ndarray | None = None) -> dict:
    """What identifies the rows ``positions`` (default: the handle's) of an aligned
    ``handle`` in a scoring run's fingerprint: the alignment's id and the positions'
    digest, and the parties' names; for a simulated federation, whose alignment is
    new with every call, the digests of every party's features of those rows."""
    alignment = handle.alignment
    positions = handle.positions if positions is None else np.asarray(positions)
    parties = [alignment.guest, *alignment.hosts]
    identity: dict = {"parties": [p.name for p in parties], "positions": digest(positions)}
    if alignment.how == "simulated":
        identity["data"] = [
            digest(p.local_features(p.aligned_rows(alignment.id, positions))) for p in parties
        ]
    else:
        identity["alignment"] = alignment.id
    return identity


def scoring_settings(estimator: Any) -> dict:
    """The estimator's ``predict_batch_rows`` and ``checkpoint_dir``, as
    :func:`score_in_batches` takes them (``None`` for an estimator unpickled from a
    version without them)."""
    return {
        "batch_rows": getattr(estimator, "predict_batch_rows", None),
        "checkpoint_dir": getattr(estimator, "checkpoint_dir", None),
    }


def score_in_batches(
    n_rows: int,
    score: Callable[[slice], np.ndarray],
    run: dict,
    *,
    batch_rows: int | None = None,
    checkpoint_dir: str | os.PathLike | None = None,
) -> np.ndarray:
    """Scores of ``n_rows`` rows, batch by batch, resuming from finished batches.

    Parameters
    ----------
    n_rows : int
        Rows to score.
    score : callable
        ``score(rows)`` returns the scores of ``rows`` (a slice of ``range(n_rows)``),
        one entry along the first axis per row: a complete prediction request.
    run : dict
        What identifies the scoring run (JSON values and ndarrays): the protocol,
        the model and the rows (:func:`rows_identity`).
    batch_rows : int or None, default=None
        Rows per batch (:func:`batch_bounds`); ``None``: one batch.
    checkpoint_dir : path or None, default=None
        Where the finished batches' scores are kept until the last batch is done;
        ``None`` keeps nothing.

    Returns
    -------
    ndarray
        The batches' scores, concatenated along the first axis.

    Raises
    ------
    CheckpointError
        If a kept batch's file is corrupted, was modified, or does not belong to
        this run and batch.
    """
    bounds = batch_bounds(n_rows, batch_rows)
    if checkpoint_dir is None:
        return np.concatenate([score(slice(a, b)) for a, b in bounds])
    key = fingerprint({"run": run, "bounds": bounds})
    folder = Path(checkpoint_dir) / f"scores-{key[:32]}"
    scores = _kept_batches(folder, key, bounds)
    if scores:
        log.warning(
            "batch prediction resumes from its checkpoint %s (%d of %d batches done)",
            folder,
            len(scores),
            len(bounds),
        )
    for k, (a, b) in enumerate(bounds):
        if k not in scores:
            scores[k] = np.asarray(score(slice(a, b)))
            body = {"batch": k, "start": a, "stop": b, "scores": scores[k]}
            write_checkpoint(folder / f"{k}.json", KIND, key, body)
    shutil.rmtree(folder, ignore_errors=True)
    return np.concatenate([scores[k] for k in range(len(bounds))])


def _kept_batches(folder: Path, key: str, bounds: list[tuple[int, int]]) -> dict[int, np.ndarray]:
    """The scores of the batches kept in ``folder``, each file checked against the
    run's fingerprint and its batch's bounds."""
    kept: dict[int, np.ndarray] = {}
    for k, (a, b) in enumerate(bounds):
        path = folder / f"{k}.json"
        if not path.exists():
            continue
        body = read_checkpoint(path, KIND, key)
        values = np.asarray(body.get("scores")) if isinstance(body, dict) else None
        if (
            values is None
            or (body.get("batch"), body.get("start"), body.get("stop")) != (k, a, b)
            or values.ndim == 0
            or values.shape[0] != b - a
        ):
            raise CheckpointError(
                f"checkpoint {path} does not hold the scores of batch {k} (rows {a} to {b}) "
                "of this run; refused. Delete it to start afresh"
            )
        kept[k] = values
    return kept
