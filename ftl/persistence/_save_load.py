"""The driver's file: :func:`save_model` and :func:`load_model`.

Dispatches an estimator to ``_model`` (format ``"ftl-model"``) and a pipeline to
``_pipeline`` (format ``"ftl-pipeline"``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from sklearn.pipeline import Pipeline

from ftl._docstrings import WRITTEN_FILE, fill_doc
from ftl.persistence._formats import MODEL_FORMAT, MODEL_VERSION, PIPELINE_FORMAT
from ftl.persistence._json import PathLike, _peek_format, _read_json, _write_private_json
from ftl.persistence._model import _model_document, _model_from_document
from ftl.persistence._pipeline import _load_pipeline, _pipeline_document


@fill_doc(written_file=WRITTEN_FILE)
def save_model(clf: Any, path: PathLike) -> Path:
    """Save the driver's part of a fitted federated model as one JSON file.

    For an estimator of a registered protocol (format ``"ftl-model"``) the
    file holds the estimator's class name, the driver's role, the parameters
    and the driver's fitted attributes as the protocol's codec writes them
    (:class:`~ftl.federation.protocols.EstimatorSpec`): for a
    :class:`~ftl.FederatedLogisticRegression` the guest's own weight block,
    the intercept, the classes and, per binary model, the model id and the
    hosts' *public* keys; for a :class:`~ftl.FederatedTransferClassifier` the
    classes, the prototypes, the source's own network and the id of the
    target's shard. It holds no other party's weights and no private key:
    every other party saves its own shard with :meth:`ftl.Party.export_model`.

    For a :class:`~sklearn.pipeline.Pipeline` of ftl.preprocessing transformers
    (:class:`~ftl.preprocessing.FederatedStandardScaler`,
    :class:`~ftl.preprocessing.FederatedSimpleImputer`,
    :class:`~ftl.preprocessing.PerParty`, or ``"passthrough"``) followed by one
    of those estimators, it holds (format ``"ftl-pipeline"``) the pipeline's
    step names, each transformer's parameters and public fitted metadata (the
    id under which its parties keep it, party and feature names) and the
    estimator's document as above. The fitted statistics stay with the
    parties: every party -- the guest too -- saves its transformers and shards
    with :func:`export_party`.

    The file is written atomically with mode ``0o600``.

    Parameters
    ----------
    clf : estimator or Pipeline
        A model of a registered protocol (or a pipeline ending in one) fitted
        on a handle from :func:`ftl.align`.
    %(written_file)s

    Raises
    ------
    sklearn.exceptions.NotFittedError
        If ``clf`` is not fitted.
    ValueError
        If ``clf`` was fitted on a plain array (a simulated federation, whose
        host shards live inside the estimator), or holds values that cannot
        be written.
    TypeError
        If ``clf`` is not an estimator this module knows how to save, or a
        pipeline step is not an ftl.preprocessing transformer.

    Notes
    -----
    Parameters that are not JSON values (e.g. a ``numpy.random.RandomState``
    passed as ``random_state``) are not saved; they are listed under
    ``"unsaved_params"`` and take their default on load. They matter only for
    refitting, never for prediction.
    """
    if isinstance(clf, Pipeline):
        return _write_private_json(_pipeline_document(clf), path)
    return _write_private_json(_model_document(clf), path)


def load_model(path: PathLike, *, estimator: type | None = None) -> Any:
    """Load a driver's model file written by :func:`save_model`.

    The returned estimator predicts on a handle from :func:`ftl.align` over
    parties with the same names (or, for a transfer model, on
    ``target.select(ids)``), once every other party has imported its shard
    with :meth:`ftl.Party.import_model`; predictions equal the saved model's.
    A pipeline predicts once every party -- the guest too -- has imported its
    file with :func:`import_party`.

    Parameters
    ----------
    path : str or path-like
        A file written by :func:`save_model`.
    estimator : class, optional
        The estimator class the file must hold (e.g.
        :class:`~ftl.FederatedLogisticRegression` or
        :class:`~sklearn.pipeline.Pipeline`); by default, whichever it holds.

    Returns
    -------
    estimator or Pipeline
        A fitted estimator (or pipeline) with empty transcripts.

    Raises
    ------
    ValueError
        If the file is not valid JSON, has another format or version (the
        message names the found and the expected version), holds another
        estimator than ``estimator``, or is inconsistent.
    """
    if _peek_format(path) == PIPELINE_FORMAT:
        return _load_pipeline(path, estimator)
    if estimator is Pipeline:
        raise ValueError(f"{path} holds no pipeline (format {MODEL_FORMAT!r}), expected one")
    return _model_from_document(_read_json(path, MODEL_FORMAT, MODEL_VERSION), path, estimator)
