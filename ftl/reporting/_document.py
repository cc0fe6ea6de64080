"""The report as a document: a title and sections of tables, bullets and paragraphs.

Sections in order: summary, warnings (when a check fails), checks, parties,
messages by type, data categories, the listed protocols' own sections, the
privacy budget (host audit logs) and the documented leakages. Rendering is
:mod:`ftl.reporting._markdown` and :mod:`ftl.reporting._html`.
"""

from __future__ import annotations

from collections.abc import Sequence

from ftl.federation.disclosure import Bullets, Leakage, Para, Section, Table
from ftl.federation.messages import MessageError, schema_for
from ftl.reporting._analysis import KIND_ORDER, Analysis
from ftl.reporting._checks import checks, code_list, key_info
from ftl.reporting._protocols import facts_of

__all__ = ["build", "human_bytes"]

_DOCS = "docs/protocols.md"

#: Roles and the note on them when no protocol frames the report.
_ROLES = ("guest (driver)", "host")
_PARTIES_NOTE = (
    "Roles are inferred: the guest is the party that opens sessions. "
    "Relayed messages are counted twice, as on the wire (§5.7)."
)
_LEAKAGE_INTRO = (
    "What the protocols reveal by design, even when every check above "
    f"passes. Full statements and assumptions: `{_DOCS}` §4 (Who learns "
    "what) and §5 (Known leakages, non-goals and the transcript)."
)
#: The library's non-goals (docs/protocols.md §5.6), listed in every report.
_NON_GOALS = Leakage(
    "all",
    "Non-goals: no security against malicious parties, no differential privacy, no "
    "transport security (in-process endpoint only), no constant-time arithmetic, no "
    "post-quantum security.",
    "§5.6",
    applies=lambda findings: True,
)


def human_bytes(n: float) -> str:
    """A byte count with a decimal unit: ``"999 B"``, ``"1.5 kB"``, ``"2.0 MB"``."""
    for unit in ("B", "kB", "MB", "GB"):
        if abs(n) < 1000 or unit == "GB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1000
    return f"{n:.1f} GB"  # pragma: no cover


def build(a: Analysis, title: str) -> tuple[str, list[Section]]:
    """The report's title and sections."""
    key_text, key_size = key_info(a)
    check_rows, warnings = checks(a, key_size)
    sections = [_summary(a, key_text)]
    if warnings:
        sections.append(Section("WARNINGS", [Bullets(warnings)], warning=True))
    sections.append(Section("Checks", [Table(("check", "result", "details"), check_rows)]))
    sections += [_parties(a), _message_types(a), _data_categories(a)]
    sections += [d.disclosure.section(a) for d in a.listed if d.disclosure.section is not None]
    budget = _budget(a)
    if budget is not None:
        sections.append(budget)
    sections.append(_leakages(a))
    return title, sections


def _summary(a: Analysis, key_text: str) -> Section:
    t = a.transcript
    rows = [
        ("Source", a.source),
        ("Parties", ", ".join(f"`{p}`" for p in a.parties) or "none"),
        ("Messages", f"{len(t):,}"),
        ("Bytes", f"{t.total_bytes:,} ({human_bytes(t.total_bytes)})"),
        ("Message types", str(len(a.types))),
        ("Sessions", str(len({r.session for r in t}))),
        ("Key size", key_text),
    ]
    if a.framed_by is not None:
        rows.insert(2, ("Protocol", _protocol_names(a)))
    if a.key_ids:
        fingerprints = f"{len(a.key_ids)}: " + code_list(a.key_ids)
        rows.append(("Key fingerprints in ciphertext fields", fingerprints))
    est = a.estimator
    if est is not None:
        rows.append(("Estimator", f"`{type(est).__name__}`"))
        rows.append(("Encryption", str(getattr(est, "encryption", None))))
        rows += facts_of(est, a.protocols)
    return Section("Summary", [Table(("item", "value"), rows)])


def _protocol_names(a: Analysis) -> str:
    """The framing protocol's name, then the other present protocols' names."""
    framed = a.framed_by
    text = framed.disclosure.name or framed.title
    if a.crossed_in_plaintext(framed):
        text += " -- run in PLAINTEXT MODE here (`encryption=None`)"
    others = [d.disclosure.name for d in a.present if d is not framed and d.disclosure.name]
    return "".join([text, *(f"; {name}" for name in others)])


def _parties(a: Analysis) -> Section:
    framing = a.framing
    driver, other = framing.roles if framing is not None else _ROLES
    rows = []
    for p in a.parties:
        sent = [r for r in a.transcript if r.sender == p]
        received = [r for r in a.transcript if r.receiver == p]
        role = "unknown" if a.guest is None else driver if p == a.guest else other
        rows.append(
            (
                f"`{p}`",
                role,
                f"{len(sent):,}",
                f"{sum(r.nbytes for r in sent):,}",
                f"{len(received):,}",
                f"{sum(r.nbytes for r in received):,}",
            )
        )
    header = ("party", "role", "messages sent", "bytes sent", "messages received", "bytes received")
    note = framing.parties_note if framing is not None else _PARTIES_NOTE
    return Section("Parties", [Para(note), Table(header, rows)])


def _description(msg_type: str) -> str:
    """A message type's registered description."""
    try:
        doc = schema_for(msg_type).doc
    except MessageError:
        return "(unregistered message type)"
    if doc:
        return doc
    if msg_type == "ack":
        return "Acknowledgement or session close; carries no fields."
    return "(no registered description)"


def _message_types(a: Analysis) -> Section:
    rows = [
        (
            f"`{name}`",
            f"{s.count:,}",
            f"{s.nbytes:,}",
            "; ".join(s.directions),
            ", ".join(k for k in KIND_ORDER if k in s.kinds)
            + "".join(f", {k}" for k in sorted(s.kinds - set(KIND_ORDER)))
            or "-",
            _description(name),
        )
        for name, s in a.types.items()
    ]
    header = ("message type", "messages", "bytes", "direction(s)", "value kinds", "description")
    return Section(
        "Messages by type",
        [
            Para("In order of first appearance; descriptions are the registered ones."),
            Table(header, rows),
        ],
    )


def _data_categories(a: Analysis) -> Section:
    notes = [d.disclosure.category_note for d in a.present if d.disclosure.category_note]
    rows = [
        (
            cat.label,
            f"{a.category_messages[cat]:,}",
            code_list(names),
            cat.meaning + "".join(note(cat.key, a) for note in notes),
        )
        for cat, names in a.categories.items()
        if names
    ]
    return Section(
        "Data categories exchanged",
        [
            Para(
                "Each field is classified by its declared value kind and whether it "
                "runs over data rows (per-sample). Kinds are declared by the message "
                "schemas, except that values sent in plaintext mode are recorded as "
                "`plaintext` (§1.3, §5.7)."
            ),
            Table(("category", "messages", "fields", "meaning"), rows)
            if rows
            else Para("No fields were exchanged."),
        ],
    )


def _budget(a: Analysis) -> Section | None:
    """The privacy budget of each peer as the host last recorded it (host audit logs)."""
    readings = getattr(a.transcript, "budget", None)
    if not readings:
        return None
    rows: list[Sequence[str]] = []
    exhausted = False
    for peer in sorted(readings):
        for item, value in readings[peer].items():
            if item == "limits" or not isinstance(value, dict):
                continue
            used, limit = value.get("used"), value.get("limit")
            left = "no limit" if limit is None else str(max(int(limit) - int(used), 0))
            exhausted |= limit is not None and int(used) >= int(limit)
            rows.append((f"`{peer}`", item.replace("_", " "), str(used), str(limit), left))
    return Section(
        "Privacy budget",
        [
            Para(
                "What each peer has used of the host's privacy budget in the last 24 "
                "hours, as the host recorded it with its last answer to that peer "
                "(docs/howto/deploy.md, *The privacy budget*; docs/protocols.md §5.8)."
                + (" At least one limit is used up." if exhausted else "")
            ),
            Table(("peer", "item", "used", "limit", "left"), rows),
        ],
    )


def _leakages(a: Analysis) -> Section:
    framing = a.framing
    leaks = [*(leak for d in a.listed for leak in d.disclosure.leakages), _NON_GOALS]
    if framing is None:
        intro, header = _LEAKAGE_INTRO, _DOCS
    else:
        intro, header = framing.leakage_intro, "reference"
    rows = [
        (
            leak.phase,
            leak.text,
            "yes" if leak.applies(a) else "no",
            # beside a framing protocol's own references, ours are named in full
            f"`{_DOCS}` {leak.reference}"
            if framing is not None and leak.reference.startswith("§")
            else leak.reference,
        )
        for leak in leaks
    ]
    return Section(
        "Documented leakages",
        [Para(intro), Table(("phase", "leakage", "applies here", header), rows)],
    )
