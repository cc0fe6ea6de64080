"""Checkpoint files: their format, fingerprints, and how they are written.

Each party's checkpoints (:mod:`ftl.federation.checkpoints`) and the guest's
finished batches (:mod:`ftl.data.batch_scoring`) are files of this form.

**Format.** Strict JSON: arrays as dtype, shape and values, floats in their
shortest round-trip form (a resumed plaintext run is bit-identical), big integers
(key factors, generator states) exact. Never pickle. An envelope names the format,
version, kind and fingerprint, and carries the SHA-256 digest of the rest.

**Files.** Written atomically (:func:`write_private`): a temporary file in the
same folder, ``fsync``, mode ``0600``, ``os.replace``, then the folder is synced;
folders are made with mode ``0700``. A crash leaves the previous file or the new
one, never a mix. A file holds the party's private key: protect it like one. A
file whose format, version, kind, digest or fingerprint does not match is refused
with :class:`~ftl.exceptions.CheckpointError` naming the file: a checkpoint is
never half-trusted. The digest catches corruption and edits; permissions keep
others out (whoever may write the folder may also write a matching digest).

**Fingerprints.** :func:`fingerprint` hashes canonical JSON, arrays by their bytes.
The guest's fingerprint covers the estimator and its parameters (not ``verbose``,
``n_jobs`` or the folder), the alignment, the guest's training data (features,
targets and positions) and the hosts' names; a fit resumes only from a file of
its own fingerprint, and files of other fits in the folder are ignored with a
warning. A host's checkpoint is named by the *fit id* the guest chose at open
(128 random bits) and lives in the folder of the authenticated peer; ids that
name files pass :func:`safe_id` (no path can hide in one).
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from ftl.exceptions import CheckpointError
from ftl.federation.json_forms import decode_array, encode_array

__all__ = [
    "FORMAT",
    "VERSION",
    "digest",
    "fingerprint",
    "read_checkpoint",
    "remove_checkpoint",
    "safe_id",
    "state_from_json",
    "state_to_json",
    "write_checkpoint",
    "write_private",
]

#: The envelope's format name and version.
FORMAT = "ftl.checkpoint"
VERSION = 1
#: Ids that may name a checkpoint or alignment file (hex or uuid-like, no path).
_SAFE_ID = re.compile(r"^[0-9A-Za-z_-]{1,64}$")
#: How an ndarray is tagged in a state's JSON form.
_ARRAY_TAG = "__ndarray__"


# -- canonical forms -------------------------------------------------------------------
def _as_json(value: Any, array: Callable[[np.ndarray], Any], other: Callable[[Any], Any]) -> Any:
    """``value`` (dicts, lists, scalars, ndarrays) as JSON values: every ndarray as
    ``{"__ndarray__": array(it)}``, numpy scalars as Python ones, and anything that is
    no JSON value as ``other(it)``."""
    if isinstance(value, np.ndarray):
        return {_ARRAY_TAG: array(value)}
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, dict):
        return {str(k): _as_json(v, array, other) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_as_json(v, array, other) for v in value]
    if value is None or isinstance(value, (str, bool, int, float)):
        return value
    return other(value)


def _array_identity(arr: np.ndarray) -> list:
    """An array's dtype, shape and the SHA-256 of its bytes."""
    data = np.ascontiguousarray(arr)
    return [data.dtype.str, list(data.shape), hashlib.sha256(data.tobytes()).hexdigest()]


def _dumps(value: Any) -> bytes:
    return json.dumps(value, sort_keys=True, separators=(",", ":"), allow_nan=False).encode()


def fingerprint(value: Any) -> str:
    """SHA-256 (hex) of ``value`` as canonical JSON; arrays count by dtype, shape and
    bytes, objects that are no JSON value (a RandomState, say) by their type's name."""
    canonical = _as_json(value, _array_identity, lambda obj: type(obj).__name__)
    return hashlib.sha256(_dumps(canonical)).hexdigest()


def digest(*arrays: np.ndarray) -> str:
    """SHA-256 (hex) of arrays' dtypes, shapes and bytes, in order."""
    return fingerprint([np.asarray(a) for a in arrays])


def _not_json(value: Any) -> Any:
    raise TypeError(f"a checkpoint cannot hold a {type(value).__name__}")


def state_to_json(state: Any) -> Any:
    """A state (dicts, lists, scalars, ndarrays) as strict JSON values."""
    return _as_json(state, encode_array, _not_json)


def state_from_json(obj: Any) -> Any:
    """The inverse of :func:`state_to_json`."""
    if isinstance(obj, dict):
        if set(obj) == {_ARRAY_TAG}:
            return decode_array(obj[_ARRAY_TAG], "checkpoint state")
        return {k: state_from_json(v) for k, v in obj.items()}
    if isinstance(obj, list):
        return [state_from_json(v) for v in obj]
    return obj


# -- files -----------------------------------------------------------------------------
def _private_folder(path: Path) -> Path:
    """Make ``path`` and its missing parents, each new folder with mode 0700 (folders
    that exist keep theirs)."""
    for folder in [*reversed(path.parents), path]:
        if not folder.is_dir():
            folder.mkdir(mode=0o700, exist_ok=True)
    return path


def write_private(path: str | os.PathLike, data: bytes) -> Path:
    """Write ``data`` to ``path`` atomically with mode ``0600``.

    A temporary file in the same folder is written, synced and renamed over
    ``path``; then the folder is synced, so that the rename survives a crash.
    """
    path = Path(path)
    _private_folder(path.parent)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as fh:  # mkstemp: mode 0600
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    folder = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(folder)
    finally:
        os.close(folder)
    return path


def remove_checkpoint(path: str | os.PathLike) -> None:
    """Delete a checkpoint file, and the temporary files of writes a crash cut short."""
    path = Path(path)
    path.unlink(missing_ok=True)
    for leftover in path.parent.glob(f".{path.name}.*.tmp"):
        leftover.unlink(missing_ok=True)


def write_checkpoint(path: str | os.PathLike, kind: str, fingerprint: str, body: Any) -> Path:
    """Write a checkpoint of ``kind`` whose content is the state ``body``
    (:func:`state_to_json`), bound to ``fingerprint``, atomically and privately."""
    envelope = {
        "format": FORMAT,
        "version": VERSION,
        "kind": kind,
        "fingerprint": fingerprint,
        "written": time.time(),
        "body": state_to_json(body),
    }
    envelope["digest"] = hashlib.sha256(_dumps(envelope)).hexdigest()
    return write_private(path, json.dumps(envelope, allow_nan=False).encode() + b"\n")


def read_checkpoint(path: str | os.PathLike, kind: str, fingerprint: str | None = None) -> Any:
    """The state kept in ``path`` by :func:`write_checkpoint`, after checking its
    format, version, kind, digest and (if given) fingerprint.

    Raises
    ------
    CheckpointError
        If any of them does not match, or the file is not a checkpoint.
    """
    path = Path(path)
    try:
        envelope = json.loads(path.read_bytes())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise CheckpointError(f"checkpoint {path} cannot be read ({exc})") from None
    if not isinstance(envelope, dict) or envelope.get("format") != FORMAT:
        raise CheckpointError(f"{path} is not an ftl checkpoint")
    if envelope.get("version") != VERSION:
        raise CheckpointError(
            f"checkpoint {path} is version {envelope.get('version')!r}; this ftl reads "
            f"version {VERSION} only"
        )
    claimed = envelope.pop("digest", None)
    try:
        actual = hashlib.sha256(_dumps(envelope)).hexdigest()
    except (TypeError, ValueError):
        actual = None
    if claimed != actual:
        raise CheckpointError(
            f"checkpoint {path} is corrupted or was modified (its digest does not match "
            "its content); refused. Delete it to start afresh"
        )
    if envelope.get("kind") != kind:
        raise CheckpointError(f"checkpoint {path} is a {envelope.get('kind')!r}, not a {kind!r}")
    if fingerprint is not None and envelope.get("fingerprint") != fingerprint:
        raise CheckpointError(
            f"checkpoint {path} belongs to another run (its fingerprint does not match); refused"
        )
    try:
        return state_from_json(envelope["body"])
    except (KeyError, ValueError) as exc:
        raise CheckpointError(f"checkpoint {path} is corrupted ({exc})") from None


def safe_id(value: Any, what: str) -> str:
    """``value`` if it may name a checkpoint file (letters, digits, ``_``, ``-``; at
    most 64); :class:`~ftl.exceptions.CheckpointError` otherwise."""
    if not isinstance(value, str) or not _SAFE_ID.match(value):
        raise CheckpointError(f"{what} {str(value)[:80]!r} is not a valid id")
    return value
