"""A party's whole share of a fitted pipeline (format ``"ftl-party"``).

The transformers it fitted, in pipeline order, and its model shards, in one
file: :func:`export_party` and :func:`import_party`.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from ftl._docstrings import WRITTEN_FILE, fill_doc
from ftl.data.party import DerivedParty
from ftl.persistence._formats import (
    PARTY_FORMAT,
    PARTY_VERSION,
    SHARD_FORMAT,
    SHARD_VERSION,
    _model_spec_of,
    _model_specs,
)
from ftl.persistence._json import PathLike, _check_format, _field, _read_json, _write_private_json
from ftl.persistence._pipeline import _is_passthrough, _pipeline_parts
from ftl.persistence._shard import _import_shard_document, _shard_document
from ftl.persistence._transformer import (
    _refuse_held,
    _transformer_document,
    _transformer_from_document,
)

if TYPE_CHECKING:
    from ftl.data.party import Party


_PARTY_KEYS = frozenset({"format", "version", "party", "estimator", "transformers", "models"})


@fill_doc(written_file=WRITTEN_FILE)
def export_party(party: Party, model: Any, path: PathLike) -> Path:
    """Write ``party``'s whole share of a fitted pipeline (or model) to one JSON file.

    Every party of a fitted pipeline -- the guest too -- calls this with its
    own :class:`~ftl.Party` and the fitted pipeline the driver holds (or a
    copy loaded with :func:`~ftl.load_model`: only public ids are read from
    it). The file (format ``"ftl-party"``) holds, in pipeline order, every
    transformer this party fitted for the pipeline (as
    :func:`export_transformer` writes it; a pipeline of two ftl.preprocessing
    steps gives a chain ``party.derive(t1).derive(t2)``), then this party's
    shards of the estimator (as :func:`export_shard` writes them), taken from
    the party at the end of its chain. For the driver's party (the guest)
    there is no shard (its part of the model is in the driver's file from
    :func:`~ftl.save_model`). Nothing of any other
    party is in it. A host's shard holds its private key: the file is written
    atomically with mode ``0o600`` and must be protected like one.

    Parameters
    ----------
    party : ftl.Party
        One of the parties the model was fitted over.
    model : Pipeline or estimator
        The fitted pipeline (ftl.preprocessing steps, then the estimator) or a
        fitted estimator alone (of a registered protocol, such as
        :class:`~ftl.FederatedLogisticRegression`).
    %(written_file)s

    Raises
    ------
    ValueError
        If the party is not one of the model's parties, lacks one of its
        transformers or model shards, or the model was fitted on a plain array.
    TypeError
        If ``model`` is not a pipeline or estimator that can be saved.

    See Also
    --------
    import_party : the inverse, at the party.
    ftl.save_model : the driver's file.

    Examples
    --------
    >>> import ftl, tempfile, os
    >>> from sklearn.pipeline import make_pipeline
    >>> guest, host = ftl.datasets.load_breast_cancer()
    >>> X, y = ftl.align(guest, host)
    >>> pipe = make_pipeline(
    ...     ftl.preprocessing.FederatedStandardScaler(),
    ...     ftl.FederatedLogisticRegression(encryption=None, max_iter=2),
    ... ).fit(X, y)
    >>> d = tempfile.mkdtemp()
    >>> _ = ftl.save_model(pipe, os.path.join(d, "pipeline.json"))
    >>> for party in (guest, host):
    ...     _ = ftl.persistence.export_party(party, pipe, os.path.join(d, f"{party.name}.json"))
    >>> # later, in new processes: each party imports only its own file
    >>> guest, host = ftl.datasets.load_breast_cancer()
    >>> for party in (guest, host):
    ...     _ = ftl.persistence.import_party(party, os.path.join(d, f"{party.name}.json"))
    >>> pipe2 = ftl.load_model(os.path.join(d, "pipeline.json"))
    >>> X2, _ = ftl.align(guest, host)
    >>> pipe2.predict(X2).shape
    (569,)
    """
    steps, estimator = _pipeline_parts(model)
    parties = list(estimator.party_names_)
    if party.name not in parties:
        raise ValueError(f"party {party.name!r} is not one of the model's parties {parties}")
    transformers, current = [], party
    for _, step in steps:
        if _is_passthrough(step) or party.name not in step.transformed_parties_:
            continue
        transformers.append(_transformer_document(current, step.transformer_id_))
        current = current.derive(step.transformer_id_)
    held = set(current.model_ids())
    models = []
    for model_id in _model_spec_of(estimator).shard_ids(estimator):
        if model_id in held:
            models.append(_shard_document(current, model_id))
        elif party.name != parties[0]:  # the driver keeps its part in its own file
            raise ValueError(
                f"party {party.name!r} holds no shard of model {model_id!r} on its rows as "
                "the pipeline's transformers derive them; export from the parties the "
                "model was fitted on (or import their files first)"
            )
    doc = {
        "format": PARTY_FORMAT,
        "version": PARTY_VERSION,
        "party": party.name,
        "estimator": type(estimator).__name__,
        "transformers": transformers,
        "models": models,
    }
    return _write_private_json(doc, path)


def import_party(party: Party, path: PathLike) -> dict[str, list[str]]:
    """Read a party's file written by :func:`export_party` into ``party``.

    The transformers are imported in order, each into the party derived by the
    one before (``party``, then ``party.derive(t1)``, ...), and the model shards
    into the party at the end of that chain, so that a pipeline loaded with
    :func:`~ftl.load_model` predicts as the saved one did. Everything is checked
    before anything is kept: a refused file leaves the party unchanged.

    Parameters
    ----------
    party : ftl.Party
        The party that exported the file (same name, same feature columns),
        built afresh.
    path : str or path-like
        A file written by :func:`export_party`.

    Returns
    -------
    dict
        ``{"transformer_ids": [...], "model_ids": [...]}``: what was imported.

    Raises
    ------
    ValueError
        If the file (or a transformer or shard in it) is not valid, has another
        format or version, belongs to a party of another name, does not fit the
        party's columns, names a class that is not allowlisted, or the party
        already holds its first transformer.

    See Also
    --------
    export_party : writes the file.
    """
    doc = _read_json(path, PARTY_FORMAT, PARTY_VERSION)
    owner = _field(doc, "party", path)
    if owner != party.name:
        raise ValueError(
            f"{path} holds the file of party {owner!r}; it cannot be imported into party "
            f"{party.name!r}"
        )
    if (
        set(doc) != _PARTY_KEYS
        or not isinstance(doc["transformers"], list)
        or not isinstance(doc["models"], list)
        or doc["estimator"] not in _model_specs()
    ):
        raise ValueError(
            f"{path} is corrupted: a party file holds exactly {sorted(_PARTY_KEYS)}, with "
            "lists of transformers and models"
        )
    # a dry run on parties that are not kept: nothing changes until all of it is valid
    staged, current = [], party
    for k, item in enumerate(doc["transformers"]):
        transformer_id, fitted = _transformer_from_document(
            current, item, f"{path} (transformer {k})"
        )
        staged.append((transformer_id, fitted))
        current = DerivedParty(current, fitted, fitted.feature_names_out)
    if staged:
        _refuse_held(party, staged[0][0])
    model_ids = []
    for k, item in enumerate(doc["models"]):
        where = f"{path} (model {k})"
        _check_format(item, where, SHARD_FORMAT, SHARD_VERSION)
        model_ids.append(_import_shard_document(current, item, where))
    target = party
    for transformer_id, fitted in staged:
        target.store_transformer(transformer_id, fitted)
        target = target.derive(transformer_id)
    for model_id in model_ids:
        target.store_model(model_id, current.load_model(model_id))
    return {"transformer_ids": [t for t, _ in staged], "model_ids": model_ids}
