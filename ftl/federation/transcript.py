"""The audit log of everything that crossed a party boundary."""

from __future__ import annotations

import json
from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path

from ftl.federation.messages import (
    CiphertextArray,
    Message,
    MessageError,
    PlainArray,
    ValueKind,
    parse_header,
    schema_for,
)

__all__ = ["FieldRecord", "Transcript", "TranscriptRecord"]


@dataclass(frozen=True)
class FieldRecord:
    """What one field of a message was: its value kind, form and shape.

    ``kind`` is the declared value kind (``"ciphertext"``, ``"masked"``,
    ``"public"``, ``"own_result"``, or ``"plaintext"`` for values sent with
    ``encryption=None``); ``per_sample`` says whether the field runs over data
    rows; ``key_id`` is the key fingerprint of a ciphertext field.
    """

    name: str
    kind: str
    form: str
    shape: tuple[int, ...]
    per_sample: bool
    key_id: str | None = None


@dataclass(frozen=True)
class TranscriptRecord:
    """One message: who sent what kind of value to whom, and how many bytes.

    ``nbytes`` is the exact encoded size of the message; ``via`` names the
    relaying party of a relayed message. Values are never recorded.
    """

    step: int
    session: str
    sender: str
    receiver: str
    type: str
    nbytes: int
    fields: tuple[FieldRecord, ...]
    via: str | None = None

    @property
    def kinds(self) -> set[str]:
        return {f.kind for f in self.fields}


def _field_shape(value) -> tuple[int, ...]:
    if isinstance(value, (CiphertextArray, PlainArray)):
        return value.shape
    shape = getattr(value, "shape", None)
    return tuple(int(s) for s in shape) if shape is not None else ()


@dataclass
class Transcript:
    """An append-only list of :class:`~ftl.federation.TranscriptRecord`.

    ``estimator.transcript_`` is one of these; :func:`ftl.report` and
    ``ftl report`` render it.

    Attributes
    ----------
    records : list of TranscriptRecord
        The messages in the order they crossed.
    log_path : path, optional
        If given, every new record is also appended to this JSON-lines file as it
        is made (the audit log of ``ftl serve`` and of :class:`ftl.RemoteParty`);
        :meth:`from_jsonl` and ``ftl report`` read it.
    """

    records: list[TranscriptRecord] = field(default_factory=list)
    log_path: str | Path | None = field(default=None, repr=False)

    def record(
        self,
        session: str,
        sender: str,
        receiver: str,
        message: Message,
        nbytes: int,
        via: str | None = None,
    ) -> TranscriptRecord:
        """Append the metadata of ``message`` (never its values) and return it."""
        schema = schema_for(message.type)
        fields = tuple(
            FieldRecord(
                name=name,
                kind=(
                    ValueKind.PLAINTEXT.value
                    if isinstance(message.fields[name], PlainArray)
                    else spec.kind.value
                ),
                form=spec.form,
                shape=_field_shape(message.fields[name]),
                per_sample=spec.per_sample,
                key_id=getattr(message.fields[name], "key_id", None),
            )
            for name, spec in sorted(schema.fields.items())
        )
        return self._append(session, sender, receiver, message.type, nbytes, fields, via)

    def record_encoded(
        self,
        session: str,
        sender: str,
        receiver: str,
        payload: bytes,
        via: str | None = None,
    ) -> TranscriptRecord:
        """Like :meth:`record`, for an encoded message: reads only its header.

        The transports use this to log what crossed without decoding (and
        copying) the payload a second time.
        """
        header, _ = parse_header(payload)
        schema = schema_for(str(header.get("type")))
        metas = {m.get("name"): m for m in header.get("fields", []) if isinstance(m, dict)}
        if sorted(metas) != sorted(schema.fields):
            raise MessageError(f"{schema.name}: field list does not match schema")
        fields = tuple(
            FieldRecord(
                name=name,
                kind=(
                    ValueKind.PLAINTEXT.value
                    if metas[name].get("scheme") == "plain"
                    else spec.kind.value
                ),
                form=spec.form,
                shape=tuple(int(s) for s in metas[name].get("shape", ())),
                per_sample=spec.per_sample,
                key_id=metas[name].get("key_id"),
            )
            for name, spec in sorted(schema.fields.items())
        )
        return self._append(session, sender, receiver, schema.name, len(payload), fields, via)

    def _append(self, session, sender, receiver, type_, nbytes, fields, via) -> TranscriptRecord:
        rec = TranscriptRecord(
            step=len(self.records),
            session=session,
            sender=sender,
            receiver=receiver,
            type=type_,
            nbytes=nbytes,
            fields=fields,
            via=via,
        )
        self.records.append(rec)
        if self.log_path is not None:
            # Append-only audit log: one line per record, flushed as it happens so
            # that a crash loses nothing already sent.
            with Path(self.log_path).open("a", encoding="utf-8") as fh:
                fh.write(json.dumps(asdict(rec)) + "\n")
        return rec

    def __len__(self) -> int:
        return len(self.records)

    def __iter__(self):
        return iter(self.records)

    @property
    def total_bytes(self) -> int:
        """Total encoded size of all messages, in bytes."""
        return sum(r.nbytes for r in self.records)

    def bytes_by_type(self) -> dict[str, int]:
        """Total bytes per message type."""
        out: Counter[str] = Counter()
        for r in self.records:
            out[r.type] += r.nbytes
        return dict(out)

    def messages_by_kind(self) -> dict[str, int]:
        """Number of messages carrying each value kind (a message may carry several)."""
        out: Counter[str] = Counter()
        for r in self.records:
            for kind in r.kinds:
                out[kind] += 1
        return dict(out)

    def extend(self, other: Transcript) -> None:
        """Append the records of ``other``, renumbering their steps after ours."""
        offset = len(self.records)
        for r in other.records:
            self.records.append(TranscriptRecord(**{**asdict_shallow(r), "step": offset + r.step}))

    def to_jsonl(self, path: str | Path) -> Path:
        """Write one JSON object per record to ``path``; return the path."""
        path = Path(path)
        with path.open("w", encoding="utf-8") as fh:
            for r in self.records:
                fh.write(json.dumps(asdict(r)) + "\n")
        return path

    @classmethod
    def from_jsonl(cls, path: str | Path) -> Transcript:
        """Read a transcript written by :meth:`to_jsonl`."""
        records = []
        with Path(path).open(encoding="utf-8") as fh:
            for line in fh:
                raw = json.loads(line)
                raw["fields"] = tuple(
                    FieldRecord(**{**f, "shape": tuple(f["shape"])}) for f in raw["fields"]
                )
                records.append(TranscriptRecord(**raw))
        return cls(records)


def asdict_shallow(record: TranscriptRecord) -> dict:
    return {name: getattr(record, name) for name in record.__dataclass_fields__}
