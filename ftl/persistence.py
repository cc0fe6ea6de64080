"""Save and load fitted federated models: one JSON file per party, no pickle.

A fitted vertical model is split across its parties: the guest holds its own
weight block, the intercept and *references* to the hosts' blocks (model ids
and the hosts' public keys); every host holds its own weight block and the
Paillier key pair it trained with. Persistence keeps that split:

* :func:`~ftl.save_model` / :func:`~ftl.load_model` -- the **guest's** file
  (format ``"ftl-model"``). It holds the estimator's class and parameters, and
  the guest's fitted attributes (``classes_``, ``coef_``, ``intercept_``,
  ``n_features_in_``, ``feature_names_in_``, ``party_names_``, ``n_iter_``,
  ``history_`` and ``models_`` with the hosts' *public* keys). It never holds a
  host's weights or any private key.
* :meth:`ftl.Party.export_model` / :meth:`ftl.Party.import_model` (implemented
  here by :func:`export_shard` / :func:`import_shard`) -- a **host's** file
  (format ``"ftl-model-shard"``) with that host's shard of one binary model:
  the model id, its weight block, the encryption scheme and its own key pair
  (public ``n`` and DJN base ``hs``, private primes ``p`` and ``q``). The key
  pair is the host's own secret and is needed to serve predictions (it encrypts
  the host's margins and decrypts the guest's masked values); the file is
  written with mode ``0o600`` (readable by its owner only) and must be
  protected like any private key. A multiclass model has one binary model --
  and so one shard file per host -- per class.

A fitted :class:`~ftl.FederatedTransferClassifier` is split the same way
between its *source* (the labelled party, which runs the driver) and its
*target*:

* :func:`~ftl.save_model` / :func:`~ftl.load_model` -- the **source's** file (same format,
  ``"role": "source"``, ``"estimator": "FederatedTransferClassifier"``): the
  parameters, ``classes_``, ``prototypes_``, the source's own network (hidden
  layers and output layer), ``model_id_``, ``party_names_``,
  ``n_features_in_``, ``feature_names_in_``, ``n_iter_`` and ``history_``. It
  never holds the target's weights.
* :meth:`ftl.Party.export_model` / :meth:`ftl.Party.import_model` -- the
  **target's** shard (same shard format, ``"kind": "ftl.target"``): its hidden
  layers and output layer. The transfer protocol keeps no key with the shard
  (prediction uses a fresh key of the source per request), so this file holds
  no key -- but it is the target's private model and is written with mode
  ``0o600`` too.

A fitted :class:`~sklearn.pipeline.Pipeline` of per-party preprocessing
(:mod:`ftl.preprocessing`) in front of either estimator is split the same way:
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
the estimator and pipeline step classes must be among the known classes, and a
saved transformer (also one nested in another, like a PowerTransformer's
scaler) must be of an allowlisted scikit-learn class
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

from __future__ import annotations

import json
import math
import os
import re
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import phe
from gmpy2 import gcd, is_prime
from sklearn.pipeline import Pipeline
from sklearn.utils.validation import check_is_fitted

from ftl.crypto.keys import MIN_SECURE_KEY_SIZE, key_id
from ftl.crypto.scheme import OwnKey, PaillierOwnKey, PlainOwnKey
from ftl.data.party import DerivedParty
from ftl.federation.transcript import Transcript
from ftl.linear_model import FederatedLogisticRegression
from ftl.preprocessing import FederatedSimpleImputer, FederatedStandardScaler, PerParty
from ftl.preprocessing._codec import decode_transformer, encode_transformer
from ftl.preprocessing._spec import (
    _json_columns,
    build_transformer,
    decode_param,
    encode_param,
    transformer_spec,
)
from ftl.preprocessing.party import MAX_OUTPUT_FEATURES, FittedTransform
from ftl.transfer import FederatedTransferClassifier
from ftl.transfer._network import ACTIVATIONS

if TYPE_CHECKING:
    from ftl.data.party import Party

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
#: Shard kinds a party can export and import: the shard's role in the file.
_SHARD_ROLE = {"lr": "host", "ftl.target": "target"}

PathLike = str | os.PathLike


# ------------------------------------------------------------------ JSON helpers
def _float_to_json(x: float) -> float | str:
    x = float(x)
    if math.isfinite(x):
        return x
    return "nan" if math.isnan(x) else ("inf" if x > 0 else "-inf")


def _float_from_json(x: Any) -> float:
    if isinstance(x, str):
        if x not in ("nan", "inf", "-inf"):
            raise ValueError(f"invalid float {x!r}")
        return float(x)
    if isinstance(x, bool) or not isinstance(x, (int, float)):
        raise ValueError(f"invalid float {x!r}")
    return float(x)


def _encode_array(arr: Any) -> dict:
    """An ndarray as ``{"dtype", "shape", "data"}`` (data flattened, C order)."""
    arr = np.asarray(arr)
    kind = arr.dtype.kind
    flat = arr.reshape(-1)
    if kind == "f":
        data: list = [_float_to_json(v) for v in flat.tolist()]
    elif kind in "biuU":
        data = flat.tolist()
    elif kind == "S":
        data = [v.decode("latin-1") for v in flat.tolist()]
    elif kind == "O":
        data = []
        for v in flat.tolist():
            if isinstance(v, np.generic):
                v = v.item()
            if isinstance(v, float) and not math.isfinite(v):
                raise ValueError("cannot save non-finite floats in object arrays")
            if v is not None and not isinstance(v, (str, int, float, bool)):
                raise ValueError(
                    f"cannot save values of type {type(v).__name__} (only str, int, float, "
                    "bool and None are supported in object arrays)"
                )
            data.append(v)
    else:
        raise ValueError(f"cannot save arrays of dtype {arr.dtype}")
    return {"dtype": arr.dtype.str, "shape": list(arr.shape), "data": data}


def _decode_array(obj: Any, what: str) -> np.ndarray:
    try:
        if not isinstance(obj["dtype"], str):
            raise ValueError("dtype must be a string")
        dtype = np.dtype(obj["dtype"])
        if dtype.itemsize > 1 << 16:
            raise ValueError(f"dtype {dtype} is too wide")
        shape = tuple(int(s) for s in obj["shape"])
        data = obj["data"]
        if not isinstance(data, list) or len(data) != math.prod(shape):
            raise ValueError("data does not match shape")
        if dtype.kind == "f":
            data = [_float_from_json(v) for v in data]
        elif dtype.kind == "S":
            data = [v.encode("latin-1") for v in data]
        elif dtype.kind == "O":
            if any(v is not None and not isinstance(v, (str, int, float, bool)) for v in data):
                raise ValueError("object arrays hold only str, int, float, bool or null")
        elif dtype.kind in "biuU":
            if any(isinstance(v, (list, dict)) for v in data):
                raise ValueError("nested values in a flat array")
        else:
            raise ValueError(f"unsupported dtype {dtype}")
        arr = np.empty(len(data), dtype=dtype)
        arr[:] = data
        return arr.reshape(shape)
    except (KeyError, TypeError, ValueError, OverflowError, AttributeError) as exc:
        raise ValueError(f"invalid array {what!r} in model file: {exc}") from None


def _write_private_json(obj: dict, path: PathLike) -> Path:
    """Write ``obj`` atomically as strict JSON to ``path`` with mode ``0o600``."""
    path = Path(path)
    text = json.dumps(obj, indent=1, allow_nan=False, ensure_ascii=True) + "\n"
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:  # mkstemp: mode 0o600
            fh.write(text)
            fh.flush()
            os.fsync(fh.fileno())
        os.chmod(tmp, 0o600)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    return path


def _read_json(path: PathLike, fmt: str, version: int) -> dict:
    """Read a file written by this module and check its format and version."""
    obj = _parse_json(Path(path), fmt)
    _check_format(obj, path, fmt, version)
    return obj


def _parse_json(path: Path, fmt: str) -> dict:
    """The JSON object in ``path`` (``fmt`` names what was expected, for errors)."""
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        raise ValueError(f"{path} is not a valid {fmt} file (not UTF-8 text: {exc})") from None
    try:
        obj = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ValueError(f"{path} is not a valid {fmt} file (corrupted JSON: {exc})") from None
    if not isinstance(obj, dict):
        raise ValueError(f"{path} is not a valid {fmt} file (expected a JSON object)")
    return obj


#: What to do with a file of each format, for the error naming a wrong one.
_FORMAT_HINTS = {
    "ftl-model-shard": "a host's shard: import it with Party.import_model",
    "ftl-model": "a guest's model: load it with ftl.load_model",
    "ftl-pipeline": "a guest's pipeline: load it with ftl.load_model",
    "ftl-transformer": "a party's fitted transformer: import it with Party.import_transformer",
    "ftl-party": "a party's file: import it with ftl.persistence.import_party",
}


def _check_format(obj: Any, path: PathLike, fmt: str, version: int) -> None:
    """Refuse a document of another format or version (``path`` names it in errors)."""
    if not isinstance(obj, dict):
        raise ValueError(f"{path} is not a valid {fmt} document (expected a JSON object)")
    found_fmt = obj.get("format")
    if found_fmt != fmt:
        hint = _FORMAT_HINTS.get(found_fmt) if isinstance(found_fmt, str) else None
        hint = f" ({hint})" if hint else ""
        raise ValueError(f"{path} has format {found_fmt!r}, expected {fmt!r}{hint}")
    found = obj.get("version")
    if found != version:
        raise ValueError(
            f"{path} is {fmt} version {found!r}, but this version of ftl reads only "
            f"version {version}; save the model again with a matching ftl"
        )


def _field(obj: dict, key: str, path: PathLike) -> Any:
    try:
        return obj[key]
    except (KeyError, TypeError):
        raise ValueError(f"{path} is corrupted: missing field {key!r}") from None


def _json_param(value: Any) -> tuple[bool, Any]:
    """``(True, json_value)`` for a JSON-serialisable parameter, else ``(False, None)``.

    Scalars, and lists or tuples of scalars (such as ``hidden_layer_sizes``; the
    caller records which were tuples).
    """
    if isinstance(value, (list, tuple)):
        items = [_json_param(v) for v in value]
        if all(ok and not isinstance(v, list) for ok, v in items):
            return True, [v for _, v in items]
        return False, None
    if isinstance(value, np.generic):
        value = value.item()
    if value is None or isinstance(value, (str, bool, int)):
        return True, value
    if isinstance(value, float):
        return (True, value) if math.isfinite(value) else (False, None)
    return False, None


def _params_to_json(clf: Any) -> tuple[dict, list[str], list[str]]:
    """``(params, unsaved parameter names, names of tuple-valued parameters)``."""
    params, unsaved, tuples = {}, [], []
    for key, value in clf.get_params(deep=False).items():
        ok, encoded = _json_param(value)
        if ok:
            params[key] = encoded
            if isinstance(value, tuple):
                tuples.append(key)
        else:
            unsaved.append(key)
    return params, sorted(unsaved), sorted(tuples)


def _history_to_json(history: Any) -> list[dict]:
    """Per-epoch records (``{"epoch": int, "relative_change": float, ...}``) as JSON."""
    out = []
    for entry in history:
        record: dict[str, Any] = {}
        for key, value in dict(entry).items():
            if isinstance(value, np.generic):
                value = value.item()
            if isinstance(value, bool) or isinstance(value, int):
                record[str(key)] = value
            elif isinstance(value, float):
                record[str(key)] = _float_to_json(value)
            else:
                raise ValueError(f"cannot save history_ value {key}={value!r}")
        out.append(record)
    return out


def _history_from_json(history: Any) -> list[dict]:
    if not isinstance(history, list):
        raise ValueError("history_ must be a list")
    out = []
    for entry in history:
        if not isinstance(entry, dict):
            raise ValueError("history_ entries must be objects")
        out.append(
            {
                str(k): v if isinstance(v, (bool, int)) else _float_from_json(v)
                for k, v in entry.items()
            }
        )
    return out


# ------------------------------------------------------------------ guest side
def save_model(
    clf: FederatedLogisticRegression | FederatedTransferClassifier | Pipeline, path: PathLike
) -> Path:
    """Save the driver's part of a fitted federated model as one JSON file.

    For a :class:`~ftl.FederatedLogisticRegression` the file holds the
    estimator's class and parameters and the guest's fitted attributes -- its
    own weight block, the intercept, the classes and, for every binary model,
    the model id and the hosts' public keys. It holds no host weights and no
    private key: each host saves its own shard with
    :meth:`ftl.Party.export_model`.

    For a :class:`~ftl.FederatedTransferClassifier` it holds the parameters and
    the source's fitted attributes -- the classes, the prototypes, the source's
    own network (``_source_model``: hidden layers and output layer), the id of
    the target's shard, the party and feature names, ``n_iter_`` and
    ``history_``. It holds none of the target's weights: the target saves its
    shard with :meth:`ftl.Party.export_model` (``clf.model_id_``).

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
    clf : FederatedLogisticRegression, FederatedTransferClassifier or Pipeline
        A model (or pipeline) fitted on a handle from :func:`ftl.align`.
    path : str or path-like
        Where to write the file (replaced if it exists).

    Returns
    -------
    pathlib.Path
        The written path.

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


def _model_document(clf: Any) -> dict:
    """The driver's document of a fitted estimator: what :func:`save_model` writes."""
    name = type(clf).__name__
    if _ESTIMATORS.get(name) is not type(clf):
        raise TypeError(f"cannot save a {name}; supported: {sorted(_ESTIMATORS)}")
    check_is_fitted(clf)
    if isinstance(clf, FederatedTransferClassifier):
        return _transfer_document(clf)
    if getattr(clf, "_sim_hosts", None) is not None or getattr(clf, "party_names_", None) is None:
        raise ValueError(
            "this model was fitted on a plain array (a simulated federation): its hosts' "
            "shards and private keys live inside the estimator, so it cannot be saved as "
            "one file per party; fit it on a handle from ftl.align(...) instead"
        )
    params, unsaved, tuples = _params_to_json(clf)
    models = []
    for model in clf.models_:
        keys = {}
        for host, pub in model["host_public_keys"].items():
            # public fields only (scheme, n, hs, key_id), big ints as decimal strings
            keys[str(host)] = {
                k: (str(int(v)) if k in ("n", "hs") else str(v))
                for k, v in pub.items()
                if k in ("scheme", "n", "hs", "key_id")
            }
        models.append({"model_id": str(model["model_id"]), "host_public_keys": keys})
    history = [
        [
            {
                "epoch": int(h["epoch"]),
                "relative_change": _float_to_json(h["relative_change"]),
                # wall time, and the secure epoch loss of verbose runs
                **{k: _float_to_json(h[k]) for k in ("seconds", "loss") if k in h},
            }
            for h in run
        ]
        for run in getattr(clf, "history_", [])
    ]
    doc = {
        "format": MODEL_FORMAT,
        "version": MODEL_VERSION,
        "role": "guest",
        "estimator": name,
        "params": params,
        "unsaved_params": unsaved,
        "attributes": {
            "classes_": _encode_array(clf.classes_),
            "coef_": _encode_array(np.asarray(clf.coef_, dtype=np.float64)),
            "intercept_": _encode_array(np.asarray(clf.intercept_, dtype=np.float64)),
            "n_features_in_": int(clf.n_features_in_),
            "feature_names_in_": [str(f) for f in clf.feature_names_in_],
            "party_names_": [str(p) for p in clf.party_names_],
            "n_iter_": [int(i) for i in clf.n_iter_],
            "history_": history,
            "models_": models,
        },
    }
    if tuples:
        doc["tuple_params"] = tuples
    return doc


def _transfer_document(clf: FederatedTransferClassifier) -> dict:
    """The source's file of a fitted transfer model (never the target's weights)."""
    if getattr(clf, "_simulated", None) is not None or getattr(clf, "party_names_", None) is None:
        raise ValueError(
            "this model was fitted on a plain array (a simulated federation): the "
            "simulated target's shard lives inside the estimator, so it cannot be saved "
            "as one file per party; fit it on a handle from ftl.align(...) instead"
        )
    params, unsaved, tuples = _params_to_json(clf)
    hidden = clf._source_model["hidden"]
    doc = {
        "format": MODEL_FORMAT,
        "version": MODEL_VERSION,
        "role": _DRIVER_ROLE["FederatedTransferClassifier"],
        "estimator": "FederatedTransferClassifier",
        "params": params,
        "unsaved_params": unsaved,
        "tuple_params": tuples,
        "attributes": {
            "classes_": _encode_array(clf.classes_),
            "prototypes_": _encode_array(np.asarray(clf.prototypes_, dtype=np.float64)),
            "source_model": {
                "hidden": _network_to_json(hidden),
                "output": _encode_array(np.asarray(clf._source_model["output"], dtype=np.float64)),
            },
            "model_id_": str(clf.model_id_),
            "n_features_in_": int(clf.n_features_in_),
            "feature_names_in_": [str(f) for f in clf.feature_names_in_],
            "party_names_": [str(p) for p in clf.party_names_],
            "n_iter_": int(clf.n_iter_),
            "history_": _history_to_json(getattr(clf, "history_", [])),
        },
    }
    return doc


def _network_to_json(hidden: dict) -> dict:
    """A :meth:`HiddenStack.to_dict` (activation, weight matrices) as JSON."""
    return {
        "activation": str(hidden["activation"]),
        "weights": [_encode_array(np.asarray(w, dtype=np.float64)) for w in hidden["weights"]],
    }


def _network_from_json(obj: Any, n_inputs: int | None, what: str) -> list[np.ndarray]:
    """The hidden weight matrices, checked to chain (``n_inputs``: the first layer's)."""
    if not isinstance(obj, dict) or obj.get("activation") not in ACTIVATIONS:
        raise ValueError(f"{what}: unknown activation")
    layers = obj["weights"]
    if not isinstance(layers, list):
        raise ValueError(f"{what}: weights must be a list")
    weights = [_decode_array(w, f"{what}[{k}]").astype(np.float64) for k, w in enumerate(layers)]
    width = n_inputs
    for k, w in enumerate(weights):
        if w.ndim != 2 or (width is not None and w.shape[1] != width + 1):
            raise ValueError(f"{what}: layer {k} has shape {w.shape}, inputs {width}")
        width = w.shape[0]
    return weights


def load_model(
    path: PathLike, *, estimator: type | None = None
) -> FederatedLogisticRegression | FederatedTransferClassifier | Pipeline:
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
        The estimator class the file must hold
        (:class:`~ftl.FederatedLogisticRegression`,
        :class:`~ftl.FederatedTransferClassifier` or
        :class:`~sklearn.pipeline.Pipeline`); by default, whichever it holds.

    Returns
    -------
    FederatedLogisticRegression, FederatedTransferClassifier or Pipeline
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


def _model_from_document(doc: dict, path: PathLike, estimator: type | None = None) -> Any:
    """The fitted estimator of a checked driver's document (``path`` names it in errors)."""
    name = _field(doc, "estimator", path)
    cls = _ESTIMATORS.get(name) if isinstance(name, str) else None
    if cls is None:
        raise ValueError(f"{path}: unknown estimator {name!r}; supported: {sorted(_ESTIMATORS)}")
    if estimator is not None and cls is not estimator:
        expected = getattr(estimator, "__name__", repr(estimator))
        raise ValueError(f"{path} holds a {name} model, expected a {expected}")
    role = doc.get("role")
    if role != _DRIVER_ROLE[name]:
        raise ValueError(
            f"{path} is corrupted: role {role!r} in a {name} file, expected {_DRIVER_ROLE[name]!r}"
        )
    params = _field(doc, "params", path)
    if not isinstance(params, dict):
        raise ValueError(f"{path} is corrupted: params must be an object")
    valid = set(cls().get_params(deep=False))
    unknown = sorted(set(params) - valid)
    if unknown:
        raise ValueError(f"{path}: unknown parameters {unknown} for {name}")
    tuples = doc.get("tuple_params", [])
    if not isinstance(tuples, list) or any(
        t not in params or not isinstance(params[t], list) for t in tuples
    ):
        raise ValueError(f"{path} is corrupted: bad tuple_params")
    params = {k: tuple(v) if k in tuples else v for k, v in params.items()}
    clf = cls(**params)
    try:
        clf._validate_params()
    except (TypeError, ValueError) as exc:
        raise ValueError(f"{path}: invalid parameters: {exc}") from None
    attrs = _field(doc, "attributes", path)
    if not isinstance(attrs, dict):
        raise ValueError(f"{path} is corrupted: attributes must be an object")
    setter = _set_transfer_attributes if cls is FederatedTransferClassifier else _set_attributes
    try:
        setter(clf, attrs, path)
    except (KeyError, TypeError, AttributeError) as exc:
        raise ValueError(f"{path} is corrupted: bad fitted attributes ({exc!r})") from None
    return clf


def _names(attrs: dict, path: PathLike, n_parties: int | None = None):
    """``(party_names, feature_names, n_features)``, checked against each other."""
    party_names = [str(p) for p in attrs["party_names_"]]
    feature_names = np.asarray([str(f) for f in attrs["feature_names_in_"]], dtype=object)
    n_features = attrs["n_features_in_"]
    if (
        isinstance(n_features, bool)
        or not isinstance(n_features, int)
        or len(feature_names) != n_features
        or len(party_names) < 2
        or (n_parties is not None and len(party_names) != n_parties)
        or len(set(party_names)) != len(party_names)
    ):
        raise ValueError(f"{path} is corrupted: feature or party names do not fit the model")
    return party_names, feature_names, n_features


def _set_transfer_attributes(clf: FederatedTransferClassifier, attrs: dict, path: PathLike) -> None:
    if "coef_" in attrs or "models_" in attrs:
        raise ValueError(f"{path} is corrupted: logistic-regression attributes in a transfer file")
    party_names, feature_names, n_features = _names(attrs, path, n_parties=2)
    classes = _decode_array(attrs["classes_"], "classes_")
    prototypes = _decode_array(attrs["prototypes_"], "prototypes_").astype(np.float64)
    source = attrs["source_model"]
    hidden = _network_from_json(source["hidden"], None, f"{path}: source hidden layers")
    output = _decode_array(source["output"], "source output layer").astype(np.float64)
    if output.ndim != 2 or prototypes.ndim != 2:
        raise ValueError(f"{path} is corrupted: output layer and prototypes must be matrices")
    n_prototypes = 1 if len(classes) == 2 else len(classes)
    widths = [w.shape[0] for w in hidden]
    n_source = hidden[0].shape[1] - 1 if hidden else output.shape[-1] - 1
    expected_hidden = clf.get_params()["hidden_layer_sizes"]
    if (
        classes.ndim != 1
        or len(classes) < 2
        or output.shape[1] != (widths[-1] if hidden else n_source) + 1
        or prototypes.shape != (n_prototypes, output.shape[0])
        or output.shape[0] != clf.get_params()["n_components"]
        or [int(k) for k in expected_hidden] != widths
        or not 1 <= n_source < n_features
    ):
        raise ValueError(
            f"{path} is corrupted: {len(classes)} classes, prototypes {prototypes.shape}, "
            f"hidden layers {[w.shape for w in hidden]} and output layer {output.shape} do "
            "not fit together or the parameters"
        )
    model_id = attrs["model_id_"]
    n_iter = attrs["n_iter_"]
    if not isinstance(model_id, str) or not model_id:
        raise ValueError(f"{path} is corrupted: model_id_ must be a non-empty string")
    if isinstance(n_iter, bool) or not isinstance(n_iter, int) or n_iter < 0:
        raise ValueError(f"{path} is corrupted: n_iter_ must be a non-negative int")
    try:
        history = _history_from_json(attrs.get("history_", []))
    except ValueError as exc:
        raise ValueError(f"{path} is corrupted: {exc}") from None
    clf.classes_ = classes
    clf.prototypes_ = prototypes
    clf._source_model = {
        # as HiddenStack.to_dict() returns it
        "hidden": {
            "activation": str(source["hidden"]["activation"]),
            "weights": [w.tolist() for w in hidden],
        },
        "output": output,
    }
    clf.model_id_ = model_id
    clf.n_features_in_ = n_features
    clf.feature_names_in_ = feature_names
    clf.party_names_ = party_names
    clf.n_iter_ = n_iter
    clf.history_ = history
    clf.transcript_ = Transcript()
    clf._simulated = None


def _set_attributes(clf: FederatedLogisticRegression, attrs: dict, path: PathLike) -> None:
    classes = _decode_array(attrs["classes_"], "classes_")
    coef = _decode_array(attrs["coef_"], "coef_").astype(np.float64)
    intercept = _decode_array(attrs["intercept_"], "intercept_").astype(np.float64)
    n_models = 1 if len(classes) == 2 else len(classes)
    models = attrs["models_"]
    if (
        classes.ndim != 1
        or len(classes) < 2
        or coef.ndim != 2
        or coef.shape[0] != n_models
        or intercept.shape != (n_models,)
        or not isinstance(models, list)
        or len(models) != n_models
    ):
        raise ValueError(
            f"{path} is corrupted: {len(classes)} classes, coef_ {coef.shape}, "
            f"intercept_ {intercept.shape} and {len(models)} models do not fit together"
        )
    if "prototypes_" in attrs:
        raise ValueError(f"{path} is corrupted: transfer attributes in a logistic-regression file")
    party_names = [str(p) for p in attrs["party_names_"]]
    feature_names = np.asarray([str(f) for f in attrs["feature_names_in_"]], dtype=object)
    n_features = int(attrs["n_features_in_"])
    if (
        len(feature_names) != n_features
        or coef.shape[1] >= n_features
        or len(party_names) < 2
        or len(set(party_names)) != len(party_names)
    ):
        raise ValueError(f"{path} is corrupted: feature or party names do not fit the model")
    clean_models = []
    for model in models:
        keys = model["host_public_keys"]
        if not isinstance(keys, dict) or sorted(keys) != sorted(party_names[1:]):
            raise ValueError(f"{path} is corrupted: host public keys do not match the parties")
        clean_models.append(
            {
                "model_id": str(model["model_id"]),
                "host_public_keys": {
                    str(h): {str(k): str(v) for k, v in pub.items()} for h, pub in keys.items()
                },
            }
        )
    n_iter = np.asarray([int(i) for i in attrs["n_iter_"]], dtype=np.int64)
    history = [
        [
            {
                "epoch": int(h["epoch"]),
                "relative_change": _float_from_json(h["relative_change"]),
                **{k: _float_from_json(h[k]) for k in ("seconds", "loss") if k in h},
            }
            for h in run
        ]
        for run in attrs.get("history_", [])
    ]
    clf.classes_ = classes
    clf.coef_ = coef
    clf.intercept_ = intercept
    clf.n_features_in_ = n_features
    clf.feature_names_in_ = feature_names
    clf.party_names_ = party_names
    clf.n_iter_ = n_iter
    clf.history_ = history
    clf.models_ = clean_models
    clf.transcript_ = Transcript()
    clf._sim_hosts = None


# ------------------------------------------------------------------ host side
def _key_to_json(own: OwnKey) -> dict:
    if isinstance(own, PlainOwnKey):
        return {"scheme": "plain"}
    if isinstance(own, PaillierOwnKey):
        return {
            "scheme": "paillier",
            "key_id": own.key_id,
            "n": str(int(own.n)),
            "hs": str(int(own.hs)),
            "p": str(int(own.private_key.p)),
            "q": str(int(own.private_key.q)),
        }
    raise TypeError(f"cannot save a key of type {type(own).__name__}")


def _int_field(obj: dict, key: str) -> int:
    value = obj[key]
    if not isinstance(value, str) or not value.isdigit():
        raise ValueError(f"{key} must be a decimal string")
    return int(value)


def _key_from_json(obj: dict, insecure: bool, n_jobs: int | None) -> OwnKey:
    """Rebuild an own key pair, checking that its parts belong together."""
    scheme = obj["scheme"]
    if scheme == "plain":
        return PlainOwnKey()
    if scheme != "paillier":
        raise ValueError(f"unknown encryption scheme {scheme!r}")
    n, hs, p, q = (_int_field(obj, k) for k in ("n", "hs", "p", "q"))
    if n.bit_length() < MIN_SECURE_KEY_SIZE and not insecure:
        raise ValueError(
            f"key of {n.bit_length()} bits is below {MIN_SECURE_KEY_SIZE} and the shard "
            "was not marked insecure_for_tests"
        )
    public_key = phe.PaillierPublicKey(n)
    private_key = phe.PaillierPrivateKey(public_key, p, q)  # checks p * q == n, p != q
    if not (is_prime(p) and is_prime(q)):
        raise ValueError("the key's factors p and q are not prime")
    if not 1 < hs < n * n or gcd(hs, n) != 1:
        raise ValueError("the DJN base hs is not a unit mod n^2")
    kid = key_id(public_key)
    if obj.get("key_id") != kid:
        raise ValueError(f"key id {obj.get('key_id')!r} does not match the key ({kid!r})")
    # the attributes PaillierOwnKey.__init__ sets, without generating a new key
    own = object.__new__(PaillierOwnKey)
    own.public_key = public_key
    own.private_key = private_key
    own.n = public_key.n
    own.hs = hs
    own.key_id = kid
    own.width = (2 * n.bit_length() + 7) // 8
    own.n_jobs = n_jobs
    own._encryptor = None
    return own


def export_shard(party: Party, model_id: str, path: PathLike) -> Path:
    """Write ``party``'s own shard of model ``model_id`` to a JSON file.

    Use :meth:`ftl.Party.export_model`. The file holds the format and version,
    the party's name, the model id and nothing of any other party. For a host
    of a logistic regression (``"kind": "lr"``) it holds the party's weight
    block, the encryption scheme and the party's own Paillier key pair --
    public ``n`` and ``hs``, private ``p`` and ``q``: protect it like a private
    key. For the target of a transfer model (``"kind": "ftl.target"``) it holds
    the target's network -- hidden layers and output layer -- and no key (the
    protocol keeps none with the shard). The file is written atomically with
    mode ``0o600``.

    Parameters
    ----------
    party : ftl.Party
        The party holding the shard (a host of a fitted model).
    model_id : str
        Id of the model (``clf.models_[k]["model_id"]`` at the guest of a
        logistic regression, ``clf.model_id_`` at the source of a transfer
        model).
    path : str or path-like
        Where to write the file (replaced if it exists).

    Returns
    -------
    pathlib.Path
        The written path.

    Raises
    ------
    ValueError
        If the party holds no model ``model_id`` or the shard cannot be saved.
    """
    return _write_private_json(_shard_document(party, model_id), path)


def _shard_document(party: Party, model_id: str) -> dict:
    """``party``'s shard of model ``model_id``: what :func:`export_shard` writes."""
    shard = party.load_model(model_id)
    kind = shard.get("kind")
    if kind == "ftl.target":
        return _transfer_shard_document(party, model_id, shard)
    if kind != "lr":
        raise ValueError(f"party {party.name!r}: cannot save a model shard of kind {kind!r}")
    n_jobs = shard.get("n_jobs")
    doc = {
        "format": SHARD_FORMAT,
        "version": SHARD_VERSION,
        "role": "host",
        "party": party.name,
        "model_id": str(model_id),
        "kind": kind,
        "scheme": str(shard["scheme"]),
        "insecure": bool(shard.get("insecure", False)),
        "n_jobs": None if n_jobs is None else int(n_jobs),
        "coef": _encode_array(np.asarray(shard["coef"], dtype=np.float64)),
        "own_key": _key_to_json(shard["own_key"]),
    }
    if doc["own_key"]["scheme"] != doc["scheme"]:
        raise ValueError(f"party {party.name!r}: shard key and scheme disagree")
    return doc


#: What a transfer target keeps in its shard (ftl/transfer/target.py, ``finish``).
_TRANSFER_SHARD_KEYS = frozenset({"kind", "hidden", "output", "has_hidden"})


def _transfer_shard_document(party: Party, model_id: str, shard: dict) -> dict:
    extra = sorted(set(shard) - _TRANSFER_SHARD_KEYS)
    if extra:  # never drop something prediction may need
        raise ValueError(
            f"party {party.name!r}: cannot save transfer shard field(s) {extra} of model "
            f"{model_id!r}"
        )
    doc = {
        "format": SHARD_FORMAT,
        "version": SHARD_VERSION,
        "role": _SHARD_ROLE["ftl.target"],
        "party": party.name,
        "model_id": str(model_id),
        "kind": "ftl.target",
        "hidden": _network_to_json(shard["hidden"]),
        "output": _encode_array(np.asarray(shard["output"], dtype=np.float64)),
        "has_hidden": bool(shard["has_hidden"]),
    }
    return doc


def _import_transfer_shard(party: Party, doc: dict) -> dict:
    """The target's shard as :meth:`TransferTarget.finish` stores it, checked."""
    if set(doc) - {"format", "version", "role", "party", "model_id", "kind"} != set(
        _TRANSFER_SHARD_KEYS - {"kind"}
    ):
        raise ValueError("a transfer target's shard must hold exactly hidden, output, has_hidden")
    hidden = _network_from_json(doc["hidden"], party.n_features, "hidden layers")
    output = _decode_array(doc["output"], "output").astype(np.float64)
    n_inputs = (hidden[-1].shape[0] if hidden else party.n_features) + 1
    if output.ndim != 2 or output.shape[1] != n_inputs or output.shape[0] < 1:
        raise ValueError(
            f"output layer has shape {output.shape}, expected (n_components, {n_inputs}) for "
            f"a party with {party.n_features} features"
        )
    if doc["has_hidden"] is not bool(hidden):
        raise ValueError("has_hidden does not match the hidden layers")
    return {
        "kind": "ftl.target",
        "hidden": {
            "activation": str(doc["hidden"]["activation"]),
            "weights": [w.tolist() for w in hidden],
        },
        "output": output.tolist(),
        "has_hidden": bool(hidden),
    }


def import_shard(party: Party, path: PathLike) -> str:
    """Read a shard file written by :func:`export_shard` into ``party``.

    Use :meth:`ftl.Party.import_model`. Afterwards the party serves
    predictions for that model exactly as after training: a host of a
    logistic regression with its weight block and key pair, the target of a
    transfer model with its network.

    Parameters
    ----------
    party : ftl.Party
        The party that exported the shard (same name).
    path : str or path-like
        A file written by :func:`export_shard`.

    Returns
    -------
    str
        The model id of the imported shard.

    Raises
    ------
    ValueError
        If the file is not valid JSON, has another format or version (the
        message names the found and the expected version), belongs to another
        party, does not fit the party's features, or its key pair is
        inconsistent.
    """
    return _import_shard_document(party, _read_json(path, SHARD_FORMAT, SHARD_VERSION), path)


def _import_shard_document(party: Party, doc: dict, path: PathLike) -> str:
    """Store the shard of a checked shard document in ``party``; its model id."""
    owner = _field(doc, "party", path)
    if owner != party.name:
        raise ValueError(
            f"{path} holds a shard of party {owner!r}; it cannot be imported into "
            f"party {party.name!r}"
        )
    try:
        model_id = doc["model_id"]
        kind = doc["kind"]
        if kind in _SHARD_ROLE and doc.get("role") != _SHARD_ROLE[kind]:
            raise ValueError(f"role {doc.get('role')!r} in a shard of kind {kind!r}")
        if kind == "ftl.target":
            if not isinstance(model_id, str) or not model_id:
                raise ValueError("model_id must be a non-empty string")
            party.store_model(model_id, _import_transfer_shard(party, doc))
            return model_id
        scheme = doc["scheme"]
        insecure = doc["insecure"]
        n_jobs = doc["n_jobs"]
        if not isinstance(model_id, str) or not model_id:
            raise ValueError("model_id must be a non-empty string")
        if kind != "lr":
            raise ValueError(f"unknown model kind {kind!r}")
        if scheme not in ("paillier", "plain") or not isinstance(insecure, bool):
            raise ValueError("bad scheme or insecure flag")
        if n_jobs is not None and (isinstance(n_jobs, bool) or not isinstance(n_jobs, int)):
            raise ValueError("n_jobs must be an int or null")
        coef = _decode_array(doc["coef"], "coef").astype(np.float64)
        if coef.ndim != 1 or coef.shape[0] != party.n_features:
            raise ValueError(
                f"coef has shape {coef.shape}, the party has {party.n_features} features"
            )
        own = _key_from_json(doc["own_key"], insecure, n_jobs)
        if own.scheme != scheme:
            raise ValueError("key and scheme disagree")
    except (KeyError, TypeError, AttributeError, ValueError) as exc:
        raise ValueError(f"{path} is corrupted or invalid: {exc}") from None
    party.store_model(
        model_id,
        {
            "kind": kind,
            "coef": coef,
            "own_key": own,
            "scheme": scheme,
            "insecure": insecure,
            "n_jobs": n_jobs,
        },
    )
    return model_id


# ------------------------------------------------------------------ preprocessing
#: Pipeline steps a guest's pipeline file may name (never imported by name).
_STEPS: dict[str, type] = {
    "FederatedSimpleImputer": FederatedSimpleImputer,
    "FederatedStandardScaler": FederatedStandardScaler,
    "PerParty": PerParty,
}
_TRANSFORMER_KEYS = frozenset(
    {
        "format",
        "version",
        "party",
        "transformer_id",
        "input_names",
        "feature_names_out",
        "transformer",
    }
)
_PARTY_KEYS = frozenset({"format", "version", "party", "estimator", "transformers", "models"})
_PIPELINE_KEYS = frozenset(
    {"format", "version", "role", "params", "unsaved_params", "steps", "estimator"}
)
#: The public fitted metadata a pipeline step keeps at the driver (after a fit on a handle).
_STEP_ATTRIBUTES = frozenset(
    {
        "transformer_id_",
        "party_names_",
        "transformed_parties_",
        "party_feature_names_out_",
        "n_features_in_",
        "feature_names_in_",
    }
)
_TRANSFORMER_ID = re.compile(r"^[A-Za-z0-9_.-]{1,64}$")
#: Rows of its own a party transforms with the saved copy before writing it, as a check.
_CHECK_ROWS = 64


def _transformer_id(value: Any, where: PathLike) -> str:
    if not isinstance(value, str) or not _TRANSFORMER_ID.match(value):
        raise ValueError(f"{where}: a transformer id is 1 to 64 letters, digits, '_', '.' or '-'")
    return value


def _str_list(value: Any, what: str) -> list[str]:
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise ValueError(f"{what} must be a list of strings")
    return list(value)


def _refuse_held(party: Party, transformer_id: str) -> None:
    if transformer_id in party.transformer_ids():
        raise ValueError(
            f"party {party.name!r} already holds transformer {transformer_id!r}; import "
            "saved transformers into a party built afresh"
        )


def _transformer_document(party: Party, transformer_id: str) -> dict:
    """``party``'s fitted transformer ``transformer_id`` as a checked JSON document."""
    fitted = party.load_transformer(transformer_id)
    if not isinstance(fitted, FittedTransform):
        raise ValueError(
            f"party {party.name!r}: transformer {transformer_id!r} was not fitted by "
            "ftl.preprocessing and cannot be saved"
        )
    where = f"party {party.name!r}: transformer {transformer_id!r}"
    try:
        encoded = encode_transformer(fitted.transformer)
    except ValueError as exc:
        raise ValueError(f"{where} cannot be saved: {exc}") from None
    doc = {
        "format": TRANSFORMER_FORMAT,
        "version": TRANSFORMER_VERSION,
        "party": party.name,
        "transformer_id": _transformer_id(transformer_id, where),
        "input_names": [str(c) for c in fitted.input_names],
        "feature_names_out": [str(c) for c in fitted.feature_names_out],
        "transformer": encoded,
    }
    # read the copy back now rather than at the next start: it must transform this
    # party's own rows exactly as the original does
    text = json.dumps(doc, allow_nan=False)
    _, copy = _transformer_from_document(party, json.loads(text), where)
    try:
        features = party.raw_features(np.arange(min(party.n_rows, _CHECK_ROWS)))
        expected = fitted(features)
    except ValueError:  # e.g. a category it never saw in fit: the probe check stands
        return doc
    if copy(features).tobytes() != expected.tobytes():
        raise ValueError(f"{where} cannot be saved: its saved copy transforms rows differently")
    return doc


def _transformer_from_document(
    party: Party, doc: Any, where: PathLike
) -> tuple[str, FittedTransform]:
    """The id and fitted transformer of a transformer document, checked against ``party``."""
    _check_format(doc, where, TRANSFORMER_FORMAT, TRANSFORMER_VERSION)
    owner = doc.get("party")
    if owner != party.name:
        raise ValueError(
            f"{where} holds a transformer of party {owner!r}; it cannot be imported into "
            f"party {party.name!r}"
        )
    if set(doc) != _TRANSFORMER_KEYS:
        raise ValueError(
            f"{where} is corrupted: expected exactly the fields {sorted(_TRANSFORMER_KEYS)}"
        )
    transformer_id = _transformer_id(doc["transformer_id"], where)
    try:
        input_names = _str_list(doc["input_names"], "input_names")
        names_out = _str_list(doc["feature_names_out"], "feature_names_out")
    except ValueError as exc:
        raise ValueError(f"{where} is corrupted: {exc}") from None
    if input_names != list(party.feature_names):
        raise ValueError(
            f"{where}: the transformer takes the features {input_names}, but party "
            f"{party.name!r} has the columns {list(party.feature_names)}; it was fitted on "
            "other data (or another step of a pipeline)"
        )
    if len(names_out) > MAX_OUTPUT_FEATURES:
        raise ValueError(f"{where}: {len(names_out)} output features, more than a party accepts")
    try:
        transformer = decode_transformer(doc["transformer"])
        fitted_in = [str(c) for c in getattr(transformer, "feature_names_in_", [])]
        out = [str(c) for c in transformer.get_feature_names_out()]
    except (ValueError, TypeError, KeyError, AttributeError, IndexError) as exc:
        raise ValueError(f"{where} is corrupted or invalid: {exc}") from None
    if fitted_in != input_names or out != names_out:
        raise ValueError(f"{where} is corrupted: the transformer's feature names do not match")
    return transformer_id, FittedTransform(transformer, input_names, names_out)


def export_transformer(party: Party, transformer_id: str, path: PathLike) -> Path:
    """Write ``party``'s fitted transformer ``transformer_id`` to a JSON file.

    Use :meth:`ftl.Party.export_transformer`. The file (format
    ``"ftl-transformer"``) holds the format and version, the party's name, the
    transformer id, the names of the features it takes and outputs, and the
    transformer itself as :func:`encode_transformer` encodes it: its class (an
    allowlisted scikit-learn transformer), parameters and fitted statistics.
    Those statistics were learned from this party's rows and are its own: the
    file is written atomically with mode ``0o600``. Before writing, the saved
    copy is read back and must transform the party's first rows bit for bit as
    the original does.

    Parameters
    ----------
    party : ftl.Party
        The party holding the transformer (for the second transformer of a
        pipeline: ``party.derive(first_id)``).
    transformer_id : str
        Its id (``step.transformer_id_`` of a fitted ftl.preprocessing step).
    path : str or path-like
        Where to write the file (replaced if it exists).

    Returns
    -------
    pathlib.Path
        The written path.

    Raises
    ------
    ValueError
        If the party holds no such transformer, or it cannot be saved
        faithfully.
    """
    return _write_private_json(_transformer_document(party, transformer_id), path)


def import_transformer(party: Party, path: PathLike) -> str:
    """Read a transformer file written by :func:`export_transformer` into ``party``.

    Use :meth:`ftl.Party.import_transformer`. Afterwards ``party.derive(id)``
    serves the party's rows through the transformer as after fitting, so a
    model shard trained on those rows can be imported into
    ``party.derive(id)`` with :meth:`ftl.Party.import_model`.

    Parameters
    ----------
    party : ftl.Party
        The party that exported it (same name, same feature columns).
    path : str or path-like
        A file written by :func:`export_transformer`.

    Returns
    -------
    str
        The transformer id.

    Raises
    ------
    ValueError
        If the file is not valid JSON, has another format or version, belongs
        to a party of another name, takes other features than the party's
        columns, names a class that is not allowlisted, is corrupted (its
        digest or saved output does not match), or the party already holds a
        transformer of that id.
    """
    doc = _read_json(path, TRANSFORMER_FORMAT, TRANSFORMER_VERSION)
    transformer_id, fitted = _transformer_from_document(party, doc, path)
    _refuse_held(party, transformer_id)
    party.store_transformer(transformer_id, fitted)
    return transformer_id


# ------------------------------------------------------------------ a party's file
def _is_passthrough(step: Any) -> bool:
    return step is None or (isinstance(step, str) and step == "passthrough")


def _pipeline_parts(model: Any) -> tuple[list[tuple[str, Any]], Any]:
    """The ``(name, step)`` pairs before the estimator, and the estimator, checked."""
    if isinstance(model, Pipeline):
        head, last = list(model.steps[:-1]), model.steps[-1][1]
    else:
        head, last = [], model
    steps = [(n, s) for n, s in head if not _is_passthrough(s)]
    for step_name, step in steps:
        if _STEPS.get(type(step).__name__) is not type(step):
            raise TypeError(
                f"cannot save pipeline step {step_name!r}, a {type(step).__name__}; supported: "
                f"{sorted(_STEPS)} (ftl.preprocessing) or 'passthrough'"
            )
    name = type(last).__name__
    if _ESTIMATORS.get(name) is not type(last):
        raise TypeError(f"cannot save a {name}; supported: {sorted(_ESTIMATORS)}")
    check_is_fitted(last)
    for _, step in steps:
        check_is_fitted(step)
    simulated = (
        getattr(last, "_sim_hosts", None) is not None
        or getattr(last, "_simulated", None) is not None
        or any(not hasattr(step, "transformer_id_") for _, step in steps)
    )
    if simulated or getattr(last, "party_names_", None) is None:
        raise ValueError(
            "this model was fitted on a plain array (a simulated federation), so it cannot "
            "be saved as one file per party; fit it on a handle from ftl.align(...) instead"
        )
    return head, last


def _model_ids(clf: Any) -> list[str]:
    if isinstance(clf, FederatedTransferClassifier):
        return [str(clf.model_id_)]
    return [str(m["model_id"]) for m in clf.models_]


def export_party(
    party: Party,
    model: FederatedLogisticRegression | FederatedTransferClassifier | Pipeline,
    path: PathLike,
) -> Path:
    """Write ``party``'s whole share of a fitted pipeline (or model) to one JSON file.

    Every party of a fitted pipeline -- the guest too -- calls this with its
    own :class:`~ftl.Party` and the fitted pipeline the driver holds (or a
    copy loaded with :func:`~ftl.load_model`: only public ids are read from
    it). The file (format ``"ftl-party"``) holds, in pipeline order, every
    transformer this party fitted for the pipeline (as
    :func:`export_transformer` writes it; a pipeline of two ftl.preprocessing
    steps gives a chain ``party.derive(t1).derive(t2)``), then this party's
    shards of the estimator (as :func:`export_shard` writes them), taken from
    the party at the end of its chain. For the guest of a logistic regression
    or the source of a transfer model there is no shard (its part of the model
    is in the driver's file from :func:`~ftl.save_model`). Nothing of any other
    party is in it. A host's shard holds its private key: the file is written
    atomically with mode ``0o600`` and must be protected like one.

    Parameters
    ----------
    party : ftl.Party
        One of the parties the model was fitted over.
    model : Pipeline, FederatedLogisticRegression or FederatedTransferClassifier
        The fitted pipeline (ftl.preprocessing steps, then the estimator) or a
        fitted estimator alone.
    path : str or path-like
        Where to write the file (replaced if it exists).

    Returns
    -------
    pathlib.Path
        The written path.

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
    for model_id in _model_ids(estimator):
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
        or doc["estimator"] not in _ESTIMATORS
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


# ------------------------------------------------------------------ the guest's pipeline
def _step_document(step_name: str, step: Any) -> dict:
    """A pipeline step's parameters and public fitted metadata (no statistic of a party)."""
    if _is_passthrough(step):
        return {"name": step_name, "class": "passthrough"}
    params = {}
    for key, value in step.get_params(deep=False).items():
        if key == "transformer":  # PerParty: an allowlisted transformer, as its JSON spec
            spec = transformer_spec(value)
            params[key] = {"class": spec["class"], "params": spec["params"]}
        elif key == "columns":
            params[key] = _json_columns(value)
        else:
            params[key] = encode_param(value, f"parameter {key!r} of step {step_name!r}")
    return {
        "name": step_name,
        "class": type(step).__name__,
        "params": params,
        "attributes": {
            "transformer_id_": str(step.transformer_id_),
            "party_names_": [str(p) for p in step.party_names_],
            "transformed_parties_": [str(p) for p in step.transformed_parties_],
            "party_feature_names_out_": {
                str(p): [str(c) for c in names]
                for p, names in step.party_feature_names_out_.items()
            },
            "n_features_in_": int(step.n_features_in_),
            "feature_names_in_": [str(f) for f in step.feature_names_in_],
        },
    }


def _check_chain(steps: list[tuple[str, Any]], final: Any, where: PathLike) -> None:
    """Each step is fitted over the estimator's parties and feeds the next one's features."""
    names = None
    for step_name, step in steps:
        if _is_passthrough(step):
            continue
        if list(step.party_names_) != list(final.party_names_):
            raise ValueError(
                f"{where}: step {step_name!r} was fitted over parties {step.party_names_}, the "
                f"estimator over {final.party_names_}"
            )
        if names is not None and [str(f) for f in step.feature_names_in_] != names:
            raise ValueError(f"{where}: step {step_name!r} takes other features than it is given")
        names = [str(f) for f in step.get_feature_names_out()]
    if names is not None and names != [str(f) for f in final.feature_names_in_]:
        raise ValueError(f"{where}: the estimator takes other features than the steps output")


def _pipeline_document(pipe: Pipeline) -> dict:
    """The guest's document of a fitted pipeline: what :func:`save_model` writes."""
    steps, estimator = _pipeline_parts(pipe)
    _check_chain(steps, estimator, "pipeline")
    transform_input = getattr(pipe, "transform_input", None)
    return {
        "format": PIPELINE_FORMAT,
        "version": PIPELINE_VERSION,
        "role": _DRIVER_ROLE[type(estimator).__name__],
        "params": {
            "verbose": bool(pipe.verbose),
            "transform_input": encode_param(transform_input, "transform_input"),
        },
        "unsaved_params": [] if pipe.memory is None else ["memory"],
        "steps": [_step_document(name, step) for name, step in steps],
        "estimator": {"name": str(pipe.steps[-1][0]), "model": _model_document(estimator)},
    }


def _step_name(value: Any, seen: set, where: PathLike) -> str:
    if not isinstance(value, str) or not value or "__" in value or value in seen:
        raise ValueError(f"{where} is corrupted: invalid or repeated step name {value!r}")
    seen.add(value)
    return value


def _step_from_document(doc: Any, where: str) -> Any:
    """A pipeline step rebuilt from its document, only from the known classes."""
    name = doc["class"]
    if name == "passthrough":
        if set(doc) != {"name", "class"}:
            raise ValueError(f"{where}: a passthrough step has only a name")
        return "passthrough"
    cls = _STEPS.get(name) if isinstance(name, str) else None
    if cls is None:
        raise ValueError(f"{where}: unknown step class {name!r}; supported: {sorted(_STEPS)}")
    if set(doc) != {"name", "class", "params", "attributes"}:
        raise ValueError(f"{where}: a step has exactly name, class, params and attributes")
    params = doc["params"]
    unknown = sorted(set(params) - set(cls._get_param_names()))
    if unknown:
        raise ValueError(f"{where}: {name} has no parameter(s) {unknown}")
    decoded = {}
    for key, value in params.items():
        if key == "transformer":  # the allowlist decides
            decoded[key] = build_transformer({**value, "columns": None})
        elif key == "columns":
            decoded[key] = None if value is None else _json_columns(value)
        else:
            decoded[key] = decode_param(value, f"{where}: parameter {key!r}")
    step = cls(**decoded)
    try:
        step._validate_params()
    except (TypeError, ValueError) as exc:
        raise ValueError(f"{where}: invalid parameters: {exc}") from None
    attrs = doc["attributes"]
    if not isinstance(attrs, dict) or set(attrs) != _STEP_ATTRIBUTES:
        raise ValueError(f"{where}: a step has exactly the attributes {sorted(_STEP_ATTRIBUTES)}")
    party_names = _str_list(attrs["party_names_"], "party_names_")
    transformed = _str_list(attrs["transformed_parties_"], "transformed_parties_")
    outs = attrs["party_feature_names_out_"]
    feature_names = _str_list(attrs["feature_names_in_"], "feature_names_in_")
    n_features = attrs["n_features_in_"]
    if (
        not party_names
        or len(set(party_names)) != len(party_names)
        or not set(transformed) <= set(party_names)
        or not isinstance(outs, dict)
        or sorted(outs) != sorted(party_names)
        or isinstance(n_features, bool)
        or not isinstance(n_features, int)
        or len(feature_names) != n_features
    ):
        raise ValueError(f"{where}: fitted attributes do not fit together")
    step.transformer_id_ = _transformer_id(attrs["transformer_id_"], where)
    step.party_names_ = party_names
    step.transformed_parties_ = [p for p in party_names if p in transformed]
    step.party_feature_names_out_ = {
        p: _str_list(outs[p], f"{p} feature names") for p in party_names
    }
    step.n_features_in_ = n_features
    step.feature_names_in_ = np.asarray(feature_names, dtype=object)
    step.transcript_ = Transcript()
    return step


def _peek_format(path: PathLike) -> Any:
    """The ``format`` field of a JSON file, or None (the full read reports errors)."""
    try:
        obj = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        return None
    return obj.get("format") if isinstance(obj, dict) else None


def _load_pipeline(path: PathLike, estimator: type | None) -> Pipeline:
    if estimator is not None and estimator is not Pipeline:
        expected = getattr(estimator, "__name__", repr(estimator))
        raise ValueError(f"{path} holds a pipeline, expected a {expected}")
    doc = _read_json(path, PIPELINE_FORMAT, PIPELINE_VERSION)
    if set(doc) != _PIPELINE_KEYS:
        raise ValueError(
            f"{path} is corrupted: expected exactly the fields {sorted(_PIPELINE_KEYS)}"
        )
    try:
        final_doc = doc["estimator"]
        where = f"{path} (estimator)"
        _check_format(final_doc["model"], where, MODEL_FORMAT, MODEL_VERSION)
        final = _model_from_document(final_doc["model"], where)
        if doc["role"] != _DRIVER_ROLE[type(final).__name__]:
            raise ValueError(f"role {doc['role']!r} for a {type(final).__name__}")
        seen: set = set()
        steps = []
        for item in doc["steps"]:
            name = _step_name(item["name"], seen, path)
            steps.append((name, _step_from_document(item, f"{path} (step {name!r})")))
        steps.append((_step_name(final_doc["name"], seen, path), final))
        _check_chain(steps[:-1], final, path)
        params = doc["params"]
        verbose = params["verbose"]
        transform_input = decode_param(params["transform_input"], "transform_input")
        if not isinstance(verbose, bool) or not (
            transform_input is None or isinstance(transform_input, list)
        ):
            raise ValueError("invalid pipeline parameters")
    except (KeyError, TypeError, AttributeError) as exc:
        raise ValueError(f"{path} is corrupted: {exc!r}") from None
    except ValueError as exc:
        message = str(exc)
        raise ValueError(message if str(path) in message else f"{path}: {message}") from None
    return Pipeline(steps, verbose=verbose, transform_input=transform_input)
