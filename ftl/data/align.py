"""``ftl.align``: find and order the rows parties share, by private set intersection.

The labelled party is the *guest*: it runs the driver and talks to every other
party (*host*) through that party's endpoint. Ids never leave a party; only
blinded curve points do (see :mod:`ftl.psi`).
"""

from __future__ import annotations

from collections import Counter
from typing import Any

import numpy as np

from ftl.data.handles import Alignment, VerticalData
from ftl.federation.channel import Channel
from ftl.federation.transcript import Transcript
from ftl.psi.cardinality import intersection_size
from ftl.psi.guest import DEFAULT_BATCH_SIZE, PROTOCOL, run_psi

__all__ = ["align"]

HOWS = ("inner", "left")
ORDERS = ("blinded", "id")
ORDER_RULES = {
    "blinded": "sorted by doubly blinded point bytes (guest vs first host)",
    "id": "sorted by canonical id bytes, str(id) in UTF-8 (checked by every host)",
}


def _split_parties(parties: tuple[Any, ...], how: str) -> tuple[Any, list[Any]]:
    """Validate the parties; return (guest, hosts) with the labelled party as guest."""
    if len(parties) < 2:
        raise ValueError(f"align needs at least two parties, got {len(parties)}")
    names = [getattr(p, "name", None) for p in parties]
    if not all(isinstance(n, str) and n for n in names):
        raise ValueError("every party needs a non-empty string name (pass ftl.Party objects)")
    dupes = sorted(n for n, c in Counter(names).items() if c > 1)
    if dupes:
        raise ValueError(f"party names must be unique; repeated: {dupes}")
    labelled = [p for p in parties if getattr(p, "has_labels", False)]
    if len(labelled) != 1:
        found = ", ".join(repr(p.name) for p in labelled) or "none"
        raise ValueError(
            "the label column must be on exactly one party (the guest); "
            f"parties with labels: {found}"
        )
    if how not in HOWS:
        raise ValueError(f"how must be one of {HOWS}, got {how!r}")
    guest = labelled[0]
    hosts = [p for p in parties if p is not guest]
    if how == "left" and len(hosts) != 1:
        raise ValueError(f"how='left' aligns exactly two parties, got {len(parties)}")
    for h in hosts:
        if getattr(h, "endpoint", None) is None:
            raise ValueError(f"party {h.name!r} has no endpoint to run PSI with")
    return guest, hosts


def align(
    *parties: Any,
    how: str = "inner",
    order: str = "blinded",
    salt: bytes | str | None = None,
    transcript: Transcript | None = None,
    batch_size: int = DEFAULT_BATCH_SIZE,
    verbose: bool = False,
    cardinality_only: bool = False,
    checkpoint_dir: Any = None,
) -> tuple[VerticalData, np.ndarray] | int:
    """Align parties' rows by ECDH private set intersection.

    The party with labels is the guest (in any argument position); all others
    are hosts. Each host runs a pairwise PSI with the guest. Every party stores,
    privately, which of its local rows each aligned row is.

    Parameters
    ----------
    *parties : ftl.Party
        Two or more parties with unique names; exactly one has labels.
    how : {"inner", "left"}, default "inner"
        ``"inner"``: rows whose id every party has. ``"left"`` (two parties only,
        used for transfer learning): all guest rows; ``X.alignment.overlap``
        marks those the host also has.
    order : {"blinded", "id"}, default "blinded"
        Order of the aligned rows. ``"blinded"``: sorted by doubly blinded curve
        points, which depend on fresh secret scalars, so the order differs between
        runs. ``"id"`` (only with ``how="inner"``): sorted by the canonical id
        string ``str(id)`` (UTF-8 byte order, so ``"10"`` comes before ``"9"``);
        the same in every run, so two alignments of the same parties give the same
        ``X.ids`` and row mappings. Every party can compute this order from its own
        shared rows, so it reveals nothing new; each host checks it. Refused with
        ``how="left"``, where it would place the guest's non-shared rows among the
        shared ones by id.
    salt : bytes or hex str, optional
        32-byte public salt for hashing ids to the curve; fresh random by default.
        Secret scalars are always fresh.
    transcript : ftl.federation.Transcript, optional
        Records every PSI message; also attached as ``X.alignment.psi["transcript"]``.
    batch_size : int, default 100_000
        Points per message (bounds memory and message size).
    verbose : bool, default False
        Show a progress bar over batches.
    cardinality_only : bool, default False
        Learn only how many ids the two parties share and return that ``int``
        (see :func:`ftl.intersection_size`); both learn the count, nobody learns
        which ids.
    checkpoint_dir : path, optional
        Make a long alignment resumable: the guest names the run and keeps its
        state in this folder after every batch, and each host keeps its own part
        where it keeps checkpoints (``ftl serve``'s ``checkpoint_dir``). After a host
        restarts mid-run the alignment goes on where it left off; after the driver
        restarts, calling ``align`` again with the same parties, data and settings
        does. No finished batch is redone, and the alignment is the one the
        uninterrupted run would have made (with ``cardinality_only``: the same
        count). A finished run removes its checkpoint.

    Returns
    -------
    X : VerticalData
        Handle over the aligned rows (guest first, then hosts in argument order).
    y : ndarray
        The guest's labels for those rows.

    Raises
    ------
    ValueError
        If fewer than two parties, names repeat, not exactly one party has
        labels, ``how`` or ``order`` is unknown, ``order="id"`` is combined with
        ``how="left"``, a peer misbehaves, or no ids are shared.
        Nothing is stored at any party when ``align`` fails.
    ftl.PolicyError
        If a host refuses: e.g. a host served by ``ftl serve`` whose data-use
        policy sets a minimum intersection size refuses a guest set or an
        intersection smaller than that, before the guest learns the intersection
        or (``cardinality_only``) its size; every run of either kind counts
        against the host's alignments per day.

    Notes
    -----
    *What each party learns.* In the default (``"inner"``) mode the guest and
    every host learn the set sizes and which of their own rows are in the final
    intersection (with several hosts, every host learns the final intersection
    over all parties). Ids, hashes of ids and row numbers never cross; the
    aligned order is sorted by doubly blinded curve points (or, with
    ``order="id"``, by the ids of the shared rows, which every party knows), so
    it reveals nothing about ids outside the intersection. With ``how="left"``
    all guest rows are ordered by their doubly blinded values, an order the host
    can recompute from what it already saw. Use :func:`ftl.intersection_size` to
    learn only the size of the intersection.

    Examples
    --------
    >>> X, y = ftl.align(bank, shop)  # doctest: +SKIP
    >>> X, y = ftl.align(bank, shop_a, shop_b)  # doctest: +SKIP
    >>> X, y = ftl.align(bank, shop, order="id")  # reproducible order  # doctest: +SKIP
    """
    if order not in ORDERS:
        raise ValueError(f"order must be one of {ORDERS}, got {order!r}")
    if cardinality_only:
        guest, hosts = _split_parties(parties, "inner")
        if len(hosts) != 1:
            raise ValueError("cardinality_only works between exactly two parties")
        return intersection_size(
            guest,
            hosts[0],
            salt=salt,
            transcript=transcript,
            batch_size=batch_size,
            verbose=verbose,
            checkpoint_dir=checkpoint_dir,
        )
    guest, hosts = _split_parties(parties, how)
    if order == "id" and how != "inner":
        raise ValueError(
            "order='id' needs how='inner': with how='left' the guest's rows that the "
            "host does not have would be placed among the shared rows by id, which "
            "would tell the host about the guest's ids outside the intersection"
        )
    if transcript is not None and not isinstance(transcript, Transcript):
        raise ValueError("transcript must be an ftl.federation.Transcript")
    transcript = transcript if transcript is not None else Transcript()
    channel = Channel(guest.name, transcript=transcript)
    plan = run_psi(
        guest,
        [h.endpoint for h in hosts],
        how=how,
        order=order,
        salt=salt,
        batch_size=batch_size,
        channel=channel,
        verbose=verbose,
        checkpoint_dir=checkpoint_dir,
    )
    # Hosts have committed; the guest's mapping is stored last, in the driver.
    guest.remember_alignment(plan.alignment_id, plan.rows)
    n_shared = int(plan.overlap.sum()) if plan.overlap is not None else len(plan.rows)
    names = [f"{guest.name}__{c}" for c in guest.feature_names]
    for info in plan.hosts:
        names.extend(f"{info.name}__{c}" for c in info.feature_names)
    alignment = Alignment(
        id=plan.alignment_id,
        guest=guest,
        hosts=tuple(hosts),
        ids=guest.local_ids()[plan.rows],
        n_features=(guest.n_features, *(len(info.feature_names) for info in plan.hosts)),
        feature_names=tuple(names),
        overlap=plan.overlap,
        how=how,
        psi={
            "protocol": PROTOCOL,
            "group": "ristretto255, RFC 9496 (libsodium via rbcl)",
            "hash_to_curve": "crypto_core_ristretto255_from_hash(SHA-512(salt||len||str(id)))",
            "order": order,
            "order_rule": ORDER_RULES[order],
            "salt": plan.salt.hex(),
            "sizes": {guest.name: guest.n_rows, **{i.name: i.n_rows for i in plan.hosts}},
            "intersection": n_shared,
            "pairwise_intersections": dict(plan.pairwise),
            "session": plan.session,
            "batch_size": batch_size,
            "transcript": transcript,
        },
    )
    return VerticalData(alignment), guest.local_labels(plan.rows)
