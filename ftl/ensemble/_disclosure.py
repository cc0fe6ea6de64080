"""What vertical gradient boosting (SecureBoost) declares about itself to the audit report.

Its leakages are those of docs/protocols.md §7; the fitted estimator adds its trees,
iterations and how early stopping ran.
"""

from __future__ import annotations

from collections.abc import Iterator

from ftl.federation.disclosure import (
    Disclosure,
    Findings,
    Leakage,
    PublicPerSample,
    ReturnedByDesign,
)

__all__ = ["DISCLOSURE", "estimator_facts"]

#: The messages that start a tree at a host (a mixed fit's name the tree).
_TREE_STARTS = frozenset({"sbt.gradients", "sbt.tree_gradients"})


def _training(a: Findings) -> bool:
    return bool(a.type_set & ({"sbt.open", "sbt.resume"} | _TREE_STARTS))


def _resumed(a: Findings) -> bool:
    return "sbt.resume" in a.type_set


def _mixed(a: Findings) -> bool:
    return "sbt.tree_gradients" in a.type_set


def _validation_walk(findings: Findings) -> bool:
    """Whether a fit session walked validation rows (early stopping): a walk
    question in a session that also carried gradients; a prediction's walk has a
    session of its own."""
    sessions = {r.session for r in findings.transcript.records if r.type in _TREE_STARTS}
    return any(
        r.type == "sbt.decide" and r.session in sessions for r in findings.transcript.records
    )


def _prediction(a: Findings) -> bool:
    return "sbt.predict_open" in a.type_set


def _tree_numbers(numbers: list[int], shown: int = 12) -> str:
    """``1, 3, 5`` (1-based), the first ``shown`` and a count of the rest."""
    text = ", ".join(str(t + 1) for t in numbers[:shown])
    return text + (f", ... ({len(numbers) - shown} more)" if len(numbers) > shown else "")


def _host_partitions(est) -> Iterator[str]:
    """Per host, the trees in which the guest learned a partition of its rows (the
    trees with a split on the host's columns), numbered over iterations and classes."""
    parties = list(getattr(est, "party_split_counts_", {}))
    trees = [t for per_iteration in est.trees_ for t in per_iteration]
    for block, party in enumerate(parties[1:], start=1):
        numbers = [i for i, t in enumerate(trees) if (t.block[~t.is_leaf] == block).any()]
        yield f"{party}: {len(numbers)} of {len(trees)} trees" + (
            f" ({_tree_numbers(numbers)})" if numbers else ""
        )


def _tree_mode(est) -> str:
    mode = getattr(est, "tree_mode", "standard")
    if mode == "layered":
        return f"layered (host_depth={est.host_depth}, guest_depth={est.guest_depth})"
    if mode == "mixed":
        return (
            f"mixed (tree_num_per_party={est.tree_num_per_party}: each host hears of its "
            "own trees only)"
        )
    return mode


def estimator_facts(est) -> Iterator[tuple[str, str]]:
    """Summary rows of a fitted federated gradient boosting model: its iterations and
    trees, the tree mode, where the splits are, in which trees each host's partitions
    were revealed to the guest, and whether early stopping ran."""
    n_iter = getattr(est, "n_iter_", None)
    if n_iter is None:
        return
    trees = est.n_iter_ * est.n_trees_per_iteration_
    yield "Boosting iterations", f"{int(n_iter)} ({trees} trees)"
    yield "Tree mode", _tree_mode(est)
    counts = getattr(est, "party_split_counts_", {})
    yield "Splits per party", ", ".join(f"{party}: {int(n)}" for party, n in counts.items())
    yield "Host partitions revealed in", "; ".join(_host_partitions(est)) or "none"
    on = "on (validation rows scored by the prediction walk)"
    yield "Early stopping", on if est.do_early_stopping_ else "off"


DISCLOSURE = Disclosure(
    listed="when_present",
    name="vertical gradient boosting, SecureBoost (docs/protocols.md §7)",
    owner_types=_TREE_STARTS,
    returned_by_design=tuple(
        ReturnedByDesign(
            f"{histogram}.sums",
            "sbt.open",
            "SecureBoost's per-bin gradient sums, computed by the host on the guest's "
            "ciphertexts, go back to the guest (their key owner) to be decrypted, by design",
            reopened_by=("sbt.resume",),
        )
        for histogram in ("sbt.histogram", "sbt.split_histogram", "sbt.tied_split_histogram")
    ),
    public_per_sample=PublicPerSample(
        label="Row partitions at split nodes (public by design)",
        meaning="Which rows of a tree node go left at a split and, in the prediction walk, "
        "which rows sit at a host's split node and where they go: the instance-space "
        "partitions every party of SecureBoost learns (§7.6). No feature value, gradient or "
        "label.",
        check_note="row partitions at split nodes are public by SecureBoost's design",
    ),
    plaintext_values=" (every row's gradient and hessian, per-bin histogram sums)",
    leakages=(
        Leakage(
            "training",
            "Hosts learn the public training parameters (`max_bins`, `min_samples_leaf`, "
            "`max_leaf_nodes`, `max_depth`, key size, encryption mode), the number of trees "
            "(and so of iterations and classes), which of their customers are training rows "
            "and which validation rows, and in regression the power of two above each "
            "tree's largest gradient (the packing's public bound).",
            "§7.6",
            applies=_training,
        ),
        Leakage(
            "training",
            "Every host learns the rows of each tree node it builds a histogram for: the "
            "partition of every split before it, the guest's and other hosts' splits "
            "included. It sees the gradients and hessians as ciphertexts only.",
            "§7.6",
            applies=_training,
        ),
        Leakage(
            "training",
            "The guest learns each host's number of bins per feature and, for every node it "
            "asks about, the per-bin row counts and sums of its own gradients and hessians "
            "over each host feature's bins (so which groups of rows share a host bin), and "
            "at each host split which rows go left; the host's bin edges and thresholds "
            "stay at the host. It knows a host's features by pseudonym only (an order the "
            "host draws for each fit and keeps secret), not by column; of splits of exactly "
            "equal gain the host applies its first column's and says which.",
            "§7.6",
            applies=_training,
        ),
        Leakage(
            "training",
            "Mixed trees: each host takes part in its own trees only (the plan of turns "
            "is public; each tree it gets is named): it learns the number of each of its "
            "trees, and nothing of the guest's and the other hosts' trees, not even their "
            "partitions; the guest learns a host's partitions in that host's trees only "
            "(the report's row 'Host partitions revealed in').",
            "§7.3",
            applies=_mixed,
        ),
        Leakage(
            "training",
            "A deviating guest that sends crafted gradients instead of the loss's can read "
            "each host feature's bin of the node's rows from one histogram (a known "
            "limitation of SecureBoost); the host's minimum node size and its budget of "
            "fits and trees bound how many such reads it gets.",
            "§7.7",
            applies=_training,
        ),
        Leakage(
            "training",
            "Resumed fit: a host that kept the fit's steps learns when the guest's fit "
            "stopped and went on (a resume names the iteration to go on from). Each step is "
            "resumed at most once, so a deviating guest gets the histograms of each "
            "iteration's trees at most twice, and the trees grown again count against the "
            "host's pass cap (max_epochs); only the fit's own peer resumes it, bound to its "
            "parameters, key, rows and the host's data.",
            "§7.8",
            applies=_resumed,
        ),
        Leakage(
            "training",
            "Early stopping: the host answers the prediction walk for the validation rows "
            "after every iteration (as in prediction below).",
            "§7.5",
            applies=_validation_walk,
        ),
        Leakage(
            "prediction",
            "The guest learns, for every scored row, which way it goes at each host split "
            "node on its paths; hosts learn which of their customers are scored and which "
            "of their split nodes each row reaches, depth by depth (so which way it went "
            "at the nodes above, the guest's included).",
            "§7.5",
            applies=_prediction,
        ),
    ),
    estimator_facts=estimator_facts,
)
