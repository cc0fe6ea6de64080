"""A party's shard of a fitted model (format ``"ftl-model-shard"``).

A logistic-regression host's weight block and key pair, or a transfer target's
network: what :meth:`ftl.Party.export_model` and :meth:`ftl.Party.import_model`
write and read.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from ftl.persistence._formats import SHARD_FORMAT, SHARD_VERSION
from ftl.persistence._json import (
    PathLike,
    _decode_array,
    _encode_array,
    _field,
    _read_json,
    _write_private_json,
)
from ftl.persistence._keys import _key_from_json, _key_to_json
from ftl.persistence._transfer import _network_from_json, _network_to_json

if TYPE_CHECKING:
    from ftl.data.party import Party


#: Shard kinds a party can export and import: the shard's role in the file.
_SHARD_ROLE = {"lr": "host", "ftl.target": "target"}


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
