"""Driver side of ECDH PSI: runs at the guest (the labelled party).

With guest scalar ``a`` and host scalar ``b`` and ``P`` the salted hash to the
curve, one pairwise run is (step numbers as in ``docs/protocols.md`` §2.2, where
step 1 opens the session):

2. guest -> host: ``a*P(x)`` for the guest's ids, in a secret random order; the
   host keeps ``b*a*P(x)`` and acknowledges with a count only;
3. host -> guest: ``b*P(y)`` for the host's ids in the host's secret order (only
   once every guest point is in);
4. guest -> host: ``a*b*P(y)`` in the host's order;
5. host -> guest: ``b*a*P(x)`` in the order the guest sent them -- only now, when
   the host holds both sides' doubly blinded values and has checked that the
   intersection reaches its minimum size.

Each side then holds the doubly blinded value of each of its own rows and the set
of the other side's, and the shared rows are the common values. All lists are
sent in batches so memory stays bounded. The cardinality mode, in which the
guest learns only how many ids are shared, changes steps 4 and 5
(:mod:`ftl.psi.cardinality`).

With ``checkpoint_dir`` the guest names the run and keeps its state after every
batch (:mod:`ftl.psi._guest_run`); the run resumes where every party's checkpoint
left it after a host restarted mid-run (its session is lost) or the driver did.

Every cross-party value goes through :meth:`ftl.federation.Channel.call`, so the
transcript records it. Hosts are reached only through the ``Endpoint`` protocol
(``endpoint.name``, ``endpoint.handle``); the guest's own data is local.
"""

from __future__ import annotations

import contextlib
import logging
import uuid
import warnings
from collections.abc import Sequence
from contextlib import ExitStack
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from tqdm import tqdm

from ftl.exceptions import PolicyError, ProtocolError
from ftl.federation.budget import guard_of
from ftl.federation.channel import Channel, Endpoint, new_session_id
from ftl.federation.checkpoints import attached, checkpoints_of
from ftl.federation.messages import Message
from ftl.federation.service import PartyService
from ftl.psi import host as _host  # noqa: F401  (registers the psi.host role)
from ftl.psi._guest_run import GuestRun, Progress
from ftl.psi.curve import (
    POINT_BYTES,
    SALT_BYTES,
    batches,
    blind,
    canonical_ids,
    check_and_blind,
    check_distinct,
    check_points,
    hash_to_curve,
    point_keys,
    random_salt,
    random_scalar,
    secret_permutation,
)
from ftl.psi.host import ORDERS, id_order
from ftl.psi.messages import MAX_BATCH, MAX_POINTS

__all__ = [
    "DEFAULT_BATCH_SIZE",
    "PROTOCOL",
    "HostInfo",
    "PairResult",
    "PSIPlan",
    "close_host",
    "exchange",
    "open_host",
    "run_psi",
]

log = logging.getLogger("ftl.checkpoint")

#: Points per message: 100k points are 3.2 MB on the wire.
DEFAULT_BATCH_SIZE = 100_000
PROTOCOL = "ecdh-ristretto255"


@dataclass
class HostInfo:
    """What the guest knows about one host after ``psi.host.open``."""

    endpoint: Endpoint
    name: str
    n_rows: int
    feature_names: tuple[str, ...]
    #: After a resume: guest points and step-4 values the host already holds.
    received: int = 0
    reblinded: int = 0


@dataclass
class PairResult:
    """Outcome of one pairwise run, as the guest sees it.

    ``guest_doubles[i]`` is ``a*b*P(id_i)`` for guest row ``i`` (guest row order);
    ``host_doubles`` are the host's values in the host's secret order (a set, as far
    as the guest is concerned); ``in_host[i]`` says whether guest row ``i`` is shared.
    """

    guest_doubles: np.ndarray
    host_doubles: np.ndarray
    in_host: np.ndarray


@dataclass
class PSIPlan:
    """Result of :func:`run_psi`: guest rows in aligned order and run metadata.

    ``rows`` are the guest's local rows in aligned order; ``overlap`` (``how="left"``
    only) marks the aligned rows the host also has. Hosts have already committed
    their own mappings; the caller stores the guest's.
    """

    alignment_id: str
    rows: np.ndarray
    overlap: np.ndarray | None
    hosts: list[HostInfo]
    salt: bytes
    pairwise: dict[str, int] = field(default_factory=dict)
    session: str = ""


def _expect(message: Message, type_: str, who: str) -> Message:
    if message.type != type_:
        raise ValueError(f"PSI: {who} replied with {message.type!r}, expected {type_!r}")
    return message


def _check_salt(salt: Any) -> bytes:
    if salt is None:
        return random_salt()
    if isinstance(salt, str):
        try:
            salt = bytes.fromhex(salt)
        except ValueError:
            raise ValueError("salt given as str must be hex") from None
    if not isinstance(salt, bytes) or len(salt) != SALT_BYTES:
        raise ValueError(f"salt must be {SALT_BYTES} bytes (or their hex)")
    return salt


def _check_batch_size(batch_size: Any) -> int:
    if isinstance(batch_size, bool) or not isinstance(batch_size, (int, np.integer)):
        raise ValueError("batch_size must be an integer")
    if not 1 <= batch_size <= MAX_BATCH:
        raise ValueError(f"batch_size must be in [1, {MAX_BATCH}], got {batch_size}")
    return int(batch_size)


def _n_batches(n: int, size: int) -> int:
    return -(-n // size)


def open_host(
    channel: Channel,
    endpoint: Endpoint,
    *,
    salt: bytes,
    n_guest: int,
    mode: str,
    how: str,
    n_hosts: int,
    batch_size: int,
    order: str = "blinded",
    run_id: str | None = None,
    resume: bool = False,
) -> HostInfo:
    """Open a ``psi.host`` session at one host and read its public metadata.

    With ``run_id`` the run is named (``psi.start``), so the host keeps it; with
    ``resume`` too, the host goes on with it (``psi.resume``) and says how far it had
    come.
    """
    fields = {
        "salt": salt,
        "n_guest": n_guest,
        "mode": mode,
        "how": how,
        "order": order,
        "n_hosts": n_hosts,
        "batch_size": batch_size,
    }
    if run_id is None:
        request = Message("psi.open", fields)
    else:
        request = Message("psi.resume" if resume else "psi.start", {"run_id": run_id, **fields})
    reply = channel.call(endpoint, "psi.host.open", request)
    _expect(reply, "psi.resumed" if resume else "psi.opened", endpoint.name)
    n_rows, names = reply["n_rows"], reply["feature_names"]
    # Bounded because the guest allocates n_rows * 32 bytes for the host's points.
    if not isinstance(n_rows, int) or not 0 <= n_rows <= MAX_POINTS:
        raise ValueError(f"PSI: host {endpoint.name!r} announced an invalid set size")
    if not isinstance(names, list) or not all(isinstance(c, str) for c in names):
        raise ValueError(f"PSI: host {endpoint.name!r} sent invalid column names")
    info = HostInfo(endpoint, endpoint.name, n_rows, tuple(names))
    if resume:
        info.received, info.reblinded = reply["received"], reply["reblinded"]
        if not (0 <= info.received <= n_guest and 0 <= info.reblinded <= n_rows):
            raise ValueError(f"PSI: host {endpoint.name!r} resumed with invalid counts")
    return info


def close_host(channel: Channel, endpoint: Endpoint) -> None:
    """Drop the host's session state; failures are ignored (cleanup only)."""
    with contextlib.suppress(Exception):
        channel.call(endpoint, "psi.host.close", Message("ack", {}))


def _send_guest_points(
    channel: Channel,
    host: HostInfo,
    ids: np.ndarray,
    salt: bytes,
    alpha: bytes,
    batch_size: int,
    bar: Any,
    progress: Progress | None = None,
) -> np.ndarray:
    """Step 2: send ``a*P(x)`` in a fresh secret order; return that order.

    ``order[k]`` is the guest row whose point was sent at position ``k``. The host
    stores ``b*a*P(x)`` and replies with a count only. With ``progress`` (a named
    run), its order is used and the batches the host already holds are skipped.
    """
    n = len(ids)
    # The guest's secret order: the host must not learn which row a point is.
    order = secret_permutation(n) if progress is None else progress.order
    for start, stop in batches(n, batch_size):
        if progress is not None and stop <= progress.received:
            bar.update(1)
            continue
        rows = order[start:stop]
        # Canonicalise per batch: no Python object per id for the whole set.
        points = blind(hash_to_curve(canonical_ids(ids[rows]), salt), alpha)
        reply = channel.call(
            host.endpoint,
            "psi.host.submit",
            Message("psi.guest_points", {"start": start, "points": points}),
        )
        if _expect(reply, "psi.received", host.name)["count"] != stop:
            raise ValueError(f"PSI: host {host.name!r} acknowledged a wrong count")
        if progress is not None:
            progress.received = stop
        bar.update(1)
    return order


def _fetch_doubles(
    channel: Channel,
    host: HostInfo,
    op: str,
    reply_type: str,
    n: int,
    batch_size: int,
    bar: Any,
    progress: Progress | None = None,
) -> np.ndarray:
    """``n`` checked points from the host's operation ``op``, batch by batch, in the
    order the host sends them (with ``progress``: those the guest does not hold yet,
    each kept)."""
    doubles = np.empty((n, POINT_BYTES), dtype=np.uint8) if progress is None else progress.final
    for start, stop in batches(n, batch_size):
        if progress is not None and stop <= progress.n_final:
            bar.update(1)
            continue
        reply = channel.call(
            host.endpoint, op, Message("psi.fetch", {"start": start, "stop": stop})
        )
        _expect(reply, reply_type, host.name)
        if reply["start"] != start:
            raise ValueError(f"PSI: host {host.name!r} sent the wrong batch")
        doubles[start:stop] = check_points(
            reply["points"], f"reply of host {host.name!r}", expected=stop - start
        )
        if progress is not None:
            progress.n_final = stop
            progress.gained("final", start, doubles[start:stop])
        bar.update(1)
    return doubles


def _fetch_guest_doubles(
    channel: Channel,
    host: HostInfo,
    order: np.ndarray,
    batch_size: int,
    bar: Any,
    progress: Progress | None = None,
) -> np.ndarray:
    """Step 5 (default mode): ``b*a*P(x)`` in guest row order.

    The host serves these only after it has checked its minimum intersection size;
    they come back in the (secret) order the guest sent its points.
    """
    received = _fetch_doubles(
        channel,
        host,
        "psi.host.blinded",
        "psi.guest_points_blinded",
        len(order),
        batch_size,
        bar,
        progress,
    )
    doubles = np.empty_like(received)
    doubles[order] = received
    return doubles


def _fetch_host_points(
    channel: Channel,
    host: HostInfo,
    alpha: bytes,
    batch_size: int,
    bar: Any,
    send_back: bool,
    progress: Progress | None = None,
) -> np.ndarray:
    """Steps 3 and 4: fetch ``b*P(y)``, compute ``a*b*P(y)``, send it back in step 4
    (with ``progress``: fetch what the guest does not hold, each batch kept, and send
    back what the host does not hold)."""
    if progress is None:
        doubles = np.empty((host.n_rows, POINT_BYTES), dtype=np.uint8)
        fetched = returned = 0
    else:
        doubles, fetched, returned = progress.host_doubles, progress.fetched, progress.reblinded
    for start, stop in batches(host.n_rows, batch_size):
        if stop > fetched:
            doubles[start:stop] = _fetch_host_batch(channel, host, alpha, start, stop)
            if progress is not None:
                progress.fetched = stop
                progress.gained("own", start, doubles[start:stop])
        if send_back and stop > returned:
            ack = channel.call(
                host.endpoint,
                "psi.host.reblinded",
                Message(
                    "psi.host_points_reblinded", {"start": start, "points": doubles[start:stop]}
                ),
            )
            if _expect(ack, "psi.received", host.name)["count"] != stop:
                raise ValueError(f"PSI: host {host.name!r} acknowledged a wrong count")
            if progress is not None:
                progress.reblinded = stop
        bar.update(1)
    check_distinct(doubles, f"points of host {host.name!r}")
    return doubles


def _fetch_host_batch(
    channel: Channel, host: HostInfo, alpha: bytes, start: int, stop: int
) -> np.ndarray:
    """Step 3 for one batch: the host's ``b*P(y)``, checked, times ``a``."""
    reply = channel.call(
        host.endpoint, "psi.host.own", Message("psi.fetch", {"start": start, "stop": stop})
    )
    _expect(reply, "psi.host_points", host.name)
    if reply["start"] != start:
        raise ValueError(f"PSI: host {host.name!r} sent the wrong batch")
    # Checked and blinded in one pass (each point is decoded once).
    return check_and_blind(
        reply["points"], alpha, f"points of host {host.name!r}", expected=stop - start
    )


def exchange(
    channel: Channel,
    host: HostInfo,
    ids: np.ndarray,
    salt: bytes,
    batch_size: int,
    bar: Any,
    progress: Progress | None = None,
) -> PairResult:
    """Run the default-mode exchange with one host (fresh guest scalar and order,
    or, in a named run, those of ``progress``, going on where it left off).

    The guest commits to its whole set and returns ``a*b*P(y)`` for every host
    point before it receives any ``b*a*P(x)``, so the host can check the
    intersection size (and refuse) before the guest can match anything.
    """
    alpha = random_scalar() if progress is None else progress.alpha
    order = _send_guest_points(channel, host, ids, salt, alpha, batch_size, bar, progress)
    host_doubles = _fetch_host_points(
        channel, host, alpha, batch_size, bar, send_back=True, progress=progress
    )
    guest_doubles = _fetch_guest_doubles(channel, host, order, batch_size, bar, progress)
    check_distinct(guest_doubles, f"reply of host {host.name!r}")
    in_host = np.isin(point_keys(guest_doubles), point_keys(host_doubles))
    return PairResult(guest_doubles, host_doubles, in_host)


def _progress(total: int, verbose: bool, desc: str) -> Any:
    return tqdm(total=total, unit="batch", desc=desc, disable=not verbose, leave=False)


def _assign(
    channel: Channel,
    host: HostInfo,
    alignment_id: str,
    points: np.ndarray,
    positions: np.ndarray,
    n_rows: int,
) -> None:
    """Send a host its doubly blinded values in final order (one message); it stages them."""
    reply = channel.call(
        host.endpoint,
        "psi.host.assign",
        Message(
            "psi.assign",
            {
                "alignment_id": alignment_id,
                "points": np.ascontiguousarray(points),
                "positions": np.asarray(positions, dtype=np.int64),
                "n_rows": int(n_rows),
            },
        ),
    )
    if _expect(reply, "psi.received", host.name)["count"] != len(positions):
        raise ValueError(f"PSI: host {host.name!r} did not accept the alignment")


def _check_order_choice(order: Any, how: str) -> None:
    if order not in ORDERS:
        raise ValueError(f"order must be one of {ORDERS}, got {order!r}")
    if order == "id" and how != "inner":
        raise ValueError(
            "order='id' needs how='inner': with how='left' the guest's rows the host "
            "does not have would be placed among the shared ones by id, which tells "
            "the host about ids outside the intersection"
        )


def run_psi(
    guest: Any,
    endpoints: Sequence[Endpoint],
    *,
    how: str = "inner",
    order: str = "blinded",
    salt: bytes | str | None = None,
    batch_size: int = DEFAULT_BATCH_SIZE,
    channel: Channel | None = None,
    verbose: bool = False,
    checkpoint_dir: Any = None,
) -> PSIPlan:
    """Align the guest with one or more hosts; hosts store their mapping on success.

    Parameters
    ----------
    guest : ftl.Party
        The local party running the driver (its ids are read directly).
    endpoints : sequence of Endpoint
        One endpoint per host.
    how : {"inner", "left"}
        ``"inner"``: rows the guest shares with every host, sorted by the doubly
        blinded values of the run with the first host. ``"left"``: all guest rows
        sorted by their doubly blinded values (one host only).
    order : {"blinded", "id"}
        ``"blinded"``: the order described under ``how``. ``"id"`` (``how="inner"``
        only): shared rows sorted by canonical id (``str(id)`` in UTF-8 bytes),
        the same in every run; each host checks it on its own rows.
    salt : bytes or hex str, optional
        32-byte public salt; fresh random by default.
    batch_size : int
        Points per message.
    channel : Channel, optional
        Channel to use (its transcript records every message).
    verbose : bool
        Show a progress bar over batches.
    checkpoint_dir : path, optional
        Name the run and keep the guest's state in this folder after every batch
        (:mod:`ftl.psi._guest_run`): the run resumes where it left off after a host
        restarts mid-run, and when ``run_psi`` is called again with the same data
        and settings after the driver restarted.

    Returns
    -------
    PSIPlan

    Raises
    ------
    ValueError
        On bad arguments, a misbehaving host or an empty intersection. Nothing
        is stored at any host unless every host accepted the alignment.
    ftl.federation.policy.PolicyError
        If a host refuses, e.g. because the guest's set or the intersection is
        smaller than the host's minimum intersection size.
    """
    if how not in ("inner", "left"):
        raise ValueError(f"how must be 'inner' or 'left', got {how!r}")
    _check_order_choice(order, how)
    if how == "left" and len(endpoints) != 1:
        raise ValueError("how='left' aligns exactly two parties (a guest and one host)")
    if not endpoints:
        raise ValueError("PSI needs at least one host")
    given_salt = salt
    salt = _check_salt(salt)
    batch_size = _check_batch_size(batch_size)
    channel = channel if channel is not None else Channel(guest.name)
    ids = np.asarray(guest.local_ids())
    settings = {"how": how, "order": order, "batch_size": batch_size}
    if checkpoint_dir is None:
        return _align(channel, guest, ids, list(endpoints), salt, settings, verbose, None)
    key = GuestRun.key_of(
        ids,
        [e.name for e in endpoints],
        {**settings, "mode": "full", "salt": None if given_salt is None else salt.hex()},
    )
    run = GuestRun.saved(checkpoint_dir, guest.name, key)
    if run is None:
        run = GuestRun.new(checkpoint_dir, guest.name, key, salt)
    with _local_host_stores(run, endpoints):
        return _align_resuming(channel, guest, ids, list(endpoints), settings, verbose, run)


def _local_host_stores(run: GuestRun, endpoints: Sequence[Endpoint]) -> ExitStack:
    """The in-process hosts of a simulation (whose data the driver holds anyway) keep
    their part of a named run next to the guest's, unless they keep checkpoints."""
    stack = ExitStack()
    for endpoint in endpoints:
        party = getattr(endpoint, "party", None)
        if isinstance(endpoint, PartyService) and checkpoints_of(party) is None:
            store = run.host_store(endpoint.name, guard_of(party).identity)
            if store is not None:
                stack.enter_context(attached(party, store))
    return stack


def _align_resuming(
    channel: Channel,
    guest: Any,
    ids: np.ndarray,
    endpoints: list[Endpoint],
    settings: dict,
    verbose: bool,
    run: GuestRun,
) -> PSIPlan:
    """A named run: resumed where every party's checkpoint left it when a host's
    session is lost (once per point of progress), or when a kept run is found."""
    resume, seen = bool(run.progress), None
    while True:
        try:
            return _align(channel, guest, ids, endpoints, run.salt, settings, verbose, run, resume)
        except PolicyError:  # a host refused: the run is over
            run.finish()
            raise
        except (ValueError, ProtocolError) as exc:
            if resume and seen is None and run.opened < len(endpoints):
                # A kept run that a host cannot go on with (its state is gone).
                warnings.warn(
                    f"PSI run {run.run_id} cannot be resumed ({exc}); it starts afresh",
                    UserWarning,
                    stacklevel=4,
                )
                run.finish()
                run = GuestRun.new(run.folder, guest.name, run.key, run.salt)
                channel.session, resume = new_session_id(), False
                continue
            mark = run.mark()
            lost = isinstance(exc, ProtocolError) and run.opened == len(endpoints)
            if not lost:  # refused or misbehaving: resuming cannot help
                run.finish()
                raise
            if mark == seen:
                raise
            seen = mark
            log.warning(
                "%s; resuming PSI run %s where it left off, in a new session", exc, run.run_id
            )
            channel.session, resume = new_session_id(), True


def _open_hosts(
    channel: Channel,
    endpoints: list[Endpoint],
    attempted: list[Endpoint],
    n_guest: int,
    salt: bytes,
    settings: dict,
    run: GuestRun | None,
    resume: bool,
) -> list[HostInfo]:
    """Open (start, or resume) every host's session; a named run's new hosts draw
    their secrets and keep them."""
    hosts = []
    if run is not None:
        run.opened = 0
    for i, endpoint in enumerate(endpoints):
        if resume and endpoint.name in run.committed:  # it stored the alignment already
            saved = run.hosts[i]
            names = tuple(saved["feature_names"])
            hosts.append(HostInfo(endpoint, endpoint.name, saved["n_rows"], names))
            hosts[-1].received, hosts[-1].reblinded = n_guest, saved["n_rows"]
        else:
            attempted.append(endpoint)
            hosts.append(
                open_host(
                    channel,
                    endpoint,
                    salt=salt,
                    n_guest=n_guest,
                    mode="full",
                    how=settings["how"],
                    n_hosts=len(endpoints),
                    batch_size=settings["batch_size"],
                    order=settings["order"],
                    run_id=None if run is None else run.run_id,
                    resume=resume,
                )
            )
        if run is not None:
            run.opened += 1
            if resume:
                run.resumed(i, hosts[-1])
    if run is not None and not resume:
        # Drawn once every host is open, in the order an unnamed run draws them.
        for info in hosts:
            metadata = {"name": info.name, "n_rows": info.n_rows}
            secrets = random_scalar(), secret_permutation(n_guest)
            run.add_host(
                {**metadata, "feature_names": info.feature_names},
                *secrets,
                settings["batch_size"],
            )
    return hosts


def _align(
    channel: Channel,
    guest: Any,
    ids: np.ndarray,
    endpoints: list[Endpoint],
    salt: bytes,
    settings: dict,
    verbose: bool,
    run: GuestRun | None,
    resume: bool = False,
) -> PSIPlan:
    """One attempt at the alignment (all of it, or, in a named run, what is left)."""
    how, order, batch_size = settings["how"], settings["order"], settings["batch_size"]
    n_guest = len(ids)
    attempted: list[Endpoint] = []
    try:
        hosts = _open_hosts(channel, endpoints, attempted, n_guest, salt, settings, run, resume)
        total = sum(
            2 * _n_batches(n_guest, batch_size) + _n_batches(h.n_rows, batch_size) for h in hosts
        )
        with _progress(total, verbose, "PSI") as bar:
            pairs = [
                exchange(
                    channel, h, ids, salt, batch_size, bar, None if run is None else run.progress[i]
                )
                for i, h in enumerate(hosts)
            ]
        plan = PSIPlan(
            alignment_id=uuid.uuid4().hex if run is None else run.name_alignment(),
            rows=np.empty(0, np.int64),
            overlap=None,
            hosts=hosts,
            salt=salt,
            pairwise={h.name: int(p.in_host.sum()) for h, p in zip(hosts, pairs, strict=True)},
            session=channel.session,
        )
        names = ", ".join(repr(h.name) for h in hosts)
        if how == "inner":
            shared = np.logical_and.reduce([p.in_host for p in pairs])
            rows = np.flatnonzero(shared)
            if not len(rows):
                raise ValueError(f"no shared ids between guest {guest.name!r} and host(s) {names}")
            if order == "id":
                # Every party knows which of its own rows are shared and holds the
                # same join keys, so each can compute (and checks) this order itself.
                rows = rows[id_order(ids[rows])]
            else:
                # Order by doubly blinded value: it reveals nothing about non-shared ids.
                rows = rows[np.argsort(point_keys(pairs[0].guest_doubles[rows]), kind="stable")]
            parts = [(p.guest_doubles[rows], np.arange(len(rows))) for p in pairs]
        else:
            pair = pairs[0]
            if not pair.in_host.any():
                raise ValueError(f"no shared ids between guest {guest.name!r} and host {names}")
            # All guest rows, ordered by their doubly blinded values: the host can
            # recompute this order itself, so aligned positions tell it nothing new.
            rows = np.argsort(point_keys(pair.guest_doubles), kind="stable")
            plan.overlap = pair.in_host[rows]
            positions = np.flatnonzero(plan.overlap)
            parts = [(pair.guest_doubles[rows[positions]], positions)]
        _store(channel, hosts, plan.alignment_id, parts, len(rows), run)
        plan.rows = rows.astype(np.int64)
        plan.session = channel.session
        return plan
    finally:
        # Always drop host session state, also after a failure (close is idempotent).
        for endpoint in attempted:
            close_host(channel, endpoint)


def _store(
    channel: Channel,
    hosts: list[HostInfo],
    alignment_id: str,
    parts: list[tuple[np.ndarray, np.ndarray]],
    n_rows: int,
    run: GuestRun | None,
) -> None:
    """Every host stages its part of the order, then (two-phase) stores it; a named
    run notes each host that stored it, and is over once all have."""
    done = [] if run is None else run.committed
    for h, (points, positions) in zip(hosts, parts, strict=True):
        if h.name not in done:
            _assign(channel, h, alignment_id, points, positions, n_rows)
    # Two-phase: store only after every host accepted its part of the order.
    for h in hosts:
        if h.name in done:
            continue
        reply = channel.call(
            h.endpoint,
            "psi.host.commit",
            Message("psi.commit", {"alignment_id": alignment_id}),
        )
        _expect(reply, "ack", h.name)
        if run is not None:
            run.stored(h.name)
    if run is not None:
        run.finish()
