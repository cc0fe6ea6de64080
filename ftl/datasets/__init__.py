"""Bundled public benchmark data as ready-made parties.

The vertical splits are FATE's own (``FederatedAI/FATE``, ``examples/data``,
Apache-2.0), copied byte for byte; see ``ftl/datasets/data/README.md`` for the
sources, licences and checksums. The transfer-learning splits
(:func:`load_credit_transfer`, :func:`load_breast_transfer`) are derived from the
same files at load time.
"""

from ftl.datasets._loaders import (
    load_breast_cancer,
    load_default_credit,
    load_ionosphere,
    load_vehicle,
)
from ftl.datasets._regression import load_dvisits, load_motor, load_student
from ftl.datasets._transfer import load_breast_transfer, load_credit_transfer

__all__ = [
    "load_breast_cancer",
    "load_breast_transfer",
    "load_credit_transfer",
    "load_default_credit",
    "load_dvisits",
    "load_ionosphere",
    "load_motor",
    "load_student",
    "load_vehicle",
]
