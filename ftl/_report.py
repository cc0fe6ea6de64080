"""Auditor-facing privacy report of a transcript: what crossed, between whom, and how.

:func:`report` renders a :class:`~ftl.federation.Transcript` (from a fitted
estimator, an in-memory transcript or a ``.jsonl`` file) as Markdown or as a
standalone HTML page. Only message *metadata* is used -- types, directions,
sizes and the declared value kind of every field -- because that is all a
transcript records: values never are (docs/protocols.md §5.7).

Two training protocols are recognised by their message types: vertical logistic
regression (``lr.*``, docs/protocols.md §3) and federated transfer learning
(``ftl.*``, :mod:`ftl.transfer`; not covered by docs/protocols.md, so its
leakages are stated here from the code).
"""

from __future__ import annotations

import html
import os
import re
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np

from ftl.federation.messages import MessageError, schema_for
from ftl.federation.transcript import FieldRecord, Transcript, TranscriptRecord

__all__ = ["FTL_PROTOCOL", "MIN_SECURE_KEY_SIZE", "as_transcript", "payload_kind", "report"]

#: Paillier modulus size below which the report warns (docs/protocols.md §6.1).
MIN_SECURE_KEY_SIZE = 2048

#: Value kinds from most to least sensitive; also the plotting order.
KIND_ORDER = ("plaintext", "ciphertext", "masked", "own_result", "public")

_DOCS = "docs/protocols.md"
_PROTECTED = ("ciphertext", "masked")

#: Name of the federated transfer protocol (``ftl.*`` messages) in the report.
FTL_PROTOCOL = (
    "federated transfer learning (Liu et al. 2018), secure: row-packed Paillier, masked gradients"
)

# Messages whose `ciphertext` fields are under the *sender's own* key: the sender of
# the first one carrying a key fingerprint is that key's owner.
_OWNER_TYPES = frozenset(
    {"lr.contribution", "ftl.source_terms", "ftl.target_terms", "ftl.predict_open"}
)
# Ciphertexts that go back to their key owner by design: the driver's own prediction
# scores ([[P u_j + public offset]] under the fresh key of its ftl.predict_open).
_RETURNED_BY_DESIGN = frozenset({"ftl.scores.values"})

# Data categories, in display order: (key, label, meaning).
_CATEGORIES: tuple[tuple[str, str, str], ...] = (
    (
        "plaintext",
        "PLAINTEXT values",
        "Values that a secure run sends encrypted or masked crossed IN THE CLEAR "
        "(`encryption=None`, debugging and measurement only).",
    ),
    (
        "unprotected",
        "Per-sample values neither encrypted nor masked",
        "Row-level values outside PSI that are not ciphertexts or masked values.",
    ),
    (
        "ps_ciphertext",
        "Per-sample ciphertexts",
        "Paillier ciphertexts, one or more per data row, under the sender's own key: "
        "the receiver cannot decrypt them.",
    ),
    (
        "ps_masked",
        "Per-sample masked values",
        "Row-level values blinded by an additive mask (at least 40 bits of statistical "
        "slack) that only the party which drew it knows.",
    ),
    (
        "agg_ciphertext",
        "Encrypted aggregates",
        "Batch-level values under a key the receiver does not hold.",
    ),
    (
        "agg_masked",
        "Masked aggregates",
        "Batch-level cross terms, masked before the key owner decrypts them and "
        "unmasked only by the party that drew the mask.",
    ),
    (
        "psi_points",
        "Per-sample PSI values (public by design)",
        "DDH-blinded elliptic-curve points and aligned positions; they reveal nothing "
        "about ids that are not shared (§2, §2.7). No message carries an id or its hash.",
    ),
    (
        "own_result",
        "Receiver's own results",
        "Values that belong to the receiver.",
    ),
    (
        "public",
        "Public metadata",
        "Parameters, public keys, sizes, row and batch positions, weight-norm scalars: "
        "in the clear by design; §4 lists what they reveal.",
    ),
)
_CATEGORY_LABEL = {key: label for key, label, _ in _CATEGORIES}

# Documented leakages (docs/protocols.md §4-5): (phase, text, reference).
_LEAKAGES: tuple[tuple[str, str, str], ...] = (
    (
        "psi",
        "Set sizes are revealed to both sides. Except in cardinality-only mode, each side "
        "learns which of its own rows are shared and the aligned order. The guest learns "
        "every host's column names (in every mode).",
        "§2.7, §5.4",
    ),
    (
        "psi_multi",
        "Several hosts: the guest learns which hosts hold each of its rows; each host "
        "learns which of its guest-shared customers some other host lacks.",
        "§2.7, §5.5",
    ),
    (
        "training",
        "Hosts learn the public training parameters (penalty, `alpha = 1/(C n)`, optimiser, "
        "learning rate, sigmoid approximation, key size, encryption mode), every party's "
        "block width, the number of epochs and of classes.",
        "§4, §5.4",
    ),
    (
        "training",
        "Hosts learn which of their customers are training rows and which are in each "
        "batch (row positions).",
        "§4, §5.4",
    ),
    (
        "training",
        "Labels to every host: per batch a host learns its gradient term "
        "`X_Hᵀ (residual)`; in the first batch this is exactly `X_Hᵀ y` for the batch, "
        "which recovers every label of the batch when the host has at least as many "
        "columns as the batch has rows. No defence (noise, clipping) is implemented.",
        "§5.2",
    ),
    (
        "training",
        "Host margins to the guest: per batch and host the guest learns an aggregate of "
        "the host's margin weighted by its own features (`X_Gᵀ u_H` or the polynomial "
        "analogue), solvable for the margins when the guest has at least as many columns "
        "as the batch has rows.",
        "§5.2",
    ),
    (
        "training_multi",
        "Several hosts: each host learns `X_Hᵀ u_O` for every other host `O`.",
        "§5.2",
    ),
    (
        "training",
        "Per epoch (iteration) each host reveals `‖Δw_H‖²` and `‖w_H‖²` (two scalars) "
        "to the guest for the stopping rule.",
        "§5.3",
    ),
    (
        "training_lbfgs",
        "optimizer='lbfgs': per iteration each party reveals to the driver the inner "
        "products of its own blocks of the last weight changes, gradient changes and "
        "gradient (a Gram matrix of at most 32 x 32 scalars) and per pass `g_H · d_H`; "
        "the hosts learn the direction's coefficients and the step length. Sums over "
        "features, never per-sample values; they fix the host's vectors only up to a "
        "rotation of its feature space.",
        "§3.8, §5.3",
    ),
    (
        "training_loss",
        "Verbose runs: per epoch the guest learns the epoch's total training log-loss "
        "(of the sigmoid approximation; one scalar), decrypted by the host from a masked "
        "sum over all the epoch's rows.",
        "§3.8",
    ),
    (
        "prediction",
        "The guest learns each host's margin `u_H` on every scored row; hosts learn which "
        "of their customers are scored, how many, and how often.",
        "§4, §5.1, §5.4",
    ),
    (
        "always",
        "Non-goals: no security against malicious parties, no differential privacy, no "
        "transport security (in-process endpoint only), no constant-time arithmetic, no "
        "post-quantum security.",
        "§5.6",
    ),
)

# Leakages of the federated transfer protocol (``ftl.*``), stated from the code: it is
# not covered by docs/protocols.md. Notation of ftl/transfer/_objective.py: source S
# (labels, driver), target T; representations u = W [h; 1] with hidden activations h
# (h~ = [h; 1]); prototypes P (K' x d); Taylor coefficients Q, beta_i of the loss.
_FTL_SRC = "`ftl/transfer/source.py`"
_FTL_TGT = "`ftl/transfer/target.py`"
_FTL_LEAKAGES: tuple[tuple[str, str, str], ...] = (
    (
        "ftl_training",
        "Public parameters and sizes: the target learns every training parameter "
        "(`n_components` d, `hidden_layer_sizes` -- the same for both networks --, "
        "activation, `gamma` and its warm-up, `alpha`, learning rate, optimiser, "
        "pre-training epochs, key size, encryption mode), the width of the source's "
        "output-layer input (`source_inputs`: its last hidden width + 1, or its feature "
        "count + 1 without hidden layers), the batch size, the number of overlap rows "
        "used and of epochs; the source learns the target's `n_inputs` likewise.",
        f"{_FTL_SRC} (`ftl.open`, `ftl.opened`)",
    ),
    (
        "ftl_training",
        "Both parties learn which aligned rows are in the overlap used for training "
        "(`ftl.open.positions`, chosen by the source) and which are in each batch "
        "(`ftl.source_terms.batch`).",
        f"{_FTL_SRC}",
    ),
    (
        "ftl_training",
        "The target learns the gradient of its own output layer at every step, "
        "`M G + 2γ G - Σ_i a_i h̃_iᵀ` (d × (hidden + 1), summed over the batch) with "
        "`G = Uᵀ[H, 1]` its own: from many steps it could in principle estimate aggregates "
        "of the source such as `M = PᵀQP` (the prototypes' Gram matrix) and "
        "`Σ_i a_i h̃_iᵀ`, `a_i = Pᵀβ_i + 2γ u_S,i` (its own activations weighted by the "
        "source's label codes and representations). While γ = 0 (the first epoch when "
        "`gamma_warmup > 0`) this is `Pᵀ(QPG - Σ_i β_i h̃_iᵀ)`, the analogue of "
        "`X_Hᵀ y` in §5.2: with batches of fewer rows than its hidden width + 1 the "
        "batch's labels may be recoverable. No defence (noise, clipping) is implemented.",
        f"{_FTL_TGT}",
    ),
    (
        "ftl_training",
        "The source learns the gradient of its own output layer at every step, "
        "`(U_TᵀU_T) PᵀQ T_S - Σ_i u_T,i c_iᵀ + 2γ U_SᵀH̃_S` with `T_S = RᵀH̃_S` and "
        "`c_i = T_Sᵀβ_i + 2γ h̃_S,i` its own: aggregates of the target's representations "
        "over the batch (their Gram matrix `U_TᵀU_T / n` times known coefficients, and "
        "`Σ_i u_T,i c_iᵀ`). With batches of fewer rows than its output-layer input width "
        "they may determine the target's representations of the batch (not analysed).",
        f"{_FTL_SRC}",
    ),
    (
        "ftl_training",
        "Per epoch the target reveals `‖ΔW_T‖²` and `‖W_T‖²` (two scalars) to the source "
        "for the stopping rule (`ftl.weight_change`).",
        f"{_FTL_TGT}",
    ),
    (
        "ftl_prediction",
        "The source learns the scores `P u_T,j` of every target row it asks for: K' "
        "linear functions of each target representation (with at least as many "
        "prototypes as dimensions, K' ≥ d, it could solve for the representation). The "
        "target learns nothing about the prototypes (encrypted under a fresh key of the "
        "source) or the scores; it learns which of its rows are scored, how many, how "
        "often, and K' (`n_scores`).",
        f"{_FTL_TGT} (`ftl.target_predict`)",
    ),
    (
        "ftl_predict_ids",
        "Target rows scored by id (`target.select(ids)`) are named in the clear in "
        "`ftl.predict_open.ids`: the source must already know those ids -- of customers "
        "outside the intersection, which PSI does not reveal to it -- and the target "
        "learns exactly which of its customers the source asks about.",
        f"{_FTL_SRC} (`target_scores`)",
    ),
    (
        "ftl_plaintext",
        "Plaintext mode (`encryption=None`): every field listed as `plaintext` crossed in "
        "the clear -- the target saw the source's per-row terms `a_i` (label codes and "
        "representations), `M` and the prototypes; the source saw the target's "
        "representations, their Gram matrix and the target's gradients; the target saw "
        "the source's gradients. None of the limits above holds for this run.",
        "`ftl/transfer/_classifier.py`",
    ),
)

_PHASE_LABEL = {
    "psi": "PSI",
    "psi_multi": "PSI",
    "training": "training",
    "training_multi": "training",
    "training_loss": "training",
    "training_lbfgs": "training",
    "prediction": "prediction",
    "ftl_training": "training",
    "ftl_prediction": "prediction",
    "ftl_predict_ids": "prediction",
    "ftl_plaintext": "all",
    "always": "all",
}


# ---------------------------------------------------------------- input handling
def as_transcript(obj: Any) -> tuple[Transcript, Any | None, str]:
    """Resolve what :func:`report` and :mod:`ftl.plot` accept into a transcript.

    Parameters
    ----------
    obj : estimator, Transcript, str or os.PathLike
        A fitted estimator with a ``transcript_`` attribute, a
        :class:`~ftl.federation.Transcript`, or the path of a transcript written
        by :meth:`Transcript.to_jsonl`.

    Returns
    -------
    transcript : Transcript
        The transcript to summarise.
    estimator : estimator or None
        ``obj`` when it is an estimator, else ``None``.
    source : str
        A short human-readable description of where the transcript came from.

    Raises
    ------
    sklearn.exceptions.NotFittedError
        If ``obj`` is an estimator without a ``transcript_`` (not fitted yet).
    TypeError
        If ``obj`` is none of the above.
    """
    if isinstance(obj, Transcript):
        return obj, None, "in-memory `Transcript`"
    if isinstance(obj, (str, os.PathLike)):
        path = os.fspath(obj)
        return Transcript.from_jsonl(path), None, f"transcript file `{path}`"
    transcript = getattr(obj, "transcript_", None)
    if isinstance(transcript, Transcript):
        return transcript, obj, f"`{type(obj).__name__}.transcript_` (fit and predict)"
    if hasattr(obj, "get_params"):
        from sklearn.exceptions import NotFittedError

        raise NotFittedError(
            f"this {type(obj).__name__} instance has no transcript_ yet; call fit first"
        )
    raise TypeError(
        "expected a fitted estimator, a Transcript or the path of a transcript .jsonl, "
        f"got {type(obj).__name__}"
    )


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


# ---------------------------------------------------------------- analysis
def _doc_of(msg_type: str) -> str:
    try:
        doc = schema_for(msg_type).doc
    except MessageError:
        return "(unregistered message type)"
    if doc:
        return doc
    if msg_type == "ack":
        return "Acknowledgement or session close; carries no fields."
    return "(no registered description)"


def _category(record: TranscriptRecord, f: FieldRecord) -> str:
    if f.kind == "plaintext":
        return "plaintext"
    if f.per_sample:
        if f.kind == "ciphertext":
            return "ps_ciphertext"
        if f.kind == "masked":
            return "ps_masked"
        if f.kind == "public" and record.type.startswith("psi."):
            return "psi_points"
        return "unprotected"
    if f.kind == "ciphertext":
        return "agg_ciphertext"
    if f.kind == "masked":
        return "agg_masked"
    if f.kind == "own_result":
        return "own_result"
    return "public"


def _direction(record: TranscriptRecord) -> str:
    arrow = f"{record.sender} → {record.receiver}"
    return f"{arrow} (via {record.via})" if record.via else arrow


def _human_bytes(n: float) -> str:
    for unit in ("B", "kB", "MB", "GB"):
        if abs(n) < 1000 or unit == "GB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1000
    return f"{n:.1f} GB"  # pragma: no cover


def _guest_of(transcript: Transcript) -> str | None:
    """The driver: sender of the first session-opening message, else the hub."""
    for r in transcript:
        if r.type.endswith("open"):  # lr.open, psi.open, lr.predict_open
            return r.sender
    parties = [{r.sender, r.receiver} for r in transcript]
    if not parties:
        return None
    common = set.intersection(*parties)
    return next(iter(common)) if len(common) == 1 else None


def _psi_mode(types: set[str]) -> str:
    if "psi.host_points_reblinded" in types or "psi.assign" in types:
        return "default (full alignment: both sides learn the intersection)"
    if "psi.shuffled_doubles" in types:
        return "cardinality-only (both sides learn only the intersection size)"
    return "undetermined (incomplete PSI run)"


@dataclass
class _TypeStats:
    count: int = 0
    nbytes: int = 0
    directions: dict[str, None] = field(default_factory=dict)
    kinds: set[str] = field(default_factory=set)


@dataclass
class _Analysis:
    transcript: Transcript
    estimator: Any | None
    source: str
    parties: list[str]
    guest: str | None
    types: dict[str, _TypeStats]
    categories: dict[str, dict[str, None]]  # category -> "type.field" (ordered set)
    category_messages: Counter
    plaintext_fields: list[str]
    unprotected_fields: list[str]
    to_key_owner: list[str]
    key_ids: list[str]
    key_owner: dict[str, str] = field(default_factory=dict)  # key fingerprint -> party
    returned_by_design: list[str] = field(default_factory=list)  # e.g. ftl.scores.values
    per_sample_plaintext: list[str] = field(default_factory=list)
    ids_scored: bool = False  # ftl.predict_open named target rows by id

    @property
    def n_hosts(self) -> int:
        return max(len(self.parties) - 1, 0)

    @property
    def type_set(self) -> set[str]:
        return set(self.types)

    @property
    def transfer(self) -> bool:
        """The transcript holds messages of the federated transfer protocol."""
        return any(t.startswith("ftl.") for t in self.types)

    @property
    def logistic(self) -> bool:
        """The transcript holds messages of vertical logistic regression."""
        return any(t.startswith("lr.") for t in self.types)


def _analyse(obj: Any) -> _Analysis:
    transcript, estimator, source = as_transcript(obj)
    parties: dict[str, None] = {}
    types: dict[str, _TypeStats] = {}
    categories: dict[str, dict[str, None]] = {key: {} for key, _, _ in _CATEGORIES}
    category_messages: Counter = Counter()
    key_owner: dict[str, str] = {}
    key_ids: dict[str, None] = {}
    per_sample_plaintext: dict[str, None] = {}
    predict_driver: dict[str, str] = {}  # session -> sender of its ftl.predict_open
    ids_scored = False
    for r in transcript:
        parties.setdefault(r.sender)
        parties.setdefault(r.receiver)
        stats = types.setdefault(r.type, _TypeStats())
        stats.count += 1
        stats.nbytes += r.nbytes
        stats.directions.setdefault(_direction(r))
        stats.kinds |= r.kinds
        seen = set()
        for f in r.fields:
            cat = _category(r, f)
            categories[cat].setdefault(f"{r.type}.{f.name}")
            seen.add(cat)
            if f.kind == "plaintext" and f.per_sample:
                per_sample_plaintext.setdefault(f"{r.type}.{f.name}")
            if f.key_id:
                key_ids.setdefault(f.key_id)
                if r.type in _OWNER_TYPES and f.kind == "ciphertext" and not r.via:
                    key_owner.setdefault(f.key_id, r.sender)
        if r.type == "ftl.predict_open":
            predict_driver.setdefault(r.session, r.sender)
            # scoring by id sends no positions (shape (0,)) and the ids instead
            ids_scored |= any(f.name == "positions" and f.shape == (0,) for f in r.fields)
        for cat in seen:
            category_messages[cat] += 1
    to_owner: dict[str, None] = {}
    by_design: dict[str, None] = {}
    for r in transcript:
        for f in r.fields:
            if f.kind == "ciphertext" and f.key_id and key_owner.get(f.key_id) == r.receiver:
                label = f"{r.type}.{f.name} ({_direction(r)})"
                own_result = f"{r.type}.{f.name}" in _RETURNED_BY_DESIGN
                if own_result and predict_driver.get(r.session) == r.receiver:
                    by_design.setdefault(label)
                else:
                    to_owner.setdefault(label)
    return _Analysis(
        transcript=transcript,
        estimator=estimator,
        source=source,
        parties=list(parties),
        guest=_guest_of(transcript),
        types=types,
        categories=categories,
        category_messages=category_messages,
        plaintext_fields=list(categories["plaintext"]),
        unprotected_fields=list(categories["unprotected"]),
        to_key_owner=list(to_owner),
        key_ids=list(key_ids),
        key_owner=key_owner,
        returned_by_design=list(by_design),
        per_sample_plaintext=list(per_sample_plaintext),
        ids_scored=ids_scored,
    )


# ---------------------------------------------------------------- document model
@dataclass
class _Table:
    header: Sequence[str]
    rows: list[Sequence[str]]


@dataclass
class _Bullets:
    items: list[str]


@dataclass
class _Para:
    text: str


@dataclass
class _Section:
    title: str
    blocks: list[_Table | _Bullets | _Para]
    warning: bool = False


def _key_info(a: _Analysis) -> tuple[str, int | None]:
    """Key-size description and the key size (``None`` when not known)."""
    est = a.estimator
    if est is None:
        return "not recorded (a bare transcript holds no key parameters)", None
    encryption = getattr(est, "encryption", "paillier")
    if encryption is None:
        return "none: `encryption=None` (plaintext mode, nothing is encrypted)", None
    key_size = getattr(est, "key_size", None)
    if key_size is None:
        return "not recorded", None
    if a.transfer:
        text = (
            f"{int(key_size)}-bit Paillier modulus for every key (each party's training key "
            "and the source's fresh key per prediction session)"
        )
    else:
        text = f"{int(key_size)}-bit Paillier modulus for every party"
    if getattr(est, "insecure_for_tests", False):
        text += " (`insecure_for_tests=True`)"
    return text, int(key_size)


def _effective_sigmoid(est: Any) -> str | None:
    sigmoid = getattr(est, "sigmoid", None)
    if sigmoid is None:
        return None
    names = getattr(est, "party_names_", None)
    n_hosts = len(names) - 1 if names else getattr(est, "simulated_hosts", 1)
    try:
        effective = est._sigmoid_for(n_hosts)
    except (AttributeError, ValueError, TypeError):
        return str(sigmoid)
    return str(sigmoid) if effective == sigmoid else f"{sigmoid} (→ {effective})"


def _checks(a: _Analysis, key_size: int | None) -> tuple[list[Sequence[str]], list[str]]:
    """Rows of the checks table, and warning bullets for the failed checks."""
    rows: list[Sequence[str]] = []
    warnings: list[str] = []

    def fmt(names: Iterable[str]) -> str:
        return ", ".join(f"`{n}`" for n in names)

    if a.plaintext_fields:
        rows.append(("No field of kind `plaintext`", "FAIL", fmt(a.plaintext_fields)))
        if any(name.startswith("ftl.") for name in a.plaintext_fields):
            what = (
                " -- the source's per-row terms `a_i` with its label codes and "
                "representations, `M = PᵀQP` and its prototypes; the target's representations "
                "and their Gram matrix; both parties' gradients; the prediction scores --"
            )
        else:
            what = " (labels and margins inside per-row columns, cross terms)"
        warnings.append(
            "WARNING: plaintext values crossed party boundaries. This run used "
            f"`encryption=None`: values that a secure run encrypts or masks{what} were sent "
            f"in the clear in {fmt(a.plaintext_fields)}. Never use this mode on real data."
        )
    else:
        rows.append(("No field of kind `plaintext`", "PASS", ""))
    if a.unprotected_fields or a.per_sample_plaintext:
        rows.append(
            (
                "Per-sample fields are ciphertexts or masked",
                "FAIL",
                fmt([*a.unprotected_fields, *a.per_sample_plaintext])
                + (" (plaintext mode)" if a.per_sample_plaintext else ""),
            )
        )
        if a.unprotected_fields:
            warnings.append(
                "WARNING: per-sample fields that are neither ciphertexts nor masked crossed "
                f"party boundaries: {fmt(a.unprotected_fields)}."
            )
    else:
        rows.append(
            (
                "Per-sample fields are ciphertexts or masked",
                "PASS",
                "PSI points are public by design" if a.categories["psi_points"] else "",
            )
        )
    owner_types = sorted(_OWNER_TYPES & a.type_set)
    if not owner_types:
        detail = "no message that encrypts its sender's values" if a.transfer else ""
        rows.append(
            (
                "No ciphertext sent back to its key owner",
                "n/a",
                detail or "no `lr.contribution`",
            )
        )
    elif a.transfer and not a.key_owner:
        rows.append(
            ("No ciphertext sent back to its key owner", "n/a", "no ciphertexts (plaintext mode)")
        )
    elif a.to_key_owner:
        rows.append(("No ciphertext sent back to its key owner", "FAIL", fmt(a.to_key_owner)))
        warnings.append(
            "WARNING: ciphertexts of kind `ciphertext` were sent to the owner of their "
            f"key, who can decrypt them: {fmt(a.to_key_owner)}."
        )
    else:
        detail = ""
        if a.returned_by_design:
            detail = (
                f"except by design {fmt(a.returned_by_design)}: the driver's own prediction "
                "scores, under the fresh key of its `ftl.predict_open`"
            )
        rows.append(("No ciphertext sent back to its key owner", "PASS", detail))
    if key_size is None:
        rows.append((f"Key size ≥ {MIN_SECURE_KEY_SIZE} bits", "n/a", "not recorded"))
    elif key_size < MIN_SECURE_KEY_SIZE:
        rows.append((f"Key size ≥ {MIN_SECURE_KEY_SIZE} bits", "FAIL", f"{key_size} bits"))
        warnings.append(
            f"WARNING: weak keys. {key_size}-bit Paillier keys are below the "
            f"{MIN_SECURE_KEY_SIZE}-bit minimum and can be factored (test setting only)."
        )
    else:
        rows.append((f"Key size ≥ {MIN_SECURE_KEY_SIZE} bits", "PASS", f"{key_size} bits"))
    return rows, warnings


def _applies(phase: str, a: _Analysis) -> bool:
    types = a.type_set
    psi = any(t.startswith("psi.") for t in types)
    training = bool(types & {"lr.open", "lr.contribution"})
    prediction = bool(types & {"lr.predict_open", "lr.masked_margin"})
    ftl_prediction = bool(types & {"ftl.predict_open", "ftl.scores"})
    return {
        "psi": psi,
        "psi_multi": psi and a.n_hosts > 1,
        "training": training,
        "training_multi": training and a.n_hosts > 1,
        "training_loss": "lr.loss_term" in types,
        "training_lbfgs": "lr.gram" in types,
        "prediction": prediction,
        "ftl_training": bool(types & {"ftl.open", "ftl.source_terms"}),
        "ftl_prediction": ftl_prediction,
        "ftl_predict_ids": ftl_prediction and a.ids_scored,
        "ftl_plaintext": any(n.startswith("ftl.") for n in a.plaintext_fields),
        "always": True,
    }[phase]


def _role(party: str, a: _Analysis) -> str:
    if a.guest is None:
        return "unknown"
    if a.transfer:
        return "source (labelled, runs the driver)" if party == a.guest else "target (unlabelled)"
    return "guest (driver)" if party == a.guest else "host"


def _field_desc(a: _Analysis, r: TranscriptRecord, f: FieldRecord) -> str:
    """What one field of a message was: kind, per-sample, and whose key it is under."""
    bits = [f.kind]
    if f.per_sample:
        bits.append("per-sample")
    if f.key_id:
        owner = a.key_owner.get(f.key_id)
        if owner is not None and owner == r.receiver:
            bits.append("under the receiver's key")
        elif owner is not None and owner == r.sender:
            bits.append("under the sender's key")
        else:
            bits.append(f"under key `{f.key_id}`")
    return f"`{f.name}` ({', '.join(bits)})"


def _transfer_section(a: _Analysis) -> _Section:
    source = f"`{a.guest}`" if a.guest else "the party that opens the sessions"
    others = [p for p in a.parties if p != a.guest]
    target = ", ".join(f"`{p}`" for p in others) or "the other party"
    first: dict[str, TranscriptRecord] = {}
    for r in a.transcript:
        if r.type.startswith("ftl."):
            first.setdefault(r.type, r)
    rows = [
        (
            f"`{name}`",
            "; ".join(a.types[name].directions),
            "; ".join(_field_desc(a, r, f) for f in r.fields) or "-",
        )
        for name, r in first.items()
    ]
    plaintext = any(n.startswith("ftl.") for n in a.plaintext_fields)
    blocks: list[_Table | _Bullets | _Para] = [
        _Table(
            ("item", "value"),
            [
                ("Protocol", FTL_PROTOCOL),
                (
                    "This run",
                    "PLAINTEXT MODE (`encryption=None`): nothing was encrypted or masked"
                    if plaintext
                    else "encrypted (Paillier) and masked as designed",
                ),
                ("Source", f"{source}: holds the labels and runs the driver"),
                ("Target", f"{target}: features only, no labels"),
            ],
        ),
        _Para(
            "Each party maps its features with its own network; hidden layers are "
            "pre-trained locally and never leave their party, only the two output layers "
            "are trained jointly. Per batch the source sends its per-row terms and `M` "
            "under its own key, the target returns its representations and their Gram "
            "matrix under its own key plus its gradient masked under the source's key, and "
            "each party decrypts the other's masked gradient. In prediction the source "
            "sends its prototypes under a fresh key and receives the scores it asked for "
            "(see the leakages below). Per message type, what crossed (first message of "
            "each type; key owners are inferred from who encrypted under each key):"
        ),
        _Table(("message type", "direction(s)", "what crossed"), rows),
    ]
    return _Section("Federated transfer learning", blocks)


def _build(a: _Analysis, title: str) -> tuple[str, list[_Section]]:
    t = a.transcript
    key_text, key_size = _key_info(a)
    check_rows, warnings = _checks(a, key_size)
    sections: list[_Section] = []

    summary = [
        ("Source", a.source),
        ("Parties", ", ".join(f"`{p}`" for p in a.parties) or "none"),
        ("Messages", f"{len(t):,}"),
        ("Bytes", f"{t.total_bytes:,} ({_human_bytes(t.total_bytes)})"),
        ("Message types", str(len(a.types))),
        ("Sessions", str(len({r.session for r in t}))),
        ("Key size", key_text),
    ]
    if a.transfer:
        protocol = FTL_PROTOCOL
        if any(n.startswith("ftl.") for n in a.plaintext_fields):
            protocol += " -- run in PLAINTEXT MODE here (`encryption=None`)"
        if a.logistic:
            protocol += "; vertical logistic regression (docs/protocols.md §3)"
        summary.insert(2, ("Protocol", protocol))
    if a.key_ids:
        summary.append(
            (
                "Key fingerprints in ciphertext fields",
                f"{len(a.key_ids)}: " + ", ".join(f"`{k}`" for k in a.key_ids),
            )
        )
    est = a.estimator
    if est is not None:
        summary.append(("Estimator", f"`{type(est).__name__}`"))
        summary.append(("Encryption", str(getattr(est, "encryption", None))))
        sigmoid = _effective_sigmoid(est)
        if sigmoid is not None:
            summary.append(("Sigmoid approximation", sigmoid))
        n_iter = getattr(est, "n_iter_", None)
        if n_iter is not None and np.ndim(n_iter) == 0:  # one model (transfer)
            summary.append(("Epochs", str(int(n_iter))))
        elif n_iter is not None:  # one binary model per class (logistic regression)
            optimizer = getattr(est, "optimizer", "lbfgs")
            unit = "L-BFGS iterations" if optimizer == "lbfgs" else "Epochs"
            summary.append((f"{unit} per binary model", ", ".join(str(int(n)) for n in n_iter)))
            summary.append(("Optimiser", f"`{optimizer}`"))
    sections.append(_Section("Summary", [_Table(("item", "value"), summary)]))

    if warnings:
        sections.append(_Section("WARNINGS", [_Bullets(warnings)], warning=True))
    sections.append(_Section("Checks", [_Table(("check", "result", "details"), check_rows)]))

    party_rows = []
    for p in a.parties:
        sent = [r for r in t if r.sender == p]
        received = [r for r in t if r.receiver == p]
        role = _role(p, a)
        party_rows.append(
            (
                f"`{p}`",
                role,
                f"{len(sent):,}",
                f"{sum(r.nbytes for r in sent):,}",
                f"{len(received):,}",
                f"{sum(r.nbytes for r in received):,}",
            )
        )
    sections.append(
        _Section(
            "Parties",
            [
                _Para(
                    "Roles are inferred: the source -- the labelled party, which runs the "
                    "driver -- is the party that opens sessions; the other party is the "
                    "target. Relayed messages are counted twice, as on the wire (§5.7)."
                    if a.transfer
                    else "Roles are inferred: the guest is the party that opens sessions. "
                    "Relayed messages are counted twice, as on the wire (§5.7)."
                ),
                _Table(
                    (
                        "party",
                        "role",
                        "messages sent",
                        "bytes sent",
                        "messages received",
                        "bytes received",
                    ),
                    party_rows,
                ),
            ],
        )
    )

    type_rows = [
        (
            f"`{name}`",
            f"{s.count:,}",
            f"{s.nbytes:,}",
            "; ".join(s.directions),
            ", ".join(k for k in KIND_ORDER if k in s.kinds)
            + "".join(f", {k}" for k in sorted(s.kinds - set(KIND_ORDER)))
            or "-",
            _doc_of(name),
        )
        for name, s in a.types.items()
    ]
    sections.append(
        _Section(
            "Messages by type",
            [
                _Para("In order of first appearance; descriptions are the registered ones."),
                _Table(
                    (
                        "message type",
                        "messages",
                        "bytes",
                        "direction(s)",
                        "value kinds",
                        "description",
                    ),
                    type_rows,
                ),
            ],
        )
    )

    cat_rows = [
        (
            label,
            f"{a.category_messages[key]:,}",
            ", ".join(f"`{n}`" for n in a.categories[key]),
            _meaning(key, meaning, a),
        )
        for key, label, meaning in _CATEGORIES
        if a.categories[key]
    ]
    sections.append(
        _Section(
            "Data categories exchanged",
            [
                _Para(
                    "Each field is classified by its declared value kind and whether it "
                    "runs over data rows (per-sample). Kinds are declared by the message "
                    "schemas, except that values sent in plaintext mode are recorded as "
                    "`plaintext` (§1.3, §5.7)."
                ),
                _Table(("category", "messages", "fields", "meaning"), cat_rows)
                if cat_rows
                else _Para("No fields were exchanged."),
            ],
        )
    )

    psi_types = [name for name in a.types if name.startswith("psi.")]
    if psi_types:
        psi_sessions = {r.session for r in t if r.type.startswith("psi.")}
        psi_blocks: list[_Table | _Bullets | _Para] = [
            _Table(
                ("item", "value"),
                [
                    ("Mode", _psi_mode(set(psi_types))),
                    ("Sessions (one per host and run)", str(len(psi_sessions))),
                    ("Message types seen", ", ".join(f"`{n}`" for n in psi_types)),
                ],
            )
        ]
    else:
        psi_blocks = [
            _Para(
                "No PSI messages in this transcript. An estimator's `transcript_` covers "
                "fit and predict only; the PSI messages of `ftl.align` are in "
                '`X.alignment.psi["transcript"]`.'
            )
        ]
    sections.append(_Section("Private set intersection", psi_blocks))
    if a.transfer:
        sections.append(_transfer_section(a))

    budget = _budget_section(t)
    if budget is not None:
        sections.append(budget)
    sections.append(_leakage_section(a))
    return title, sections


def _budget_section(t: Transcript) -> _Section | None:
    """The privacy budget of each peer as the host last recorded it (host audit logs)."""
    readings = getattr(t, "budget", None)
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
    return _Section(
        "Privacy budget",
        [
            _Para(
                "What each peer has used of the host's privacy budget in the last 24 "
                "hours, as the host recorded it with its last answer to that peer "
                "(docs/howto/deploy.md, *The privacy budget*; docs/protocols.md §5.8)."
                + (" At least one limit is used up." if exhausted else "")
            ),
            _Table(("peer", "item", "used", "limit", "left"), rows),
        ],
    )


def _meaning(key: str, meaning: str, a: _Analysis) -> str:
    """A data category's meaning, with the transfer protocol's exceptions."""
    if not a.transfer:
        return meaning
    if key == "ps_ciphertext" and "ftl.scores.values" in a.categories[key]:
        meaning += (
            " Exception: `ftl.scores.values` is under the receiver's key (the driver's "
            "fresh prediction key): it decrypts its own scores."
        )
    elif key == "psi_points" and a.ids_scored:
        meaning += (
            " Outside PSI, `ftl.predict_open.ids` names the target rows scored by id "
            "(see the leakages)."
        )
    elif key == "public":
        meaning += (
            " In the transfer protocol also a seed the target mixes with a hash of its own "
            "data (`ftl.open.params`) and, when target rows are scored by id, their ids "
            "(`ftl.predict_open.ids`); the leakages below list what they reveal."
        )
    return meaning


def _leakage_section(a: _Analysis) -> _Section:
    show_lr = a.logistic or not a.transfer  # LR's rows, unless this is a transfer run
    rows: list[tuple[str, str, str]] = [r for r in _LEAKAGES if r[0].startswith("psi")]
    if show_lr:
        lr_phases = ("training", "training_multi", "training_loss", "training_lbfgs", "prediction")
        rows += [r for r in _LEAKAGES if r[0] in lr_phases]
    if a.transfer:
        rows += list(_FTL_LEAKAGES)
    rows += [r for r in _LEAKAGES if r[0] == "always"]
    if not a.transfer:
        intro = (
            "What the protocols reveal by design, even when every check above "
            f"passes. Full statements and assumptions: `{_DOCS}` §4 (Who learns "
            "what) and §5 (Known leakages, non-goals and the transcript)."
        )
        header = f"{_DOCS}"
    else:
        intro = (
            "What the protocols reveal by design, even when every check above passes, "
            "assuming semi-honest parties. PSI and the non-goals: "
            f"`{_DOCS}` §2.7 and §5. The transfer protocol is described in "
            "`docs/transfer.md` (§4 who learns what, §5 leakages) and in the code "
            "(`ftl/transfer/source.py`, `target.py`, `_messages.py`): source S "
            "(labels) and target T, representations "
            "`u = W h̃` of hidden activations `h̃ = [h; 1]`, prototypes `P` (K' × d: "
            "K' = 1 for two classes, else the number of classes), the loss's Taylor "
            "coefficients `Q` and label codes `β_i`, alignment weight γ."
        )
        header = "reference"
    leak_rows = [
        (
            _PHASE_LABEL[phase],
            text,
            "yes" if _applies(phase, a) else "no",
            f"`{_DOCS}` {ref}" if a.transfer and ref.startswith("§") else ref,
        )
        for phase, text, ref in rows
    ]
    return _Section(
        "Documented leakages",
        [_Para(intro), _Table(("phase", "leakage", "applies here", header), leak_rows)],
    )


# ---------------------------------------------------------------- rendering
def _md_cell(text: str) -> str:
    return text.replace("\n", " ").replace("|", "\\|")


def _render_markdown(title: str, sections: list[_Section]) -> str:
    out = [f"# {title}", ""]
    for section in sections:
        out += [f"## {section.title}", ""]
        for block in section.blocks:
            if isinstance(block, _Para):
                out += [block.text, ""]
            elif isinstance(block, _Bullets):
                out += [f"- **{item}**" if section.warning else f"- {item}" for item in block.items]
                out.append("")
            else:
                out.append("| " + " | ".join(_md_cell(h) for h in block.header) + " |")
                out.append("|" + "---|" * len(block.header))
                out += ["| " + " | ".join(_md_cell(c) for c in row) + " |" for row in block.rows]
                out.append("")
    return "\n".join(out)


_CODE = re.compile(r"`([^`]+)`")

_CSS = """
body { font-family: system-ui, -apple-system, "Segoe UI", sans-serif; margin: 2em auto;
       max-width: 72em; padding: 0 1em; color: #1f2328; line-height: 1.45; }
h1 { border-bottom: 2px solid #d0d7de; padding-bottom: .3em; }
h2 { margin-top: 1.8em; border-bottom: 1px solid #d0d7de; padding-bottom: .2em; }
table { border-collapse: collapse; margin: .8em 0; font-size: .92em; }
th, td { border: 1px solid #d0d7de; padding: .35em .6em; text-align: left;
         vertical-align: top; }
th { background: #f6f8fa; }
tr:nth-child(even) td { background: #fbfcfd; }
code { background: #eff1f3; padding: .1em .3em; border-radius: 4px; font-size: .9em; }
section.warning { border: 2px solid #cf222e; background: #ffebe9; padding: 0 1em;
                  border-radius: 6px; margin-top: 1.5em; }
section.warning h2 { color: #cf222e; border-bottom-color: #ff8182; }
td.PASS { color: #1a7f37; font-weight: bold; }
td.FAIL { color: #cf222e; font-weight: bold; }
footer { margin-top: 2em; color: #656d76; font-size: .85em; }
""".strip()


def _inline(text: str) -> str:
    return _CODE.sub(r"<code>\1</code>", html.escape(text))


def _render_html(title: str, sections: list[_Section]) -> str:
    from ftl import __version__

    out = [
        "<!DOCTYPE html>",
        '<html lang="en">',
        "<head>",
        '<meta charset="utf-8">',
        '<meta name="viewport" content="width=device-width, initial-scale=1">',
        f"<title>{html.escape(title)}</title>",
        f"<style>\n{_CSS}\n</style>",
        "</head>",
        "<body>",
        f"<h1>{html.escape(title)}</h1>",
    ]
    for section in sections:
        out.append('<section class="warning">' if section.warning else "<section>")
        out.append(f"<h2>{html.escape(section.title)}</h2>")
        for block in section.blocks:
            if isinstance(block, _Para):
                out.append(f"<p>{_inline(block.text)}</p>")
            elif isinstance(block, _Bullets):
                out.append("<ul>")
                out += [f"<li>{_inline(item)}</li>" for item in block.items]
                out.append("</ul>")
            else:
                out.append("<table>")
                out.append(
                    "<thead><tr>"
                    + "".join(f"<th>{_inline(h)}</th>" for h in block.header)
                    + "</tr></thead>"
                )
                out.append("<tbody>")
                for row in block.rows:
                    cells = "".join(
                        f'<td class="{c}">{c}</td>'
                        if c in ("PASS", "FAIL")
                        else f"<td>{_inline(c)}</td>"
                        for c in row
                    )
                    out.append(f"<tr>{cells}</tr>")
                out.append("</tbody>")
                out.append("</table>")
        out.append("</section>")
    out += [
        f"<footer>Generated by ftl {html.escape(__version__)} from transcript metadata only; "
        "values are never recorded.</footer>",
        "</body>",
        "</html>",
        "",
    ]
    return "\n".join(out)


# ---------------------------------------------------------------- public API
def report(
    obj: Any,
    format: Literal["markdown", "html"] = "markdown",
    *,
    title: str = "ftl privacy report",
) -> str:
    """Privacy report of what crossed party boundaries, for an auditor.

    The report lists the parties, the total number of messages and bytes, one row
    per message type (count, bytes, sender → receiver directions, value kinds and
    the type's registered description), the categories of data exchanged
    (per-sample ciphertexts, masked values, PSI points, public metadata,
    plaintext), automatic checks with a **WARNING** section when one fails
    (plaintext values, per-sample values neither encrypted nor masked,
    ciphertexts returned to their key owner, keys below 2048 bits), the key size
    when known, the PSI mode when PSI messages are present, and the documented
    leakages of docs/protocols.md §4-5, marked by whether they apply to this
    transcript.

    A transcript of :class:`~ftl.FederatedTransferClassifier` (``ftl.*``
    messages) is reported with the protocol's name, the roles *source*
    (labelled, runs the driver) and *target*, per message type what crossed
    and under whose key, and the transfer protocol's own leakages (stated from
    the code; docs/protocols.md does not cover it). Its prediction scores
    (``ftl.scores``) return to their key owner by design -- the driver, which
    opened the prediction session -- and are listed as such, not as a failure.

    Parameters
    ----------
    obj : estimator, Transcript, str or os.PathLike
        A fitted estimator (its ``transcript_`` and its ``encryption``,
        ``key_size`` and ``sigmoid`` parameters are used), a
        :class:`~ftl.Transcript`, or the path of a transcript ``.jsonl`` file
        (:meth:`Transcript.to_jsonl <ftl.Transcript.to_jsonl>`). Key sizes are
        not recorded in a transcript, so for the last two the report says so.
    format : {"markdown", "html"}, default="markdown"
        GitHub-flavoured Markdown, or a standalone HTML page (inline CSS, no
        external assets, every text HTML-escaped).
    title : str, default="ftl privacy report"
        Heading of the report.

    Returns
    -------
    str
        The rendered report.

    Raises
    ------
    ValueError
        If ``format`` is not "markdown" or "html".
    sklearn.exceptions.NotFittedError
        If ``obj`` is an unfitted estimator.

    Notes
    -----
    Only metadata is analysed: a transcript never holds values. Kinds are
    declared by the message schemas, except that values sent with
    ``encryption=None`` are recorded as ``plaintext`` (docs/protocols.md §5.7).
    To cover PSI and training in one report, combine the transcripts first::

        t = ftl.Transcript()
        t.extend(X.alignment.psi["transcript"])
        t.extend(clf.transcript_)

    (key sizes are then "not recorded").

    Examples
    --------
    >>> import ftl
    >>> X, y = ftl.align(*ftl.datasets.load_breast_cancer())
    >>> clf = ftl.FederatedLogisticRegression(encryption=None, max_iter=2).fit(X, y)
    >>> text = ftl.report(clf)
    >>> "WARNING: plaintext values crossed party boundaries" in text
    True
    """
    if format not in ("markdown", "html"):
        raise ValueError(f"format must be 'markdown' or 'html', got {format!r}")
    analysis = _analyse(obj)
    title, sections = _build(analysis, title)
    if format == "html":
        return _render_html(title, sections)
    return _render_markdown(title, sections)
