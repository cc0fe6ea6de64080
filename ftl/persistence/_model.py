"""The driver's document of a fitted estimator (format ``"ftl-model"``).

Written and read here for a :class:`~ftl.FederatedLogisticRegression` (the
guest's file); a transfer classifier's is delegated to ``_transfer``.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from sklearn.utils.validation import check_is_fitted

from ftl.federation.transcript import Transcript
from ftl.linear_model import FederatedLogisticRegression
from ftl.persistence._formats import _DRIVER_ROLE, _ESTIMATORS, MODEL_FORMAT, MODEL_VERSION
from ftl.persistence._json import (
    PathLike,
    _decode_array,
    _encode_array,
    _field,
    _float_from_json,
    _float_to_json,
    _params_to_json,
)
from ftl.persistence._transfer import _set_transfer_attributes, _transfer_document
from ftl.transfer import FederatedTransferClassifier


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
