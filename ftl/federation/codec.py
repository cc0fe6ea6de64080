"""The explicit byte serialisation of :class:`~ftl.federation.schema.Message`.

Serialisation never uses pickle. A message is a length-prefixed JSON header
(type, fields, dtypes, shapes) followed by raw little-endian array bytes and
fixed-width big-endian ciphertext integers. Decoding validates the header against
the registered schema before any payload byte is interpreted.

Decoding is bounded for a receiver that faces a deviating peer: the whole header
is checked first (:func:`read_header`) -- field list, ranks, ``max_len`` of the
first axis, sizes that add up, and an estimate of the memory the decoded values
will take, at most :data:`MAX_EXPANSION` times the message's size (a Python
integer costs ~36 bytes however narrow its encoding) -- so a refused message
allocates nothing. JSON is bounded in size and nesting depth. Every malformed
input raises :class:`~ftl.exceptions.MessageError`, never another exception.
"""

from __future__ import annotations

import json
import math
import struct
from dataclasses import dataclass
from typing import Any

import numpy as np

from ftl.crypto.arrays import CiphertextArray, PlainArray
from ftl.exceptions import MessageError
from ftl.federation.schema import (
    ALLOWED_DTYPES,
    FieldSpec,
    Message,
    MessageSchema,
    schema_for,
    validate,
)

__all__ = [
    "FORMAT_VERSION",
    "MAX_EXPANSION",
    "MAX_INTS",
    "MAX_JSON_BYTES",
    "MAX_MESSAGE_BYTES",
    "FieldLayout",
    "Header",
    "decode",
    "encode",
    "header_size",
    "parse_header",
    "read_header",
]

FORMAT_VERSION = 1
#: Upper bound on one serialised message; larger payloads are refused, not truncated.
MAX_MESSAGE_BYTES = 1 << 31
_MAX_HEADER_BYTES = 1 << 20
#: A header is an object of field objects whose shapes are lists: 4 levels.
_MAX_HEADER_DEPTH = 4
#: Largest JSON field, and its deepest nesting (parameters, keys, names, ids).
MAX_JSON_BYTES = 32 << 20
_MAX_JSON_DEPTH = 32
#: Memory assumed per parsed JSON value (an object and its pointer, upper estimate).
_JSON_VALUE_COST = 40
#: ``str``/``bytes`` fields without a ``max_len`` (names, ids of runs) and ``int`` fields.
_MAX_TEXT_BYTES = 1 << 20
_MAX_INT_BYTES = 1 << 10
#: Array rank, any one dimension, and elements of one field.
_MAX_DIMS = 8
_MAX_DIM = 1 << 40
_MAX_ELEMENTS = 1 << 31
#: Bytes per ciphertext or big integer (a 16384-bit key's ``n**2``), key id length.
_MAX_WIDTH = 4096
_MAX_KEY_ID = 256
#: Python integers in one message (33.5 M: 512 MiB of 16-byte integers).
MAX_INTS = 1 << 25
#: A decoded message may take at most this many times its encoded size in memory
#: (or ``_DECODE_FLOOR``, whichever is larger): a narrow integer or a tiny JSON
#: value costs far more as a Python object than on the wire.
MAX_EXPANSION = 8
_DECODE_FLOOR = 64 << 20


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


@dataclass(frozen=True)
class FieldLayout:
    """Where one field's payload lies in an encoded message, checked from the header.

    ``count`` is the number of elements (1 for scalar forms) and ``width`` the
    bytes per element of an integer array (0 otherwise); ``cost`` is the memory
    its decoded value will take, estimated before anything is allocated.
    """

    name: str
    spec: FieldSpec
    meta: dict
    start: int
    stop: int
    shape: tuple[int, ...] | None = None
    count: int = 1
    width: int = 0
    cost: int = 0

    @property
    def nbytes(self) -> int:
        return self.stop - self.start


@dataclass(frozen=True)
class Header:
    """The checked header of an encoded message (see :func:`read_header`).

    Attributes
    ----------
    schema : MessageSchema
        The registered schema the message claims to follow.
    fields : tuple of FieldLayout
        Each field's place, shape and estimated decoded size, in payload order.
    offset : int
        Where the payload starts (after the length prefix and the header).
    length : int
        The total size of the message in bytes.
    """

    schema: MessageSchema
    fields: tuple[FieldLayout, ...]
    offset: int
    length: int

    @property
    def type(self) -> str:
        return self.schema.name

    @property
    def cost(self) -> int:
        """Estimated bytes the decoded message takes (JSON fields excepted)."""
        return sum(f.cost for f in self.fields)


def _view(data) -> memoryview:
    try:
        view = memoryview(data)
    except TypeError:
        raise MessageError(f"a message is bytes, not {type(data).__name__}") from None
    return view.cast("B") if view.format != "B" or view.ndim != 1 else view


def _reject_constant(name: str):
    raise ValueError(f"{name} is not plain JSON")


def _depth(value: Any, limit: int) -> int:
    """Nesting depth of parsed JSON, walked without recursion; stops past ``limit``."""
    deepest = 0
    stack = [(value, 1)]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, dict):
            children = item.values()
        elif isinstance(item, list):
            children = item
        else:
            continue
        deepest = max(deepest, depth)
        if deepest > limit:
            break
        stack.extend((child, depth + 1) for child in children if isinstance(child, (dict, list)))
    return deepest


def _load_json(raw: bytes, where: str, max_depth: int) -> Any:
    """Parse JSON with bounded nesting: deep input is a :class:`MessageError`, never a
    crash or an internal error (CPython's parser recurses and would raise
    ``RecursionError``)."""
    try:
        value = json.loads(raw.decode("utf-8"), parse_constant=_reject_constant)
    except RecursionError:
        raise MessageError(f"{where}: JSON nested deeper than {max_depth} levels") from None
    except (UnicodeDecodeError, ValueError):  # JSONDecodeError, NaN, over-long integers
        raise MessageError(f"{where}: not valid JSON") from None
    # Cheap case first: fewer brackets than the limit cannot nest deeper.
    if raw.count(b"[") + raw.count(b"{") > max_depth and _depth(value, max_depth) > max_depth:
        raise MessageError(f"{where}: JSON nested deeper than {max_depth} levels")
    return value


def _json_cost(raw: bytes) -> int:
    """Upper estimate of the memory parsed JSON takes: per value, about one
    Python object and one pointer (values are separated by these bytes)."""
    separators = raw.count(b",") + raw.count(b":") + raw.count(b"[") + raw.count(b"{")
    return _JSON_VALUE_COST * (separators + 1)


def _int_cost(width: int) -> int:
    """Bytes one decoded Python ``int`` of ``width`` bytes takes, with its pointer."""
    return 8 + 24 + 4 * max(1, -(-8 * width // 30))


def _budget(length: int) -> int:
    """Most memory a decoded message of ``length`` bytes may take."""
    return max(_DECODE_FLOOR, MAX_EXPANSION * length)


def _natural(value: Any) -> bool:
    """A JSON integer that is not a bool."""
    return type(value) is int and value >= 0


def parse_header(data) -> tuple[dict, int]:
    """The JSON header of an encoded message and the payload's offset.

    Checks the length prefix, the JSON (size and nesting), that the header is an
    object with the supported format version; :func:`read_header` checks the rest.
    """
    view = _view(data)
    if len(view) < 4:
        raise MessageError("truncated message")
    hlen = int.from_bytes(view[:4], "big")
    if hlen > _MAX_HEADER_BYTES or 4 + hlen > len(view):
        raise MessageError("malformed message header length")
    header = _load_json(bytes(view[4 : 4 + hlen]), "message header", _MAX_HEADER_DEPTH)
    if not isinstance(header, dict):
        raise MessageError("message header is not a JSON object")
    version = header.get("v")
    if type(version) is not int or version != FORMAT_VERSION:
        raise MessageError(f"unsupported message format version {version!r}")
    extra = set(header) - {"v", "type", "fields"}
    if extra:
        raise MessageError(f"message header has unknown keys {sorted(extra)[:5]}")
    return header, 4 + hlen


def read_header(data, length: int | None = None, max_bytes: int = MAX_MESSAGE_BYTES) -> Header:
    """Check an encoded message's header completely, before any payload byte is read.

    Parameters
    ----------
    data : bytes-like
        The message, or any prefix of it that holds the whole header (a server
        calls this on the first chunks of a stream, and refuses the request
        before reading the rest).
    length : int, optional
        The message's total size (default ``len(data)``).
    max_bytes : int
        Largest message accepted.

    Returns
    -------
    Header
        The schema, each field's place and shape, and the decoded size estimate.

    Raises
    ------
    MessageError
        On any malformed, unregistered, oversized or inconsistent header: a field
        list that is not the schema's, a shape of the wrong rank or beyond the
        field's ``max_len``, sizes that do not add up to ``length``, or a message
        whose decoded form would take more than :data:`MAX_EXPANSION` times its
        size in memory (e.g. millions of one-byte integers).
    """
    view = _view(data)
    length = len(view) if length is None else int(length)
    if length > max_bytes:
        raise MessageError(f"message of {length} bytes exceeds {max_bytes}")
    header, offset = parse_header(view)
    if offset > length:
        raise MessageError("malformed message header length")
    msg_type = header.get("type")
    if not isinstance(msg_type, str):
        raise MessageError("message header names no type")
    schema = schema_for(msg_type)
    metas = header.get("fields")
    if not isinstance(metas, list) or not all(isinstance(m, dict) for m in metas):
        raise MessageError(f"{schema.name}: header fields are not a list of objects")
    names = [m.get("name") for m in metas]
    if not all(isinstance(n, str) for n in names) or sorted(names) != sorted(schema.fields):
        raise MessageError(f"{schema.name}: field list does not match schema")
    layouts = []
    position = offset
    ints = 0
    for meta in metas:
        layout = _layout(schema.name, schema.fields[meta["name"]], meta, position, length)
        layouts.append(layout)
        position = layout.stop
        if layout.width:
            ints += layout.count
    if position != length:
        raise MessageError(f"{schema.name}: trailing bytes after payload")
    if ints > MAX_INTS:
        raise MessageError(f"{schema.name}: {ints} integers exceed the limit of {MAX_INTS}")
    result = Header(schema, tuple(layouts), offset, length)
    if result.cost > _budget(length):
        raise MessageError(
            f"{schema.name}: decoding would take about {result.cost} bytes of memory, more "
            f"than {MAX_EXPANSION} times the message's {length} bytes; refused"
        )
    return result


_META_KEYS = {
    "array": {"name", "nbytes", "dtype", "shape"},
    "plain": {"name", "nbytes", "scheme", "shape"},
    "encrypted": {"name", "nbytes", "scheme", "shape", "key_id", "width"},
    "bigints": {"name", "nbytes", "scheme", "shape", "width"},
    "scalar": {"name", "nbytes"},
}


def _layout(msg_type: str, spec: FieldSpec, meta: dict, start: int, length: int) -> FieldLayout:
    """One field's place and shape from its header entry (nothing is allocated)."""
    where = f"{msg_type}.{meta['name']}"
    nbytes = meta.get("nbytes")
    if not _natural(nbytes) or start + nbytes > length:
        raise MessageError(f"{where}: bad payload length")
    stop = start + nbytes
    if spec.form in ("encrypted", "bigints") and meta.get("scheme") == "plain":
        keys = "plain"
    elif spec.form in ("array", "encrypted", "bigints"):
        keys = spec.form
    else:
        keys = "scalar"
    extra = set(meta) - _META_KEYS[keys]
    if extra:
        raise MessageError(f"{where}: unknown header keys {sorted(extra)[:5]}")
    if keys == "scalar":
        _check_scalar_size(where, spec, nbytes)
        return FieldLayout(meta["name"], spec, meta, start, stop, cost=nbytes + 64)
    shape = _shape(meta, spec, where)
    count = math.prod(shape)
    if count > _MAX_ELEMENTS:
        raise MessageError(f"{where}: {count} elements exceed the limit of {_MAX_ELEMENTS}")
    if keys == "array":
        dtype = meta.get("dtype")
        if not isinstance(dtype, str) or dtype not in (spec.dtypes or ALLOWED_DTYPES):
            raise MessageError(f"{where}: dtype {str(dtype)[:32]!r} not allowed")
        width, itemsize = 0, np.dtype(dtype).itemsize
    elif keys == "plain":
        width, itemsize = 0, 8
    else:
        width = meta.get("width")
        if not _natural(width) or not 0 < width <= _MAX_WIDTH:
            raise MessageError(f"{where}: bad integer width")
        if spec.form == "encrypted":
            key_id = meta.get("key_id")
            if meta.get("scheme") != "paillier":
                raise MessageError(f"{where}: unknown encryption scheme")
            if not isinstance(key_id, str) or not 0 < len(key_id) <= _MAX_KEY_ID:
                raise MessageError(f"{where}: bad ciphertext key id")
        elif meta.get("scheme") != "int":
            raise MessageError(f"{where}: bad integer-array metadata")
        itemsize = width
    if count * itemsize != nbytes:
        raise MessageError(f"{where}: payload size does not match shape")
    cost = count * _int_cost(width) if width else nbytes
    return FieldLayout(meta["name"], spec, meta, start, stop, shape, count, width, cost)


def _check_scalar_size(where: str, spec: FieldSpec, nbytes: int) -> None:
    """Refuse over-long scalar fields from their declared size alone."""
    if spec.form == "int":
        limit = (spec.max_len + 8) // 8 if spec.max_len is not None else _MAX_INT_BYTES
    elif spec.form == "str":
        limit = 4 * spec.max_len if spec.max_len is not None else _MAX_TEXT_BYTES
    elif spec.form == "bytes":
        limit = spec.max_len if spec.max_len is not None else _MAX_TEXT_BYTES
    else:  # json
        limit = MAX_JSON_BYTES
    if nbytes > limit:
        raise MessageError(f"{where}: {nbytes} bytes exceed the field's limit of {limit}")


def _shape(meta: dict, spec: FieldSpec, where: str) -> tuple[int, ...]:
    shape = meta.get("shape")
    if (
        not isinstance(shape, list)
        or len(shape) > _MAX_DIMS
        or not all(_natural(s) and s <= _MAX_DIM for s in shape)
    ):
        raise MessageError(f"{where}: bad shape")
    if spec.ndim is not None and len(shape) != spec.ndim:
        raise MessageError(f"{where}: expected {spec.ndim}-d values, got {len(shape)}-d")
    if spec.max_len is not None and shape and shape[0] > spec.max_len:
        raise MessageError(f"{where}: length {shape[0]} exceeds limit {spec.max_len}")
    return tuple(shape)


def decode(data, max_bytes: int = MAX_MESSAGE_BYTES, *, header: Header | None = None) -> Message:
    """Parse and validate bytes into a :class:`Message`; never executes code.

    The whole header is checked first (:func:`read_header`); a message refused
    there allocates nothing. Every malformed input raises :class:`MessageError`.

    Parameters
    ----------
    data : bytes-like
        The encoded message.
    max_bytes : int
        Largest message accepted.
    header : Header, optional
        The result of :func:`read_header` on ``data``, if already computed.
    """
    view = _view(data)
    if len(view) > max_bytes:
        raise MessageError(f"message of {len(view)} bytes exceeds {max_bytes}")
    if header is None or header.length != len(view):
        header = read_header(view, max_bytes=max_bytes)
    budget = _budget(len(view)) - header.cost
    fields: dict[str, Any] = {}
    for layout in header.fields:
        blob = view[layout.start : layout.stop]
        if layout.spec.form == "json":
            raw = bytes(blob)
            budget -= _json_cost(raw)
            if budget < 0:
                raise MessageError(
                    f"{header.type}.{layout.name}: JSON would take more than {MAX_EXPANSION} "
                    "times the message's size in memory; refused"
                )
            fields[layout.name] = _load_json(raw, f"{header.type}.{layout.name}", _MAX_JSON_DEPTH)
        else:
            fields[layout.name] = _decode_field(header.type, layout, blob)
    message = Message(header.type, fields)
    validate(message)
    return message


def _integers(blob: memoryview, count: int, width: int, signed: bool) -> np.ndarray:
    """Fixed-width big-endian integers as an object array (slices are views, not copies)."""
    from_bytes = int.from_bytes
    return np.fromiter(
        (
            from_bytes(blob[i : i + width], "big", signed=signed)
            for i in range(0, count * width, width)
        ),
        dtype=object,
        count=count,
    )


def _decode_field(msg_type: str, layout: FieldLayout, blob: memoryview) -> Any:
    where = f"{msg_type}.{layout.name}"
    spec, meta = layout.spec, layout.meta
    if spec.form == "array":
        dtype = meta["dtype"]
        values = np.frombuffer(blob, dtype=np.dtype(dtype).newbyteorder("<"))
        if dtype == "bool" and values.size and values.view(np.uint8).max() > 1:
            raise MessageError(f"{where}: booleans must be 0 or 1")
        return values.reshape(layout.shape).astype(dtype)
    if layout.width == 0 and spec.form in ("encrypted", "bigints"):  # plaintext mode
        return PlainArray(np.frombuffer(blob, dtype="<f8").reshape(layout.shape).astype(np.float64))
    if spec.form == "bigints":
        return _integers(blob, layout.count, layout.width, signed=True).reshape(layout.shape)
    if spec.form == "encrypted":
        values = _integers(blob, layout.count, layout.width, signed=False)
        return CiphertextArray(values.reshape(layout.shape), meta["key_id"], layout.width)
    if spec.form == "int":
        return int.from_bytes(blob, "big", signed=True)
    if spec.form == "str":
        try:
            return str(blob, "utf-8")
        except UnicodeDecodeError:
            raise MessageError(f"{where}: not UTF-8") from None
    return bytes(blob)


def header_size(prefix) -> int | None:
    """Bytes the length prefix and the header take, from a message's first bytes
    (``None`` until the 4-byte length prefix is in; 4 if the length is already
    too large, so that :func:`read_header` refuses it at once)."""
    if len(prefix) < 4:
        return None
    hlen = int.from_bytes(bytes(prefix[:4]), "big")
    return 4 if hlen > _MAX_HEADER_BYTES else 4 + hlen
