"""What PSI declares about itself to the audit report (docs/protocols.md §2)."""

from __future__ import annotations

from ftl.federation.disclosure import (
    Disclosure,
    Findings,
    Leakage,
    Para,
    PublicPerSample,
    Section,
    Table,
)

__all__ = ["DISCLOSURE"]

_PREFIX = "psi."


def _ran(a: Findings) -> bool:
    return any(t.startswith(_PREFIX) for t in a.type_set)


def _mode(types: set[str]) -> str:
    if "psi.host_points_reblinded" in types or "psi.assign" in types:
        return "default (full alignment: both sides learn the intersection)"
    if "psi.shuffled_doubles" in types:
        return "cardinality-only (both sides learn only the intersection size)"
    return "undetermined (incomplete PSI run)"


def _section(a: Findings) -> Section:
    """The PSI mode and sessions, or where an estimator's PSI messages are."""
    psi_types = [name for name in a.message_types if name.startswith(_PREFIX)]
    if not psi_types:
        return Section(
            "Private set intersection",
            [
                Para(
                    "No PSI messages in this transcript. An estimator's `transcript_` covers "
                    "fit and predict only; the PSI messages of `ftl.align` are in "
                    '`X.alignment.psi["transcript"]`.'
                )
            ],
        )
    sessions = {r.session for r in a.transcript if r.type.startswith(_PREFIX)}
    rows = [
        ("Mode", _mode(set(psi_types))),
        ("Sessions (one per host and run)", str(len(sessions))),
        ("Message types seen", ", ".join(f"`{n}`" for n in psi_types)),
    ]
    resumes = sum(r.type == "psi.resume" for r in a.transcript)
    if resumes:  # a resumed run goes on in a new session: same run, not a new one
        rows.append(("Resumes (a run going on in a new session, §2.8)", str(resumes)))
    return Section("Private set intersection", [Table(("item", "value"), rows)])


DISCLOSURE = Disclosure(
    listed="always",  # every federated run starts with an alignment
    public_per_sample=PublicPerSample(
        label="Per-sample PSI values (public by design)",
        meaning="DDH-blinded elliptic-curve points and aligned positions; they reveal nothing "
        "about ids that are not shared (§2, §2.7). No message carries an id or its hash.",
        check_note="PSI points are public by design",
    ),
    leakages=(
        Leakage(
            "PSI",
            "Set sizes are revealed to both sides. Except in cardinality-only mode, each side "
            "learns which of its own rows are shared and the aligned order. The guest learns "
            "every host's column names (in every mode).",
            "§2.7, §5.4",
            applies=_ran,
        ),
        Leakage(
            "PSI",
            "Several hosts: the guest learns which hosts hold each of its rows; each host "
            "learns which of its guest-shared customers some other host lacks.",
            "§2.7, §5.5",
            applies=lambda a: _ran(a) and a.n_hosts > 1,
        ),
    ),
    section=_section,
)
