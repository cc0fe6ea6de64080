"""Gradient boosting's model-file fields: the guest's fitted attributes and a host's
shard (kind ``"sbt.host"``), as JSON.

The guest's attributes hold its trees, whose host nodes carry the hosts' opaque
split ids only; a host's shard holds its split table (ids, trees, depths, features
and real thresholds: its own, private to it) and no key. :mod:`ftl.persistence`
adds the files' envelopes.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from sklearn.base import is_classifier

from ftl.ensemble._decisions import SplitTable
from ftl.ensemble._tree import Tree
from ftl.ensemble.host import SHARD_KIND
from ftl.federation.json_forms import (
    decode_array,
    encode_array,
    float_from_json,
    float_to_json,
    names_from_json,
    names_to_json,
)
from ftl.federation.transcript import Transcript

__all__ = [
    "attributes_from_json",
    "attributes_to_json",
    "host_shard_from_json",
    "host_shard_to_json",
    "shard_ids",
]

_TREE_FIELDS = tuple(Tree.__dataclass_fields__)
_INT_FIELDS = ("count", "block", "feature", "bin_threshold", "left", "right", "depth")


def _tree_to_json(tree: Tree) -> dict:
    return {name: encode_array(getattr(tree, name)) for name in _TREE_FIELDS}


def _tree_from_json(fields: Any, n_parties: int, path: Any) -> Tree:
    """A tree, checked to be one (children in range, leaves where they should be)."""
    if not isinstance(fields, dict) or set(fields) != set(_TREE_FIELDS):
        raise ValueError(f"{path} is corrupted: a tree has the fields {list(_TREE_FIELDS)}")
    arrays = {name: decode_array(fields[name], name) for name in _TREE_FIELDS}
    for name in _INT_FIELDS:
        arrays[name] = arrays[name].astype(np.int64)
    for name in ("value", "num_threshold", "gain"):
        arrays[name] = arrays[name].astype(np.float64)
    arrays["is_leaf"] = arrays["is_leaf"].astype(bool)
    arrays["split_id"] = arrays["split_id"].astype(object)
    n = arrays["value"].shape[0]
    if n == 0 or any(a.shape != (n,) for a in arrays.values()):
        raise ValueError(f"{path} is corrupted: a tree's arrays differ in length")
    leaf, internal = arrays["is_leaf"], ~arrays["is_leaf"]
    children = np.concatenate([arrays["left"][internal], arrays["right"][internal]])
    if (
        (children <= 0).any()
        or (children >= n).any()
        or np.unique(children).shape[0] != children.shape[0]
        or children.shape[0] != n - 1
        or (arrays["block"][internal] < 0).any()
        or (arrays["block"] >= n_parties).any()
        or (arrays["feature"][internal] < 0).any()
        or (arrays["left"][leaf] != -1).any()
        or not all(isinstance(s, str) for s in arrays["split_id"])
        or any(not s for s in arrays["split_id"][internal & (arrays["block"] > 0)])
    ):
        raise ValueError(f"{path} is corrupted: the node arrays do not form a tree")
    return Tree(**arrays)


def attributes_to_json(est: Any) -> dict:
    """The guest's fitted attributes of a federated gradient boosting estimator."""
    attrs = {
        **names_to_json(est),
        "n_trees_per_iteration_": int(est.n_trees_per_iteration_),
        "n_iter_": int(est.n_iter_),
        "do_early_stopping_": bool(est.do_early_stopping_),
        "train_score_": encode_array(np.asarray(est.train_score_, dtype=np.float64)),
        "validation_score_": encode_array(np.asarray(est.validation_score_, dtype=np.float64)),
        "baseline_": [float_to_json(v) for v in est.baseline_],
        "model_id_": str(est.model_id_),
        "trees_": [[_tree_to_json(t) for t in per_iteration] for per_iteration in est.trees_],
        "split_counts_": encode_array(np.asarray(est.split_counts_, dtype=np.int64)),
        "split_gains_": encode_array(np.asarray(est.split_gains_, dtype=np.float64)),
        "party_split_counts_": {str(k): int(v) for k, v in est.party_split_counts_.items()},
    }
    if hasattr(est, "classes_"):
        attrs["classes_"] = encode_array(est.classes_)
    return attrs


def attributes_from_json(est: Any, attrs: dict, path: Any) -> None:
    """Set the fitted attributes :func:`attributes_to_json` wrote, checked to fit
    together (``path`` names the file in errors)."""
    names = names_from_json(attrs, path)
    n_parties = len(names["party_names_"])
    fitted = {
        **names,
        "n_trees_per_iteration_": attrs["n_trees_per_iteration_"],
        "n_iter_": attrs["n_iter_"],
        "do_early_stopping_": attrs["do_early_stopping_"],
        "train_score_": decode_array(attrs["train_score_"], "train_score_").astype(np.float64),
        "validation_score_": decode_array(attrs["validation_score_"], "validation_score_").astype(
            np.float64
        ),
        "baseline_": np.array([float_from_json(v) for v in attrs["baseline_"]], dtype=np.float64),
        "model_id_": attrs["model_id_"],
        "trees_": [
            [_tree_from_json(t, n_parties, path) for t in per_iteration]
            for per_iteration in attrs["trees_"]
        ],
        "split_counts_": decode_array(attrs["split_counts_"], "split_counts_").astype(np.int64),
        "split_gains_": decode_array(attrs["split_gains_"], "split_gains_").astype(np.float64),
        "party_split_counts_": {str(p): int(n) for p, n in attrs["party_split_counts_"].items()},
        "transcript_": Transcript(),
        "_sim_hosts": None,
    }
    if "classes_" in attrs:
        fitted["classes_"] = decode_array(attrs["classes_"], "classes_")
    _check_fits(est, fitted, path)
    for name, value in fitted.items():
        setattr(est, name, value)


def _check_fits(est: Any, fitted: dict, path: Any) -> None:
    """Refuse attributes that do not belong together or to this estimator."""
    k, n_iter = fitted["n_trees_per_iteration_"], fitted["n_iter_"]
    classes = fitted.get("classes_")
    if (
        any(isinstance(v, bool) or not isinstance(v, int) for v in (k, n_iter))
        or not isinstance(fitted["do_early_stopping_"], bool)
        or not isinstance(fitted["model_id_"], str)
        or k < 1
        or len(fitted["trees_"]) != n_iter
        or any(len(per_iteration) != k for per_iteration in fitted["trees_"])
        or fitted["baseline_"].shape != (k,)
        or is_classifier(est) != (classes is not None)
        or (classes is not None and k != (1 if len(classes) <= 2 else len(classes)))
        or sorted(fitted["party_split_counts_"]) != sorted(fitted["party_names_"])
    ):
        raise ValueError(f"{path} is corrupted: the trees, classes and names do not fit together")


def shard_ids(est: Any) -> list[str]:
    """The id under which every host keeps its split table."""
    return [str(est.model_id_)]


def host_shard_to_json(shard: dict) -> dict:
    """A host's shard (as :meth:`BoostingHost.finish` stores it): its split table --
    private to the host: its features and real thresholds."""
    splits: SplitTable = shard["splits"]
    return {
        "n_features": int(shard["n_features"]),
        "ids": list(splits.ids),
        "tree": encode_array(splits.tree),
        "depth": encode_array(splits.depth),
        "feature": encode_array(splits.feature),
        "threshold": encode_array(splits.threshold),
    }


def host_shard_from_json(fields: dict, party: Any) -> dict:
    """The inverse of :func:`host_shard_to_json`, checked against ``party``'s columns."""
    n_features = fields["n_features"]
    if isinstance(n_features, bool) or n_features != party.n_features:
        raise ValueError(f"the shard is of {n_features} columns, the party has {party.n_features}")
    ids = fields["ids"]
    if not isinstance(ids, list) or not all(isinstance(s, str) and s for s in ids):
        raise ValueError("split ids must be non-empty strings")
    table = SplitTable(
        ids=list(ids),
        tree=decode_array(fields["tree"], "tree").astype(np.int64),
        depth=decode_array(fields["depth"], "depth").astype(np.int64),
        feature=decode_array(fields["feature"], "feature").astype(np.int64),
        threshold=decode_array(fields["threshold"], "threshold").astype(np.float64),
    )
    if table.feature.size and (table.feature.min() < 0 or table.feature.max() >= n_features):
        raise ValueError("a split names a column the party does not have")
    return {"kind": SHARD_KIND, "splits": table, "n_features": n_features}
