"""Cardinality-only PSI, driver side: the guest learns ``|A & B|`` and nothing else.

Steps 1 to 3 are those of the default mode (:mod:`ftl.psi.guest`, as in
``docs/protocols.md`` §2.2); steps 4 and 5 differ:

4. guest -> host: the tags ``T(a*b*P(y))`` (:func:`~ftl.psi.host.cardinality_tags`)
   of all host points under one secret shuffle, after every host point has arrived;
5. host -> guest: ``b*a*P(x)`` under one secret shuffle -- only after the host has
   counted the intersection from the tags and checked it reaches its minimum size.

Nothing is stored at either party, except, with ``checkpoint_dir``, each party's
part of the named run until it ends (:mod:`ftl.psi._guest_run`,
:mod:`ftl.psi._resume`): a resumed run sends and answers exactly what the run it
continues would have, and the host counts the intersection once, over the set the
guest committed, so a resume cannot count a second set.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from ftl.federation.channel import Channel, Endpoint
from ftl.federation.transcript import Transcript
from ftl.psi._guest_run import GuestRun, run_named
from ftl.psi._guest_steps import (
    HostInfo,
    Progress,
    check_batch_size,
    check_salt,
    close_host,
    fetch_doubles,
    fetch_host_points,
    n_batches,
    open_host,
    progress_bar,
    send_batch,
    send_guest_points,
)
from ftl.psi.curve import batches, check_distinct, point_keys, random_scalar, secret_permutation
from ftl.psi.guest import DEFAULT_BATCH_SIZE
from ftl.psi.host import cardinality_tags

__all__ = ["intersection_size"]


def _send_tags(
    channel: Channel, host: HostInfo, salt: bytes, batch_size: int, bar: Any, progress: Progress
) -> None:
    """Cardinality mode, step 4: tags of all ``a*b*P(y)``, under one secret shuffle.

    The host needs them to count the intersection itself (and refuse below its
    minimum) before the guest can count. One permutation over the whole list, drawn
    after every host point has arrived (and kept, in a named run, before the first
    tag is sent, so that a resumed run sends the same tags): a per-batch shuffle
    would tell the host which of its batches hold the matches. Tags, not the
    points: a point would let a deviating host trace its own points through the
    shuffle by their algebraic relations (``Q`` and ``c*Q`` come back as ``a*Q`` and
    ``c*a*Q``).
    """
    if progress.tag_order is None:
        progress.tag_order = secret_permutation(host.n_rows)
        progress.gained("tags", 0, progress.tag_order)
    shuffled = cardinality_tags(progress.host_doubles, salt)[progress.tag_order]
    for start, stop in batches(len(shuffled), batch_size):
        if stop > progress.reblinded:
            tags = shuffled[start:stop]
            send_batch(channel, host, "psi.host.tags", "psi.host_tags", "tags", start, tags)
            progress.reblinded = stop
        bar.update(1)


def intersection_size(
    guest: Any,
    host: Any,
    *,
    salt: bytes | str | None = None,
    transcript: Transcript | None = None,
    batch_size: int = DEFAULT_BATCH_SIZE,
    verbose: bool = False,
    checkpoint_dir: Any = None,
) -> int:
    """Number of ids two parties share, without revealing which (PSI cardinality).

    The guest commits to its set, fetches the host's points and returns their
    tags under one secret shuffle; the host counts the intersection from those and
    the guest's points, refuses if the count is below its minimum intersection
    size, and only then returns the doubly blinded guest values under one secret
    shuffle. So each side learns ``|A & B|`` and the other's set size, and
    neither learns which ids are shared. Nothing is stored (but a named run's
    checkpoints until it ends).

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
    checkpoint_dir : path, optional
        Name the run and keep the guest's state in this folder after every batch
        (:mod:`ftl.psi._guest_run`): the run resumes where it left off after the
        host restarts mid-run, and when ``intersection_size`` is called again with
        the same data and settings after the driver restarted. A finished run
        removes its checkpoint.

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
    given_salt = salt
    salt = check_salt(salt)
    batch_size = check_batch_size(batch_size)
    endpoint = host.endpoint
    channel = Channel(guest.name, transcript=transcript)
    ids = np.asarray(guest.local_ids())
    if checkpoint_dir is None:
        return _count(channel, endpoint, ids, salt, batch_size, verbose, None)
    settings = {"how": "inner", "order": "blinded", "batch_size": batch_size}
    key = GuestRun.key_of(
        ids,
        [endpoint.name],
        {**settings, "mode": "cardinality", "salt": None if given_salt is None else salt.hex()},
    )
    run = GuestRun.of(checkpoint_dir, guest.name, key, salt)
    return run_named(
        channel,
        guest.name,
        [endpoint],
        run,
        lambda run, resume: _count(
            channel, endpoint, ids, run.salt, batch_size, verbose, run, resume
        ),
    )


def _count(
    channel: Channel,
    endpoint: Endpoint,
    ids: np.ndarray,
    salt: bytes,
    batch_size: int,
    verbose: bool,
    run: GuestRun | None,
    resume: bool = False,
) -> int:
    """One attempt at the count (all of it, or, in a named run, what is left)."""
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
            run_id=None if run is None else run.run_id,
            resume=resume,
        )
        progress = _progress_with(info, len(ids), batch_size, run, resume)
        total = 2 * n_batches(len(ids), batch_size) + 2 * n_batches(info.n_rows, batch_size)
        with progress_bar(total, verbose, "PSI cardinality") as bar:
            send_guest_points(channel, info, ids, salt, batch_size, bar, progress)
            host_doubles = fetch_host_points(
                channel, info, batch_size, bar, progress, send_back=False
            )
            _send_tags(channel, info, salt, batch_size, bar, progress)
            guest_doubles = fetch_doubles(
                channel,
                info,
                "psi.host.shuffled",
                "psi.shuffled_doubles",
                batch_size,
                bar,
                progress,
            )
            check_distinct(guest_doubles, f"reply of host {info.name!r}")
        count = int(np.isin(point_keys(guest_doubles), point_keys(host_doubles)).sum())
        if run is not None:
            run.finish()
        return count
    finally:
        close_host(channel, endpoint)


def _progress_with(
    info: HostInfo, n_guest: int, batch_size: int, run: GuestRun | None, resume: bool
) -> Progress:
    """The exchange's secrets and progress: fresh (kept in a named run), or, in a
    resumed run, those kept, going on from the counts the host holds."""
    if run is None:
        return Progress(random_scalar(), secret_permutation(n_guest), info.n_rows)
    run.opened += 1
    if resume:
        run.resumed(0, info)
        return run.progress[0]
    return run.add_host(info, random_scalar(), secret_permutation(n_guest), batch_size)
