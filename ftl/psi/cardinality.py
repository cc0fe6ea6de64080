"""Cardinality-only PSI, driver side: the guest learns ``|A & B|`` and nothing else.

Steps 1 to 3 are those of the default mode (:mod:`ftl.psi.guest`, as in
``docs/protocols.md`` §2.2); steps 4 and 5 differ:

4. guest -> host: the tags ``T(a*b*P(y))`` (:func:`~ftl.psi.host.cardinality_tags`)
   of all host points under one secret shuffle, after every host point has arrived;
5. host -> guest: ``b*a*P(x)`` under one secret shuffle -- only after the host has
   counted the intersection from the tags and checked it reaches its minimum size.

Nothing is stored at either party.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from ftl.federation.channel import Channel
from ftl.federation.messages import Message
from ftl.federation.transcript import Transcript
from ftl.psi.curve import batches, check_distinct, point_keys, random_scalar, secret_permutation
from ftl.psi.guest import (
    DEFAULT_BATCH_SIZE,
    HostInfo,
    _check_batch_size,
    _check_salt,
    _expect,
    _fetch_doubles,
    _fetch_host_points,
    _n_batches,
    _progress,
    _send_guest_points,
    close_host,
    open_host,
)
from ftl.psi.host import cardinality_tags

__all__ = ["intersection_size"]


def _send_tags(
    channel: Channel,
    host: HostInfo,
    host_doubles: np.ndarray,
    salt: bytes,
    batch_size: int,
    bar: Any,
) -> None:
    """Cardinality mode, step 4: tags of all ``a*b*P(y)``, under one secret shuffle.

    The host needs them to count the intersection itself (and refuse below its
    minimum) before the guest can count. One permutation over the whole list, drawn
    after every host point has arrived: a per-batch shuffle would tell the host
    which of its batches hold the matches. Tags, not the points: a point would let
    a deviating host trace its own points through the shuffle by their algebraic
    relations (``Q`` and ``c*Q`` come back as ``a*Q`` and ``c*a*Q``).
    """
    shuffled = cardinality_tags(host_doubles, salt)[secret_permutation(len(host_doubles))]
    for start, stop in batches(len(shuffled), batch_size):
        ack = channel.call(
            host.endpoint,
            "psi.host.tags",
            Message("psi.host_tags", {"start": start, "tags": shuffled[start:stop]}),
        )
        if _expect(ack, "psi.received", host.name)["count"] != stop:
            raise ValueError(f"PSI: host {host.name!r} acknowledged a wrong count")
        bar.update(1)


def _fetch_shuffled(
    channel: Channel, host: HostInfo, n: int, batch_size: int, bar: Any
) -> np.ndarray:
    """Cardinality mode, step 5: the host's shuffled ``b*a*P(x)``, batch by batch."""
    return _fetch_doubles(
        channel, host, "psi.host.shuffled", "psi.shuffled_doubles", n, batch_size, bar
    )


def intersection_size(
    guest: Any,
    host: Any,
    *,
    salt: bytes | str | None = None,
    transcript: Transcript | None = None,
    batch_size: int = DEFAULT_BATCH_SIZE,
    verbose: bool = False,
) -> int:
    """Number of ids two parties share, without revealing which (PSI cardinality).

    The guest commits to its set, fetches the host's points and returns their
    tags under one secret shuffle; the host counts the intersection from those and
    the guest's points, refuses if the count is below its minimum intersection
    size, and only then returns the doubly blinded guest values under one secret
    shuffle. So each side learns ``|A & B|`` and the other's set size, and
    neither learns which ids are shared. Nothing is stored.

    Parameters
    ----------
    guest : ftl.Party
        The local party that runs the driver and learns the count.
    host : ftl.Party or object with an ``endpoint``
        The other party, reached through ``host.endpoint``.
    salt : bytes or hex str, optional
        32-byte public salt; fresh random by default.
    transcript : ftl.federation.Transcript, optional
        Records every message.
    batch_size : int
        Points per message.
    verbose : bool
        Show a progress bar over batches.

    Returns
    -------
    int
        The size of the intersection.

    Raises
    ------
    ftl.PolicyError
        If the host refuses: the run is over its alignments per day, or the
        guest's set or the intersection is smaller than its minimum intersection
        size (the refusal does not say by how much).

    Notes
    -----
    The host learns the count first: it must, to enforce its minimum. The count
    is over the set the host presents, which the guest cannot check, so a
    deviating host that presents one real customer among random points learns
    whether the guest has that customer -- one bit per run, and only in runs the
    guest starts. It cannot link the shuffled tags to its rows. (The default mode
    tells every host its whole intersection with the guest anyway.)

    Examples
    --------
    >>> n = ftl.psi.intersection_size(bank, shop)  # doctest: +SKIP
    """
    if getattr(guest, "name", None) == getattr(host, "name", None):
        raise ValueError("guest and host must be different parties (names are equal)")
    salt = _check_salt(salt)
    batch_size = _check_batch_size(batch_size)
    endpoint = host.endpoint
    channel = Channel(guest.name, transcript=transcript)
    ids = np.asarray(guest.local_ids())
    try:
        info = open_host(
            channel,
            endpoint,
            salt=salt,
            n_guest=len(ids),
            mode="cardinality",
            how="inner",
            n_hosts=1,
            batch_size=batch_size,
        )
        total = 2 * _n_batches(len(ids), batch_size) + 2 * _n_batches(info.n_rows, batch_size)
        alpha = random_scalar()
        with _progress(total, verbose, "PSI cardinality") as bar:
            _send_guest_points(channel, info, ids, salt, alpha, batch_size, bar)
            host_doubles = _fetch_host_points(channel, info, alpha, batch_size, bar, False)
            _send_tags(channel, info, host_doubles, salt, batch_size, bar)
            guest_doubles = _fetch_shuffled(channel, info, len(ids), batch_size, bar)
            check_distinct(guest_doubles, f"reply of host {info.name!r}")
        return int(np.isin(point_keys(guest_doubles), point_keys(host_doubles)).sum())
    finally:
        close_host(channel, endpoint)
