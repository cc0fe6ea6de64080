"""Typed cross-party messages and their explicit byte serialisation.

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

Serialisation never uses pickle. A message is a length-prefixed JSON header
(type, fields, dtypes, shapes) followed by raw little-endian array bytes and
fixed-width big-endian ciphertext integers. Decoding validates the header against
the registered schema before any payload byte is interpreted.
"""

from __future__ import annotations

import json
import struct
from dataclasses import dataclass, field
from enum import Enum
from typing import Any

import numpy as np

__all__ = [
    "FORMAT_VERSION",
    "MAX_MESSAGE_BYTES",
    "CiphertextArray",
    "FieldSpec",
    "Message",
    "MessageError",
    "MessageSchema",
    "PlainArray",
    "ValueKind",
    "decode",
    "encode",
    "parse_header",
    "register",
    "schema_for",
]

FORMAT_VERSION = 1
#: Upper bound on one serialised message; larger payloads are refused, not truncated.
MAX_MESSAGE_BYTES = 1 << 31
_MAX_HEADER_BYTES = 1 << 20
_ALLOWED_DTYPES = {"float64", "int64", "uint8", "bool"}


class MessageError(ValueError):
    """A message is malformed, unregistered, oversized or violates its schema."""


class ValueKind(str, Enum):
    """What the receiver of a field can learn from it."""

    CIPHERTEXT = "ciphertext"
    MASKED = "masked"
    PUBLIC = "public"
    OWN_RESULT = "own_result"
    PLAINTEXT = "plaintext"


@dataclass(frozen=True)
class CiphertextArray:
    """Paillier ciphertexts as arbitrary-precision integers, tagged with their key.

    Parameters
    ----------
    values : ndarray of object
        Ciphertext integers (Python ``int`` or ``gmpy2.mpz``), any shape.
    key_id : str
        Fingerprint of the public key they were made under.
    width : int
        Bytes per ciphertext on the wire (``ceil(bits(n**2) / 8)``).
    """

    values: np.ndarray
    key_id: str
    width: int

    @property
    def shape(self) -> tuple[int, ...]:
        return tuple(self.values.shape)


@dataclass(frozen=True)
class PlainArray:
    """Stand-in for ciphertexts or masked integers in ``encryption=None`` mode."""

    values: np.ndarray

    @property
    def shape(self) -> tuple[int, ...]:
        return tuple(self.values.shape)


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
        return self.fields[name]


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
        if value.dtype.name not in (spec.dtypes or _ALLOWED_DTYPES):
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
        except (TypeError, ValueError) as exc:
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
    return len(value)


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


def _ciphertext_bytes(ct: CiphertextArray) -> bytes:
    flat = ct.values.reshape(-1)
    width = ct.width
    try:
        return b"".join(int(v).to_bytes(width, "big") for v in flat)
    except OverflowError:
        raise MessageError("ciphertext wider than its declared width") from None


def encode(message: Message, max_bytes: int = MAX_MESSAGE_BYTES) -> bytes:
    """Serialise a message to bytes after validating it against its schema."""
    schema = validate(message)
    header_fields = []
    chunks: list[bytes] = []
    for name in sorted(schema.fields):
        spec = schema.fields[name]
        value = message.fields[name]
        meta: dict[str, Any] = {"name": name}
        if spec.form == "array":
            data = np.ascontiguousarray(value).astype(value.dtype.newbyteorder("<"), copy=False)
            blob = data.tobytes()
            meta.update(dtype=value.dtype.name, shape=list(value.shape))
        elif isinstance(value, PlainArray):
            blob = np.ascontiguousarray(value.values, dtype="<f8").tobytes()
            meta.update(scheme="plain", shape=list(value.values.shape))
        elif spec.form == "encrypted":
            blob = _ciphertext_bytes(value)
            meta.update(
                scheme="paillier",
                shape=list(value.values.shape),
                key_id=value.key_id,
                width=value.width,
            )
        elif spec.form == "bigints":
            width = max([(abs(int(v)).bit_length() + 8) // 8 for v in value.reshape(-1)] + [1])
            blob = b"".join(int(v).to_bytes(width, "big", signed=True) for v in value.reshape(-1))
            meta.update(scheme="int", shape=list(value.shape), width=width)
        elif spec.form == "int":
            nbytes = (value.bit_length() + 8) // 8 or 1
            blob = value.to_bytes(nbytes, "big", signed=True)
        elif spec.form == "str":
            blob = value.encode("utf-8")
        elif spec.form == "bytes":
            blob = value
        else:  # json
            blob = json.dumps(value, allow_nan=False, sort_keys=True).encode("utf-8")
        meta["nbytes"] = len(blob)
        header_fields.append(meta)
        chunks.append(blob)
    header = json.dumps(
        {"v": FORMAT_VERSION, "type": message.type, "fields": header_fields}
    ).encode("utf-8")
    out = struct.pack(">I", len(header)) + header + b"".join(chunks)
    if len(out) > max_bytes:
        raise MessageError(f"{message.type}: message of {len(out)} bytes exceeds {max_bytes}")
    return out


def parse_header(data: bytes) -> tuple[dict, int]:
    """The validated JSON header of an encoded message and the payload's offset."""
    if len(data) < 4:
        raise MessageError("truncated message")
    (hlen,) = struct.unpack(">I", data[:4])
    if hlen > _MAX_HEADER_BYTES or 4 + hlen > len(data):
        raise MessageError("malformed message header length")
    try:
        header = json.loads(data[4 : 4 + hlen].decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError):
        raise MessageError("message header is not valid JSON") from None
    if not isinstance(header, dict) or header.get("v") != FORMAT_VERSION:
        raise MessageError(f"unsupported message format version {header.get('v')!r}")
    return header, 4 + hlen


def decode(data: bytes, max_bytes: int = MAX_MESSAGE_BYTES) -> Message:
    """Parse and validate bytes into a :class:`Message`; never executes code."""
    if len(data) > max_bytes:
        raise MessageError(f"message of {len(data)} bytes exceeds {max_bytes}")
    header, offset = parse_header(data)
    schema = schema_for(str(header.get("type")))
    metas = header.get("fields")
    if not isinstance(metas, list) or sorted(m.get("name") for m in metas) != sorted(schema.fields):
        raise MessageError(f"{schema.name}: field list does not match schema")
    fields: dict[str, Any] = {}
    for meta in metas:
        name = meta["name"]
        spec = schema.fields[name]
        nbytes = meta.get("nbytes")
        if not isinstance(nbytes, int) or nbytes < 0 or offset + nbytes > len(data):
            raise MessageError(f"{schema.name}.{name}: bad payload length")
        blob = data[offset : offset + nbytes]
        offset += nbytes
        fields[name] = _decode_field(schema.name, name, spec, meta, blob)
    if offset != len(data):
        raise MessageError(f"{schema.name}: trailing bytes after payload")
    message = Message(schema.name, fields)
    validate(message)
    return message


def _shape(meta: dict, where: str) -> tuple[int, ...]:
    shape = meta.get("shape")
    if not isinstance(shape, list) or not all(isinstance(s, int) and s >= 0 for s in shape):
        raise MessageError(f"{where}: bad shape")
    return tuple(shape)


def _decode_field(msg_type: str, name: str, spec: FieldSpec, meta: dict, blob: bytes) -> Any:
    where = f"{msg_type}.{name}"
    if spec.form == "array":
        dtype = meta.get("dtype")
        if dtype not in (spec.dtypes or _ALLOWED_DTYPES):
            raise MessageError(f"{where}: dtype {dtype!r} not allowed")
        shape = _shape(meta, where)
        dt = np.dtype(dtype).newbyteorder("<")
        if int(np.prod(shape, dtype=np.int64)) * dt.itemsize != len(blob):
            raise MessageError(f"{where}: payload size does not match shape")
        return np.frombuffer(blob, dtype=dt).reshape(shape).astype(dtype)
    if spec.form in ("encrypted", "bigints") and meta.get("scheme") == "plain":
        shape = _shape(meta, where)
        if int(np.prod(shape, dtype=np.int64)) * 8 != len(blob):
            raise MessageError(f"{where}: payload size does not match shape")
        return PlainArray(np.frombuffer(blob, dtype="<f8").reshape(shape).astype(np.float64))
    if spec.form == "bigints":
        shape = _shape(meta, where)
        width = meta.get("width")
        if meta.get("scheme") != "int" or not isinstance(width, int) or not 0 < width <= 4096:
            raise MessageError(f"{where}: bad integer-array metadata")
        count = int(np.prod(shape, dtype=np.int64))
        if count * width != len(blob):
            raise MessageError(f"{where}: payload size does not match shape")
        values = np.empty(count, dtype=object)
        for i in range(count):
            values[i] = int.from_bytes(blob[i * width : (i + 1) * width], "big", signed=True)
        return values.reshape(shape)
    if spec.form == "encrypted":
        if meta.get("scheme") != "paillier":
            raise MessageError(f"{where}: unknown encryption scheme {meta.get('scheme')!r}")
        shape = _shape(meta, where)
        width, key_id = meta.get("width"), meta.get("key_id")
        if not isinstance(width, int) or not 0 < width <= 4096 or not isinstance(key_id, str):
            raise MessageError(f"{where}: bad ciphertext metadata")
        count = int(np.prod(shape, dtype=np.int64))
        if count * width != len(blob):
            raise MessageError(f"{where}: payload size does not match shape")
        values = np.empty(count, dtype=object)
        for i in range(count):
            values[i] = int.from_bytes(blob[i * width : (i + 1) * width], "big")
        return CiphertextArray(values.reshape(shape), key_id, width)
    if spec.form == "int":
        return int.from_bytes(blob, "big", signed=True)
    if spec.form == "str":
        try:
            return blob.decode("utf-8")
        except UnicodeDecodeError:
            raise MessageError(f"{where}: not UTF-8") from None
    if spec.form == "bytes":
        return bytes(blob)
    try:
        return json.loads(blob.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError):
        raise MessageError(f"{where}: not valid JSON") from None
