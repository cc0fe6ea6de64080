"""ftl: privacy-preserving vertical federated and transfer learning, sklearn-style.

Two or more organisations find their shared customers by private set
intersection and train one model on them; each keeps its own features and its
own part of the model, and only encrypted or masked values cross between them.
"""

from ftl import datasets, plot, preprocessing
from ftl._report import report
from ftl.data.align import align
from ftl.data.handles import PartyRows, VerticalData
from ftl.data.party import Party
from ftl.data.remote import RemoteParty
from ftl.federation.policy import PolicyError
from ftl.federation.tls import TLSConfig
from ftl.federation.transcript import Transcript
from ftl.linear_model import FederatedLogisticRegression
from ftl.persistence import load_model, save_model
from ftl.psi import intersection_size
from ftl.transfer import FederatedTransferClassifier

__version__ = "0.1.0"

__all__ = [
    "FederatedLogisticRegression",
    "FederatedTransferClassifier",
    "Party",
    "PartyRows",
    "PolicyError",
    "RemoteParty",
    "TLSConfig",
    "Transcript",
    "VerticalData",
    "align",
    "datasets",
    "intersection_size",
    "plot",
    "preprocessing",
    "report",
    "load_model",
    "save_model",
    "__version__",
]
