"""The guest's steps with one PSI host, in protocol order (``docs/protocols.md`` §2.2).

Each function is one step of the exchange with one host, sent in batches so that
memory stays bounded: open the session, send the guest's points, fetch the host's
points (and return them blinded), fetch the final values, assign the aligned order.
The drivers compose them: the alignment (:mod:`ftl.psi.guest`) and the cardinality
mode (:mod:`ftl.psi.cardinality`).

A :class:`Progress` carries the guest's secrets for the host and how far each list
has come. In an unnamed run it lives in memory only; in a named run
(:mod:`ftl.psi._guest_run`) the steps skip what the host or the guest already holds
and keep every batch the guest gains, so the run resumes there.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from tqdm import tqdm

from ftl.federation.channel import Channel, Endpoint
from ftl.federation.messages import Message
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
    random_salt,
)
from ftl.psi.messages import MAX_BATCH, MAX_POINTS

__all__ = [
    "HostInfo",
    "Progress",
    "assign",
    "check_batch_size",
    "check_salt",
    "close_host",
    "expect",
    "fetch_doubles",
    "fetch_guest_doubles",
    "fetch_host_points",
    "n_batches",
    "open_host",
    "progress_bar",
    "send_batch",
    "send_guest_points",
]


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
class Progress:
    """The guest's exchange with one host: its secrets and how far each list came.

    ``alpha`` is the guest's scalar and ``order`` its secret order for this host
    (``order[k]`` is the guest row whose point is sent at position ``k``);
    ``received`` and ``reblinded`` count what the host acknowledged (guest points,
    step-4 values); ``fetched`` the host's points the guest holds blinded in
    ``host_doubles``; ``n_final`` the final values it holds in ``final`` (in the
    order the host sends them); ``tag_order`` is the secret shuffle of its
    cardinality-mode tags, once drawn.
    """

    alpha: bytes
    order: np.ndarray
    n_rows: int
    host_doubles: np.ndarray = field(init=False)
    final: np.ndarray = field(init=False)
    fetched: int = 0
    n_final: int = 0
    received: int = 0
    reblinded: int = 0
    tag_order: np.ndarray | None = None
    #: ``keep(kind, start, values)``: called with every batch the guest gains
    #: (``None``: an unnamed run, kept nowhere).
    keep: Any = None

    def __post_init__(self) -> None:
        self.host_doubles = np.empty((self.n_rows, POINT_BYTES), dtype=np.uint8)
        self.final = np.empty((len(self.order), POINT_BYTES), dtype=np.uint8)

    def gained(self, kind: str, start: int, values: np.ndarray) -> None:
        if self.keep is not None:
            self.keep(kind, start, values)


def expect(message: Message, type_: str, who: str) -> Message:
    """``message``, if it is of type ``type_``; a host replying otherwise misbehaves."""
    if message.type != type_:
        raise ValueError(f"PSI: {who} replied with {message.type!r}, expected {type_!r}")
    return message


def check_salt(salt: Any) -> bytes:
    """The run's salt: ``salt`` (bytes or hex) checked, or a fresh random one."""
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


def check_batch_size(batch_size: Any) -> int:
    """``batch_size`` as an int within what a host accepts."""
    if isinstance(batch_size, bool) or not isinstance(batch_size, (int, np.integer)):
        raise ValueError("batch_size must be an integer")
    if not 1 <= batch_size <= MAX_BATCH:
        raise ValueError(f"batch_size must be in [1, {MAX_BATCH}], got {batch_size}")
    return int(batch_size)


def n_batches(n: int, size: int) -> int:
    """How many batches of ``size`` hold ``n`` values."""
    return -(-n // size)


def progress_bar(total: int, verbose: bool, desc: str) -> Any:
    """A progress bar over ``total`` batches, shown only if ``verbose``."""
    return tqdm(total=total, unit="batch", desc=desc, disable=not verbose, leave=False)


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
    expect(reply, "psi.resumed" if resume else "psi.opened", endpoint.name)
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


def send_batch(
    channel: Channel,
    host: HostInfo,
    op: str,
    message_type: str,
    field_name: str,
    start: int,
    values: np.ndarray,
) -> None:
    """Send the batch of ``values`` at ``start`` with the host's operation ``op``; its
    ``psi.received`` must count every value up to the batch's end."""
    reply = channel.call(
        host.endpoint, op, Message(message_type, {"start": start, field_name: values})
    )
    if expect(reply, "psi.received", host.name)["count"] != start + len(values):
        raise ValueError(f"PSI: host {host.name!r} acknowledged a wrong count")


def send_guest_points(
    channel: Channel,
    host: HostInfo,
    ids: np.ndarray,
    salt: bytes,
    batch_size: int,
    bar: Any,
    progress: Progress,
) -> None:
    """Step 2: send ``a*P(x)`` in the guest's secret order (``progress.order``: the
    host must not learn which row a point is); skip the batches the host holds.

    The host stores ``b*a*P(x)`` and replies with a count only.
    """
    for start, stop in batches(len(ids), batch_size):
        if stop > progress.received:
            rows = progress.order[start:stop]
            # Canonicalise per batch: no Python object per id for the whole set.
            points = blind(hash_to_curve(canonical_ids(ids[rows]), salt), progress.alpha)
            send_batch(
                channel, host, "psi.host.submit", "psi.guest_points", "points", start, points
            )
            progress.received = stop
        bar.update(1)


def fetch_doubles(
    channel: Channel,
    host: HostInfo,
    op: str,
    reply_type: str,
    batch_size: int,
    bar: Any,
    progress: Progress,
) -> np.ndarray:
    """The final values (one per guest point) from the host's operation ``op``, batch
    by batch, checked, in the order the host sends them: those the guest does not
    hold yet, each kept."""
    doubles = progress.final
    for start, stop in batches(len(doubles), batch_size):
        if stop > progress.n_final:
            reply = channel.call(
                host.endpoint, op, Message("psi.fetch", {"start": start, "stop": stop})
            )
            expect(reply, reply_type, host.name)
            if reply["start"] != start:
                raise ValueError(f"PSI: host {host.name!r} sent the wrong batch")
            doubles[start:stop] = check_points(
                reply["points"], f"reply of host {host.name!r}", expected=stop - start
            )
            progress.n_final = stop
            progress.gained("final", start, doubles[start:stop])
        bar.update(1)
    return doubles


def fetch_guest_doubles(
    channel: Channel, host: HostInfo, batch_size: int, bar: Any, progress: Progress
) -> np.ndarray:
    """Step 5 (default mode): ``b*a*P(x)`` in guest row order.

    The host serves these only after it has checked its minimum intersection size;
    they come back in the (secret) order the guest sent its points.
    """
    received = fetch_doubles(
        channel, host, "psi.host.blinded", "psi.guest_points_blinded", batch_size, bar, progress
    )
    doubles = np.empty_like(received)
    doubles[progress.order] = received
    return doubles


def fetch_host_points(
    channel: Channel,
    host: HostInfo,
    batch_size: int,
    bar: Any,
    progress: Progress,
    send_back: bool,
) -> np.ndarray:
    """Steps 3 and 4: fetch ``b*P(y)``, compute ``a*b*P(y)`` and, with ``send_back``,
    send it back in step 4: fetch what the guest does not hold (each batch kept),
    send back what the host does not hold."""
    doubles = progress.host_doubles
    for start, stop in batches(host.n_rows, batch_size):
        if stop > progress.fetched:
            doubles[start:stop] = _fetch_host_batch(channel, host, progress.alpha, start, stop)
            progress.fetched = stop
            progress.gained("own", start, doubles[start:stop])
        if send_back and stop > progress.reblinded:
            reblinded = doubles[start:stop]
            op, message_type = "psi.host.reblinded", "psi.host_points_reblinded"
            send_batch(channel, host, op, message_type, "points", start, reblinded)
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
    expect(reply, "psi.host_points", host.name)
    if reply["start"] != start:
        raise ValueError(f"PSI: host {host.name!r} sent the wrong batch")
    # Checked and blinded in one pass (each point is decoded once).
    return check_and_blind(
        reply["points"], alpha, f"points of host {host.name!r}", expected=stop - start
    )


def assign(
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
    if expect(reply, "psi.received", host.name)["count"] != len(positions):
        raise ValueError(f"PSI: host {host.name!r} did not accept the alignment")
