"""What a protocol tells the audit report about itself.

A protocol package declares one :class:`Disclosure` (in its ``_disclosure.py``)
and hands it to the registry as ``ProtocolSpec(report=...)``. The audit report
(:mod:`ftl.reporting`) reads the disclosures of every registered protocol and
never names a protocol: which message types carry the sender's values under its
own key, which ciphertexts go back to their key owner by design, the leakages the
protocol documents and when each applies, its own report section, and the facts
only its estimator knows (e.g. the effective sigmoid approximation).

The report hands a protocol's hooks a :class:`Findings` -- what the transcript
shows -- and renders the blocks a hook returns (:class:`Section`,
:class:`Table`, :class:`Para`, :class:`Bullets`). This module holds only these
data types, so that a protocol can describe itself without importing the report.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any, Literal, Protocol

from ftl.federation.transcript import FieldRecord, Transcript, TranscriptRecord

__all__ = [
    "Bullets",
    "Disclosure",
    "Findings",
    "Framing",
    "Leakage",
    "Para",
    "PublicPerSample",
    "ReturnedByDesign",
    "Section",
    "Table",
]


# ---------------------------------------------------------------- document blocks
@dataclass
class Table:
    """A table: a header row and rows of cells (inline code in backticks)."""

    header: Sequence[str]
    rows: list[Sequence[str]]


@dataclass
class Bullets:
    """A bulleted list."""

    items: list[str]


@dataclass
class Para:
    """A paragraph."""

    text: str


@dataclass
class Section:
    """A titled section of blocks; ``warning`` sections are rendered prominently."""

    title: str
    blocks: list[Table | Bullets | Para]
    warning: bool = False


# ---------------------------------------------------------------- what the report knows
class Findings(Protocol):
    """What the report found in a transcript; the argument of a protocol's hooks.

    Field names are written ``"<message type>.<field>"``. Data categories are
    named by these keys: ``"plaintext"``, ``"unprotected"`` (per-sample, neither
    encrypted nor masked), ``"ps_ciphertext"``, ``"ps_masked"`` (per-sample),
    ``"agg_ciphertext"``, ``"agg_masked"`` (aggregates), ``"ps_public"``
    (per-sample values a protocol declares public by design), ``"own_result"``
    and ``"public"``.
    """

    transcript: Transcript
    #: Every party, in order of first appearance.
    parties: list[str]
    #: The driver (the party that opens sessions), if it could be inferred.
    guest: str | None
    #: Fields that crossed in plaintext (``encryption=None``).
    plaintext_fields: list[str]

    @property
    def n_hosts(self) -> int:
        """Number of parties besides the driver."""

    @property
    def type_set(self) -> set[str]:
        """The message types in the transcript."""

    @property
    def message_types(self) -> list[str]:
        """The message types in the transcript, in order of first appearance."""

    def directions(self, msg_type: str) -> list[str]:
        """``"sender → receiver"`` of every direction ``msg_type`` crossed in."""

    def fields_in(self, category: str) -> list[str]:
        """The fields found in a data category (see the class docstring)."""

    def describe_field(self, record: TranscriptRecord, f: FieldRecord) -> str:
        """One field of a message: its kind, per-sample or not, and whose key."""


# ---------------------------------------------------------------- a protocol's declaration
@dataclass(frozen=True)
class Leakage:
    """One documented leakage: who learns what, and whether this run shows it.

    Attributes
    ----------
    phase : str
        When it happens, as shown: ``"PSI"``, ``"training"``, ``"prediction"``
        or ``"all"``.
    text : str
        What is revealed to whom (Markdown inline code in backticks).
    reference : str
        Where it is documented (``"§5.2"`` for a section of docs/protocols.md,
        else a path or file name).
    applies : callable
        ``applies(findings) -> bool``: whether the transcript shows the phase
        in which this leakage occurs.
    """

    phase: str
    text: str
    reference: str
    applies: Callable[[Findings], bool]


@dataclass(frozen=True)
class ReturnedByDesign:
    """A ciphertext field that goes back to its key owner by design.

    The report accepts it only when the receiver opened the message's session
    with a message of type ``opened_by`` (and so made the key for it), or re-opened
    it with one of ``reopened_by`` (a resumed run, under the key it made before).

    Attributes
    ----------
    field : str
        ``"<message type>.<field>"``.
    opened_by : str
        The message type the key owner opens the session with.
    reason : str
        Why this is not a failure (shown with the passed check).
    reopened_by : tuple of str, default=()
        The message types the key owner resumes a session with.
    """

    field: str
    opened_by: str
    reason: str
    reopened_by: tuple[str, ...] = ()


@dataclass(frozen=True)
class PublicPerSample:
    """Per-sample fields of kind ``public`` that are public by design.

    Without this declaration a protocol's per-sample public fields fail the
    report's check that per-sample values are ciphertexts or masked.

    Attributes
    ----------
    label : str
        The data category's name in the report.
    meaning : str
        What the values are and why they reveal nothing more.
    check_note : str
        Short note on the passed per-sample check.
    """

    label: str
    meaning: str
    check_note: str


@dataclass(frozen=True)
class Framing:
    """How a protocol documented outside ``docs/protocols.md`` frames the report.

    When a protocol with a framing appears in a transcript, the report names
    the protocol in its summary, names the parties' roles the protocol's way,
    and introduces the leakages with the protocol's own references.

    Attributes
    ----------
    roles : (str, str)
        The role of the party that opens sessions, and of every other party.
    parties_note : str
        How the roles were inferred (the paragraph above the parties table).
    key_scope : str
        Which keys a key size applies to (``"every key (...)"``).
    leakage_intro : str
        The paragraph above the leakages table.
    """

    roles: tuple[str, str]
    parties_note: str
    key_scope: str
    leakage_intro: str


Listing = Literal["always", "unless_framed", "when_present"]


@dataclass(frozen=True)
class Disclosure:
    """What a protocol declares about itself to the audit report.

    Attributes
    ----------
    listed : {"always", "unless_framed", "when_present"}, default="when_present"
        When the report lists the protocol's leakages and section: in every
        report (the alignment, which precedes every run); whenever no protocol
        with a :class:`Framing` appears, or when its own messages do (the
        protocols of docs/protocols.md, whose leakage table the report
        reproduces); or only when its own messages appear. Listed protocols
        appear in this order (the alignment first), then in registration order.
    name : str, optional
        The protocol's name in the summary's *Protocol* row, which a framed
        report shows (a framing protocol without one is named by its spec's
        title; other protocols without one are left out of the row).
    owner_types : frozenset of str
        Message types whose ciphertext fields are under the *sender's own* key:
        the sender of the first one that carries a key fingerprint owns that key.
    returned_by_design : tuple of ReturnedByDesign
        Ciphertext fields that go back to their key owner by design.
    public_per_sample : PublicPerSample, optional
        The protocol's per-sample ``public`` fields are public by design.
    leakages : tuple of Leakage
        The documented leakages, in display order.
    plaintext_values : str
        What a plaintext-mode run sent in the clear, as inserted into the
        plaintext warning (with its leading space and delimiters).
    framing : Framing, optional
        Set by a protocol documented outside docs/protocols.md.
    section : callable, optional
        ``section(findings) -> Section``: the protocol's own report section.
    category_note : callable, optional
        ``category_note(category, findings) -> str``: text appended to the
        meaning of a data category (see :class:`Findings`) when the
        protocol's messages appear; ``""`` for none.
    estimator_facts : callable, optional
        ``estimator_facts(estimator) -> list of (item, value)``: summary rows
        only the protocol's fitted estimator knows (e.g. the effective
        approximation it trained with, its iteration counts).
    """

    listed: Listing = "when_present"
    name: str | None = None
    owner_types: frozenset[str] = frozenset()
    returned_by_design: tuple[ReturnedByDesign, ...] = ()
    public_per_sample: PublicPerSample | None = None
    leakages: tuple[Leakage, ...] = ()
    plaintext_values: str = ""
    framing: Framing | None = None
    section: Callable[[Findings], Section] | None = None
    category_note: Callable[[str, Findings], str] | None = None
    estimator_facts: Callable[[Any], Iterable[tuple[str, str]]] | None = None
