"""The audit log of everything that crossed a party boundary."""

from __future__ import annotations

import json
from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path

from ftl.crypto.arrays import CiphertextArray, PlainArray
from ftl.federation.codec import Header, read_header
from ftl.federation.schema import Message, ValueKind, schema_for

__all__ = [
    "ACCEPTED",
    "REFUSED",
    "REPEATED",
    "UNREADABLE",
    "FieldRecord",
    "Transcript",
    "TranscriptRecord",
]

#: Outcomes of a request in a host's audit log (``TranscriptRecord.outcome``):
#: run, refused (nothing changed), or an exact retransmission answered with the
#: stored reply (nothing ran again).
ACCEPTED = "accepted"
REFUSED = "refused"
REPEATED = "repeated"
#: ``TranscriptRecord.type`` of a refused request whose header was never read.
UNREADABLE = "(unreadable)"
#: Longest refusal reason kept in the log (the peer chose part of its text).
_MAX_REASON = 300


@dataclass(frozen=True)
class FieldRecord:
    """What one field of a message was: its value kind, form and shape.

    ``kind`` is the declared value kind (``"ciphertext"``, ``"masked"``,
    ``"public"``, ``"own_result"``, or ``"plaintext"`` for values sent with
    ``encryption=None``); ``per_sample`` says whether the field runs over data
    rows; ``key_id`` is the key fingerprint of a ciphertext field and ``width``
    its bytes per ciphertext on the wire (a Paillier ciphertext is below n², so
    a modulus of k bits, k divisible by 4, gives ``width = k / 4``; ``None`` in
    transcripts written before widths were recorded).
    """

    name: str
    kind: str
    form: str
    shape: tuple[int, ...]
    per_sample: bool
    key_id: str | None = None
    width: int | None = None


@dataclass(frozen=True)
class TranscriptRecord:
    """One message: who sent what kind of value to whom, and how many bytes.

    ``nbytes`` is the exact encoded size of the message; ``via`` names the
    relaying party of a relayed message. Values are never recorded.

    In a served party's audit log each request also carries the operation it
    named (``op``) and its ``outcome``: ``"accepted"``, or ``"refused"`` with
    ``error`` naming the error class and reason. A request refused before its
    header could be read has type ``"(unreadable)"`` and no fields; ``nbytes``
    is then its declared length.
    """

    step: int
    session: str
    sender: str
    receiver: str
    type: str
    nbytes: int
    fields: tuple[FieldRecord, ...]
    via: str | None = None
    op: str | None = None
    outcome: str | None = None
    error: str | None = None

    @property
    def refused(self) -> bool:
        return self.outcome == REFUSED

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
    keep : int, optional
        Keep only about this many of the latest records in memory (a long-running
        server; the log file keeps them all). Steps keep counting.
    """

    records: list[TranscriptRecord] = field(default_factory=list)
    log_path: str | Path | None = field(default=None, repr=False)
    keep: int | None = field(default=None, repr=False)
    _next_step: int = field(default=0, init=False, repr=False, compare=False)
    #: A served party's last recorded privacy-budget readings, per peer.
    budget: dict = field(default_factory=dict, repr=False, compare=False)
    #: What a served party dropped because its lease ran out (latest ``keep``).
    expired: list = field(default_factory=list, repr=False, compare=False)

    def record_budget(self, peer: str, readings: dict) -> None:
        """Log a peer's privacy-budget readings (a served party, after admitting a
        session); ``ftl report`` on the audit log shows the latest per peer."""
        self.budget[peer] = readings
        if self.log_path is not None:
            with Path(self.log_path).open("a", encoding="utf-8") as fh:
                fh.write(json.dumps({"budget": {"peer": peer, "readings": readings}}) + "\n")

    def record_expiry(self, peer: str, kind: str, key: str, idle_seconds: float) -> None:
        """Log that a served party dropped what it kept for ``peer`` (an alignment, a
        model shard in memory; ``kind``) after ``idle_seconds`` unused."""
        entry = {"peer": peer, "kind": kind, "id": key, "idle_seconds": round(idle_seconds, 3)}
        self.expired.append(entry)
        if self.keep is not None and len(self.expired) > 2 * self.keep:
            del self.expired[: len(self.expired) - self.keep]
        if self.log_path is not None:
            with Path(self.log_path).open("a", encoding="utf-8") as fh:
                fh.write(json.dumps({"expired": entry}) + "\n")

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
                width=getattr(message.fields[name], "width", None),
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
        header = read_header(payload)
        return self._append(
            session, sender, receiver, header.type, header.length, _header_fields(header), via
        )

    def record_request(
        self,
        session: str,
        sender: str,
        receiver: str,
        *,
        op: str | None,
        nbytes: int,
        header: Header | None = None,
        error: str | None = None,
        outcome: str | None = None,
    ) -> TranscriptRecord:
        """Log a request a served party received, with its outcome.

        Parameters
        ----------
        session, sender, receiver : str
            As in :meth:`record`.
        op : str or None
            The operation the request named (``None`` if that was malformed).
        nbytes : int
            The request's size (declared, if it was refused before being read).
        header : Header, optional
            The request's checked header, if it got that far: its type and field
            shapes are logged (never values).
        error : str, optional
            Why it was refused (``"ErrorClass: reason"``); ``None`` if it was not.
        outcome : str, optional
            Default :data:`ACCEPTED`, or :data:`REFUSED` if ``error`` is given;
            :data:`REPEATED` for a retransmission answered with the stored reply.
        """
        if header is None:
            type_, fields = UNREADABLE, ()
        else:
            type_, fields = header.type, _header_fields(header)
        reason = error
        if reason is not None and len(reason) > _MAX_REASON:
            reason = reason[: _MAX_REASON - 3] + "..."
        if outcome is None:
            outcome = ACCEPTED if error is None else REFUSED
        return self._append(
            session,
            sender,
            receiver,
            type_,
            nbytes,
            fields,
            None,
            op=op,
            outcome=outcome,
            error=reason,
        )

    def _append(
        self, session, sender, receiver, type_, nbytes, fields, via, **outcome
    ) -> TranscriptRecord:
        step = max(self._next_step, len(self.records))
        self._next_step = step + 1
        rec = TranscriptRecord(
            step=step,
            session=session,
            sender=sender,
            receiver=receiver,
            type=type_,
            nbytes=nbytes,
            fields=fields,
            via=via,
            **outcome,
        )
        self.records.append(rec)
        if self.keep is not None and len(self.records) > 2 * self.keep:
            del self.records[: len(self.records) - self.keep]  # amortised: every keep records
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
        records, budget, expired = [], {}, []
        with Path(path).open(encoding="utf-8") as fh:
            for line in fh:
                raw = json.loads(line)
                if "budget" in raw and "step" not in raw:  # a host's budget readings
                    budget[raw["budget"]["peer"]] = raw["budget"]["readings"]
                    continue
                if "expired" in raw and "step" not in raw:  # a host's expired state
                    expired.append(raw["expired"])
                    continue
                raw["fields"] = tuple(
                    FieldRecord(**{**f, "shape": tuple(f["shape"])}) for f in raw["fields"]
                )
                records.append(TranscriptRecord(**raw))
        return cls(records, budget=budget, expired=expired)


def _header_fields(header: Header) -> tuple[FieldRecord, ...]:
    """What :meth:`Transcript.record` logs of each field, from a checked header."""
    layouts = {f.name: f for f in header.fields}
    return tuple(
        FieldRecord(
            name=name,
            kind=(
                ValueKind.PLAINTEXT.value
                if layouts[name].meta.get("scheme") == "plain"
                else spec.kind.value
            ),
            form=spec.form,
            shape=layouts[name].shape or (),
            per_sample=spec.per_sample,
            key_id=layouts[name].meta.get("key_id"),
            width=layouts[name].meta.get("width") if "key_id" in layouts[name].meta else None,
        )
        for name, spec in sorted(header.schema.fields.items())
    )


def asdict_shallow(record: TranscriptRecord) -> dict:
    return {name: getattr(record, name) for name in record.__dataclass_fields__}
