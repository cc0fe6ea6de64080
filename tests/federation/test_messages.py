import numpy as np
import pytest

from ftl.federation import (
    Channel,
    CiphertextArray,
    FieldSpec,
    Message,
    MessageError,
    PlainArray,
    ValueKind,
    decode,
    encode,
    register,
)

register(
    "test.sample",
    arr=FieldSpec("array", ValueKind.PUBLIC, ndim=1, dtypes=("float64",), max_len=100),
    ct=FieldSpec("encrypted", ValueKind.CIPHERTEXT, ndim=1, per_sample=True),
    big=FieldSpec("bigints", ValueKind.MASKED, ndim=1),
    note=FieldSpec("str", ValueKind.PUBLIC),
    count=FieldSpec("int", ValueKind.PUBLIC),
    meta=FieldSpec("json", ValueKind.PUBLIC),
)


def _sample(**over):
    fields = {
        "arr": np.array([1.5, -2.0]),
        "ct": CiphertextArray(np.array([5, 2**300], dtype=object), "k1", 64),
        "big": np.array([-(2**100), 7], dtype=object),
        "note": "héllo",
        "count": -(2**70),
        "meta": {"a": [1, 2]},
    }
    fields.update(over)
    return Message("test.sample", fields)


def test_roundtrip_preserves_every_field():
    out = decode(encode(_sample()))
    assert out.type == "test.sample"
    np.testing.assert_array_equal(out["arr"], [1.5, -2.0])
    assert list(out["ct"].values) == [5, 2**300] and out["ct"].key_id == "k1"
    assert list(out["big"]) == [-(2**100), 7]
    assert out["note"] == "héllo" and out["count"] == -(2**70) and out["meta"] == {"a": [1, 2]}


def test_plaintext_mode_values_roundtrip():
    out = decode(encode(_sample(ct=PlainArray(np.array([0.25, 1.0])))))
    np.testing.assert_array_equal(out["ct"].values, [0.25, 1.0])


@pytest.mark.parametrize(
    "mutate, match",
    [
        (lambda b: b[:10], "truncated|malformed|length"),
        (lambda b: b + b"x", "trailing"),
        (lambda b: b"\x00\x00\x00\x05{bad}" + b[4:], "JSON|header"),
        (lambda b: b[:-1], "length|size"),
    ],
)
def test_malformed_bytes_are_rejected(mutate, match):
    with pytest.raises(MessageError, match=match):
        decode(mutate(encode(_sample())))


def test_schema_violations_are_rejected():
    with pytest.raises(MessageError, match="dtype"):
        encode(_sample(arr=np.array([1, 2], dtype=np.int64)))
    with pytest.raises(MessageError, match="exceeds limit"):
        encode(_sample(arr=np.zeros(101)))
    with pytest.raises(MessageError, match="fields do not match"):
        encode(Message("test.sample", {"arr": np.zeros(1)}))
    with pytest.raises(MessageError, match="unknown message type"):
        encode(Message("test.nope", {}))
    with pytest.raises(MessageError, match="object ndarray of ints"):
        encode(_sample(big=np.array([1.5], dtype=object)))


def test_oversized_messages_are_refused_on_both_sides():
    data = encode(_sample())
    with pytest.raises(MessageError, match="exceeds"):
        encode(_sample(), max_bytes=len(data) - 1)
    with pytest.raises(MessageError, match="exceeds"):
        decode(data, max_bytes=len(data) - 1)


def test_no_pickle_on_the_wire():
    data = encode(_sample())
    assert b"\x80\x04" not in data[:2] and b"pickle" not in data
    assert data[4:5] == b"{"  # JSON header after the length prefix


class _Echo:
    name = "peer"

    def handle(self, session, op, payload):
        return encode(decode(payload))


class _Dead:
    name = "peer"

    def handle(self, session, op, payload):
        raise ConnectionError("connection reset")


def test_channel_records_both_directions_with_kinds_and_sizes():
    ch = Channel("me")
    ch.call(_Echo(), "x.y", _sample())
    a, b = ch.transcript.records
    assert (a.sender, a.receiver, b.sender, b.receiver) == ("me", "peer", "peer", "me")
    kinds = {f.name: f.kind for f in a.fields}
    assert kinds["ct"] == "ciphertext" and kinds["big"] == "masked" and kinds["arr"] == "public"
    assert a.nbytes == len(encode(_sample()))
    ch.call(_Echo(), "x.y", _sample(ct=PlainArray(np.zeros(2))))
    assert {f.name: f.kind for f in ch.transcript.records[-1].fields}["ct"] == "plaintext"


def test_party_that_disappears_gives_clear_error():
    from ftl.federation import PartyUnavailableError

    with pytest.raises(PartyUnavailableError, match="did not answer"):
        Channel("me").call(_Dead(), "x.y", _sample())


def test_transcript_jsonl_roundtrip(tmp_path):
    from ftl.federation import Transcript

    ch = Channel("me")
    ch.call(_Echo(), "x.y", _sample())
    path = ch.transcript.to_jsonl(tmp_path / "t.jsonl")
    again = Transcript.from_jsonl(path)
    assert again.records == ch.transcript.records
