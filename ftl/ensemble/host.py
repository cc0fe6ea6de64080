"""Host role of vertical gradient boosting, SecureBoost (runs where the host's data is).

Message sequence of a fit, as seen from a host H (see docs/protocols.md §7):

1. ``open``: H bins its own columns on the training rows (the bin edges stay at
   H), draws a secret order of its features for the fit and answers with its
   number of bins per feature in that order. Everything the guest sees or names
   of H's features (bins per feature, histograms, splits) is in that order: the
   guest knows them by pseudonym, not by column.
2. per tree H takes part in, ``gradients``: every training row's gradient and
   hessian packed into one ciphertext under the guest's key (mixed trees: the
   tree's number too, which must be one of H's own).
3. per split of a node, ``grow``: the partitions H has not seen yet (with the
   left-row masks of the splits it did not make) and the node whose histogram the
   guest needs; H answers with the node's per-bin sums of the packed ciphertexts,
   several bins per ciphertext, re-randomised, and the bins' row counts.
   ``split_grow``: the guest's scan chose H's feature and bin; H records the
   column and real threshold under a fresh opaque id and returns which rows go
   left, with the histogram of the child the guest asks for (``split``: the same
   without children or histogram, as earlier guests ask). ``split_grow_tied``:
   the scan found several of H's features of exactly the same gain; H applies
   the one on its first column (scikit-learn's choice) and says which.
4. with early stopping, ``decide``: the prediction walk of the validation rows.
5. after every iteration, ``iteration_end``: H keeps its step (fits it keeps steps
   of, :mod:`ftl.ensemble._checkpoint`; a resumed fit re-opens with ``resume``).
6. ``finish``: H keeps its split table as a model shard.

H protects itself, whatever the guest's code does: it builds histograms only for
the training rows (the root) and for nodes it saw partitioned, refuses any node
or child below the run's ``min_samples_leaf`` (which its policy bounds from
below), caps trees (the fit's ``max_trees``, which its policy bounds), depth,
leaves and bins, refuses its own splits and the histograms of nodes below the
host layers of layered trees (``host_depth``), refuses any tree of a mixed fit
that is not its own, and checks every mask and index against the nodes it knows.
It sees gradients and hessians as ciphertexts only. A fit it keeps steps of resumes
for the fit's own peer only, each step once and each of the host's trees started at
most twice (:mod:`ftl.ensemble._checkpoint`).
"""

from __future__ import annotations

import secrets
from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np

from ftl.crypto import histograms
from ftl.crypto.scheme import peer_key_from_public
from ftl.data.fit_checkpoint import in_current_run
from ftl.ensemble import _messages as msg
from ftl.ensemble._binning import fit_binning
from ftl.ensemble._checkpoint import ResumableHost, splits_digest
from ftl.ensemble._decisions import SplitTable, WalkLedger, answer_walk
from ftl.ensemble._plan import TreePlan
from ftl.federation.budget import guard_of
from ftl.federation.messages import CiphertextArray, Message, PlainArray
from ftl.federation.service import operation, role

__all__ = ["BoostingHost", "HostParams", "SHARD_KIND", "aligned_rows", "secret_feature_order"]

#: The ``"kind"`` of the shard a host keeps (its split table).
SHARD_KIND = "sbt.host"
#: Rows scikit-learn's bin mapper computes thresholds on (drawn with the seed).
BINNING_SUBSAMPLE = 200_000


def _int(params: Mapping, name: str, low: int, high: int | None = None, *, optional=False):
    value = params.get(name)
    if value is None and optional:
        return None
    if not isinstance(value, int) or isinstance(value, bool) or value < low:
        raise ValueError(f"parameter {name} must be an integer >= {low}, got {value!r}")
    if high is not None and value > high:
        raise ValueError(f"parameter {name} must be at most {high}, got {value!r}")
    return value


@dataclass(frozen=True)
class HostParams:
    """The public parameters a guest opens a fit with, as the host checks them."""

    max_bins: int
    min_samples_leaf: int
    max_leaf_nodes: int | None
    max_depth: int | None
    seed: int
    encryption: str | None
    insecure_for_tests: bool
    #: Layered trees (SecureBoost+): this host splits only nodes above this depth.
    host_depth: int | None = None
    #: Most trees of the fit (iterations times classes); None: not declared (an
    #: earlier guest's open, which a served host's policy refuses).
    max_trees: int | None = None
    #: Mixed trees (SecureBoost+): the plan of turns, and this host's block in it.
    plan: TreePlan | None = None
    party: int | None = None

    @classmethod
    def from_json(cls, params) -> HostParams:
        """Checked parameters; ``ValueError`` for anything missing or malformed."""
        if not isinstance(params, Mapping):
            raise ValueError("sbt.open params must be a JSON object")
        encryption = params.get("encryption")
        if encryption not in ("paillier", None):
            raise ValueError(f"encryption must be 'paillier' or None, got {encryption!r}")
        return cls(
            max_bins=_int(params, "max_bins", 2, 255),
            min_samples_leaf=_int(params, "min_samples_leaf", 1),
            max_leaf_nodes=_int(params, "max_leaf_nodes", 2, optional=True),
            max_depth=_int(params, "max_depth", 1, optional=True),
            seed=_int(params, "seed", 0, 2**32 - 1),
            encryption=encryption,
            insecure_for_tests=params.get("insecure_for_tests") is True,
            host_depth=_int(params, "host_depth", 1, optional=True),
            max_trees=_int(params, "max_trees", 1, optional=True),
            **cls._mixed(params),
        )

    @staticmethod
    def _mixed(params: Mapping) -> dict:
        """A mixed fit's plan and this host's turn in it (``party``: its block,
        1 for the first host), checked; nothing for other fits."""
        if "mixed" not in params:
            return {}
        plan = TreePlan.from_json(params["mixed"])
        party = _int(params, "party", 1, plan.n_parties - 1)
        if params.get("host_depth") is not None:
            raise ValueError("mixed trees have no host layers (host_depth)")
        return {"plan": plan, "party": party}

    def owns(self, tree: int) -> bool:
        """Whether tree number ``tree`` of a mixed fit splits on this host's columns."""
        return self.plan.owns(self.party, tree)


#: Largest squared-error gradient bound a host accepts (targets in the billions need
#: scaling): the bound sets the slot width, and a wider slot reads more rows (below).
MAX_GRADIENT_BOUND = 2.0**32


def check_layout(layout: histograms.GHLayout, n_train: int, name: str) -> None:
    """Refuse a packing layout other than the one an honest guest uses.

    The slot width decides how many rows a guest that encrypts crafted values
    (``2**j`` for row ``j``) reads from one bin sum (docs/protocols.md §7.7): the
    honest layout of the log-losses gives ``2 (bitlen(n) + 48)`` bits a bin, a
    guest-chosen one up to the whole key. So the host pins what it can check: the
    fraction bits, the row count and the log-losses' bounds ``|g| <= 1``,
    ``h <= 1/4``; squared error's gradient bound comes from the guest's targets and
    is only capped.
    """
    if layout.frac_bits != histograms.DEFAULT_FRAC_BITS:
        raise ValueError(
            f"{name}: the packing layout must use {histograms.DEFAULT_FRAC_BITS} fraction "
            f"bits, not {layout.frac_bits}"
        )
    if layout.n_rows != n_train:
        raise ValueError(f"{name}: the packing layout is for {layout.n_rows} rows, not {n_train}")
    if layout.h_bound is not None and (layout.g_bound, layout.h_bound) != (1.0, 0.25):
        raise ValueError(f"{name}: the log-losses' packing bounds are |g| <= 1 and h <= 1/4")
    if layout.h_bound is None and layout.g_bound > MAX_GRADIENT_BOUND:
        raise ValueError(
            f"{name}: gradients up to {layout.g_bound:g} are refused (at most 2**32): "
            "scale the regression target"
        )


def aligned_rows(party, alignment: str, positions: np.ndarray, what: str) -> np.ndarray:
    """This party's local rows of aligned ``positions`` (each row once, all present)."""
    rows = party.aligned_rows(alignment, positions)
    if (rows < 0).any():
        raise ValueError(f"{what} include rows this party does not have")
    if np.unique(rows).shape[0] != rows.shape[0]:
        raise ValueError(f"{what} repeat a row")
    return rows


def secret_feature_order(n_features: int) -> np.ndarray:
    """A uniformly random order of ``n_features`` columns, from the OS's CSPRNG.

    Drawn afresh by the host for every fit and never sent: the guest knows the
    host's features only by their positions in it (pseudonyms), so a guest that
    knows the host's column order still cannot tell which column a split uses.
    """
    return np.array(secrets.SystemRandom().sample(range(n_features), n_features), dtype=np.intp)


class _TreeNodes:
    """The nodes of the tree being grown that this host knows, with their rows."""

    def __init__(self, tree: int):
        self.tree = tree
        self.rows: dict[int, np.ndarray] = {}  # node -> sorted training positions
        self.depth: dict[int, int] = {}
        self.split: set[int] = set()  # nodes partitioned
        self.built: set[int] = set()  # nodes whose histogram was sent
        self.own: dict[int, np.ndarray] = {}  # nodes this host split: their left mask
        self.n_splits = 0


@role("sbt.host", opens=(msg.OPEN.name, msg.RESUME.name))
class BoostingHost(ResumableHost):
    """Training state of one host: its binned columns, the current tree's nodes, the
    guest's ciphertexts of that tree and the splits made so far."""

    def __init__(self, party, request: Message):
        if request.type not in (msg.OPEN.name, msg.RESUME.name):
            raise ValueError("sbt.host sessions open with an sbt.open (or sbt.resume) message")
        self.params = HostParams.from_json(request["params"])
        self.party = party
        self.name = party.name
        self.guard = guard_of(party)
        self.n_jobs = self.guard.n_jobs(request["params"].get("n_jobs"))
        alignment = request["alignment"]
        rows = aligned_rows(party, alignment, request["positions"], "training rows")
        validation = aligned_rows(party, alignment, request["validation"], "validation rows")
        scheme = "plain" if self.params.encryption is None else "paillier"
        self.guest_key = peer_key_from_public(
            request["public_key"], scheme, self.params.insecure_for_tests, self.n_jobs
        )
        self.guard.cap("n_bins", self.params.max_bins)
        features = party.local_features(rows)
        self._bind(request, features)
        kept = None
        if request.type == msg.RESUME.name:
            kept = self._load_step(request["step"], len(rows), party.n_features)
        else:
            # Admitted last, once the request is known to be well formed (a refused or
            # malformed open consumes no budget), before the binning.
            self.guard.admit_fit("sbt", alignment, len(rows), party.n_features)
        binning = fit_binning(
            features, self.params.max_bins, BINNING_SUBSAMPLE, random_state=self.params.seed
        )
        # Everything the guest sees names this host's features by pseudonym: the
        # position in an order the host draws for this fit and keeps to itself.
        # ``order[p]`` is the column of pseudonym ``p``; the split table records
        # columns, so the shard and the walk never depend on the order.
        self.order = (
            secret_feature_order(features.shape[1])
            if kept is None
            else np.asarray(kept["order"], dtype=np.intp)
        )
        self.thresholds = [binning.thresholds[j] for j in self.order]
        self.n_bins_non_missing = binning.n_bins_non_missing[self.order]
        self.binned = binning.transform(features)[:, self.order]
        self.validation = party.local_features(validation)
        self.splits = SplitTable()
        self.ledger = WalkLedger()
        self.nodes: _TreeNodes | None = None
        self.n_trees = 0  # trees this host took part in
        self.tree = -1  # the current one's number (the guest's only trees skipped)
        self.trees_started = 0  # with the trees a resume grew again: never goes back
        self.packed_gh = None
        self.layout = None
        self.finished = False
        if kept is not None:
            self._restore_step(kept)
        self._take_over(request, opening=kept is None)

    def opened(self) -> Message:
        if self.checkpoints is None:
            return Message(msg.OPENED.name, {"n_bins_non_missing": self.n_bins_non_missing})
        fields = {"step": self.step, "splits": splits_digest(self.splits.ids)}
        return Message(
            msg.OPENED_STEPS.name, {"n_bins_non_missing": self.n_bins_non_missing, **fields}
        )

    @property
    def n_train(self) -> int:
        return self.binned.shape[0]

    # ------------------------------------------------------------------ per tree
    def _next_tree(self, request: Message) -> int:
        """The number of the tree ``request`` starts, checked: below the fit's
        ``max_trees``, after the last one and, in a mixed fit, one of this host's own
        (no other tree's histogram or split is its to give)."""
        p = self.params
        if p.max_trees is not None and self.n_trees + 1 > p.max_trees:
            raise ValueError(f"{self.name}: the fit asked for at most {p.max_trees} trees")
        tree = request.fields.get("tree")
        if tree is None:
            if p.plan is not None:
                raise ValueError(f"{self.name}: a mixed fit names its trees (sbt.tree_gradients)")
            return self.tree + 1
        if tree <= self.tree or (p.max_trees is not None and tree >= p.max_trees):
            raise ValueError(f"{self.name}: no tree {tree} after tree {self.tree}")
        if p.plan is not None and not p.owns(tree):
            raise ValueError(
                f"{self.name}: tree {tree} of the mixed fit is not this host's own "
                f"(its turn is party {p.party})"
            )
        return tree

    @operation(accepts=(msg.GRADIENTS.name, msg.TREE_GRADIENTS.name))
    @in_current_run
    def gradients(self, request: Message) -> Message:
        """A new tree: keep the guest's packed gradients and hessians of every row."""
        values = request["values"]
        layout = msg.layout_from_json(request["layout"])
        check_layout(layout, self.n_train, self.name)
        if isinstance(values, CiphertextArray) != (self.params.encryption is not None):
            raise ValueError(f"{self.name}: gradients of another encryption mode than the fit's")
        if isinstance(values, CiphertextArray):
            if values.shape != (self.n_train,) or values.key_id != self.guest_key.key_id:
                raise ValueError(f"{self.name}: expected one ciphertext per row, guest's key")
            if layout.key_bits != int(self.guest_key.n).bit_length():
                raise ValueError(f"{self.name}: the packing layout is for another key size")
        elif values.shape != (self.n_train, layout.slots_per_bin):
            raise ValueError(f"{self.name}: expected one (g, h) per training row")
        tree = self._next_tree(request)
        self._count_tree()
        self.n_trees += 1
        self.tree = tree
        self.packed_gh, self.layout = values, layout
        self.nodes = _TreeNodes(tree)
        return Message("ack", {})

    def _tree(self) -> _TreeNodes:
        if self.nodes is None:
            raise ValueError(f"{self.name}: no tree was started (send gradients first)")
        return self.nodes

    # ------------------------------------------------------------------ per split
    def _check_split(self, n_splits: int, depth: int, n_left: int, n_right: int) -> None:
        """Refuse the ``n_splits + 1``-th split of a tree, of a node at ``depth``, if the
        run's parameters do not allow it."""
        p = self.params
        if p.max_depth is not None and depth >= p.max_depth:
            raise ValueError(f"{self.name}: a node at the maximum depth cannot be split")
        if p.max_leaf_nodes is not None and n_splits + 1 > p.max_leaf_nodes - 1:
            raise ValueError(f"{self.name}: the tree would exceed max_leaf_nodes")
        if min(n_left, n_right) < p.min_samples_leaf:
            raise ValueError(
                f"{self.name}: a child of {min(n_left, n_right)} rows is below the minimum "
                f"leaf size of {p.min_samples_leaf}"
            )

    @operation(accepts=(msg.SPLIT.name,))
    @in_current_run
    def split(self, request: Message) -> Message:
        """Split a node at this host's feature and bin; keep the threshold here (an
        earlier guest's request: its children come with the next ``grow``)."""
        split_id, left = self._split(
            self._tree(), request["node"], request["feature"], request["bin_threshold"]
        )
        return Message(msg.PARTITION.name, {"split_id": split_id, "left": left})

    @operation(accepts=(msg.SPLIT_GROW.name, msg.SPLIT_GROW_TIED.name))
    @in_current_run
    def split_grow(self, request: Message) -> Message:
        """The partitions not seen yet, then a split of a node at this host's feature
        and bin into the named children, and the histogram of the child asked for.

        What a ``grow`` without histogram, a ``split``, a ``grow`` of the split's
        partition and the child's histogram would do, in one round trip; each step
        is checked as there (a refused step leaves the steps before it done). Of
        tied splits (``split_grow_tied``) the host applies the one on its first
        column, as scikit-learn would on the pooled columns, and says which.
        """
        nodes = self._tree()
        self._learn(nodes, request["partitions"], request["left"], -1)
        children = request["children"]
        if children.shape != (2,):
            raise ValueError(f"{self.name}: a split has two children")
        choice, feature, bin_threshold, asked = self._tie_break(request)
        if asked >= 0 and asked not in children.tolist():
            raise ValueError(f"{self.name}: node {asked} is no child of the split")
        split_id, left = self._split(nodes, request["node"], feature, bin_threshold)
        parts = np.array([[request["node"], *children.tolist()]], dtype=np.int64)
        self._apply_partitions(nodes, parts, np.zeros(0, dtype=bool), asked)
        fields = {"split_id": split_id, "left": left}
        tied = request.type == msg.SPLIT_GROW_TIED.name
        if tied:
            fields["choice"] = choice
        if asked < 0:
            return Message((msg.TIED_PARTITION if tied else msg.PARTITION).name, fields)
        fields.update(self._build(nodes, asked))
        return Message((msg.TIED_SPLIT_HISTOGRAM if tied else msg.SPLIT_HISTOGRAM).name, fields)

    def _tie_break(self, request: Message) -> tuple[int, int, int, int]:
        """Of the request's split and its ``ties`` (if any), the one on this host's
        first column: its index (0: the request's own), feature, bin and asked child."""
        candidates = [(request["feature"], request["bin_threshold"], request["asked"])]
        if request.type == msg.SPLIT_GROW_TIED.name:
            ties = request["ties"]
            if ties.ndim != 2 or ties.shape[1] != 3:
                raise ValueError(f"{self.name}: ties are rows (feature, bin_threshold, asked)")
            candidates += [tuple(int(v) for v in row) for row in ties.tolist()]
        features = [feature for feature, _, _ in candidates]
        if not all(0 <= f < self.binned.shape[1] for f in features):
            raise ValueError(f"{self.name}: no feature {features}")
        if len(set(features)) != len(features):
            raise ValueError(f"{self.name}: tied splits are of different features")
        choice = int(np.argmin(self.order[features]))
        return (choice, *candidates[choice])

    def _split(
        self, nodes: _TreeNodes, node: int, feature: int, bin_threshold: int
    ) -> tuple[str, np.ndarray]:
        """Record the split of ``node`` at ``feature`` (a pseudonym) and
        ``bin_threshold``; its id and the node's left-row mask."""
        if not 0 <= feature < self.binned.shape[1]:
            raise ValueError(f"{self.name}: no feature {feature}")
        # the last bin is never a threshold: its right child would be empty
        if not 0 <= bin_threshold < self.n_bins_non_missing[feature] - 1:
            raise ValueError(f"{self.name}: no bin threshold {bin_threshold} of feature {feature}")
        if node not in nodes.rows or node in nodes.split or node in nodes.own:
            raise ValueError(f"{self.name}: node {node} is unknown or already split")
        depth = nodes.depth[node]
        if self.params.host_depth is not None and depth >= self.params.host_depth:
            # layered trees: the guest's layers below are not this host's to split
            raise ValueError(
                f"{self.name}: node {node} at depth {depth} is below the host layers "
                f"(host_depth={self.params.host_depth})"
            )
        rows = nodes.rows[node]
        left = self.binned[rows, feature] <= bin_threshold
        n_left = int(left.sum())
        self._check_split(nodes.n_splits, depth, n_left, rows.shape[0] - n_left)
        split_id = secrets.token_hex(8)
        self.splits.add(
            split_id,
            nodes.tree,
            depth,
            int(self.order[feature]),  # the column, not the pseudonym the guest knows
            float(self.thresholds[feature][bin_threshold]),
        )
        nodes.own[node] = left
        return split_id, left

    def _apply_partitions(
        self, nodes: _TreeNodes, parts: np.ndarray, masks: np.ndarray, node: int
    ) -> None:
        """Learn the children of each partition [parent, left, right], then make sure
        ``node`` (-1: none) is known; all checked before anything is applied (a
        refused request changes nothing)."""
        if parts.ndim != 2 or parts.shape[1] != 3:
            raise ValueError(f"{self.name}: partitions are rows [parent, left, right]")
        staged: dict[int, tuple[np.ndarray, int]] = {}  # child -> (rows, depth)
        parents: set[int] = set()
        offset, n_splits = 0, nodes.n_splits
        for parent, left_id, right_id in parts.tolist():
            rows, depth = staged.get(parent, (nodes.rows.get(parent), nodes.depth.get(parent)))
            if rows is None or parent in nodes.split or parent in parents:
                raise ValueError(f"{self.name}: node {parent} is unknown or already split")
            if (
                min(left_id, right_id) < 0
                or left_id == right_id
                or any(c in nodes.rows or c in staged for c in (left_id, right_id))
            ):
                raise ValueError(f"{self.name}: the partition of {parent} names bad children")
            if parent in nodes.own:
                left = nodes.own[parent]
            else:
                left = masks[offset : offset + rows.shape[0]]
                offset += rows.shape[0]
                if left.shape != rows.shape:
                    raise ValueError(f"{self.name}: the left mask of {parent} is too short")
            n_left = int(left.sum())
            self._check_split(n_splits, depth, n_left, rows.shape[0] - n_left)
            n_splits += 1
            parents.add(parent)
            staged[left_id] = (rows[left], depth + 1)
            staged[right_id] = (rows[~left], depth + 1)
        if offset != masks.shape[0]:
            raise ValueError(f"{self.name}: the left masks do not match the partitions")
        if node >= 0 and node not in nodes.rows and node not in staged:
            raise ValueError(f"{self.name}: node {node} is unknown")
        for child, (rows, depth) in staged.items():
            nodes.rows[child], nodes.depth[child] = rows, depth
        nodes.split |= parents
        nodes.n_splits = n_splits

    @operation(accepts=(msg.GROW.name,))
    @in_current_run
    def grow(self, request: Message) -> Message:
        """Learn the new partitions, then build the histogram of one node (or none)."""
        nodes = self._tree()
        node = request["node"]
        self._learn(nodes, request["partitions"], request["left"], node)
        if node < 0:
            return Message("ack", {})
        return Message(msg.HISTOGRAM.name, self._build(nodes, node))

    def _learn(self, nodes: _TreeNodes, parts: np.ndarray, masks: np.ndarray, node: int) -> None:
        """Learn the partitions of a request that then names ``node`` (-1: none)."""
        if not nodes.rows:
            # the tree's first histogram is its root's: every training row
            if parts.shape[0] or node < 0:
                raise ValueError(f"{self.name}: a tree starts with its root's histogram")
            nodes.rows[node] = np.arange(self.n_train, dtype=np.int64)
            nodes.depth[node] = 0
        elif node >= 0 and node in nodes.built:
            raise ValueError(f"{self.name}: the histogram of node {node} was already built")
        else:
            # The root may be small (all training rows, admitted with the fit); any
            # other node has at least the minimum leaf size, as both children of
            # every split this host allowed.
            self._apply_partitions(nodes, parts, masks, node)

    def _build(self, nodes: _TreeNodes, node: int) -> dict:
        """The fields of the histogram of a known ``node`` (built once per node)."""
        if node in nodes.built:
            raise ValueError(f"{self.name}: the histogram of node {node} was already built")
        host_depth = self.params.host_depth
        if host_depth is not None and nodes.depth[node] >= host_depth:
            # layered trees: nothing below the host layers is split on this host's
            # columns, so no histogram of such a node is needed (or sent)
            raise ValueError(
                f"{self.name}: node {node} is below the host layers (host_depth={host_depth}); "
                "no histogram of it"
            )
        nodes.built.add(node)
        return self._histogram(node, nodes.rows[node])

    def _histogram(self, node: int, rows: np.ndarray) -> dict:
        """The node's bin sums, packed and re-randomised, and its bins' row counts.

        Only the bins that hold rows are sent (feature by feature, bin by bin): the
        counts already tell which are empty, and a deep node fills few of them.
        """
        n_bins = int(self.n_bins_non_missing.max(initial=1))
        # the counts come with the sums (in plaintext mode from the same pass)
        sums, counts = histograms.encrypted_bin_sums(
            self.guest_key,
            self.packed_gh,
            self.binned,
            rows,
            n_bins,
            n_jobs=self.n_jobs,
            with_counts=True,
        )
        filled = sums.values[counts > 0][None]
        if isinstance(sums, CiphertextArray):
            filled = CiphertextArray(filled, sums.key_id, sums.width)
        else:
            filled = PlainArray(filled)
        packed = histograms.compress_bins(self.guest_key, filled, self.layout)
        return {"node": node, "sums": packed, "counts": counts}

    # ------------------------------------------------------------------ the rest
    @operation(accepts=(msg.DECIDE.name,))
    @in_current_run
    def decide(self, request: Message) -> Message:
        """Early stopping: the prediction walk of the validation rows."""
        return answer_walk(self.splits, self.ledger, self.validation, request)

    @operation(accepts=(msg.ITERATION_END.name,))
    @in_current_run
    def iteration_end(self, request: Message) -> Message:
        """An iteration's trees (and their validation walk) are done: keep the step.
        The tree's rows and ciphertexts are not needed any more, nor answers about
        the trees walked so far."""
        self.nodes, self.packed_gh = None, None
        self.ledger.close()
        self._end_step(request["step"])
        return Message("ack", {})

    @operation(accepts=(msg.FINISH.name,))
    @in_current_run
    def finish(self, request: Message) -> Message:
        """Keep the split table (ids, features, thresholds) as a model shard."""
        if self.finished:
            raise ValueError(f"{self.name}: this fit was already finished")
        self.finished = True
        self.party.store_model(
            request["model_id"],
            {"kind": SHARD_KIND, "splits": self.splits, "n_features": self.binned.shape[1]},
        )
        self._finished()
        return Message("ack", {})
