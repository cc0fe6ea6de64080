"""Per-party preprocessing: transformers that run where the data is.

Each transformer is a scikit-learn transformer, usable as a step of a
:class:`~sklearn.pipeline.Pipeline` in front of a federated estimator (and so
with ``cross_val_score`` and ``GridSearchCV`` over data handles). Given a handle,
every party fits the transformer on its own rows and keeps what it learned;
``transform`` returns a handle over the same rows of *derived* parties, which
serve their rows through the transformer they fitted. Only public metadata
crosses: the transformer's class and parameters as JSON (a party builds only
allowlisted scikit-learn transformers), row positions, row counts and
*positional* output feature names (``shop__city_0``, ``shop__city_1``: how many
outputs each column has, never a category or bin edge). Given a plain array,
each behaves like the scikit-learn transformer it runs.

Examples
--------
>>> import ftl
>>> from sklearn.pipeline import Pipeline
>>> pipe = Pipeline([
...     ("scale", ftl.preprocessing.FederatedStandardScaler()),
...     ("clf", ftl.FederatedLogisticRegression(encryption=None)),
... ])
"""

from ftl.preprocessing import _protocol  # noqa: F401 - registers the "preprocessing" protocol
from ftl.preprocessing._spec import ALLOWED_TRANSFORMERS
from ftl.preprocessing._transformers import (
    FederatedSimpleImputer,
    FederatedStandardScaler,
    PerParty,
)

__all__ = [
    "ALLOWED_TRANSFORMERS",
    "FederatedSimpleImputer",
    "FederatedStandardScaler",
    "PerParty",
]
