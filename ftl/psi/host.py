"""Party side of ECDH PSI: the ``psi.host`` role.

A host answers the guest's PSI requests with its secret scalar ``b`` and keeps
everything that identifies its rows -- ids, its secret order, the mapping from
aligned positions to local rows -- to itself. Operations, in protocol order:

``open`` (``psi.open``, ``psi.start`` or ``psi.resume``)
    Refuse with :class:`~ftl.exceptions.PolicyError` if the guest's set is
    smaller than this host's minimum intersection size; count the run (either
    mode) against the peer's alignments per day (:meth:`HostGuard.admit_alignment
    <ftl.federation.budget.HostGuard.admit_alignment>`); draw ``b`` and a secret
    order of the host's rows; reply with the host's set size and public column
    names.
``submit`` (``psi.guest_points``)
    Store ``b*(a*P(x))`` for a batch of the guest's points without returning it;
    reply ``psi.received`` with the running count.
``own`` (``psi.fetch``)
    The next batch of ``b*P(y)`` for the host's ids, in its secret order; only
    after every guest point is in (both modes), so the guest commits to its whole
    set before it sees any host point.
``reblinded`` (``psi.host_points_reblinded``, default mode)
    Store the guest's ``a*b*P(y)`` for a batch of the host's points.
``tags`` (``psi.host_tags``, cardinality mode)
    Store a batch of the guest's tags ``T(a*b*P(y))`` (:func:`cardinality_tags`)
    of the host's points, all of them under one secret shuffle of the guest.
``blinded`` (``psi.fetch``, default mode)
    Return ``b*a*P(x)`` for a range of the guest's points, in the order the guest
    sent them (``psi.guest_points_blinded``).
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

**The minimum applies to every result.** The minimum intersection size is read
from the party's guard (``guard_of(party).min_intersection``, set by ``ftl serve``
from the host's data-use policy; a simulated party has none). In both modes the
host holds both sides' doubly blinded values -- the guest's ``b*a*P(x)`` from
``submit`` and the guest's step-4 values of its own points (``reblinded``, or the
tags of ``tags``) -- before it releases anything the guest could match with, so it
counts the intersection itself and refuses with
:class:`~ftl.exceptions.PolicyError` (on this and every later ``blinded``,
``shuffled`` or ``assign`` request of the session) if it is below the minimum. The
refusal reads the same whatever the count and names no id.

A deviating guest cannot inflate the host's count: the host counts a match only
where a step-4 value equals ``b*S`` (or its tag) for a point ``S`` the guest
committed in ``submit`` before it saw any host point, and without ``b`` the guest
can compute ``b*S`` only for ``S = a*P(x)`` with an id ``x`` the host has --
computing it for any other ``S`` from the ``b*P(y)`` it received is the
computational Diffie-Hellman problem (duplicates are refused, so no match counts
twice). It can *deflate* the count by sending wrong values, which only makes the
host refuse more often. What the minimum cannot stop: a guest that knows
``min - 1`` of the host's ids pads its set with them and tests one candidate id
per run (the threshold is then a 1-bit membership oracle); each such probe costs
one alignment of the peer's per-day budget.

Cardinality mode sends tags, not ``a*b*P(y)`` itself, so that the host learns
the count and nothing more: the guest shuffles them over the whole list (the host
cannot tell which of its rows matched) and the hash destroys the algebra a
deviating host could otherwise use to trace its own points through the shuffle
(sending ``Q`` and ``c*Q`` and looking for a returned pair related by ``c``).

**Named runs resume.** A guest that names its run (``psi.start``) lets the host
keep it where the party keeps checkpoints, batch by batch, and go on with it after
either side restarted (``psi.resume``, :mod:`ftl.psi._resume`): the host restores
its own state and tells the guest how far it had come, so a resumed run sends
nothing the run it continues would not have sent. It is not charged again; a
finished run is removed and cannot be resumed.

Every point received is checked before use: decoded with
``crypto_core_ristretto255_is_valid_point`` or, for the guest's points blinded at
once, by ``crypto_scalarmult_ristretto255`` itself (see
:func:`~ftl.psi.curve.check_and_blind`), and the identity is refused; counts,
batch order and duplicates are checked too. Malformed data raises
``ValueError``; operations out of order raise
:class:`~ftl.federation.ProtocolError`.
"""

from __future__ import annotations

import hashlib
from typing import Any

import numpy as np

from ftl.exceptions import PolicyError
from ftl.federation.budget import guard_of
from ftl.federation.messages import Message
from ftl.federation.service import ProtocolError, operation, role
from ftl.psi import messages as _messages  # noqa: F401  (registers the message types)
from ftl.psi._resume import ResumableHost
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

__all__ = ["PSIHost", "cardinality_tags", "id_order"]

MODES = ("full", "cardinality")
HOWS = ("inner", "left")
ORDERS = ("blinded", "id")
#: The requests that open a session: a run, a named (resumable) run, a resume.
OPENS = ("psi.open", "psi.start", "psi.resume")
#: Bytes of one cardinality-mode tag (SHA-256).
TAG_BYTES = 32
_TAG_DOMAIN = b"ftl.psi.cardinality-tag.v1"


def cardinality_tags(points: np.ndarray, salt: bytes) -> np.ndarray:
    """Tags ``SHA-256(domain || salt || point)`` of doubly blinded points, shape (n, 32).

    In cardinality mode the guest returns these instead of ``a*b*P(y)``: equal
    points give equal tags, so the host can count the intersection, but a tag
    keeps none of the group structure, so a host cannot link the shuffled tags
    to the points it sent by their algebraic relations.
    """
    raw = np.ascontiguousarray(points, dtype=np.uint8).tobytes()
    prefix = _TAG_DOMAIN + salt
    digests = bytearray().join(  # a bytearray: the result is writable
        hashlib.sha256(prefix + raw[i : i + POINT_BYTES]).digest()
        for i in range(0, len(raw), POINT_BYTES)
    )
    return np.frombuffer(digests, dtype=np.uint8).reshape(-1, TAG_BYTES)


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


@role("psi.host", opens=OPENS)
class PSIHost(ResumableHost):
    """Session state of one PSI run at a host (constructed by ``psi.host.open``).

    Parameters
    ----------
    party : ftl.Party
        The local party whose ids take part.
    request : Message
        The guest's ``psi.open``, ``psi.start`` (a named run, which the host keeps
        where it keeps checkpoints) or ``psi.resume`` (go on with a named run of
        this peer where the host's checkpoint left it: :mod:`ftl.psi._resume`).
    """

    def __init__(self, party: Any, request: Message):
        if request.type not in OPENS:
            raise ValueError(f"PSI host: sessions open with one of {OPENS}, not {request.type!r}")
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
        guard = guard_of(party)
        self._party = party
        self._salt = salt
        self._ids = party.local_ids()
        self.n_host = len(self._ids)
        self._name_run(party, request, guard.identity)
        # The host's own minimum (from its data-use policy, as it is now, also for a
        # resume): refuse before any point is exchanged if the guest's set cannot
        # even reach it.
        self.min_size = int(guard.min_intersection or 0)
        if self.n_guest < self.min_size:
            raise PolicyError(
                f"PSI host {party.name!r}: the guest's set of {self.n_guest} ids is smaller "
                f"than this host's minimum intersection size of {self.min_size}"
            )
        self._allocate()
        self._resumed = request.type == "psi.resume"
        if self._resumed:
            # The same run, not charged again; it supersedes a live session of it.
            self._take_over()
            self._restore()
            return
        # Every run counts, whatever its mode: each one can answer a membership
        # question (see the module docstring). Last, so a refused open costs nothing.
        guard.admit_alignment(self.mode, self.n_guest)
        self._beta = random_scalar()
        # Secret order in which the host's own points are sent: the guest must not
        # learn which local row a point belongs to.
        self._order = secret_permutation(self.n_host)
        if self.mode == "cardinality":
            # One permutation over the whole list: shuffling per batch would tell the
            # guest how many of each of its batches match.
            self._shuffle = secret_permutation(self.n_guest)
        if self.run_id is not None:
            self._take_over()
            self._keep_secrets()

    def _allocate(self) -> None:
        """Room for the run's lists; nothing received, sent or counted yet."""
        self._guest_doubles = np.empty((self.n_guest, POINT_BYTES), dtype=np.uint8)
        self._n_received = 0
        self._own_doubles = np.empty((self.n_host, POINT_BYTES), dtype=np.uint8)
        self._n_sent = 0
        # Step-4 values received: re-blinded points (default mode) or tags (cardinality).
        self._n_reblinded = 0
        n_tags = self.n_host if self.mode == "cardinality" else 0
        self._tags = np.empty((n_tags, TAG_BYTES), dtype=np.uint8)
        self._shuffle: np.ndarray | None = None
        self._finished = False
        self._lookup: tuple[np.ndarray, np.ndarray, np.ndarray] | None = None
        self._n_shared: int | None = None
        self._staged: tuple[str, np.ndarray] | None = None

    def opened(self) -> Message:
        """Reply to ``open``: set size and column names are public metadata (and for
        a resume, how far the run had come here)."""
        metadata = {
            "n_rows": self.n_host,
            "feature_names": [str(c) for c in self._party.feature_names],
        }
        if not self._resumed:
            return Message("psi.opened", metadata)
        progress = {"received": self._n_received, "reblinded": self._n_reblinded}
        return Message("psi.resumed", {**metadata, **progress})

    # -- step 2: the guest's points ----------------------------------------------------
    @operation(accepts=("psi.guest_points",))
    def submit(self, request: Message) -> Message:
        """Store ``b*(a*P(x))`` for a batch of the guest's points; return only a count.

        Both modes return these values only after the minimum-size check: the
        default mode with ``blinded``, cardinality mode shuffled with ``shuffled``.
        """
        self._check_current()
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
        self._keep_batch("guest", start, doubled)
        return Message("psi.received", {"count": self._n_received})

    def _range(self, request: Message, limit: int) -> tuple[int, int]:
        _expect(request, "psi.fetch")
        start, stop = request["start"], request["stop"]
        if not (isinstance(start, int) and isinstance(stop, int)):
            raise ValueError("PSI host: fetch range must be integers")
        if not 0 <= start < stop <= limit or stop - start > self.batch_size:
            raise ValueError(f"PSI host: bad fetch range [{start}, {stop}) of {limit}")
        return start, stop

    @operation(accepts=("psi.fetch",))
    def shuffled(self, request: Message) -> Message:
        """Cardinality mode: all ``b*a*P(x)`` in one secret order, batch by batch.

        Only after every guest point and every tag of the host's points is in, and
        only if the intersection (which the host counts itself) reaches the host's
        minimum size.
        """
        self._check_current()
        if self.mode != "cardinality":
            raise ProtocolError("PSI host: shuffled is for cardinality mode only")
        if self._n_received != self.n_guest or self._n_reblinded != self.n_host:
            raise ProtocolError("PSI host: exchange not finished (guest points and tags)")
        self._shared_count()
        start, stop = self._range(request, self.n_guest)
        points = self._guest_doubles[self._shuffle[start:stop]]
        if stop == self.n_guest:  # the whole reply is out: the run is over
            self._finish()
        return Message("psi.shuffled_doubles", {"start": start, "points": points})

    @operation(accepts=("psi.fetch",))
    def own(self, request: Message) -> Message:
        """Return the next batch of ``b*P(y)`` for the host's ids, in its secret order.

        A batch already sent may be asked for again (a resumed guest that lost it):
        it is the same bytes, under the same scalar and order.
        """
        self._check_current()
        if self._n_received != self.n_guest:
            # The guest commits to its whole set before it sees any host point (both
            # modes): the argument that it cannot inflate the count rests on this.
            raise ProtocolError("PSI host: not all guest points received yet")
        start, stop = self._range(request, self.n_host)
        if start > self._n_sent:
            raise ProtocolError(f"PSI host: expected fetch at {self._n_sent}, got {start}")
        ids = canonical_ids(self._ids[self._order[start:stop]])
        points = blind(hash_to_curve(ids, self._salt), self._beta)
        if stop > self._n_sent:
            self._n_sent = stop
            self._keep_progress()
        return Message("psi.host_points", {"start": start, "points": points})

    # -- step 4: the guest's re-blinding of the host's points ---------------------
    @operation(accepts=("psi.host_points_reblinded",))
    def reblinded(self, request: Message) -> Message:
        """Store the guest's ``a*b*P(y)`` for a batch of the host's points."""
        self._check_current()
        if self.mode != "full":
            raise ProtocolError("PSI host: cardinality mode returns tags (psi.host.tags)")
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
        self._keep_batch("own", start, self._own_doubles[start : start + n])
        return Message("psi.received", {"count": self._n_reblinded})

    @operation(accepts=("psi.host_tags",))
    def tags(self, request: Message) -> Message:
        """Cardinality mode: store a batch of the guest's tags of the host's points.

        The guest sends the tags of all ``a*b*P(y)`` under one secret permutation of
        the whole list, after it has fetched every host point, so the host can count
        matches but not tell which of its rows they are.
        """
        self._check_current()
        if self.mode != "cardinality":
            raise ProtocolError("PSI host: tags are for cardinality mode only")
        _expect(request, "psi.host_tags")
        if self._n_sent != self.n_host:
            raise ProtocolError("PSI host: tags before every host point was fetched")
        start = request["start"]
        if start != self._n_reblinded:
            raise ProtocolError(f"PSI host: expected tag batch at {self._n_reblinded}")
        tags = request["tags"]
        if tags.ndim != 2 or tags.shape[1] != TAG_BYTES or tags.dtype != np.uint8:
            raise ValueError(f"PSI host: tags must be uint8 of shape (n, {TAG_BYTES})")
        n = tags.shape[0]
        if not 0 < n <= self.batch_size or start + n > self.n_host:
            raise ValueError("PSI host: tag batch does not match the points sent")
        self._tags[start : start + n] = tags
        self._n_reblinded += n
        self._keep_batch("tags", start, tags)
        return Message("psi.received", {"count": self._n_reblinded})

    # -- step 5: the guest's points, blinded, once the host has checked the size -----
    def _shared_count(self) -> int:
        """Size of the intersection; refuse (every time) if below the minimum.

        The refusal names neither the count nor any id: the guest learns one bit,
        that the intersection is below the minimum.
        """
        if self._n_shared is None:
            if self.mode == "cardinality":
                self._n_shared = self._tag_count()
            else:
                own_keys, _, guest_sorted = self._tables()
                self._n_shared = len(np.intersect1d(own_keys, guest_sorted, assume_unique=True))
        if self._n_shared < self.min_size:
            raise PolicyError(
                f"PSI host {self._party.name!r}: the intersection is smaller than this "
                f"host's minimum intersection size of {self.min_size}; refused"
            )
        return self._n_shared

    def _tag_count(self) -> int:
        """Cardinality mode: how many tags from the guest equal the tag of one of the
        guest's doubly blinded points ``b*a*P(x)`` (which the host computed itself)."""
        check_distinct(self._guest_doubles, "guest points")
        # Distinct tags: a repeated tag must not count a match twice.
        check_distinct(self._tags, "tags of host points")
        guest_tags = cardinality_tags(self._guest_doubles, self._salt)
        return len(
            np.intersect1d(point_keys(guest_tags), point_keys(self._tags), assume_unique=True)
        )

    @operation(accepts=("psi.fetch",))
    def blinded(self, request: Message) -> Message:
        """Return ``b*a*P(x)`` for guest points ``[start, stop)``, in the order sent.

        Only after every guest point and every re-blinded host point is in, and
        only if the intersection reaches the host's minimum size.
        """
        self._check_current()
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

    @operation(accepts=("psi.assign",))
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
        self._check_current()
        if self.mode != "full":
            raise ProtocolError("PSI host: cardinality mode produces no alignment")
        if self._finished:  # one run, one alignment
            raise ProtocolError("PSI host: this run's alignment is already stored")
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

    @operation(accepts=("psi.commit",))
    def commit(self, request: Message) -> Message:
        """Store the staged mapping aligned position -> local row at the party."""
        self._check_current()
        _expect(request, "psi.commit")
        if self._staged is None or self._staged[0] != request["alignment_id"]:
            raise ProtocolError("PSI host: nothing staged for this alignment id")
        alignment_id, local_rows = self._staged
        self._party.remember_alignment(alignment_id, local_rows)
        self._staged = None
        self._finished = True
        self._finish()  # a finished run can never be resumed
        return Message("ack", {})
