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
of the other side's, and the shared rows are the common values; the guest sends the
hosts their values in the aligned order (``assign``), and every host stores its
mapping once all have accepted (``commit``). All lists are sent in batches so memory
stays bounded; each step with one host is a function of
:mod:`ftl.psi._guest_steps`. The cardinality mode, in which the guest learns only
how many ids are shared, changes steps 4 and 5 (:mod:`ftl.psi.cardinality`).

With ``checkpoint_dir`` the guest names the run and keeps its state after every
batch (:mod:`ftl.psi._guest_run`); the run resumes where every party's checkpoint
left it after a host restarted mid-run (its session is lost) or the driver did.

Every cross-party value goes through :meth:`ftl.federation.Channel.call`, so the
transcript records it. Hosts are reached only through the ``Endpoint`` protocol
(``endpoint.name``, ``endpoint.handle``); the guest's own data is local.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ftl.federation.channel import Channel, Endpoint
from ftl.federation.messages import Message
from ftl.psi import host as _host  # noqa: F401  (registers the psi.host role)
from ftl.psi._guest_run import GuestRun, run_named
from ftl.psi._guest_steps import (
    HostInfo,
    Progress,
    assign,
    check_batch_size,
    check_salt,
    close_host,
    expect,
    fetch_guest_doubles,
    fetch_host_points,
    n_batches,
    open_host,
    progress_bar,
    send_guest_points,
)
from ftl.psi.curve import check_distinct, point_keys, random_scalar, secret_permutation
from ftl.psi.host import ORDERS, id_order

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

#: Points per message: 100k points are 3.2 MB on the wire.
DEFAULT_BATCH_SIZE = 100_000
PROTOCOL = "ecdh-ristretto255"


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
    if progress is None:  # an unnamed run: fresh secrets, kept nowhere
        progress = Progress(random_scalar(), secret_permutation(len(ids)), host.n_rows)
    send_guest_points(channel, host, ids, salt, batch_size, bar, progress)
    host_doubles = fetch_host_points(channel, host, batch_size, bar, progress, send_back=True)
    guest_doubles = fetch_guest_doubles(channel, host, batch_size, bar, progress)
    check_distinct(guest_doubles, f"reply of host {host.name!r}")
    in_host = np.isin(point_keys(guest_doubles), point_keys(host_doubles))
    return PairResult(guest_doubles, host_doubles, in_host)


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
    salt = check_salt(salt)
    batch_size = check_batch_size(batch_size)
    channel = channel if channel is not None else Channel(guest.name)
    ids = np.asarray(guest.local_ids())
    endpoints = list(endpoints)
    settings = {"how": how, "order": order, "batch_size": batch_size}
    if checkpoint_dir is None:
        return _align(channel, guest, ids, endpoints, salt, settings, verbose, None)
    key = GuestRun.key_of(
        ids,
        [e.name for e in endpoints],
        {**settings, "mode": "full", "salt": None if given_salt is None else salt.hex()},
    )
    run = GuestRun.of(checkpoint_dir, guest.name, key, salt)
    return run_named(
        channel,
        guest.name,
        endpoints,
        run,
        lambda run, resume: _align(
            channel, guest, ids, endpoints, run.salt, settings, verbose, run, resume
        ),
    )


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
            run.add_host(info, random_scalar(), secret_permutation(n_guest), settings["batch_size"])
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
            2 * n_batches(n_guest, batch_size) + n_batches(h.n_rows, batch_size) for h in hosts
        )
        with progress_bar(total, verbose, "PSI") as bar:
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
            assign(channel, h, alignment_id, points, positions, n_rows)
    # Two-phase: store only after every host accepted its part of the order.
    for h in hosts:
        if h.name in done:
            continue
        reply = channel.call(
            h.endpoint,
            "psi.host.commit",
            Message("psi.commit", {"alignment_id": alignment_id}),
        )
        expect(reply, "ack", h.name)
        if run is not None:
            run.stored(h.name)
    if run is not None:
        run.finish()
