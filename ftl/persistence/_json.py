"""The envelope every file format shares: atomic owner-only writes of strict
JSON, reads that check a file's format and version, and estimator parameters.

The JSON forms of the values inside (floats, ndarrays, histories, key pairs)
are :mod:`ftl.federation.json_forms`'s, which the protocols' codecs use too.
"""

from __future__ import annotations

import errno
import json
import math
import os
from pathlib import Path
from typing import Any

import numpy as np

from ftl.federation.checkpoints import write_private
from ftl.persistence._formats import _FORMAT_HINTS

PathLike = str | os.PathLike


def _write_private_json(obj: dict, path: PathLike) -> Path:
    """Write ``obj`` atomically as strict JSON to ``path`` with mode ``0o600``
    (:func:`~ftl.federation.checkpoints.write_private`)."""
    path = Path(path)
    if not path.parent.is_dir():
        # saving never made folders (a checkpoint's writer does): keep the error
        raise FileNotFoundError(errno.ENOENT, "No such directory", str(path.parent))
    text = json.dumps(obj, indent=1, allow_nan=False, ensure_ascii=True) + "\n"
    return write_private(path, text.encode("ascii"))


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


def _peek_format(path: PathLike) -> Any:
    """The ``format`` field of a JSON file, or None (the full read reports errors)."""
    try:
        obj = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        return None
    return obj.get("format") if isinstance(obj, dict) else None


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


def _str_list(value: Any, what: str) -> list[str]:
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise ValueError(f"{what} must be a list of strings")
    return list(value)


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
