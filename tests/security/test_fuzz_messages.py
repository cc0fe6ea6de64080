"""Fuzzing the wire decoder, every registered message schema, and the server.

A deviating peer controls every byte it sends. Whatever it sends, the decoder
must return a valid :class:`~ftl.federation.Message` or raise
:class:`~ftl.federation.MessageError` -- never another exception -- and the
server must answer with a clean status (never ``INTERNAL`` or ``UNKNOWN``) and,
when it refuses, change no state.

Strategies: arbitrary bytes; arbitrary bytes behind a well-formed length prefix
and header; and, for every registered schema, valid messages whose header (any
key, at any depth) and payload are then mutated.
"""

from __future__ import annotations

import copy
import hashlib
import json
import struct
import uuid

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

import ftl  # noqa: F401 - registers the message types of every protocol
import ftl.linear_model  # noqa: F401
import ftl.preprocessing  # noqa: F401
import ftl.psi  # noqa: F401
import ftl.transfer  # noqa: F401
from ftl.federation import CiphertextArray, Message, MessageError, PlainArray, decode, encode
from ftl.federation.budget import BudgetLimits
from ftl.federation.messages import FieldSpec, registered_types, schema_for
from ftl.federation.protocols import roles

SCHEMAS = sorted(name for name in registered_types() if not name.startswith("test."))
FUZZ = settings(deadline=None, suppress_health_check=list(HealthCheck))


# -- values of a schema's fields -----------------------------------------------------
def _json(floats):
    return st.recursive(
        st.none() | st.booleans() | st.integers(-(2**80), 2**80) | floats | st.text(max_size=8),
        lambda inner: (
            st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner, max_size=3)
        ),
        max_leaves=8,
    )


#: what an honest sender may put in a JSON field; what a deviating one may write
json_values = _json(st.floats(allow_nan=False, allow_infinity=False))
hostile_json = _json(st.floats())


def _shape(spec: FieldSpec):
    ndim = spec.ndim if spec.ndim is not None else 1
    first = min(spec.max_len if spec.max_len is not None else 4, 4)
    return st.tuples(
        st.integers(0, first), *[st.integers(0, 3) for _ in range(max(ndim - 1, 0))]
    ).map(lambda s: s[:ndim])


def _plain(spec: FieldSpec):
    return (
        _shape(spec)
        .flatmap(lambda shape: hnp.arrays(np.float64, shape, elements=st.floats(-1e6, 1e6)))
        .map(PlainArray)
    )


def _int_array(shape, low, high):
    return st.lists(
        st.integers(low, high), min_size=int(np.prod(shape)), max_size=int(np.prod(shape))
    ).map(lambda v: np.array(v + [0], dtype=object)[:-1].reshape(shape))


def field_values(spec: FieldSpec):
    """Values an honest sender could put in a field of ``spec``."""
    if spec.form == "array":
        dtypes = spec.dtypes or ("float64", "int64", "uint8", "bool")
        return st.tuples(st.sampled_from(dtypes), _shape(spec)).flatmap(
            lambda ds: hnp.arrays(np.dtype(ds[0]), ds[1])
        )
    if spec.form == "encrypted":
        ciphertexts = st.tuples(_shape(spec), st.integers(1, 40), st.text(min_size=1, max_size=8))
        return _plain(spec) | ciphertexts.flatmap(
            lambda s: _int_array(s[0], 0, 2 ** (8 * s[1]) - 1).map(
                lambda v: CiphertextArray(v, s[2], s[1])
            )
        )
    if spec.form == "bigints":
        return _plain(spec) | _shape(spec).flatmap(lambda s: _int_array(s, -(2**200), 2**200))
    if spec.form == "int":
        bits = min(spec.max_len or 70, 70)
        return st.integers(-(2 ** (bits - 1)), 2 ** (bits - 1) - 1)
    if spec.form == "str":
        return st.text(max_size=min(spec.max_len or 12, 12))
    if spec.form == "bytes":
        return st.binary(max_size=min(spec.max_len or 40, 40))
    if spec.max_len is not None:
        return st.lists(json_values, max_size=min(spec.max_len, 3))
    return json_values


def messages(name: str):
    schema = schema_for(name)
    return st.fixed_dictionaries({f: field_values(s) for f, s in schema.fields.items()}).map(
        lambda fields: Message(name, fields)
    )


# -- mutations of an encoded message ---------------------------------------------------
def _paths(value, prefix=()):
    yield prefix
    if isinstance(value, dict):
        for k, v in value.items():
            yield from _paths(v, (*prefix, k))
    elif isinstance(value, list):
        for i, v in enumerate(value):
            yield from _paths(v, (*prefix, i))


def _mutate_header(draw, header: dict) -> dict:
    header = copy.deepcopy(header)
    path = draw(st.sampled_from(list(_paths(header))))
    action = draw(st.sampled_from(["replace", "replace", "delete", "add"]))
    if not path:
        return draw(hostile_json) if action == "replace" else header
    parent = header
    for step in path[:-1]:
        parent = parent[step]
    last = path[-1]
    if action == "replace":
        parent[last] = draw(
            hostile_json | st.sampled_from([-1, 2**70, [2**70], [2**32, 2**32], True, "x" * 100])
        )
    elif action == "delete":
        del parent[last]
    elif isinstance(parent, dict):
        parent[draw(st.text(max_size=6))] = draw(hostile_json)
    else:
        parent.insert(last, draw(hostile_json))
    return header


@st.composite
def mutated(draw, name: str) -> bytes:
    data = encode(draw(messages(name)))
    (hlen,) = struct.unpack(">I", data[:4])
    header, body = json.loads(data[4 : 4 + hlen]), data[4 + hlen :]
    target = draw(st.sampled_from(["header", "body", "both", "length"]))
    raw = (
        json.dumps(_mutate_header(draw, header)).encode()
        if target in ("header", "both")
        else (data[4 : 4 + hlen])
    )
    if target in ("body", "both"):
        cut = draw(st.integers(0, len(body)))
        body = draw(
            st.sampled_from(
                [
                    body[:cut],
                    body[:cut] + draw(st.binary(min_size=1, max_size=64)) + body[cut:],
                    body[:cut]
                    + bytes([(body[cut] if cut < len(body) else 0) ^ 0xFF])
                    + body[cut + 1 :],
                ]
            )
        )
    prefix = len(raw) if target != "length" else draw(st.integers(0, 2**32 - 1))
    return struct.pack(">I", prefix) + raw + body


def decodes_cleanly(data: bytes) -> None:
    """The property: a valid message (that re-encodes), or a MessageError."""
    try:
        message = decode(data)
    except MessageError:
        return
    assert isinstance(message, Message)
    assert decode(encode(message)).type == message.type


# -- the decoder -----------------------------------------------------------------------
@settings(FUZZ, max_examples=300)
@given(data=st.binary(max_size=600))
def test_decode_arbitrary_bytes(data):
    decodes_cleanly(data)


@settings(FUZZ, max_examples=200)
@given(
    msg_type=st.sampled_from([*SCHEMAS, "nope"]),
    fields=st.lists(
        st.dictionaries(
            st.sampled_from(["name", "nbytes", "shape", "dtype", "width", "scheme", "key_id"]),
            hostile_json,
            max_size=5,
        ),
        max_size=5,
    ),
    body=st.binary(max_size=200),
)
def test_decode_arbitrary_headers(msg_type, fields, body):
    header = json.dumps({"v": 1, "type": msg_type, "fields": fields}).encode()
    decodes_cleanly(struct.pack(">I", len(header)) + header + body)


@pytest.mark.parametrize("name", SCHEMAS)
@settings(FUZZ, max_examples=30)
@given(data=st.data())
def test_every_schema_roundtrips_and_survives_mutation(name, data):
    message = data.draw(messages(name))
    again = decode(encode(message))
    assert again.type == name and set(again.fields) == set(message.fields)
    decodes_cleanly(data.draw(mutated(name)))


# -- the server --------------------------------------------------------------------------
def registered_operations() -> list[str]:
    ops = []
    for role_name, cls in sorted(roles().items()):
        ops += [f"{role_name}.open", f"{role_name}.close"]
        ops += [
            f"{role_name}.{attr}"
            for attr in sorted(dir(cls))
            if getattr(getattr(cls, attr, None), "_ftl_operation", False)
        ]
    return ops


OPERATIONS = registered_operations()


@pytest.fixture(scope="module")
def fuzzed_server(tmp_path_factory):
    from _serving import RawClient, make_certs, start_server

    certs = make_certs(tmp_path_factory.mktemp("fuzz") / "certs")
    server, grpc_server, address = start_server(
        certs,
        rule={"budget": BudgetLimits.unrestricted()},  # open as many sessions as we like
        max_message_bytes=1 << 20,
        max_sessions_per_peer=1000,
    )
    client = RawClient(certs, address)
    yield server, client
    client.close()
    grpc_server.stop(0)


payloads = (
    st.binary(max_size=300)
    | st.sampled_from(SCHEMAS).flatmap(messages).map(encode)
    | st.sampled_from(SCHEMAS).flatmap(mutated)
)


@settings(FUZZ, max_examples=500)
@given(
    op=st.sampled_from(OPERATIONS),
    payload=payloads,
    session=st.binary(min_size=16, max_size=16).map(bytes.hex),
    seq=st.sampled_from([0, 0, 0, 1, 7]),
    lie=st.sampled_from([None, None, None, "ftl-length", "ftl-digest", "ftl-path"]),
    junk=st.text(st.characters(min_codepoint=33, max_codepoint=126), max_size=20),
)
def test_server_answers_every_operation_cleanly(
    fuzzed_server, op, payload, session, seq, lie, junk
):
    from _serving import grpc, outcome

    server, client = fuzzed_server
    override = {}
    if lie == "ftl-length":
        override[lie] = str(len(payload) + 1 + len(junk))
    elif lie == "ftl-digest":
        override[lie] = hashlib.sha256(junk.encode()).hexdigest()
    elif lie == "ftl-path":
        override[lie] = junk
    before = (server.role_states(), server.open_sessions)
    code, trailer, details = outcome(
        lambda: client.send(payload, op=op, session=session, seq=seq, **override)
    )
    assert code not in (grpc.StatusCode.INTERNAL, grpc.StatusCode.UNKNOWN), (op, details)
    if code != grpc.StatusCode.OK:
        assert trailer is not None, details
        assert (server.role_states(), server.open_sessions) == before, (op, details)


#: Roles whose sessions a fuzzer can open without a prior protocol run.
OPENERS = {
    "psi.host": lambda: _psi_open(),
    "prep.party": lambda: encode(Message("prep.open", {"transformer_id": "t0fuzz"})),
}


def _psi_open() -> bytes:
    from _serving import psi_open

    return psi_open()


@settings(FUZZ, max_examples=300)
@given(
    role_name=st.sampled_from(sorted(OPENERS)),
    data=st.data(),
)
def test_server_answers_operations_in_open_sessions_cleanly(fuzzed_server, role_name, data):
    """Operations past ``open``: the session holds role state, the request is junk,
    a valid message of any type, or a mutated one."""
    from _serving import grpc, outcome

    server, client = fuzzed_server
    session = uuid.uuid4().hex  # fresh, also when hypothesis replays an example
    ops = [op for op in OPERATIONS if op.startswith(f"{role_name}.") and not op.endswith(".open")]
    op, payload = data.draw(st.sampled_from(ops)), data.draw(payloads)
    client.send(OPENERS[role_name](), op=f"{role_name}.open", session=session)
    try:
        before = (server.role_states(), server.open_sessions)
        code, trailer, details = outcome(
            lambda: client.send(payload, op=op, session=session, seq=1)
        )
        assert code not in (grpc.StatusCode.INTERNAL, grpc.StatusCode.UNKNOWN), (op, details)
        if code != grpc.StatusCode.OK:
            assert trailer is not None, details
            assert (server.role_states(), server.open_sessions) == before, (op, details)
    finally:
        client.send(encode(Message("ack", {})), op=f"{role_name}.close", session=session, seq=2)


def test_every_operation_accepts_registered_types_only():
    from ftl.federation.service import accepted_types

    for op in OPERATIONS:
        types = accepted_types(op)
        assert types and types <= set(registered_types()), op
