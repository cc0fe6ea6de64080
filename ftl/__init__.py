"""ftl: privacy-preserving vertical federated and transfer learning, sklearn-style.

Two or more organisations find their shared customers by private set
intersection and train one model on them; each keeps its own features and its
own part of the model, and only encrypted or masked values cross between them.
"""

# The face of the package: every public name is imported on first use (PEP 562),
# so ``import ftl`` stays cheap and no lower layer is made to import a higher one
# (docs/architecture.md).
import importlib
import importlib.util
from functools import partial

from ftl.data import stores as _stores

__version__ = "0.1.0"

#: Where each public name lives (a module, or the name's own subpackage).
_EXPORTS = {
    "FederatedGradientBoostingClassifier": "ftl.ensemble",
    "FederatedGradientBoostingRegressor": "ftl.ensemble",
    "FederatedLinearRegression": "ftl.linear_model",
    "FederatedLogisticRegression": "ftl.linear_model",
    "FederatedPoissonRegressor": "ftl.linear_model",
    "FederatedTransferClassifier": "ftl.transfer",
    "Party": "ftl.data.party",
    "PartyRows": "ftl.data.handles",
    "PolicyError": "ftl.exceptions",
    "RemoteParty": "ftl.data.remote",
    "TLSConfig": "ftl.federation.transport.grpc.tls",
    "Transcript": "ftl.federation.transcript",
    "VerticalData": "ftl.data.handles",
    "align": "ftl.data.align",
    "datasets": None,
    "ensemble": None,
    "intersection_size": "ftl.psi",
    "plot": None,
    "preprocessing": None,
    "report": "ftl.reporting",
    "load_model": "ftl.persistence",
    "save_model": "ftl.persistence",
}

__all__ = [*_EXPORTS, "__version__"]

# A party saves and loads its shards and transformers through the persistence
# layer, which sits above the data layer: the face wires them, and persistence
# is imported when a party first writes or reads such a file.
_stores.install_party_files(partial(importlib.import_module, "ftl.persistence"))


def __getattr__(name: str):
    if name in _EXPORTS:
        where = _EXPORTS[name]
        value = (
            importlib.import_module(f"ftl.{name}")
            if where is None
            else getattr(importlib.import_module(where), name)
        )
    elif name.isidentifier() and importlib.util.find_spec(f"ftl.{name}") is not None:
        value = importlib.import_module(f"ftl.{name}")  # any subpackage, e.g. ftl.persistence
    else:
        raise AttributeError(f"module 'ftl' has no attribute {name!r}")
    globals()[name] = value  # resolved once
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
