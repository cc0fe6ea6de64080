"""File format names and versions, and the classes and roles a file may name.

Every file holds a ``"format"`` and a ``"version"``; readers refuse any other
(``_FORMAT_HINTS`` says what to do with a file of a wrong, known format). No
class is ever looked up by a name read from a file: a driver's file may name
only an estimator of a registered protocol (:mod:`ftl.federation.protocols`),
whose spec also gives the driver's role and the codec of its attributes.
"""

from __future__ import annotations

from typing import Any

from ftl.federation.protocols import EstimatorSpec, load_protocols

#: Format name of a guest's model file.
MODEL_FORMAT = "ftl-model"

#: Version of the guest's model file this code writes and reads.
MODEL_VERSION = 1

#: Format name of a host's shard file.
SHARD_FORMAT = "ftl-model-shard"

#: Version of the host's shard file this code writes and reads.
SHARD_VERSION = 1

#: Format name of a guest's pipeline file (preprocessing steps + estimator).
PIPELINE_FORMAT = "ftl-pipeline"

#: Version of the guest's pipeline file this code writes and reads.
PIPELINE_VERSION = 1

#: Format name of one fitted transformer of one party.
TRANSFORMER_FORMAT = "ftl-transformer"

#: Version of the transformer file this code writes and reads.
TRANSFORMER_VERSION = 1

#: Format name of a party's whole share of a fitted pipeline (transformers + shards).
PARTY_FORMAT = "ftl-party"

#: Version of the party file this code writes and reads.
PARTY_VERSION = 1

#: What to do with a file of each format, for the error naming a wrong one.
_FORMAT_HINTS = {
    "ftl-model-shard": "a host's shard: import it with Party.import_model",
    "ftl-model": "a guest's model: load it with ftl.load_model",
    "ftl-pipeline": "a guest's pipeline: load it with ftl.load_model",
    "ftl-transformer": "a party's fitted transformer: import it with Party.import_transformer",
    "ftl-party": "a party's file: import it with ftl.persistence.import_party",
}


def _model_specs() -> dict[str, EstimatorSpec]:
    """The estimators a model file may name, by class name (the registered ones
    that a driver saves, not pipeline steps)."""
    return {e.name: e for spec in load_protocols() for e in spec.estimators if e.is_model}


def _model_spec_of(clf: Any) -> EstimatorSpec:
    """The spec of a saveable estimator; ``TypeError`` for any other object."""
    specs = _model_specs()
    spec = specs.get(type(clf).__name__)
    if spec is None or spec.cls is not type(clf):
        raise TypeError(f"cannot save a {type(clf).__name__}; supported: {sorted(specs)}")
    return spec


def _pipeline_steps() -> dict[str, type]:
    """The pipeline step classes a pipeline file may name, by class name."""
    return {e.name: e.cls for spec in load_protocols() for e in spec.estimators if not e.is_model}
