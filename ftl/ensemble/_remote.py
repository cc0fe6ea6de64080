"""A host's columns as the guest's grower sees them: a Block over a channel.

:class:`RemoteBlock` implements the grower's block protocol
(:class:`ftl.ensemble._grower.Block`) with a host's fit session (``sbt.host``):
per tree it takes part in it sends the rows' gradients and hessians packed and
encrypted under the guest's key, and per split one ``grow`` round trip that
carries the partitions the host has not seen yet together with the request for
one node's histogram, which comes back as packed ciphertexts the guest decrypts.
A split on the host's own feature is one round trip too (``split_grow``): it
returns the left rows, an opaque id and the smaller child's histogram.
:func:`remote_decisions` asks a host's fit or prediction session for one level
of the prediction walk.
"""

from __future__ import annotations

import numpy as np

from ftl.crypto.histograms import decrypt_bin_sums, encrypt_gh, gh_layout
from ftl.ensemble import _messages as msg
from ftl.ensemble._histogram import Histogram
from ftl.ensemble._tree import SplitQueries
from ftl.federation.channel import Channel
from ftl.federation.messages import Message

__all__ = ["MAX_PAIRS", "RemoteBlock", "left_mask", "remote_decisions"]

#: Key size of the (unused) packing layout of plaintext mode: any bin fits.
_PLAIN_KEY_BITS = 1 << 12
#: Most (row, split) pairs of one ``decide`` request; a longer level is sent in parts.
MAX_PAIRS = 1 << 22


def left_mask(left_rows: np.ndarray, right_rows: np.ndarray) -> np.ndarray:
    """Which rows of the parent (its rows sorted) went left."""
    merged = np.concatenate([left_rows, right_rows])
    return np.argsort(merged, kind="stable") < left_rows.shape[0]


class RemoteBlock:
    """One host's columns, grown on through its ``sbt.host`` session.

    Parameters
    ----------
    channel : Channel
    endpoint : Endpoint
        The host's endpoint.
    own_key : PaillierOwnKey or PlainOwnKey
        The guest's key pair: gradients are encrypted under it, histograms
        decrypted with it.
    n_bins_non_missing : ndarray of int64
        The host's bins per feature (from ``sbt.opened``).
    constant_hessian : bool
        Squared error: the hessians are all one and not sent (the bins' row counts
        are their sums).
    mixed : bool, default=False
        Mixed trees: each tree's gradients name the tree (``sbt.tree_gradients``),
        which the host checks is one of its own.
    """

    role = "sbt.host"
    #: The host shows its features by pseudonym (a secret order of its own): of
    #: splits of equal gain it applies the one on its first column.
    breaks_ties = True

    def __init__(
        self,
        channel: Channel,
        endpoint,
        own_key,
        n_bins_non_missing,
        constant_hessian: bool,
        mixed: bool = False,
    ):
        self.channel = channel
        self.endpoint = endpoint
        self.own_key = own_key
        self.n_bins_non_missing = np.asarray(n_bins_non_missing, dtype=np.int64)
        self.n_features = self.n_bins_non_missing.shape[0]
        self.n_bins = int(self.n_bins_non_missing.max(initial=1))
        self.constant_hessian = constant_hessian
        self.mixed = mixed
        self.active = False  # whether the host takes part in the current tree
        self.layout = None
        self._pending: list[tuple[int, int, int]] = []
        self._masks: list[np.ndarray] = []
        self._own: set[int] = set()  # nodes the host split (it knows their children)

    def _call(self, op: str, message: Message) -> Message:
        return self.channel.call(self.endpoint, f"{self.role}.{op}", message)

    def begin_tree(self, gradients: np.ndarray, hessians: np.ndarray, tree: int) -> None:
        """Send the tree's packed gradients and hessians, encrypted afresh."""
        self._pending, self._masks, self._own = [], [], set()
        # nothing to split on: the host learns nothing of the tree
        self.active = self.n_features > 0
        if not self.active:
            return
        key_bits = getattr(self.own_key, "n", None)
        key_bits = _PLAIN_KEY_BITS if key_bits is None else int(key_bits).bit_length()
        if self.constant_hessian:
            # squared error: the bound of |g| is the guest's, rounded to a power of two
            g_bound, h_bound, hessians = float(np.abs(gradients).max(initial=1.0)), None, None
        else:
            g_bound, h_bound = 1.0, 0.25  # log-losses: |p - y| <= 1, p (1 - p) <= 1/4
        self.layout = gh_layout(key_bits, gradients.shape[0], g_bound, h_bound)
        values = encrypt_gh(self.own_key, gradients, hessians, self.layout)
        fields = {"values": values, "layout": msg.layout_to_json(self.layout)}
        schema = msg.GRADIENTS
        if self.mixed:
            fields["tree"], schema = int(tree), msg.TREE_GRADIENTS
        self._call("gradients", Message(schema.name, fields))

    def _pending_fields(self) -> dict:
        """The partitions the host has not seen (sent with the next request), dequeued."""
        fields = {
            "partitions": np.asarray(self._pending, dtype=np.int64).reshape(-1, 3),
            "left": np.concatenate([np.zeros(0, dtype=bool), *self._masks]),
        }
        self._pending, self._masks = [], []
        return fields

    def histogram(self, node: int, rows: np.ndarray) -> Histogram:
        """The node's histogram: pending partitions and the request in one round trip."""
        if not self.active:  # offers no feature: the scan skips the block
            empty = np.zeros((0, 1))
            return Histogram(empty, empty, empty.astype(np.int64))
        reply = self._call(
            "grow", Message(msg.GROW.name, {**self._pending_fields(), "node": int(node)})
        )
        return self._decrypt_histogram(reply, node, rows.shape[0])

    def _decrypt_histogram(self, reply: Message, node: int, n_rows: int) -> Histogram:
        """The histogram of ``node`` (``n_rows`` rows) in a host's reply, decrypted."""
        counts = reply["counts"]
        if (
            reply["node"] != node
            or counts.shape != (self.n_features, self.n_bins)
            or (counts.sum(axis=1) != n_rows).any()
        ):
            raise ValueError(f"{self.endpoint.name}: the histogram does not fit node {node}")
        # only the bins that hold rows were sent, in (feature, bin) order
        filled = counts > 0
        g_filled, h_filled = decrypt_bin_sums(
            self.own_key, reply["sums"], self.layout, 1, int(filled.sum())
        )
        g = np.zeros(counts.shape)
        g[filled] = g_filled[0]
        if h_filled is None:  # squared error: each hessian is 1, a bin's sum its count
            return Histogram(g, counts.astype(np.float64), counts)
        h = np.zeros(counts.shape)
        h[filled] = h_filled[0]
        return Histogram(g, h, counts)

    def split(
        self,
        node: int,
        rows: np.ndarray,
        feature: int,
        bin_threshold: int,
        children: tuple[int, int],
        asked: int,
        *,
        ties: list[tuple[int, int, int]] | None = None,
    ) -> tuple:
        """The host splits the node into ``children``; it returns the left rows, its
        opaque split id and the histogram of child ``asked`` (-1: none), all in one
        round trip that also carries the partitions it has not seen. With ``ties``
        (other ``(feature, bin_threshold, asked)`` of the same gain) the host
        applies the one on its first column and a fourth element says which (0: the
        scan's own pick, ``i``: ``ties[i - 1]``)."""
        request = {
            **self._pending_fields(),
            "node": int(node),
            "feature": int(feature),
            "bin_threshold": int(bin_threshold),
            "children": np.asarray(children, dtype=np.int64),
            "asked": int(asked),
        }
        if ties is None:
            reply = self._call("split_grow", Message(msg.SPLIT_GROW.name, request))
            choice, replies = 0, (msg.PARTITION, msg.SPLIT_HISTOGRAM)
        else:
            request["ties"] = np.asarray(ties, dtype=np.int64).reshape(-1, 3)
            reply = self._call("split_grow", Message(msg.SPLIT_GROW_TIED.name, request))
            choice, replies = reply["choice"], (msg.TIED_PARTITION, msg.TIED_SPLIT_HISTOGRAM)
            if not 0 <= choice <= len(ties):
                raise ValueError(f"{self.endpoint.name}: no tied split {choice}")
            asked = ties[choice - 1][2] if choice else asked
        expected = (replies[0] if asked < 0 else replies[1]).name
        if reply.type != expected:
            raise ValueError(f"{self.endpoint.name}: a split answered {reply.type}, not {expected}")
        left = reply["left"]
        if left.shape != rows.shape:
            raise ValueError(f"{self.endpoint.name}: split of node {node} has the wrong rows")
        self._own.add(node)
        histogram = None
        if asked >= 0:
            n_left = int(left.sum())
            n_rows = n_left if asked == children[0] else rows.shape[0] - n_left
            histogram = self._decrypt_histogram(reply, asked, n_rows)
        return (left, reply["split_id"], histogram) + (() if ties is None else (choice,))

    def partitioned(self, node, left, right, left_rows, right_rows) -> None:
        """Queue the partition for the next request (the host's own it already knows)."""
        if not self.active or node in self._own:
            return
        self._pending.append((int(node), int(left), int(right)))
        self._masks.append(left_mask(left_rows, right_rows))

    def end_tree(self) -> None:
        """Partitions after the tree's last histogram are never sent."""
        self._pending, self._masks, self._own = [], [], set()


def remote_decisions(channel: Channel, endpoint, op: str, queries: SplitQueries) -> np.ndarray:
    """Which queried rows go left at a host's split nodes (one level of the walk).

    ``op`` is the host's ``decide`` operation: of its fit session (validation rows)
    or of a prediction session. A level with more than :data:`MAX_PAIRS` pairs is
    sent in parts.
    """
    split_ids, which = np.unique(queries.split_id.astype(str), return_inverse=True)
    pairs = np.column_stack([queries.rows, which.reshape(-1)]).astype(np.int64)
    answers = []
    for start in range(0, max(pairs.shape[0], 1), MAX_PAIRS):
        part = pairs[start : start + MAX_PAIRS]
        used, local = np.unique(part[:, 1], return_inverse=True)
        request = {
            "split_ids": [str(split_ids[i]) for i in used],
            "pairs": np.column_stack([part[:, 0], local.reshape(-1)]).astype(np.int64),
        }
        reply = channel.call(endpoint, op, Message(msg.DECIDE.name, request))
        if reply["left"].shape != (part.shape[0],):
            raise ValueError(f"{endpoint.name}: the decisions do not match the rows asked")
        answers.append(reply["left"])
    return np.concatenate(answers) if answers else np.zeros(0, dtype=bool)
