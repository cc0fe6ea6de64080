"""Typed cross-party messages: the registered schemas and the values they carry.

Every value that crosses a party boundary is a :class:`Message`: a registered
message type plus named fields. Each field carries a *value kind* that says what a
receiver can learn from it:

``ciphertext``
    Paillier ciphertexts under a key the receiver does not hold (or, for the key
    owner, a value it is entitled to; see the protocol docs).
``masked``
    Integers blinded by an additive mask that only the sender knows, with at least
    40 bits of statistical slack.
``public``
    Metadata both parties may know: shapes, parameters, public keys, PSI points.
``own_result``
    A value that belongs to the receiver (e.g. its own unmasked gradient).
``plaintext``
    Recorded instead of ``ciphertext``/``masked`` when a protocol runs with
    ``encryption=None`` (debugging and measurement mode): the transcript then says
    honestly that the value crossed in the clear.

Protocols register their message types at import (:func:`register`);
:func:`validate` checks a message against its schema. How a message becomes
bytes, and back, is :mod:`ftl.federation.codec`.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from enum import Enum
from typing import Any

import numpy as np

from ftl.crypto.arrays import CiphertextArray, PlainArray
from ftl.exceptions import MessageError, MissingFieldError

__all__ = [
    "ALIGNED_POSITIONS",
    "ALLOWED_DTYPES",
    "MAX_ROWS",
    "PUBLIC_INT",
    "PUBLIC_JSON",
    "PUBLIC_STR",
    "SMALL_MESSAGE_BYTES",
    "FieldSpec",
    "Message",
    "MessageError",
    "MessageSchema",
    "MissingFieldError",
    "ValueKind",
    "is_small",
    "max_encoded_bytes",
    "register",
    "registered_types",
    "schema_for",
    "validate",
]

#: dtypes a numeric array field may have (a schema may allow fewer).
ALLOWED_DTYPES = frozenset({"float64", "int64", "uint8", "bool"})
#: Most data rows a per-row field of a protocol message may carry.
MAX_ROWS = 50_000_000
#: Messages whose fields cannot carry per-row data (:func:`is_small`) stay below this.
SMALL_MESSAGE_BYTES = 1 << 20
_SMALL_FIELD_LEN = 64


class ValueKind(str, Enum):
    """What the receiver of a field can learn from it."""

    CIPHERTEXT = "ciphertext"
    MASKED = "masked"
    PUBLIC = "public"
    OWN_RESULT = "own_result"
    PLAINTEXT = "plaintext"


@dataclass(frozen=True)
class FieldSpec:
    """Schema of one message field.

    ``form`` is one of ``"array"`` (numeric ndarray), ``"encrypted"``
    (:class:`CiphertextArray`, or :class:`PlainArray` in plaintext mode),
    ``"bigints"`` (object ndarray of Python ints, e.g. decrypted masked values,
    or :class:`PlainArray` in plaintext mode), ``"int"``, ``"str"``, ``"bytes"``,
    ``"json"``. ``ndim`` fixes the array rank when given;
    ``per_sample`` marks fields whose first axis runs over data rows (the
    transcript audit checks these are never plaintext).
    """

    form: str
    kind: ValueKind
    ndim: int | None = None
    dtypes: tuple[str, ...] = ()
    per_sample: bool = False
    max_len: int | None = None


# The fields most protocols declare alike.
#: A public integer: a count, a size, a slot width.
PUBLIC_INT = FieldSpec("int", ValueKind.PUBLIC)
#: A public string: the id of an alignment or a model, a party's name.
PUBLIC_STR = FieldSpec("str", ValueKind.PUBLIC)
#: Public JSON: parameters, public keys, feature names.
PUBLIC_JSON = FieldSpec("json", ValueKind.PUBLIC)
#: Which aligned rows a step uses: their positions in the alignment (which rows,
#: never what they hold).
ALIGNED_POSITIONS = FieldSpec(
    "array", ValueKind.PUBLIC, ndim=1, dtypes=("int64",), max_len=MAX_ROWS
)


@dataclass(frozen=True)
class MessageSchema:
    """A registered message type: its name and the fields it must carry."""

    name: str
    fields: dict[str, FieldSpec]
    doc: str = ""


@dataclass
class Message:
    """A typed message: a registered ``type`` and its named field values."""

    type: str
    fields: dict[str, Any] = field(default_factory=dict)

    def __getitem__(self, name: str) -> Any:
        try:
            return self.fields[name]
        except KeyError:
            # A message of another type than the operation expects: a clean refusal.
            raise MissingFieldError(f"{self.type} message has no field {name!r}") from None


_REGISTRY: dict[str, MessageSchema] = {}


def register(name: str, doc: str = "", **fields: FieldSpec) -> MessageSchema:
    """Register a message type; protocols call this at import time."""
    schema = MessageSchema(name=name, fields=dict(fields), doc=doc)
    existing = _REGISTRY.get(name)
    if existing is not None and existing != schema:
        raise MessageError(f"message type {name!r} registered twice with different schemas")
    _REGISTRY[name] = schema
    return schema


def schema_for(name: str) -> MessageSchema:
    try:
        return _REGISTRY[name]
    except KeyError:
        raise MessageError(f"unknown message type {name!r}") from None


def _check_value(msg_type: str, name: str, spec: FieldSpec, value: Any) -> None:
    where = f"{msg_type}.{name}"
    if spec.form == "array":
        if not isinstance(value, np.ndarray):
            raise MessageError(f"{where}: expected ndarray, got {type(value).__name__}")
        if value.dtype.name not in (spec.dtypes or ALLOWED_DTYPES):
            raise MessageError(f"{where}: dtype {value.dtype} not allowed")
        if spec.ndim is not None and value.ndim != spec.ndim:
            raise MessageError(f"{where}: expected {spec.ndim}-d array, got {value.ndim}-d")
    elif spec.form in ("encrypted", "bigints"):
        if isinstance(value, PlainArray):
            if value.values.dtype != np.float64:
                raise MessageError(f"{where}: plaintext-mode values must be float64")
        elif spec.form == "encrypted" and not isinstance(value, CiphertextArray):
            raise MessageError(f"{where}: expected CiphertextArray")
        elif spec.form == "bigints" and not (
            isinstance(value, np.ndarray)
            and value.dtype == object
            and all(isinstance(v, int) for v in value.reshape(-1))
        ):
            raise MessageError(f"{where}: expected an object ndarray of ints")
        arr = value if isinstance(value, np.ndarray) else value.values
        if spec.ndim is not None and arr.ndim != spec.ndim:
            raise MessageError(f"{where}: expected {spec.ndim}-d values, got {arr.ndim}-d")
    elif spec.form == "int":
        if not isinstance(value, int) or isinstance(value, bool):
            raise MessageError(f"{where}: expected int")
    elif spec.form == "str":
        if not isinstance(value, str):
            raise MessageError(f"{where}: expected str")
    elif spec.form == "bytes":
        if not isinstance(value, bytes):
            raise MessageError(f"{where}: expected bytes")
    elif spec.form == "json":
        try:
            json.dumps(value, allow_nan=False)
        except (TypeError, ValueError, RecursionError) as exc:
            raise MessageError(f"{where}: not plain JSON data ({exc})") from None
    else:  # pragma: no cover - schema bug
        raise MessageError(f"{where}: unknown form {spec.form!r}")
    if spec.max_len is not None:
        length = _length(value)
        if length > spec.max_len:
            raise MessageError(f"{where}: length {length} exceeds limit {spec.max_len}")


def _length(value: Any) -> int:
    if isinstance(value, np.ndarray):
        return int(value.shape[0]) if value.ndim else 1
    if isinstance(value, (CiphertextArray, PlainArray)):
        return int(value.values.shape[0]) if value.values.ndim else 1
    if isinstance(value, int):
        return value.bit_length()
    if isinstance(value, (str, bytes, list, dict)):
        return len(value)
    return 1  # a JSON scalar (float, null)


def validate(message: Message) -> MessageSchema:
    """Check a message against its registered schema (exact field set)."""
    schema = schema_for(message.type)
    missing = set(schema.fields) - set(message.fields)
    extra = set(message.fields) - set(schema.fields)
    if missing or extra:
        raise MessageError(
            f"{message.type}: fields do not match schema "
            f"(missing {sorted(missing)}, unexpected {sorted(extra)})"
        )
    for name, spec in schema.fields.items():
        _check_value(message.type, name, spec, message.fields[name])
    return schema


def is_small(schema: MessageSchema) -> bool:
    """Whether no field of ``schema`` can carry per-row data.

    Such a message (parameters, counters, a few scalars, a handful of floats) is
    refused above :data:`SMALL_MESSAGE_BYTES` by the server before it is read.
    """
    for spec in schema.fields.values():
        if spec.form in ("array", "encrypted", "bigints") and (
            spec.per_sample or spec.max_len is None or spec.max_len > _SMALL_FIELD_LEN
        ):
            return False
    return True


def max_encoded_bytes(schema: MessageSchema) -> int | None:
    """The largest encoded size a message of ``schema`` may take (``None``: only
    the receiver's overall limit applies)."""
    return SMALL_MESSAGE_BYTES if is_small(schema) else None


def registered_types() -> tuple[str, ...]:
    """Names of every registered message type (protocols register at import)."""
    return tuple(_REGISTRY)
