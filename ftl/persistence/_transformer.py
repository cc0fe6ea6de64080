"""One fitted transformer of one party (format ``"ftl-transformer"``).

What :meth:`ftl.Party.export_transformer` and :meth:`ftl.Party.import_transformer`
write and read; the transformer itself is encoded by
:func:`ftl.preprocessing._codec.encode_transformer`.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from ftl._docstrings import WRITTEN_FILE, fill_doc
from ftl.persistence._formats import TRANSFORMER_FORMAT, TRANSFORMER_VERSION
from ftl.persistence._json import (
    PathLike,
    _check_format,
    _read_json,
    _str_list,
    _write_private_json,
)
from ftl.preprocessing._codec import decode_transformer, encode_transformer
from ftl.preprocessing._names import legacy_placeholder_names, placeholders, positional_names
from ftl.preprocessing.party import MAX_OUTPUT_FEATURES, FittedTransform

if TYPE_CHECKING:
    from ftl.data.party import Party


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

_TRANSFORMER_ID = re.compile(r"^[A-Za-z0-9_.-]{1,64}$")

#: Rows of its own a party transforms with the saved copy before writing it, as a check.
_CHECK_ROWS = 64


def _transformer_id(value: Any, where: PathLike) -> str:
    if not isinstance(value, str) or not _TRANSFORMER_ID.match(value):
        raise ValueError(f"{where}: a transformer id is 1 to 64 letters, digits, '_', '.' or '-'")
    return value


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
    if input_names != list(party.feature_names) and input_names != _legacy_names(party):
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
        raw = [str(c) for c in transformer.get_feature_names_out()]
    except (ValueError, TypeError, KeyError, AttributeError, IndexError) as exc:
        raise ValueError(f"{where} is corrupted or invalid: {exc}") from None
    names = list(party.feature_names)
    if fitted_in == placeholders(len(input_names)):
        legacy = None
        expected = [positional_names(raw, names)]
    elif fitted_in == input_names:
        # Saved by an earlier ftl, which fitted on the real column names and published
        # scikit-learn's names (an encoder's categories in them): it still transforms,
        # and the names it publishes now are positional like every other's.
        legacy = raw
        expected = [raw, positional_names(legacy_placeholder_names(raw, input_names), names)]
    else:
        raise ValueError(f"{where} is corrupted: the transformer's feature names do not match")
    if names_out not in expected:
        raise ValueError(f"{where} is corrupted: the transformer's feature names do not match")
    return transformer_id, FittedTransform(transformer, input_names, expected[-1], legacy)


def _legacy_names(party: Party) -> list[str] | None:
    """The scikit-learn names of the transformer ``party`` is derived through, if it was
    saved by an earlier ftl (a transformer chained after it was fitted on them)."""
    return getattr(getattr(party, "_transform", None), "legacy_names_out", None)


@fill_doc(written_file=WRITTEN_FILE)
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
    %(written_file)s

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
