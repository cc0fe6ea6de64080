"""What federated transfer learning declares about itself to the audit report.

The protocol is documented in docs/transfer.md and in the code, not in
docs/protocols.md, so it frames the reports of its transcripts: it names itself,
its roles (source and target) and the references of its leakages, stated here
from the code. Notation of ``ftl/transfer/_objective.py``: source S (labels,
driver), target T; representations u = W [h; 1] with hidden activations h
(h~ = [h; 1]); prototypes P (K' x d); Taylor coefficients Q, beta_i of the loss.
"""

from __future__ import annotations

from collections.abc import Iterator

from ftl.federation.disclosure import (
    Disclosure,
    Findings,
    Framing,
    Leakage,
    Para,
    ReturnedByDesign,
    Section,
    Table,
)
from ftl.federation.transcript import TranscriptRecord

__all__ = ["DISCLOSURE", "FTL_PROTOCOL"]

_PREFIX = "ftl."

#: Name of the federated transfer protocol (``ftl.*`` messages) in the report.
FTL_PROTOCOL = (
    "federated transfer learning (Liu et al. 2018), secure: row-packed Paillier, masked gradients"
)
_SRC = "`ftl/transfer/source.py`"
_TGT = "`ftl/transfer/target.py`"


def _training(a: Findings) -> bool:
    return bool(a.type_set & {"ftl.open", "ftl.resume", "ftl.source_terms"})


def _prediction(a: Findings) -> bool:
    return bool(a.type_set & {"ftl.predict_open", "ftl.scores"})


def _plaintext(a: Findings) -> bool:
    return any(name.startswith(_PREFIX) for name in a.plaintext_fields)


def _ids_scored(a: Findings) -> bool:
    """Whether target rows were scored by id: such a request sends no positions
    (shape (0,)) and the ids instead."""
    return any(
        r.type == "ftl.predict_open"
        and any(f.name == "positions" and f.shape == (0,) for f in r.fields)
        for r in a.transcript
    )


def _category_note(category: str, a: Findings) -> str:
    """The transfer protocol's exceptions to the data categories' meanings."""
    if category == "ps_ciphertext" and "ftl.scores.values" in a.fields_in(category):
        return (
            " Exception: `ftl.scores.values` is under the receiver's key (the driver's "
            "fresh prediction key): it decrypts its own scores."
        )
    if category == "ps_public" and _ids_scored(a):
        return (
            " Outside PSI, `ftl.predict_open.ids` names the target rows scored by id "
            "(see the leakages)."
        )
    if category == "public":
        return (
            " In the transfer protocol also a seed the target mixes with a hash of its own "
            "data (`ftl.open.params`) and, when target rows are scored by id, their ids "
            "(`ftl.predict_open.ids`); the leakages below list what they reveal."
        )
    return ""


def _section(a: Findings) -> Section:
    """The protocol, the run's mode, the roles, and what crossed per message type."""
    source = f"`{a.guest}`" if a.guest else "the party that opens the sessions"
    others = [p for p in a.parties if p != a.guest]
    target = ", ".join(f"`{p}`" for p in others) or "the other party"
    first: dict[str, TranscriptRecord] = {}
    for r in a.transcript:
        if r.type.startswith(_PREFIX):
            first.setdefault(r.type, r)
    rows = [
        (
            f"`{name}`",
            "; ".join(a.directions(name)),
            "; ".join(a.describe_field(r, f) for f in r.fields) or "-",
        )
        for name, r in first.items()
    ]
    blocks: list[Table | Para] = [
        Table(
            ("item", "value"),
            [
                ("Protocol", FTL_PROTOCOL),
                (
                    "This run",
                    "PLAINTEXT MODE (`encryption=None`): nothing was encrypted or masked"
                    if _plaintext(a)
                    else "encrypted (Paillier) and masked as designed",
                ),
                ("Source", f"{source}: holds the labels and runs the driver"),
                ("Target", f"{target}: features only, no labels"),
            ],
        ),
        Para(
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
        Table(("message type", "direction(s)", "what crossed"), rows),
    ]
    return Section("Federated transfer learning", blocks)


def estimator_facts(est) -> Iterator[tuple[str, str]]:
    """Summary rows of a fitted :class:`~ftl.FederatedTransferClassifier`: its epochs."""
    n_iter = getattr(est, "n_iter_", None)
    if n_iter is not None:
        yield "Epochs", str(int(n_iter))


_LEAKAGES = (
    Leakage(
        "training",
        "Public parameters and sizes: the target learns every training parameter "
        "(`n_components` d, `hidden_layer_sizes` -- the same for both networks --, "
        "activation, `gamma` and its warm-up, `alpha`, learning rate, optimiser, "
        "pre-training epochs, key size, encryption mode), the width of the source's "
        "output-layer input (`source_inputs`: its last hidden width + 1, or its feature "
        "count + 1 without hidden layers), the batch size, the number of overlap rows "
        "used and of epochs; the source learns the target's `n_inputs` likewise.",
        f"{_SRC} (`ftl.open`, `ftl.opened`)",
        applies=_training,
    ),
    Leakage(
        "training",
        "Both parties learn which aligned rows are in the overlap used for training "
        "(`ftl.open.positions`, chosen by the source) and which are in each batch "
        "(`ftl.source_terms.batch`).",
        f"{_SRC}",
        applies=_training,
    ),
    Leakage(
        "training",
        "The target learns the gradient of its own output layer at every step, "
        "`M G + 2γ G - Σ_i a_i h̃_iᵀ` (d × (hidden + 1), summed over the batch) with "
        "`G = Uᵀ[H, 1]` its own: from many steps it could in principle estimate aggregates "
        "of the source such as `M = PᵀQP` (the prototypes' Gram matrix) and "
        "`Σ_i a_i h̃_iᵀ`, `a_i = Pᵀβ_i + 2γ u_S,i` (its own activations weighted by the "
        "source's label codes and representations). While γ = 0 (the first epoch when "
        "`gamma_warmup > 0`) this is `Pᵀ(QPG - Σ_i β_i h̃_iᵀ)`, the analogue of "
        "`X_Hᵀ y` in §5.2: with batches of fewer rows than its hidden width + 1 the "
        "batch's labels may be recoverable. No defence (noise, clipping) is implemented.",
        f"{_TGT}",
        applies=_training,
    ),
    Leakage(
        "training",
        "The source learns the gradient of its own output layer at every step, "
        "`(U_TᵀU_T) PᵀQ T_S - Σ_i u_T,i c_iᵀ + 2γ U_SᵀH̃_S` with `T_S = RᵀH̃_S` and "
        "`c_i = T_Sᵀβ_i + 2γ h̃_S,i` its own: aggregates of the target's representations "
        "over the batch (their Gram matrix `U_TᵀU_T / n` times known coefficients, and "
        "`Σ_i u_T,i c_iᵀ`). With batches of fewer rows than its output-layer input width "
        "they may determine the target's representations of the batch (not analysed).",
        f"{_SRC}",
        applies=_training,
    ),
    Leakage(
        "training",
        "Per epoch the target reveals `‖ΔW_T‖²` and `‖W_T‖²` (two scalars) to the source "
        "for the stopping rule (`ftl.weight_change`).",
        f"{_TGT}",
        applies=_training,
    ),
    Leakage(
        "prediction",
        "The source learns the scores `P u_T,j` of every target row it asks for: K' "
        "linear functions of each target representation (with at least as many "
        "prototypes as dimensions, K' ≥ d, it could solve for the representation). The "
        "target learns nothing about the prototypes (encrypted under a fresh key of the "
        "source) or the scores; it learns which of its rows are scored, how many, how "
        "often, and K' (`n_scores`).",
        f"{_TGT} (`ftl.target_predict`)",
        applies=_prediction,
    ),
    Leakage(
        "prediction",
        "Target rows scored by id (`target.select(ids)`) are named in the clear in "
        "`ftl.predict_open.ids`: the source must already know those ids -- of customers "
        "outside the intersection, which PSI does not reveal to it -- and the target "
        "learns exactly which of its customers the source asks about.",
        f"{_SRC} (`target_scores`)",
        applies=lambda a: _prediction(a) and _ids_scored(a),
    ),
    Leakage(
        "all",
        "Plaintext mode (`encryption=None`): every field listed as `plaintext` crossed in "
        "the clear -- the target saw the source's per-row terms `a_i` (label codes and "
        "representations), `M` and the prototypes; the source saw the target's "
        "representations, their Gram matrix and the target's gradients; the target saw "
        "the source's gradients. None of the limits above holds for this run.",
        "`ftl/transfer/_classifier.py`",
        applies=_plaintext,
    ),
)

DISCLOSURE = Disclosure(
    listed="when_present",
    name=FTL_PROTOCOL,
    # the sender encrypts its own values: per-row terms, and the prediction key's prototypes
    owner_types=frozenset({"ftl.source_terms", "ftl.target_terms", "ftl.predict_open"}),
    returned_by_design=(
        ReturnedByDesign(
            "ftl.scores.values",
            opened_by="ftl.predict_open",
            reason="the driver's own prediction scores, under the fresh key of its "
            "`ftl.predict_open`",
        ),
    ),
    plaintext_values=" -- the source's per-row terms `a_i` with its label codes and "
    "representations, `M = PᵀQP` and its prototypes; the target's representations "
    "and their Gram matrix; both parties' gradients; the prediction scores --",
    leakages=_LEAKAGES,
    framing=Framing(
        roles=("source (labelled, runs the driver)", "target (unlabelled)"),
        parties_note="Roles are inferred: the source -- the labelled party, which runs the "
        "driver -- is the party that opens sessions; the other party is the target. "
        "Relayed messages are counted twice, as on the wire (§5.7).",
        key_scope="every key (each party's training key and the source's fresh key per "
        "prediction session)",
        leakage_intro="What the protocols reveal by design, even when every check above "
        "passes, assuming semi-honest parties. PSI and the non-goals: "
        "`docs/protocols.md` §2.7 and §5. The transfer protocol is described in "
        "`docs/transfer.md` (§4 who learns what, §5 leakages) and in the code "
        "(`ftl/transfer/source.py`, `target.py`, `_messages.py`): source S "
        "(labels) and target T, representations "
        "`u = W h̃` of hidden activations `h̃ = [h; 1]`, prototypes `P` (K' × d: "
        "K' = 1 for two classes, else the number of classes), the loss's Taylor "
        "coefficients `Q` and label codes `β_i`, alignment weight γ.",
    ),
    section=_section,
    category_note=_category_note,
    estimator_facts=estimator_facts,
)
