"""Party side of ECDH PSI: the ``psi.host`` role.

A host answers the guest's PSI requests with its secret scalar ``b`` and keeps
everything that identifies its rows -- ids, its secret order, the mapping from
aligned positions to local rows -- to itself. Operations, in protocol order:

``open`` (``psi.open``)
    Draw ``b`` and a secret order of the host's rows; reply with the host's set
    size and public column names.
``blind`` (``psi.guest_points``, default mode)
    Step 3: return ``b*(a*P(x))`` for a batch, in the order received.
``submit`` (``psi.guest_points``, cardinality mode)
    Store ``b*(a*P(x))`` without returning it; ``shuffled`` later returns all of
    them in a secret random order, so the guest learns only how many match.
``own`` (``psi.fetch``)
    Step 3: the next batch of ``b*P(y)`` for the host's ids, in its secret order.
``reblinded`` (``psi.host_points_reblinded``, default mode)
    Step 4: the guest's ``a*b*P(y)`` for a batch of the host's points.
``assign`` (``psi.assign``)
    The host's doubly blinded values in the final aligned order; the host maps
    them to local rows and stages (does not yet store) the mapping.
``commit`` (``psi.commit``)
    Every party accepted; store the staged mapping with
    :meth:`ftl.Party.remember_alignment`.

Every point received is checked with ``crypto_core_ed25519_is_valid_point``;
counts, batch order and duplicates are checked too. Malformed data raises
``ValueError``; operations out of order raise
:class:`~ftl.federation.ProtocolError`.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from ftl.federation.messages import Message
from ftl.federation.service import ProtocolError, operation, role
from ftl.psi import messages as _messages  # noqa: F401  (registers the message types)
from ftl.psi.curve import (
    POINT_BYTES,
    SALT_BYTES,
    blind,
    canonical_ids,
    check_distinct,
    check_points,
    hash_to_curve,
    point_keys,
    random_scalar,
    secret_permutation,
)
from ftl.psi.messages import MAX_BATCH, MAX_POINTS

__all__ = ["PSIHost"]

MODES = ("full", "cardinality")
HOWS = ("inner", "left")


def _expect(message: Message, type_: str) -> Message:
    if message.type != type_:
        raise ValueError(f"PSI host: expected a {type_!r} message, got {message.type!r}")
    return message


def _shaped(points: np.ndarray, what: str) -> np.ndarray:
    if points.ndim != 2 or points.shape[1] != POINT_BYTES:
        raise ValueError(f"PSI host: {what} must have shape (n, {POINT_BYTES}), got {points.shape}")
    return points


def _bounded_int(value: Any, name: str, low: int, high: int) -> int:
    if not isinstance(value, int) or not low <= value <= high:
        raise ValueError(f"PSI host: {name} must be an integer in [{low}, {high}], got {value!r}")
    return value


@role("psi.host")
class PSIHost:
    """Session state of one PSI run at a host (constructed by ``psi.host.open``).

    Parameters
    ----------
    party : ftl.Party
        The local party whose ids take part.
    request : Message
        The guest's ``psi.open`` message.
    """

    def __init__(self, party: Any, request: Message):
        _expect(request, "psi.open")
        salt = request["salt"]
        if len(salt) != SALT_BYTES:
            raise ValueError(f"PSI host: salt must be {SALT_BYTES} bytes")
        self.mode = request["mode"]
        self.how = request["how"]
        if self.mode not in MODES:
            raise ValueError(f"PSI host: unknown mode {self.mode!r}")
        if self.how not in HOWS:
            raise ValueError(f"PSI host: unknown join {self.how!r}")
        self.n_hosts = _bounded_int(request["n_hosts"], "n_hosts", 1, 10_000)
        if self.how == "left" and (self.n_hosts != 1 or self.mode != "full"):
            raise ValueError("PSI host: how='left' needs exactly one host in default mode")
        self.n_guest = _bounded_int(request["n_guest"], "n_guest", 0, MAX_POINTS)
        self.batch_size = _bounded_int(request["batch_size"], "batch_size", 1, MAX_BATCH)
        self._party = party
        self._salt = salt
        self._beta = random_scalar()
        self._ids = party.local_ids()
        self.n_host = len(self._ids)
        # Secret order in which the host's own points are sent: the guest must not
        # learn which local row a point belongs to.
        self._order = secret_permutation(self.n_host)
        self._guest_doubles = np.empty((self.n_guest, POINT_BYTES), dtype=np.uint8)
        self._n_received = 0
        self._own_doubles = np.empty((self.n_host, POINT_BYTES), dtype=np.uint8)
        self._n_sent = 0
        self._n_reblinded = 0
        self._shuffle: np.ndarray | None = None
        self._lookup: tuple[np.ndarray, np.ndarray, np.ndarray] | None = None
        self._staged: tuple[str, np.ndarray] | None = None

    def opened(self) -> Message:
        """Reply to ``open``: set size and column names are public metadata."""
        return Message(
            "psi.opened",
            {"n_rows": self.n_host, "feature_names": [str(c) for c in self._party.feature_names]},
        )

    # -- step 3: blind the guest's points -------------------------------------------
    def _receive(self, request: Message) -> np.ndarray:
        _expect(request, "psi.guest_points")
        start = request["start"]
        if start != self._n_received:
            raise ProtocolError(
                f"PSI host: expected guest batch at {self._n_received}, got {start}"
            )
        points = _shaped(request["points"], "guest points")
        n = points.shape[0]
        # Size checks come before the (costly) point validation.
        if not 0 < n <= self.batch_size or start + n > self.n_guest:
            raise ValueError(
                f"PSI host: guest batch of {n} points does not fit the announced sizes"
            )
        doubled = blind(check_points(points, "guest points"), self._beta)
        self._guest_doubles[start : start + n] = doubled
        self._n_received += n
        return doubled

    @operation
    def blind(self, request: Message) -> Message:
        """Return ``b*(a*P(x))`` for a batch of the guest's points, same order."""
        if self.mode != "full":
            raise ProtocolError("PSI host: blind is for the default mode; use submit")
        return Message("psi.guest_points_blinded", {"points": self._receive(request)})

    @operation
    def submit(self, request: Message) -> Message:
        """Cardinality mode: keep ``b*(a*P(x))`` for shuffling instead of returning it."""
        if self.mode != "cardinality":
            raise ProtocolError("PSI host: submit is for cardinality mode only")
        self._receive(request)
        return Message("psi.received", {"count": self._n_received})

    def _range(self, request: Message, limit: int) -> tuple[int, int]:
        _expect(request, "psi.fetch")
        start, stop = request["start"], request["stop"]
        if not (isinstance(start, int) and isinstance(stop, int)):
            raise ValueError("PSI host: fetch range must be integers")
        if not 0 <= start < stop <= limit or stop - start > self.batch_size:
            raise ValueError(f"PSI host: bad fetch range [{start}, {stop}) of {limit}")
        return start, stop

    @operation
    def shuffled(self, request: Message) -> Message:
        """Cardinality mode: all ``b*a*P(x)`` in one secret order, batch by batch."""
        if self.mode != "cardinality":
            raise ProtocolError("PSI host: shuffled is for cardinality mode only")
        if self._n_received != self.n_guest:
            raise ProtocolError("PSI host: not all guest points received yet")
        if self._shuffle is None:
            # One permutation over the whole list: shuffling per batch would tell the
            # guest how many of each of its batches match.
            self._shuffle = secret_permutation(self.n_guest)
        start, stop = self._range(request, self.n_guest)
        points = self._guest_doubles[self._shuffle[start:stop]]
        return Message("psi.shuffled_doubles", {"start": start, "points": points})

    @operation
    def own(self, request: Message) -> Message:
        """Return the next batch of ``b*P(y)`` for the host's ids, in its secret order."""
        start, stop = self._range(request, self.n_host)
        if start != self._n_sent:
            raise ProtocolError(f"PSI host: expected fetch at {self._n_sent}, got {start}")
        ids = canonical_ids(self._ids[self._order[start:stop]])
        points = blind(hash_to_curve(ids, self._salt), self._beta)
        self._n_sent = stop
        return Message("psi.host_points", {"start": start, "points": points})

    # -- step 4: the guest's re-blinding of the host's points ---------------------
    @operation
    def reblinded(self, request: Message) -> Message:
        """Store the guest's ``a*b*P(y)`` for a batch of the host's points."""
        if self.mode != "full":
            raise ProtocolError("PSI host: cardinality mode has no step 4")
        _expect(request, "psi.host_points_reblinded")
        start = request["start"]
        if start != self._n_reblinded:
            raise ProtocolError(f"PSI host: expected re-blinded batch at {self._n_reblinded}")
        points = _shaped(request["points"], "re-blinded host points")
        n = points.shape[0]
        if not 0 < n or start + n > self._n_sent:
            raise ValueError("PSI host: re-blinded batch does not match the points sent")
        self._own_doubles[start : start + n] = check_points(points, "re-blinded host points")
        self._n_reblinded += n
        return Message("psi.received", {"count": self._n_reblinded})

    # -- final order -------------------------------------------------------------------
    def _tables(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Sorted own doubles (+ their positions) and sorted guest doubles, checked once."""
        if self._lookup is None:
            if self._n_received != self.n_guest or self._n_reblinded != self.n_host:
                raise ProtocolError("PSI host: exchange not finished")
            check_distinct(self._guest_doubles, "guest points")
            check_distinct(self._own_doubles, "re-blinded host points")
            own = point_keys(self._own_doubles)
            own_order = np.argsort(own, kind="stable")
            guest_sorted = np.sort(point_keys(self._guest_doubles))
            self._lookup = (own[own_order], own_order, guest_sorted)
        return self._lookup

    @operation
    def assign(self, request: Message) -> Message:
        """Map the final order to local rows and stage it (stored on ``commit``).

        The host checks what it can: every value must be one of its own doubly
        blinded values and also one of the guest's, positions must be increasing;
        with a single host it can recompute the whole order itself and insists it
        matches (sorted by value, or for ``how="left"`` the rank among all guest
        values).
        """
        if self.mode != "full":
            raise ProtocolError("PSI host: cardinality mode produces no alignment")
        _expect(request, "psi.assign")
        own_keys, own_order, guest_sorted = self._tables()
        alignment_id = request["alignment_id"]
        if not alignment_id or not alignment_id.isalnum():
            raise ValueError("PSI host: alignment id must be a non-empty alphanumeric string")
        n_rows = _bounded_int(request["n_rows"], "n_rows", 1, MAX_POINTS)
        positions = request["positions"]
        points = request["points"]
        n = len(positions)
        points = check_points(points, "assigned points", expected=n)
        check_distinct(points, "assigned points")
        if n and (positions[0] < 0 or positions[-1] >= n_rows or np.any(np.diff(positions) <= 0)):
            raise ValueError("PSI host: aligned positions must be increasing and in range")
        keys = point_keys(points)
        where = np.searchsorted(own_keys, keys)
        where[where == len(own_keys)] = 0
        known = own_keys[where] == keys if len(own_keys) else np.zeros(n, bool)
        if not known.all():
            raise ValueError(
                f"PSI host: {int((~known).sum())} assigned value(s) are not this host's"
            )
        rank = np.searchsorted(guest_sorted, keys)
        rank_ok = rank < len(guest_sorted)
        in_guest = np.zeros(n, bool)
        in_guest[rank_ok] = guest_sorted[rank[rank_ok]] == keys[rank_ok]
        if not in_guest.all():
            raise ValueError("PSI host: assigned values are not in the guest's set")
        self._check_order(keys, positions, n_rows, rank, own_keys, guest_sorted)
        local_rows = np.full(n_rows, -1, dtype=np.int64)
        local_rows[positions] = self._order[own_order[where]]
        self._staged = (alignment_id, local_rows)
        return Message("psi.received", {"count": n})

    def _check_order(
        self,
        keys: np.ndarray,
        positions: np.ndarray,
        n_rows: int,
        rank: np.ndarray,
        own_keys: np.ndarray,
        guest_sorted: np.ndarray,
    ) -> None:
        if self.how == "inner":
            if n_rows != len(keys) or np.any(positions != np.arange(n_rows)):
                raise ValueError("PSI host: an inner alignment must fill every aligned row")
            if self.n_hosts == 1:
                shared = np.intersect1d(own_keys, guest_sorted, assume_unique=True)
                if len(shared) != len(keys) or np.any(shared != keys):
                    raise ValueError("PSI host: assigned order is not the sorted intersection")
        else:  # left: all guest rows, ordered by the guest's doubly blinded values
            if n_rows != self.n_guest or np.any(rank != positions):
                raise ValueError("PSI host: left-join positions do not match the guest's order")
            shared = np.intersect1d(own_keys, guest_sorted, assume_unique=True)
            if len(shared) != len(keys):
                raise ValueError("PSI host: left join must assign every shared row")

    @operation
    def commit(self, request: Message) -> Message:
        """Store the staged mapping aligned position -> local row at the party."""
        _expect(request, "psi.commit")
        if self._staged is None or self._staged[0] != request["alignment_id"]:
            raise ProtocolError("PSI host: nothing staged for this alignment id")
        alignment_id, local_rows = self._staged
        self._party.remember_alignment(alignment_id, local_rows)
        self._staged = None
        return Message("ack", {})
