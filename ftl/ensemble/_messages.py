"""Message types of vertical gradient boosting, SecureBoost (see docs/protocols.md §7).

Fit (role ``sbt.host``): ``open`` -> ``opened``; per tree ``gradients`` (mixed
trees: ``tree_gradients``, which names the tree); per split ``grow`` -> ``histogram``
(the partitions the host has not seen yet, and the histogram of one node), and for a
host's own split ``split_grow`` -> ``split_histogram`` (the split, its children and
the smaller child's histogram in one round trip; ``partition`` when no histogram is
asked for; earlier guests send ``split`` -> ``partition``; splits of equal gain on
several of the host's features: ``split_grow_tied`` -> ``tied_split_histogram`` or
``tied_partition``, which name the one the host applied); per boosting iteration
with early stopping ``decide`` -> ``decisions`` (validation rows); after every
iteration, to a host that keeps the fit's steps, ``iteration_end``; at the end
``finish``. A guest that resumes a fit re-opens the session with ``resume`` (at a
step); a host that keeps steps answers an open or a resume with ``opened_steps``.
Prediction (role ``sbt.predict``): ``predict_open``, then one ``decide`` ->
``decisions`` per tree level.
"""

from ftl.crypto.histograms import GHLayout
from ftl.federation.messages import (
    ALIGNED_POSITIONS,
    PUBLIC_INT,
    PUBLIC_JSON,
    FieldSpec,
    ValueKind,
    register,
)
from ftl.federation.messages import MAX_ROWS as _MAX_ROWS

_PUBLIC = ValueKind.PUBLIC
#: Most columns one party's block may have (bounds per-feature fields).
MAX_FEATURES = 1 << 16
#: Most nodes one message may name (partitions, split ids of a tree level).
MAX_NODES = 1 << 20
#: Most ciphertexts of one histogram: every bin of every feature, uncompressed.
MAX_BIN_SUMS = MAX_FEATURES * 256

_ID = FieldSpec("str", _PUBLIC, max_len=64)

OPEN = register(
    "sbt.open",
    "Guest opens a host's training session: public parameters (max_bins, "
    "min_samples_leaf, max_leaf_nodes, max_depth, max_trees, the binning seed, "
    "encryption; layered trees' host_depth; mixed trees' plan and the host's turn), the "
    "guest's public key and the aligned positions of the training rows and of the "
    "validation rows of early stopping (none without).",
    params=PUBLIC_JSON,
    public_key=PUBLIC_JSON,
    alignment=_ID,
    positions=ALIGNED_POSITIONS,
    validation=ALIGNED_POSITIONS,
)
RESUME = register(
    "sbt.resume",
    "Guest re-opens a host's training session to go on with a checkpointed fit (params "
    "carry its fit_id) from the end of boosting iteration `step` (0: the open); the "
    "fields of sbt.open, answered like an open (sbt.opened_steps).",
    **OPEN.fields,
    step=PUBLIC_INT,
)
OPENED = register(
    "sbt.opened",
    "Host's bins per feature (bin edges stay at the host): the scan of a split needs them.",
    n_bins_non_missing=FieldSpec("array", _PUBLIC, ndim=1, dtypes=("int64",), max_len=MAX_FEATURES),
)
OPENED_STEPS = register(
    "sbt.opened_steps",
    "sbt.opened of a host that keeps the fit's steps (the open named a fit_id): its bins "
    "per feature, the step it (re-)opened at, and the SHA-256 of its split ids so far "
    "(sorted), which a resuming guest checks against the trees it kept.",
    n_bins_non_missing=OPENED.fields["n_bins_non_missing"],
    step=PUBLIC_INT,
    splits=_ID,
)
ITERATION_END = register(
    "sbt.iteration_end",
    "End of boosting iteration `step` - 1: the host keeps its state at step `step` (sent to "
    "a host that answered with sbt.opened_steps).",
    step=PUBLIC_INT,
)
GRADIENTS = register(
    "sbt.gradients",
    "One tree: each training row's gradient and hessian packed into one ciphertext "
    "under the guest's key (fresh randomness every tree), and the public packing.",
    values=FieldSpec("encrypted", ValueKind.CIPHERTEXT, per_sample=True, max_len=_MAX_ROWS),
    layout=PUBLIC_JSON,
)
TREE_GRADIENTS = register(
    "sbt.tree_gradients",
    "One tree of a mixed fit: sbt.gradients and the tree's number over all iterations "
    "and classes (public), which the host checks is one of its own.",
    values=GRADIENTS.fields["values"],
    layout=PUBLIC_JSON,
    tree=PUBLIC_INT,
)
GROW = register(
    "sbt.grow",
    "The partitions of the tree the host has not seen (rows [parent, left, right]) with "
    "the left-row masks of those it did not split itself (concatenated over the parents' "
    "rows in training order), and the node whose histogram to build (-1: none).",
    partitions=FieldSpec("array", _PUBLIC, ndim=2, dtypes=("int64",), max_len=MAX_NODES),
    left=FieldSpec("array", _PUBLIC, ndim=1, dtypes=("bool",), per_sample=True, max_len=_MAX_ROWS),
    node=PUBLIC_INT,
)
HISTOGRAM = register(
    "sbt.histogram",
    "Per-bin sums of the node's packed gradients and hessians under the guest's key, "
    "several bins per ciphertext, re-randomised, and the bins' row counts.",
    node=PUBLIC_INT,
    sums=FieldSpec("encrypted", ValueKind.CIPHERTEXT, max_len=MAX_BIN_SUMS),
    counts=FieldSpec("array", _PUBLIC, ndim=2, dtypes=("int64",), max_len=MAX_FEATURES),
)
SPLIT = register(
    "sbt.split",
    "Split the node at the host's feature and bin: the best split of the guest's scan.",
    node=PUBLIC_INT,
    feature=PUBLIC_INT,
    bin_threshold=PUBLIC_INT,
)
SPLIT_GROW = register(
    "sbt.split_grow",
    "The guest's scan chose the host's feature and bin at a node: the partitions the "
    "host has not seen (as in sbt.grow), the split, the ids of its two children, and "
    "which child's histogram to build at once (-1: none).",
    partitions=GROW.fields["partitions"],
    left=GROW.fields["left"],
    node=PUBLIC_INT,
    feature=PUBLIC_INT,
    bin_threshold=PUBLIC_INT,
    children=FieldSpec("array", _PUBLIC, ndim=1, dtypes=("int64",), max_len=2),
    asked=PUBLIC_INT,
)
SPLIT_GROW_TIED = register(
    "sbt.split_grow_tied",
    "sbt.split_grow when the guest's scan found other features of the host with exactly "
    "the same gain: ties holds their (pseudonym, bin_threshold, asked); the host applies "
    "the one first in its own column order (scikit-learn's choice).",
    **SPLIT_GROW.fields,
    ties=FieldSpec("array", _PUBLIC, ndim=2, dtypes=("int64",), max_len=MAX_FEATURES),
)
PARTITION = register(
    "sbt.partition",
    "The host's split: an opaque id (the host keeps feature and threshold) and which of "
    "the node's rows go left.",
    split_id=_ID,
    left=FieldSpec("array", _PUBLIC, ndim=1, dtypes=("bool",), per_sample=True, max_len=_MAX_ROWS),
)
SPLIT_HISTOGRAM = register(
    "sbt.split_histogram",
    "The host's split (sbt.partition) and the asked child's histogram (sbt.histogram) "
    "in one reply.",
    split_id=_ID,
    left=PARTITION.fields["left"],
    node=PUBLIC_INT,
    sums=HISTOGRAM.fields["sums"],
    counts=HISTOGRAM.fields["counts"],
)
#: Which split of an sbt.split_grow_tied the host applied: 0 the request's own
#: feature and bin, i the i-th of its ties.
_CHOICE = {"choice": PUBLIC_INT}
TIED_PARTITION = register(
    "sbt.tied_partition",
    "sbt.partition of a tied split, and which of the tied splits the host applied.",
    **PARTITION.fields,
    **_CHOICE,
)
TIED_SPLIT_HISTOGRAM = register(
    "sbt.tied_split_histogram",
    "sbt.split_histogram of a tied split, and which of the tied splits the host applied.",
    **SPLIT_HISTOGRAM.fields,
    **_CHOICE,
)
DECIDE = register(
    "sbt.decide",
    "One level of the prediction walk: (row, index into split_ids) of the rows that sit "
    "at the host's split nodes of the level's depth.",
    split_ids=FieldSpec("json", _PUBLIC, max_len=MAX_NODES),
    pairs=FieldSpec(
        "array", _PUBLIC, ndim=2, dtypes=("int64",), per_sample=True, max_len=_MAX_ROWS
    ),
)
DECISIONS = register(
    "sbt.decisions",
    "Whether each asked row goes left at its host split node.",
    left=FieldSpec("array", _PUBLIC, ndim=1, dtypes=("bool",), per_sample=True, max_len=_MAX_ROWS),
)
FINISH = register(
    "sbt.finish",
    "Training done: the host keeps its split table (ids, features, thresholds) as a shard.",
    model_id=_ID,
)
PREDICT_OPEN = register(
    "sbt.predict_open",
    "Open a prediction session on a stored shard for some aligned rows.",
    model_id=_ID,
    alignment=_ID,
    positions=ALIGNED_POSITIONS,
)


def layout_to_json(layout: GHLayout) -> dict:
    """The packing of ``sbt.gradients`` (public: bounds rounded to powers of two)."""
    return {
        "key_bits": int(layout.key_bits),
        "n_rows": int(layout.n_rows),
        "g_bound": float(layout.g_bound),
        "h_bound": None if layout.h_bound is None else float(layout.h_bound),
        "frac_bits": int(layout.frac_bits),
    }


def layout_from_json(fields) -> GHLayout:
    """The inverse of :func:`layout_to_json`; ``ValueError`` for a malformed layout
    (a layout whose bins do not fit a ciphertext included)."""
    names = {"key_bits", "n_rows", "g_bound", "h_bound", "frac_bits"}
    if not isinstance(fields, dict) or set(fields) != names:
        raise ValueError(f"a packing layout has exactly the fields {sorted(names)}")
    for name in ("key_bits", "n_rows", "frac_bits"):
        if not isinstance(fields[name], int) or isinstance(fields[name], bool):
            raise ValueError(f"layout field {name} must be an integer")
    for name in ("g_bound", "h_bound"):
        value = fields[name]
        if (value is not None or name == "g_bound") and (
            isinstance(value, bool) or not isinstance(value, (int, float))
        ):
            raise ValueError(f"layout field {name} must be a number")
    if fields["key_bits"] > 1 << 16 or fields["n_rows"] > _MAX_ROWS:
        raise ValueError("layout field out of range")
    try:
        bounds = {
            b: None if fields[b] is None else float(fields[b]) for b in ("g_bound", "h_bound")
        }
        return GHLayout(**{**fields, **bounds})
    except (ValueError, OverflowError) as exc:  # FixedPointOverflowError: no bin fits
        raise ValueError(f"invalid packing layout: {exc}") from None
