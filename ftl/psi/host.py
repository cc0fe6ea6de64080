"""Party side of ECDH PSI: the ``psi.host`` role.

A host answers the guest's PSI requests with its secret scalar ``b`` and keeps
everything that identifies its rows -- ids, its secret order, the mapping from
aligned positions to local rows -- to itself. Operations, in protocol order:

``open`` (``psi.open``)
    Draw ``b`` and a secret order of the host's rows; reply with the host's set
    size and public column names. Refuses with
    :class:`~ftl.federation.policy.PolicyError` if the guest's set is smaller than
    the party's ``min_intersection`` (both modes).
``submit`` (``psi.guest_points``)
    Store ``b*(a*P(x))`` for a batch of the guest's points without returning it;
    reply ``psi.received`` with the running count.
``own`` (``psi.fetch``)
    The next batch of ``b*P(y)`` for the host's ids, in its secret order (in the
    default mode only after every guest point is in).
``reblinded`` (``psi.host_points_reblinded``, default mode)
    Store the guest's ``a*b*P(y)`` for a batch of the host's points.
``blinded`` (``psi.fetch``, default mode)
    Return ``b*a*P(x)`` for a range of the guest's points, in the order the guest
    sent them (``psi.guest_points_blinded``). Served only once every guest point
    and every re-blinded host point is in; the host then knows the intersection
    size and refuses with :class:`~ftl.federation.policy.PolicyError` (every time)
    if it is below ``min_intersection``, before the guest can match anything.
``shuffled`` (``psi.fetch``, cardinality mode)
    All ``b*a*P(x)`` in one secret random order, so the guest learns only how many
    match.
``assign`` (``psi.assign``, default mode)
    The host's doubly blinded values in the final aligned order; the host maps
    them to local rows, checks the order (doubly blinded or id order, as announced
    in ``open``) and stages (does not yet store) the mapping.
``commit`` (``psi.commit``)
    Every party accepted; store the staged mapping with
    :meth:`ftl.Party.remember_alignment`.

The minimum intersection size is read from the party object
(``party.min_intersection``, set by the server from the host's data-use policy;
absent or 0 means no minimum). It stops naive membership probing with tiny id
sets; a guest that pads its set with ids it knows the host has can still test
the remaining ones, so it is a guard, not a proof.

Every point received is checked before use: decoded with
``crypto_core_ristretto255_is_valid_point`` or, for the guest's points blinded at
once, by ``crypto_scalarmult_ristretto255`` itself (see
:func:`~ftl.psi.curve.check_and_blind`), and the identity is refused; counts,
batch order and duplicates are checked too. Malformed data raises
``ValueError``; operations out of order raise
:class:`~ftl.federation.ProtocolError`.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from ftl.federation.messages import Message
from ftl.federation.policy import PolicyError
from ftl.federation.service import ProtocolError, operation, role
from ftl.psi import messages as _messages  # noqa: F401  (registers the message types)
from ftl.psi.curve import (
    POINT_BYTES,
    SALT_BYTES,
    blind,
    canonical_ids,
    check_and_blind,
    check_distinct,
    check_points,
    hash_to_curve,
    point_keys,
    random_scalar,
    secret_permutation,
)
from ftl.psi.messages import MAX_BATCH, MAX_POINTS

__all__ = ["PSIHost", "id_order"]

MODES = ("full", "cardinality")
HOWS = ("inner", "left")
ORDERS = ("blinded", "id")


def id_order(ids: Any) -> np.ndarray:
    """Indices that sort ``ids`` by their canonical bytes (``str(id)`` in UTF-8).

    Byte order of UTF-8 is code-point order, so this is the order of ``str(id)``
    (lexicographic: ``"10"`` before ``"9"``). Used for ``order="id"`` by the guest
    and, to check the assigned order, by each host.
    """
    keys = np.empty(len(ids), dtype=object)
    keys[:] = canonical_ids(ids)
    return np.argsort(keys, kind="stable").astype(np.int64)


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
        self.order = request["order"]
        if self.order not in ORDERS:
            raise ValueError(f"PSI host: unknown order {self.order!r}")
        self.n_hosts = _bounded_int(request["n_hosts"], "n_hosts", 1, 10_000)
        if self.how == "left" and (self.n_hosts != 1 or self.mode != "full"):
            raise ValueError("PSI host: how='left' needs exactly one host in default mode")
        if self.order == "id" and (self.how != "inner" or self.mode != "full"):
            raise ValueError("PSI host: order='id' needs how='inner' in default mode")
        self.n_guest = _bounded_int(request["n_guest"], "n_guest", 0, MAX_POINTS)
        self.batch_size = _bounded_int(request["batch_size"], "batch_size", 1, MAX_BATCH)
        # The host's own minimum (from its data-use policy): refuse before any point
        # is exchanged if the guest's set cannot even reach it.
        self.min_size = int(getattr(party, "min_intersection", 0) or 0)
        if self.n_guest < self.min_size:
            raise PolicyError(
                f"PSI host {party.name!r}: the guest's set of {self.n_guest} ids is smaller "
                f"than this host's minimum intersection size of {self.min_size}"
            )
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
        self._n_shared: int | None = None
        self._staged: tuple[str, np.ndarray] | None = None

    def opened(self) -> Message:
        """Reply to ``open``: set size and column names are public metadata."""
        return Message(
            "psi.opened",
            {"n_rows": self.n_host, "feature_names": [str(c) for c in self._party.feature_names]},
        )

    # -- step 2: the guest's points ----------------------------------------------------
    @operation
    def submit(self, request: Message) -> Message:
        """Store ``b*(a*P(x))`` for a batch of the guest's points; return only a count.

        Default mode returns these values later with ``blinded`` (after the
        minimum-size check), cardinality mode shuffled with ``shuffled``.
        """
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
        doubled = check_and_blind(points, self._beta, "guest points")
        self._guest_doubles[start : start + n] = doubled
        self._n_received += n
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
        if self.mode == "full" and self._n_received != self.n_guest:
            # The guest commits to its whole set before it sees any host point.
            raise ProtocolError("PSI host: not all guest points received yet")
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

    # -- step 5: the guest's points, blinded, once the host has checked the size -----
    def _shared_count(self) -> int:
        """Size of the intersection; refuse (every time) if below the minimum."""
        if self._n_shared is None:
            own_keys, _, guest_sorted = self._tables()
            self._n_shared = len(np.intersect1d(own_keys, guest_sorted, assume_unique=True))
        if self._n_shared < self.min_size:
            raise PolicyError(
                f"PSI host {self._party.name!r}: the intersection is smaller than this "
                f"host's minimum intersection size of {self.min_size}"
            )
        return self._n_shared

    @operation
    def blinded(self, request: Message) -> Message:
        """Return ``b*a*P(x)`` for guest points ``[start, stop)``, in the order sent.

        Only after every guest point and every re-blinded host point is in, and
        only if the intersection reaches the host's minimum size.
        """
        if self.mode != "full":
            raise ProtocolError("PSI host: blinded is for the default mode; use shuffled")
        _expect(request, "psi.fetch")
        if self._n_received != self.n_guest or self._n_reblinded != self.n_host:
            raise ProtocolError("PSI host: exchange not finished")
        self._shared_count()
        start, stop = self._range(request, self.n_guest)
        return Message(
            "psi.guest_points_blinded",
            {"start": start, "points": self._guest_doubles[start:stop]},
        )

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
        values). With ``order="id"`` every host checks that its own rows, read in
        position order, have strictly increasing canonical ids, and a single host
        that the assigned values are exactly the shared ones.
        """
        if self.mode != "full":
            raise ProtocolError("PSI host: cardinality mode produces no alignment")
        _expect(request, "psi.assign")
        own_keys, own_order, guest_sorted = self._tables()
        self._shared_count()  # no alignment below the host's minimum either
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
        rows = self._order[own_order[where]]
        self._check_order(keys, positions, n_rows, rank, own_keys, guest_sorted, rows)
        local_rows = np.full(n_rows, -1, dtype=np.int64)
        local_rows[positions] = rows
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
        rows: np.ndarray,
    ) -> None:
        if self.how == "inner":
            if n_rows != len(keys) or np.any(positions != np.arange(n_rows)):
                raise ValueError("PSI host: an inner alignment must fill every aligned row")
            if self.order == "id":
                self._check_id_order(keys, rows, own_keys, guest_sorted)
            elif self.n_hosts == 1:
                shared = np.intersect1d(own_keys, guest_sorted, assume_unique=True)
                if len(shared) != len(keys) or np.any(shared != keys):
                    raise ValueError("PSI host: assigned order is not the sorted intersection")
        else:  # left: all guest rows, ordered by the guest's doubly blinded values
            if n_rows != self.n_guest or np.any(rank != positions):
                raise ValueError("PSI host: left-join positions do not match the guest's order")
            shared = np.intersect1d(own_keys, guest_sorted, assume_unique=True)
            if len(shared) != len(keys):
                raise ValueError("PSI host: left join must assign every shared row")

    def _check_id_order(
        self, keys: np.ndarray, rows: np.ndarray, own_keys: np.ndarray, guest_sorted: np.ndarray
    ) -> None:
        """``order="id"``: the host's rows in aligned order have increasing ids."""
        if self.n_hosts == 1:
            shared = np.intersect1d(own_keys, guest_sorted, assume_unique=True)
            if len(shared) != len(keys) or np.any(shared != np.sort(keys)):
                raise ValueError("PSI host: assigned values are not exactly the intersection")
        ids = canonical_ids(self._ids[rows])
        if any(a >= b for a, b in zip(ids[:-1], ids[1:], strict=True)):
            raise ValueError("PSI host: assigned order is not sorted by id")

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
