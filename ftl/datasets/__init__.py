"""Bundled public benchmark data as ready-made parties.

The vertical splits are FATE's own (``FederatedAI/FATE``, ``examples/data``,
Apache-2.0), copied byte for byte; see ``ftl/datasets/data/README.md`` for the
sources, licences and checksums.
"""

from ftl.datasets._loaders import (
    load_breast_cancer,
    load_default_credit,
    load_ionosphere,
    load_vehicle,
)

__all__ = ["load_breast_cancer", "load_default_credit", "load_ionosphere", "load_vehicle"]
