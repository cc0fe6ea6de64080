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

Both files are plain, strict JSON (RFC 8259: no ``NaN`` literals; non-finite
floats are written as the strings ``"nan"``, ``"inf"``, ``"-inf"``) with a
``format`` name and a ``version``. Readers refuse any other format or version
with a :class:`ValueError` naming what was found and what was expected, and
refuse unreadable or inconsistent files with a :class:`ValueError` too. Floats
are written with Python's shortest round-trip representation, so reloaded
weights are bit-identical and so are predictions.

Nothing is ever unpickled and no class is looked up by a name read from a file:
the estimator class must be one of the known classes.

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
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import phe
from gmpy2 import gcd, is_prime
from sklearn.utils.validation import check_is_fitted

from ftl.crypto.keys import MIN_SECURE_KEY_SIZE, key_id
from ftl.crypto.scheme import OwnKey, PaillierOwnKey, PlainOwnKey
from ftl.federation.transcript import Transcript
from ftl.linear_model import FederatedLogisticRegression
from ftl.transfer import FederatedTransferClassifier
from ftl.transfer._network import ACTIVATIONS

if TYPE_CHECKING:
    from ftl.data.party import Party

__all__ = [
    "MODEL_FORMAT",
    "MODEL_VERSION",
    "SHARD_FORMAT",
    "SHARD_VERSION",
    "export_shard",
    "import_shard",
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
    path = Path(path)
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
    found_fmt = obj.get("format")
    if found_fmt != fmt:
        hint = ""
        if found_fmt == SHARD_FORMAT:
            hint = " (a host's shard: import it with Party.import_model)"
        elif found_fmt == MODEL_FORMAT:
            hint = " (a guest's model: load it with ftl.load_model)"
        raise ValueError(f"{path} has format {found_fmt!r}, expected {fmt!r}{hint}")
    found = obj.get("version")
    if found != version:
        raise ValueError(
            f"{path} is {fmt} version {found!r}, but this version of ftl reads only "
            f"version {version}; save the model again with a matching ftl"
        )
    return obj


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
    clf: FederatedLogisticRegression | FederatedTransferClassifier, path: PathLike
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

    The file is written atomically with mode ``0o600``.

    Parameters
    ----------
    clf : FederatedLogisticRegression or FederatedTransferClassifier
        A model fitted on a handle from :func:`ftl.align`.
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
        If ``clf`` is not an estimator this module knows how to save.

    Notes
    -----
    Parameters that are not JSON values (e.g. a ``numpy.random.RandomState``
    passed as ``random_state``) are not saved; they are listed under
    ``"unsaved_params"`` and take their default on load. They matter only for
    refitting, never for prediction.
    """
    name = type(clf).__name__
    if _ESTIMATORS.get(name) is not type(clf):
        raise TypeError(f"cannot save a {name}; supported: {sorted(_ESTIMATORS)}")
    check_is_fitted(clf)
    if isinstance(clf, FederatedTransferClassifier):
        return _save_transfer(clf, path)
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
            {"epoch": int(h["epoch"]), "relative_change": _float_to_json(h["relative_change"])}
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
    return _write_private_json(doc, path)


def _save_transfer(clf: FederatedTransferClassifier, path: PathLike) -> Path:
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
    return _write_private_json(doc, path)


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
) -> FederatedLogisticRegression | FederatedTransferClassifier:
    """Load a driver's model file written by :func:`save_model`.

    The returned estimator predicts on a handle from :func:`ftl.align` over
    parties with the same names (or, for a transfer model, on
    ``target.select(ids)``), once every other party has imported its shard
    with :meth:`ftl.Party.import_model`; predictions equal the saved model's.

    Parameters
    ----------
    path : str or path-like
        A file written by :func:`save_model`.
    estimator : class, optional
        The estimator class the file must hold
        (:class:`~ftl.FederatedLogisticRegression` or
        :class:`~ftl.FederatedTransferClassifier`); by default, whichever it
        holds.

    Returns
    -------
    FederatedLogisticRegression or FederatedTransferClassifier
        A fitted estimator with an empty ``transcript_``.

    Raises
    ------
    ValueError
        If the file is not valid JSON, has another format or version (the
        message names the found and the expected version), holds another
        estimator than ``estimator``, or is inconsistent.
    """
    doc = _read_json(path, MODEL_FORMAT, MODEL_VERSION)
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
            {"epoch": int(h["epoch"]), "relative_change": _float_from_json(h["relative_change"])}
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
    shard = party.load_model(model_id)
    kind = shard.get("kind")
    if kind == "ftl.target":
        return _export_transfer_shard(party, model_id, shard, path)
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
    return _write_private_json(doc, path)


#: What a transfer target keeps in its shard (ftl/transfer/target.py, ``finish``).
_TRANSFER_SHARD_KEYS = frozenset({"kind", "hidden", "output", "has_hidden"})


def _export_transfer_shard(party: Party, model_id: str, shard: dict, path: PathLike) -> Path:
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
    return _write_private_json(doc, path)


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
    doc = _read_json(path, SHARD_FORMAT, SHARD_VERSION)
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
