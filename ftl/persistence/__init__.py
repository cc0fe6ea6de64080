"""Save and load fitted federated models: one JSON file per party, no pickle.

A fitted federated model is split across its parties: the driver's party holds
its own part and *references* to the others' (model ids, public keys); every
other party holds its own shard. Persistence keeps that split. It writes and
checks each file's envelope -- format, version, the party's role, the model id
-- and leaves the fields of an estimator or of a shard to the codecs its
protocol declares in the protocol registry (:mod:`ftl.federation.protocols`):

* :func:`~ftl.save_model` / :func:`~ftl.load_model` -- the **driver's** file
  (format ``"ftl-model"``): the estimator's class name, the driver's role, its
  parameters and the driver's fitted attributes. It never holds another
  party's weights or any private key. For a
  :class:`~ftl.FederatedLogisticRegression` (role ``"guest"``): ``classes_``,
  ``coef_`` (the guest's block), ``intercept_``, ``n_features_in_``,
  ``feature_names_in_``, ``party_names_``, ``n_iter_``, ``history_`` and
  ``models_`` with the hosts' *public* keys. For a
  :class:`~ftl.FederatedTransferClassifier` (role ``"source"``): ``classes_``,
  ``prototypes_``, the source's own network (hidden layers and output layer),
  ``model_id_``, the names, ``n_iter_`` and ``history_``.
* :meth:`ftl.Party.export_model` / :meth:`ftl.Party.import_model` (implemented
  here by :func:`export_shard` / :func:`import_shard`) -- a **party's shard**
  (format ``"ftl-model-shard"``, with the shard's ``kind``). A
  logistic-regression host's (kind ``"lr"``, one per binary model, so one per
  class of a multiclass model) holds its weight block, the encryption scheme
  and its own key pair (public ``n`` and DJN base ``hs``, private primes ``p``
  and ``q``), which it needs to serve predictions: protect the file like any
  private key. A transfer target's (kind ``"ftl.target"``) holds its network
  and no key (prediction uses a fresh key of the source per request). Shard
  files are written with mode ``0o600`` (readable by their owner only).

A fitted :class:`~sklearn.pipeline.Pipeline` of per-party preprocessing
(:mod:`ftl.preprocessing`) in front of an estimator is split the same way:
the fitted transformers live at the parties that fitted them.

* :func:`~ftl.save_model` / :func:`~ftl.load_model` -- the **guest's** file
  (format ``"ftl-pipeline"``): the step names, each transformer's parameters
  and public fitted metadata (the id under which the parties keep it, party
  and feature names) and the estimator's document as above. No statistic of
  any party.
* :func:`export_party` / :func:`import_party` -- **every party's** file
  (format ``"ftl-party"``, the guest writes one too): the transformers it
  fitted, in pipeline order (each as :func:`export_transformer` writes it:
  allowlisted class, parameters and fitted statistics, see
  :func:`encode_transformer`), and its model shards (as above), which belong
  to the party at the end of its chain of derived parties.
  :meth:`ftl.Party.export_transformer` / :meth:`ftl.Party.import_transformer`
  save and load one transformer (format ``"ftl-transformer"``).

All files are plain, strict JSON (RFC 8259: no ``NaN`` literals; non-finite
floats are written as the strings ``"nan"``, ``"inf"``, ``"-inf"``) with a
``format`` name and a ``version``. Readers refuse any other format or version
with a :class:`ValueError` naming what was found and what was expected, and
refuse unreadable or inconsistent files with a :class:`ValueError` too. Floats
are written with Python's shortest round-trip representation, so reloaded
weights are bit-identical and so are predictions.

Nothing is ever unpickled and no class is looked up by a name read from a file:
the estimator and pipeline step classes must be among those of the registered
protocols, and a saved transformer (also one nested in another, like a
PowerTransformer's scaler) must be of an allowlisted scikit-learn class
(:data:`ftl.preprocessing.ALLOWED_TRANSFORMERS`).

Models fitted on a plain array (a *simulated* federation, where every "host"
lives inside the estimator) are refused by :func:`~ftl.save_model`: writing them
would put the simulated hosts' shards and private keys into the guest's file.
Fit on a handle from :func:`ftl.align` to get a model that can be saved.

Examples
--------
>>> import ftl, tempfile, os
>>> guest, host = ftl.datasets.load_breast_cancer()
>>> X, y = ftl.align(guest, host)
>>> clf = ftl.FederatedLogisticRegression(encryption=None, max_iter=2).fit(X, y)
>>> d = tempfile.mkdtemp()
>>> _ = ftl.save_model(clf, os.path.join(d, "guest.json"))
>>> _ = host.export_model(clf.models_[0]["model_id"], os.path.join(d, "lab.json"))
>>> # ... later, in new processes: each party reloads only its own file
>>> guest, host = ftl.datasets.load_breast_cancer()
>>> model_id = host.import_model(os.path.join(d, "lab.json"))
>>> clf2 = ftl.load_model(os.path.join(d, "guest.json"))
>>> X2, _ = ftl.align(guest, host)
>>> clf2.predict(X2).shape
(569,)
"""

from ftl.persistence._formats import (
    MODEL_FORMAT,
    MODEL_VERSION,
    PARTY_FORMAT,
    PARTY_VERSION,
    PIPELINE_FORMAT,
    PIPELINE_VERSION,
    SHARD_FORMAT,
    SHARD_VERSION,
    TRANSFORMER_FORMAT,
    TRANSFORMER_VERSION,
)
from ftl.persistence._party import export_party, import_party
from ftl.persistence._save_load import load_model, save_model
from ftl.persistence._shard import export_shard, import_shard
from ftl.persistence._transformer import export_transformer, import_transformer
from ftl.preprocessing._codec import decode_transformer, encode_transformer

__all__ = [
    "MODEL_FORMAT",
    "MODEL_VERSION",
    "PARTY_FORMAT",
    "PARTY_VERSION",
    "PIPELINE_FORMAT",
    "PIPELINE_VERSION",
    "SHARD_FORMAT",
    "SHARD_VERSION",
    "TRANSFORMER_FORMAT",
    "TRANSFORMER_VERSION",
    "decode_transformer",
    "encode_transformer",
    "export_party",
    "export_shard",
    "export_transformer",
    "import_party",
    "import_shard",
    "import_transformer",
    "load_model",
    "save_model",
]
