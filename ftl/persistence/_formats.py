"""File format names and versions, and the classes and roles a file may name.

Every file holds a ``"format"`` and a ``"version"``; readers refuse any other
(``_FORMAT_HINTS`` says what to do with a file of a wrong, known format). No
class is ever looked up by a name read from a file: ``_ESTIMATORS`` lists the
estimators a driver's file may name.
"""

from __future__ import annotations

from ftl.linear_model import FederatedLogisticRegression
from ftl.transfer import FederatedTransferClassifier

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

#: Estimator classes a model file may name (never imported by name from the file).
_ESTIMATORS: dict[str, type] = {
    "FederatedLogisticRegression": FederatedLogisticRegression,
    "FederatedTransferClassifier": FederatedTransferClassifier,
}

#: The driver's role written into (and expected in) its model file, per estimator.
_DRIVER_ROLE = {
    "FederatedLogisticRegression": "guest",
    "FederatedTransferClassifier": "source",
}

#: What to do with a file of each format, for the error naming a wrong one.
_FORMAT_HINTS = {
    "ftl-model-shard": "a host's shard: import it with Party.import_model",
    "ftl-model": "a guest's model: load it with ftl.load_model",
    "ftl-pipeline": "a guest's pipeline: load it with ftl.load_model",
    "ftl-transformer": "a party's fitted transformer: import it with Party.import_transformer",
    "ftl-party": "a party's file: import it with ftl.persistence.import_party",
}
