"""The source's document of a fitted :class:`~ftl.FederatedTransferClassifier`.

Its parameters and fitted attributes (never the target's weights), and the
network layers and training history as JSON, which the target's shard uses too.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from ftl.federation.transcript import Transcript
from ftl.persistence._formats import _DRIVER_ROLE, MODEL_FORMAT, MODEL_VERSION
from ftl.persistence._json import (
    PathLike,
    _decode_array,
    _encode_array,
    _float_from_json,
    _float_to_json,
    _params_to_json,
)
from ftl.transfer import FederatedTransferClassifier
from ftl.transfer._network import ACTIVATIONS


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
