"""A party's shard of a fitted model (format ``"ftl-model-shard"``).

What :meth:`ftl.Party.export_model` and :meth:`ftl.Party.import_model` write and
read: the envelope -- format, version, the party's role and name, the model id
and the shard's kind -- is written and checked here; the shard's fields by the
codec its protocol declares for that kind
(:class:`~ftl.federation.protocols.ShardCodec`).
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from ftl._docstrings import WRITTEN_FILE, fill_doc
from ftl.federation.protocols import RegistryError, ShardCodec, load_protocols, shard_codec
from ftl.persistence._formats import SHARD_FORMAT, SHARD_VERSION
from ftl.persistence._json import PathLike, _field, _read_json, _write_private_json

if TYPE_CHECKING:
    from ftl.data.party import Party

#: The fields of every shard file that are not the codec's.
_ENVELOPE = ("format", "version", "role", "party", "model_id", "kind")


def _codec_of(kind: Any) -> ShardCodec | None:
    """The registered codec of shard kind ``kind``, or None."""
    load_protocols()
    try:
        return shard_codec(kind) if isinstance(kind, str) else None
    except RegistryError:
        return None


@fill_doc(written_file=WRITTEN_FILE)
def export_shard(party: Party, model_id: str, path: PathLike) -> Path:
    """Write ``party``'s own shard of model ``model_id`` to a JSON file.

    Use :meth:`ftl.Party.export_model`. The file holds the format and version,
    the party's role and name, the model id, the shard's kind and the fields
    its protocol's codec writes -- nothing of any other party. For a host of a
    logistic regression they are the party's weight block, the encryption
    scheme and the party's own Paillier key pair (public ``n`` and ``hs``,
    private ``p`` and ``q``: protect the file like a private key); for the
    target of a transfer model its network (hidden layers and output layer)
    and no key. The file is written atomically with mode ``0o600``.

    Parameters
    ----------
    party : ftl.Party
        The party holding the shard (a host of a fitted model).
    model_id : str
        Id of the model (as the driver's estimator names it, e.g.
        ``clf.models_[k]["model_id"]``).
    %(written_file)s

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
    codec = _codec_of(kind)
    if codec is None:
        raise ValueError(f"party {party.name!r}: cannot save a model shard of kind {kind!r}")
    try:
        fields = codec.to_json(shard)
    except ValueError as exc:
        raise ValueError(f"party {party.name!r}: {exc} (model {model_id!r})") from None
    clash = sorted(set(fields) & set(_ENVELOPE))
    if clash:
        raise ValueError(f"the codec of shard kind {kind!r} writes envelope field(s) {clash}")
    return {
        "format": SHARD_FORMAT,
        "version": SHARD_VERSION,
        "role": codec.role,
        "party": party.name,
        "model_id": str(model_id),
        "kind": kind,
        **fields,
    }


def import_shard(party: Party, path: PathLike) -> str:
    """Read a shard file written by :func:`export_shard` into ``party``.

    Use :meth:`ftl.Party.import_model`. Afterwards the party serves
    predictions for that model exactly as after training.

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
        party, is of an unknown kind, does not fit the party's features, or
        its key pair is inconsistent.
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
        codec = _codec_of(kind)
        if codec is None:
            raise ValueError(f"unknown model kind {kind!r}")
        if doc.get("role") != codec.role:
            raise ValueError(f"role {doc.get('role')!r} in a shard of kind {kind!r}")
        if not isinstance(model_id, str) or not model_id:
            raise ValueError("model_id must be a non-empty string")
        fields = {k: v for k, v in doc.items() if k not in _ENVELOPE}
        shard = codec.from_json(fields, party)
    except (KeyError, TypeError, AttributeError, ValueError) as exc:
        raise ValueError(f"{path} is corrupted or invalid: {exc}") from None
    party.store_model(model_id, shard)
    return model_id
