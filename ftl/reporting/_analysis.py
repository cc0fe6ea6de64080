"""What a transcript shows: parties, value kinds, data categories, key owners.

Only metadata is read -- types, directions, sizes, each field's declared value
kind, key fingerprint and ciphertext width -- because that is all a transcript
records (docs/protocols.md §5.7). What is protocol-specific comes from the
protocols' disclosures (:mod:`ftl.federation.disclosure`).
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from ftl.federation.disclosure import Framing, ReturnedByDesign
from ftl.federation.transcript import FieldRecord, Transcript, TranscriptRecord
from ftl.reporting._input import as_transcript
from ftl.reporting._protocols import Declared, declared

__all__ = ["KIND_ORDER", "Analysis", "Category", "analyse", "direction", "payload_kind"]

#: Value kinds from most to least sensitive; also the plotting order.
KIND_ORDER = ("plaintext", "ciphertext", "masked", "own_result", "public")


def payload_kind(record: TranscriptRecord) -> str:
    """The most sensitive value kind a message carries (``"none"`` without fields).

    Sensitivity order: ``plaintext``, ``ciphertext``, ``masked``, ``own_result``,
    ``public``. Payload bytes are dominated by the row-sized fields, which are the
    protected ones, so this is the kind a message's bytes are attributed to.

    Parameters
    ----------
    record : TranscriptRecord

    Returns
    -------
    str
    """
    kinds = record.kinds
    for kind in KIND_ORDER:
        if kind in kinds:
            return kind
    return sorted(kinds)[0] if kinds else "none"


@dataclass(frozen=True)
class Category:
    """A data category of the report: the key a protocol's hooks see, and its text."""

    key: str
    label: str
    meaning: str


_PLAINTEXT = Category(
    "plaintext",
    "PLAINTEXT values",
    "Values that a secure run sends encrypted or masked crossed IN THE CLEAR "
    "(`encryption=None`, debugging and measurement only).",
)
_UNPROTECTED = Category(
    "unprotected",
    "Per-sample values neither encrypted nor masked",
    "Row-level values outside PSI that are not ciphertexts or masked values.",
)
_PS_CIPHERTEXT = Category(
    "ps_ciphertext",
    "Per-sample ciphertexts",
    "Paillier ciphertexts, one or more per data row, under the sender's own key: "
    "the receiver cannot decrypt them.",
)
_PS_MASKED = Category(
    "ps_masked",
    "Per-sample masked values",
    "Row-level values blinded by an additive mask (at least 40 bits of statistical "
    "slack) that only the party which drew it knows.",
)
_AGG_CIPHERTEXT = Category(
    "agg_ciphertext",
    "Encrypted aggregates",
    "Batch-level values under a key the receiver does not hold.",
)
_AGG_MASKED = Category(
    "agg_masked",
    "Masked aggregates",
    "Batch-level cross terms, masked before the key owner decrypts them and "
    "unmasked only by the party that drew the mask.",
)
_OWN_RESULT = Category(
    "own_result", "Receiver's own results", "Values that belong to the receiver."
)
_PUBLIC = Category(
    "public",
    "Public metadata",
    "Parameters, public keys, sizes, row and batch positions, weight-norm scalars: "
    "in the clear by design; §4 lists what they reveal.",
)


def _public_by_design(protocols: tuple[Declared, ...]) -> dict[str, Category]:
    """Message prefix -> the category of that protocol's per-sample public values."""
    return {
        d.prefix: Category("ps_public", p.label, p.meaning)
        for d in protocols
        if (p := d.disclosure.public_per_sample) is not None
    }


def _categories(public_by_design: dict[str, Category]) -> tuple[Category, ...]:
    """The data categories in display order: each protocol's per-sample values
    that are public by design come after the aggregates."""
    return (
        _PLAINTEXT,
        _UNPROTECTED,
        _PS_CIPHERTEXT,
        _PS_MASKED,
        _AGG_CIPHERTEXT,
        _AGG_MASKED,
        *public_by_design.values(),
        _OWN_RESULT,
        _PUBLIC,
    )


def direction(record: TranscriptRecord) -> str:
    """``"sender → receiver"``, with the relaying party of a relayed message."""
    arrow = f"{record.sender} → {record.receiver}"
    return f"{arrow} (via {record.via})" if record.via else arrow


def _guest_of(transcript: Transcript) -> str | None:
    """The driver: sender of the first session-opening message, else the hub."""
    for r in transcript:
        if r.type.endswith("open"):  # by convention, e.g. "<prefix>open", "<prefix>predict_open"
            return r.sender
    parties = [{r.sender, r.receiver} for r in transcript]
    if not parties:
        return None
    common = set.intersection(*parties)
    return next(iter(common)) if len(common) == 1 else None


@dataclass
class TypeStats:
    """Messages of one type: how many, how many bytes, which directions and kinds."""

    count: int = 0
    nbytes: int = 0
    directions: dict[str, None] = field(default_factory=dict)  # an ordered set
    kinds: set[str] = field(default_factory=set)


@dataclass
class Analysis:
    """What a transcript shows (implements :class:`ftl.federation.disclosure.Findings`)."""

    transcript: Transcript
    estimator: Any | None
    source: str
    protocols: tuple[Declared, ...]
    parties: list[str]
    guest: str | None
    types: dict[str, TypeStats]
    categories: dict[Category, dict[str, None]]  # category -> "type.field" (ordered set)
    category_messages: Counter
    plaintext_fields: list[str]
    per_sample_plaintext: list[str]
    key_ids: list[str]
    key_owner: dict[str, str]  # key fingerprint -> party
    key_bits: dict[str, int]  # key fingerprint -> modulus size, where widths were recorded
    to_key_owner: list[str]
    returned_by_design: dict[str, ReturnedByDesign]  # "type.field (direction)" -> why

    # ------------------------------------------------------------ Findings
    @property
    def n_hosts(self) -> int:
        return max(len(self.parties) - 1, 0)

    @property
    def type_set(self) -> set[str]:
        return set(self.types)

    @property
    def message_types(self) -> list[str]:
        return list(self.types)

    def directions(self, msg_type: str) -> list[str]:
        return list(self.types[msg_type].directions)

    def fields_in(self, category: str) -> list[str]:
        return [name for c, names in self.categories.items() if c.key == category for name in names]

    def describe_field(self, record: TranscriptRecord, f: FieldRecord) -> str:
        bits = [f.kind]
        if f.per_sample:
            bits.append("per-sample")
        if f.key_id:
            owner = self.key_owner.get(f.key_id)
            if owner is not None and owner == record.receiver:
                bits.append("under the receiver's key")
            elif owner is not None and owner == record.sender:
                bits.append("under the sender's key")
            else:
                bits.append(f"under key `{f.key_id}`")
        return f"`{f.name}` ({', '.join(bits)})"

    # ------------------------------------------------------------ protocols
    @property
    def present(self) -> list[Declared]:
        """The protocols whose messages are in the transcript."""
        return [d for d in self.protocols if any(d.owns(t) for t in self.types)]

    @property
    def framed_by(self) -> Declared | None:
        """The first present protocol documented outside docs/protocols.md."""
        return next((d for d in self.present if d.disclosure.framing is not None), None)

    @property
    def framing(self) -> Framing | None:
        """How that protocol frames the report (``None``: docs/protocols.md does)."""
        framed_by = self.framed_by
        return framed_by.disclosure.framing if framed_by is not None else None

    @property
    def listed(self) -> list[Declared]:
        """The protocols whose leakages and sections the report lists."""
        present, framed = self.present, self.framed_by is not None
        return [
            d
            for d in self.protocols
            if d in present
            or d.disclosure.listed == "always"
            or (d.disclosure.listed == "unless_framed" and not framed)
        ]

    @property
    def unprotected_fields(self) -> list[str]:
        """Per-sample fields that are neither ciphertexts, masked nor public by design."""
        return list(self.categories[_UNPROTECTED])

    def crossed_in_plaintext(self, d: Declared) -> bool:
        """Whether fields of protocol ``d`` crossed in plaintext."""
        return any(d.owns(name) for name in self.plaintext_fields)


def _category(public: dict[str, Category], record: TranscriptRecord, f: FieldRecord) -> Category:
    if f.kind == "plaintext":
        return _PLAINTEXT
    if f.per_sample:
        if f.kind == "ciphertext":
            return _PS_CIPHERTEXT
        if f.kind == "masked":
            return _PS_MASKED
        if f.kind == "public":
            return next(
                (c for prefix, c in public.items() if record.type.startswith(prefix)),
                _UNPROTECTED,
            )
        return _UNPROTECTED
    if f.kind == "ciphertext":
        return _AGG_CIPHERTEXT
    if f.kind == "masked":
        return _AGG_MASKED
    if f.kind == "own_result":
        return _OWN_RESULT
    return _PUBLIC


def analyse(obj: Any) -> Analysis:
    """Read a transcript (see :func:`~ftl.reporting.as_transcript`) for the report."""
    transcript, estimator, source = as_transcript(obj)
    protocols = declared()
    owner_types = {t for d in protocols for t in d.disclosure.owner_types}
    by_design = {rb.field: rb for d in protocols for rb in d.disclosure.returned_by_design}
    public_by_design = _public_by_design(protocols)
    parties: dict[str, None] = {}
    types: dict[str, TypeStats] = {}
    cats: dict[Category, dict[str, None]] = {c: {} for c in _categories(public_by_design)}
    category_messages: Counter = Counter()
    key_owner: dict[str, str] = {}
    key_ids: dict[str, None] = {}
    key_bits: dict[str, int] = {}
    per_sample_plaintext: dict[str, None] = {}
    openers: dict[tuple[str, str], str] = {}  # (opening type, session) -> its sender
    for r in transcript:
        parties.setdefault(r.sender)
        parties.setdefault(r.receiver)
        stats = types.setdefault(r.type, TypeStats())
        stats.count += 1
        stats.nbytes += r.nbytes
        stats.directions.setdefault(direction(r))
        stats.kinds |= r.kinds
        seen = set()
        for f in r.fields:
            cat = _category(public_by_design, r, f)
            cats[cat].setdefault(f"{r.type}.{f.name}")
            seen.add(cat)
            if f.kind == "plaintext" and f.per_sample:
                per_sample_plaintext.setdefault(f"{r.type}.{f.name}")
            if f.key_id:
                key_ids.setdefault(f.key_id)
                if f.width:
                    key_bits.setdefault(f.key_id, 4 * f.width)
                if r.type in owner_types and f.kind == "ciphertext" and not r.via:
                    key_owner.setdefault(f.key_id, r.sender)
        openers.setdefault((r.type, r.session), r.sender)
        for cat in seen:
            category_messages[cat] += 1
    to_owner: dict[str, None] = {}
    returned: dict[str, ReturnedByDesign] = {}
    for r in transcript:
        for f in r.fields:
            if f.kind == "ciphertext" and f.key_id and key_owner.get(f.key_id) == r.receiver:
                label = f"{r.type}.{f.name} ({direction(r)})"
                rb = by_design.get(f"{r.type}.{f.name}")
                opened = () if rb is None else (rb.opened_by, *rb.reopened_by)
                if any(openers.get((t, r.session)) == r.receiver for t in opened):
                    returned.setdefault(label, rb)
                else:
                    to_owner.setdefault(label)
    return Analysis(
        transcript=transcript,
        estimator=estimator,
        source=source,
        protocols=protocols,
        parties=list(parties),
        guest=_guest_of(transcript),
        types=types,
        categories=cats,
        category_messages=category_messages,
        plaintext_fields=list(cats[_PLAINTEXT]),
        per_sample_plaintext=list(per_sample_plaintext),
        key_ids=list(key_ids),
        key_owner=key_owner,
        key_bits=key_bits,
        to_key_owner=list(to_owner),
        returned_by_design=returned,
    )
