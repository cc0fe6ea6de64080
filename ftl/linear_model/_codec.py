"""Logistic regression's model-file fields: the guest's fitted attributes and a
host's shard (kind ``"lr"``), as JSON.

The guest's attributes never hold a host's weights or any private key: only
the hosts' *public* keys, per binary model. A host's shard holds its weight
block and its own Paillier key pair (which it needs to serve predictions).
:mod:`ftl.persistence` adds the files' envelopes.

The guest's file also keeps ``label_privacy_`` (whether the guest trained on
noisy labels, and with which epsilon, range and noise), which the privacy report
shows. Files written before it was saved load with what the parameters determine
of it (``None`` for the rest).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from ftl.federation.json_forms import (
    decode_array,
    encode_array,
    float_from_json,
    float_to_json,
    history_from_json,
    history_to_json,
    key_from_json,
    key_to_json,
    names_from_json,
    names_to_json,
)
from ftl.federation.transcript import Transcript
from ftl.linear_model._label_privacy import response_probabilities

#: The ``"kind"`` of the shard a host keeps (``LogisticHost.finish``).
HOST_SHARD_KIND = "lr"

#: The public fields of a host's key that the guest keeps with each binary model.
_PUBLIC_KEY_FIELDS = ("scheme", "n", "hs", "key_id")


def attributes_to_json(clf: Any) -> dict:
    """The guest's fitted attributes of a :class:`~ftl.FederatedLogisticRegression`."""
    return {
        "classes_": encode_array(clf.classes_),
        "coef_": encode_array(np.asarray(clf.coef_, dtype=np.float64)),
        "intercept_": encode_array(np.asarray(clf.intercept_, dtype=np.float64)),
        **names_to_json(clf),
        "n_iter_": [int(i) for i in clf.n_iter_],
        "history_": [history_to_json(run) for run in getattr(clf, "history_", [])],
        "models_": _models_to_json(clf.models_),
        "label_privacy_": _label_privacy_to_json(clf.label_privacy_),
    }


def _models_to_json(models: list) -> list:
    """Each model's id and its hosts' *public* keys (big ints as decimal strings)."""
    out = []
    for model in models:
        keys = {
            str(host): {
                k: (str(int(v)) if k in ("n", "hs") else str(v))
                for k, v in pub.items()
                if k in _PUBLIC_KEY_FIELDS
            }
            for host, pub in model["host_public_keys"].items()
        }
        out.append({"model_id": str(model["model_id"]), "host_public_keys": keys})
    return out


def _models_from_json(models: list, hosts: list, path: Any) -> list:
    """The inverse of :func:`_models_to_json`, checked against the host names."""
    clean = []
    for model in models:
        keys = model["host_public_keys"]
        if not isinstance(keys, dict) or sorted(keys) != sorted(hosts):
            raise ValueError(f"{path} is corrupted: host public keys do not match the parties")
        clean.append(
            {
                "model_id": str(model["model_id"]),
                "host_public_keys": {
                    str(h): {str(k): str(v) for k, v in pub.items()} for h, pub in keys.items()
                },
            }
        )
    return clean


def regressor_attributes_to_json(reg: Any) -> dict:
    """The guest's fitted attributes of a federated regressor (one model)."""
    return {
        "coef_": encode_array(np.asarray(reg.coef_, dtype=np.float64)),
        "intercept_": float(reg.intercept_),
        **names_to_json(reg),
        "n_iter_": int(reg.n_iter_),
        "history_": history_to_json(getattr(reg, "history_", [])),
        "models_": _models_to_json(reg.models_),
        "label_privacy_": _label_privacy_to_json(reg.label_privacy_),
    }


def regressor_attributes_from_json(reg: Any, attrs: dict, path: Any) -> None:
    """Set the attributes :func:`regressor_attributes_to_json` wrote, checked."""
    coef = decode_array(attrs["coef_"], "coef_").astype(np.float64)
    intercept = attrs["intercept_"]
    models = attrs["models_"]
    if (
        coef.ndim != 1
        or isinstance(intercept, bool)
        or not isinstance(intercept, (int, float))
        or not isinstance(models, list)
        or len(models) != 1
        or "classes_" in attrs
    ):
        raise ValueError(f"{path} is corrupted: not the attributes of a federated regressor")
    names = names_from_json(attrs, path)
    if coef.shape[0] >= names["n_features_in_"]:
        raise ValueError(f"{path} is corrupted: feature or party names do not fit the model")
    fitted = {
        "coef_": coef,
        "intercept_": float(intercept),
        **names,
        "n_iter_": int(attrs["n_iter_"]),
        "history_": history_from_json(attrs.get("history_", [])),
        "models_": _models_from_json(models, names["party_names_"][1:], path),
        "label_privacy_": _label_privacy_from_json(
            attrs, _LAPLACE_FIELDS, _laplace_from_params(reg), path
        ),
        "transcript_": Transcript(),
        "_sim_hosts": None,
    }
    for name, value in fitted.items():
        setattr(reg, name, value)


def attributes_from_json(clf: Any, attrs: dict, path: Any) -> None:
    """Set the fitted attributes :func:`attributes_to_json` wrote, checked to fit
    together (``path`` names the file in errors)."""
    classes = decode_array(attrs["classes_"], "classes_")
    coef = decode_array(attrs["coef_"], "coef_").astype(np.float64)
    intercept = decode_array(attrs["intercept_"], "intercept_").astype(np.float64)
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
    names = names_from_json(attrs, path)
    if coef.shape[1] >= names["n_features_in_"]:
        raise ValueError(f"{path} is corrupted: feature or party names do not fit the model")
    clean_models = _models_from_json(models, names["party_names_"][1:], path)
    n_iter = np.asarray([int(i) for i in attrs["n_iter_"]], dtype=np.int64)
    history = [history_from_json(run) for run in attrs.get("history_", [])]
    fitted = {
        "classes_": classes,
        "coef_": coef,
        "intercept_": intercept,
        **names,
        "n_iter_": n_iter,
        "history_": history,
        "models_": clean_models,
        "label_privacy_": _label_privacy_from_json(
            attrs, _RESPONSE_FIELDS, _response_from_params(clf, len(classes)), path
        ),
        "transcript_": Transcript(),
        "_sim_hosts": None,
    }
    for name, value in fitted.items():
        setattr(clf, name, value)


# ---------------------------------------------------------------- label privacy
#: The fields of ``label_privacy_``: randomized response (logistic regression) and
#: Laplace noise (the regressors).
_RESPONSE_FIELDS = ("epsilon", "keep_probability", "changed")
_LAPLACE_FIELDS = ("epsilon", "range", "scale")


def _label_privacy_to_json(fitted: dict | None) -> dict | None:
    """``label_privacy_`` as strict JSON: numbers, a ``range`` as a list of two."""
    if fitted is None:
        return None
    return {
        str(name): (
            None
            if value is None
            else [float_to_json(v) for v in value]
            if name == "range"
            else float_to_json(value)
        )
        for name, value in fitted.items()
    }


def _response_from_params(clf: Any, n_classes: int) -> dict | None:
    """``label_privacy_`` of a logistic regression as its parameters determine it
    (randomized response; the fraction of labels it changed is not known)."""
    if clf.label_privacy is None:
        return None
    epsilon = float(clf.label_privacy)
    keep = response_probabilities(epsilon, n_classes)[0]
    return {"epsilon": epsilon, "keep_probability": float(keep), "changed": None}


def _laplace_from_params(reg: Any) -> dict | None:
    """``label_privacy_`` of a regressor as its parameters determine it (the range
    and the noise's scale only when ``label_range`` was given, not taken from the
    targets)."""
    if reg.label_privacy is None:
        return None
    epsilon = float(reg.label_privacy)
    if reg.label_range is None:
        return {"epsilon": epsilon, "range": None, "scale": None}
    low, high = (float(b) for b in reg.label_range)
    return {"epsilon": epsilon, "range": (low, high), "scale": (high - low) / epsilon}


def _label_privacy_from_json(
    attrs: dict, fields: tuple[str, ...], from_params: dict | None, path: Any
) -> dict | None:
    """The ``label_privacy_`` :func:`_label_privacy_to_json` wrote, checked to have
    ``fields``; a file written before it was saved gets ``from_params``, what the
    estimator's parameters determine of it."""
    if "label_privacy_" not in attrs:
        return from_params
    saved = attrs["label_privacy_"]
    if saved is None:
        return None
    if not isinstance(saved, dict) or sorted(saved) != sorted(fields):
        raise ValueError(f"{path} is corrupted: label_privacy_ must have the fields {fields}")
    fitted: dict = dict.fromkeys(fields)
    try:
        for name, value in saved.items():
            if value is None:
                continue
            if name != "range":
                fitted[name] = float_from_json(value)
            elif isinstance(value, list) and len(value) == 2:
                fitted[name] = (float_from_json(value[0]), float_from_json(value[1]))
            else:
                raise ValueError("range must be two numbers")
        if fitted["epsilon"] is None or not fitted["epsilon"] > 0:
            raise ValueError("epsilon must be positive")
    except ValueError as exc:
        raise ValueError(f"{path} is corrupted: label_privacy_ {exc}") from None
    return fitted


# ---------------------------------------------------------------- the host's shard
def shard_ids(clf: Any) -> list[str]:
    """The ids of the hosts' shards: one per binary model."""
    return [str(m["model_id"]) for m in clf.models_]


def host_shard_to_json(shard: dict) -> dict:
    """A host's shard (as :meth:`LogisticHost.finish` stores it): weight block,
    scheme and own key pair -- private: protect the file like a private key."""
    n_jobs = shard.get("n_jobs")
    fields = {
        "scheme": str(shard["scheme"]),
        "insecure": bool(shard.get("insecure", False)),
        "n_jobs": None if n_jobs is None else int(n_jobs),
        "coef": encode_array(np.asarray(shard["coef"], dtype=np.float64)),
        "own_key": key_to_json(shard["own_key"]),
    }
    if fields["own_key"]["scheme"] != fields["scheme"]:
        raise ValueError("shard key and scheme disagree")
    return fields


def host_shard_from_json(fields: dict, party: Any) -> dict:
    """The inverse of :func:`host_shard_to_json`, checked against ``party``'s features."""
    scheme = fields["scheme"]
    insecure = fields["insecure"]
    n_jobs = fields["n_jobs"]
    if scheme not in ("paillier", "plain") or not isinstance(insecure, bool):
        raise ValueError("bad scheme or insecure flag")
    if n_jobs is not None and (isinstance(n_jobs, bool) or not isinstance(n_jobs, int)):
        raise ValueError("n_jobs must be an int or null")
    coef = decode_array(fields["coef"], "coef").astype(np.float64)
    if coef.ndim != 1 or coef.shape[0] != party.n_features:
        raise ValueError(f"coef has shape {coef.shape}, the party has {party.n_features} features")
    own = key_from_json(fields["own_key"], insecure, n_jobs)
    if own.scheme != scheme:
        raise ValueError("key and scheme disagree")
    return {
        "kind": HOST_SHARD_KIND,
        "coef": coef,
        "own_key": own,
        "scheme": scheme,
        "insecure": insecure,
        "n_jobs": n_jobs,
    }
