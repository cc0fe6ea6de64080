"""Transfer learning's model-file fields: the source's fitted attributes and the
target's shard (kind ``"ftl.target"``), as JSON.

The source's attributes never hold the target's weights; the target's shard
holds its network (hidden layers and output layer) and no key -- prediction
uses a fresh key of the source per request. :mod:`ftl.persistence` adds the
files' envelopes.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from ftl.federation.json_forms import (
    decode_array,
    encode_array,
    history_from_json,
    history_to_json,
    names_from_json,
    names_to_json,
)
from ftl.federation.transcript import Transcript
from ftl.transfer._network import ACTIVATIONS

#: The ``"kind"`` of the shard a target keeps (``TransferTarget.finish``).
TARGET_SHARD_KIND = "ftl.target"

#: What a transfer target keeps in its shard besides the kind.
_TARGET_SHARD_FIELDS = frozenset({"hidden", "output", "has_hidden"})


def _network_to_json(hidden: dict) -> dict:
    """A :meth:`HiddenStack.to_dict` (activation, weight matrices) as JSON."""
    return {
        "activation": str(hidden["activation"]),
        "weights": [encode_array(np.asarray(w, dtype=np.float64)) for w in hidden["weights"]],
    }


def _network_from_json(obj: Any, n_inputs: int | None, what: str) -> list[np.ndarray]:
    """The hidden weight matrices, checked to chain (``n_inputs``: the first layer's)."""
    if not isinstance(obj, dict) or obj.get("activation") not in ACTIVATIONS:
        raise ValueError(f"{what}: unknown activation")
    layers = obj["weights"]
    if not isinstance(layers, list):
        raise ValueError(f"{what}: weights must be a list")
    weights = [decode_array(w, f"{what}[{k}]").astype(np.float64) for k, w in enumerate(layers)]
    width = n_inputs
    for k, w in enumerate(weights):
        if w.ndim != 2 or (width is not None and w.shape[1] != width + 1):
            raise ValueError(f"{what}: layer {k} has shape {w.shape}, inputs {width}")
        width = w.shape[0]
    return weights


def _hidden_dict(obj: dict, weights: list[np.ndarray]) -> dict:
    """The hidden layers as :meth:`HiddenStack.to_dict` returns them."""
    return {"activation": str(obj["activation"]), "weights": [w.tolist() for w in weights]}


def attributes_to_json(clf: Any) -> dict:
    """The source's fitted attributes of a :class:`~ftl.FederatedTransferClassifier`."""
    return {
        "classes_": encode_array(clf.classes_),
        "prototypes_": encode_array(np.asarray(clf.prototypes_, dtype=np.float64)),
        "source_model": {
            "hidden": _network_to_json(clf._source_model["hidden"]),
            "output": encode_array(np.asarray(clf._source_model["output"], dtype=np.float64)),
        },
        "model_id_": str(clf.model_id_),
        **names_to_json(clf),
        "n_iter_": int(clf.n_iter_),
        "history_": history_to_json(getattr(clf, "history_", [])),
    }


def attributes_from_json(clf: Any, attrs: dict, path: Any) -> None:
    """Set the fitted attributes :func:`attributes_to_json` wrote, checked to fit
    together and the parameters (``path`` names the file in errors)."""
    if "coef_" in attrs or "models_" in attrs:
        raise ValueError(f"{path} is corrupted: logistic-regression attributes in a transfer file")
    names = names_from_json(attrs, path, n_parties=2)
    classes = decode_array(attrs["classes_"], "classes_")
    prototypes = decode_array(attrs["prototypes_"], "prototypes_").astype(np.float64)
    source = attrs["source_model"]
    hidden = _network_from_json(source["hidden"], None, f"{path}: source hidden layers")
    output = decode_array(source["output"], "source output layer").astype(np.float64)
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
        or not 1 <= n_source < names["n_features_in_"]
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
        history = history_from_json(attrs.get("history_", []))
    except ValueError as exc:
        raise ValueError(f"{path} is corrupted: {exc}") from None
    fitted = {
        "classes_": classes,
        "prototypes_": prototypes,
        "_source_model": {"hidden": _hidden_dict(source["hidden"], hidden), "output": output},
        "model_id_": model_id,
        **names,
        "n_iter_": n_iter,
        "history_": history,
        "transcript_": Transcript(),
        "_simulated": None,
    }
    for name, value in fitted.items():
        setattr(clf, name, value)


def shard_ids(clf: Any) -> list[str]:
    """The id of the target's shard."""
    return [str(clf.model_id_)]


def target_shard_to_json(shard: dict) -> dict:
    """The target's shard (as :meth:`TransferTarget.finish` stores it): its network."""
    extra = sorted(set(shard) - _TARGET_SHARD_FIELDS - {"kind"})
    if extra:  # never drop something prediction may need
        raise ValueError(f"cannot save transfer shard field(s) {extra}")
    return {
        "hidden": _network_to_json(shard["hidden"]),
        "output": encode_array(np.asarray(shard["output"], dtype=np.float64)),
        "has_hidden": bool(shard["has_hidden"]),
    }


def target_shard_from_json(fields: dict, party: Any) -> dict:
    """The inverse of :func:`target_shard_to_json`, checked against ``party``'s features."""
    if set(fields) != _TARGET_SHARD_FIELDS:
        raise ValueError("a transfer target's shard must hold exactly hidden, output, has_hidden")
    hidden = _network_from_json(fields["hidden"], party.n_features, "hidden layers")
    output = decode_array(fields["output"], "output").astype(np.float64)
    n_inputs = (hidden[-1].shape[0] if hidden else party.n_features) + 1
    if output.ndim != 2 or output.shape[1] != n_inputs or output.shape[0] < 1:
        raise ValueError(
            f"output layer has shape {output.shape}, expected (n_components, {n_inputs}) for "
            f"a party with {party.n_features} features"
        )
    if fields["has_hidden"] is not bool(hidden):
        raise ValueError("has_hidden does not match the hidden layers")
    return {
        "kind": TARGET_SHARD_KIND,
        "hidden": _hidden_dict(fields["hidden"], hidden),
        "output": output.tolist(),
        "has_hidden": bool(hidden),
    }
