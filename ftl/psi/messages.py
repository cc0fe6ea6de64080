"""Message types of the ECDH PSI protocol.

Blinded points (``a*P(id)``, ``b*P(id)``, ``a*b*P(id)``) are recorded as
``public``: under the decisional Diffie-Hellman assumption they look random to
anyone who lacks the scalars, which is why ECDH PSI may send them in the clear.
Audits treat per-sample PSI points as public by design. The cardinality-mode tags
(SHA-256 of a doubly blinded point) are public for the same reason. No message
carries an id, a hash of an id or a local row number.
"""

from __future__ import annotations

from ftl.federation.messages import (
    PUBLIC_INT,
    FieldSpec,
    ValueKind,
    register,
)

__all__ = ["MAX_POINTS", "MAX_BATCH"]

#: Upper bound on the number of points in any one field (memory guard).
MAX_POINTS = 50_000_000
#: Upper bound on the batch size a guest may announce.
MAX_BATCH = 5_000_000

_PUBLIC = ValueKind.PUBLIC


#: (n, 32) uint8: one ristretto255 element encoding per row.
_POINTS = FieldSpec(
    "array", _PUBLIC, ndim=2, dtypes=("uint8",), per_sample=True, max_len=MAX_POINTS
)
#: (n, 32) uint8 as well: one SHA-256 tag of a doubly blinded point per row.
_TAGS = _POINTS


def _str(max_len: int = 64) -> FieldSpec:
    return FieldSpec("str", _PUBLIC, max_len=max_len)


#: The fields of ``psi.open``, which the named (resumable) runs carry too.
_OPEN_FIELDS = {
    "salt": FieldSpec("bytes", _PUBLIC, max_len=64),
    "n_guest": PUBLIC_INT,
    "mode": _str(),
    "how": _str(),
    "order": _str(),
    "n_hosts": PUBLIC_INT,
    "batch_size": PUBLIC_INT,
}
register(
    "psi.open",
    doc=(
        "Guest -> host: start a PSI session (salt, guest set size, mode, join, "
        "aligned order, number of hosts, batch size)."
    ),
    **_OPEN_FIELDS,
)
register(
    "psi.start",
    doc=(
        "Guest -> host: start a PSI session like psi.open, naming the run (run_id, "
        "random) so that it can be resumed (psi.resume); answered with psi.opened."
    ),
    run_id=_str(),
    **_OPEN_FIELDS,
)
register(
    "psi.resume",
    doc=(
        "Guest -> host: re-open the named run of this peer (same fields as its "
        "psi.start) where the host's own checkpoint left it; answered with psi.resumed."
    ),
    run_id=_str(),
    **_OPEN_FIELDS,
)
register(
    "psi.resumed",
    doc=(
        "Host -> guest: what psi.opened says, and how far the run had come at the "
        "host: guest points received, step-4 values (re-blinded points or tags) received."
    ),
    n_rows=PUBLIC_INT,
    feature_names=FieldSpec("json", _PUBLIC, max_len=1_000_000),
    received=PUBLIC_INT,
    reblinded=PUBLIC_INT,
)
register(
    "psi.opened",
    doc="Host -> guest: host set size and its public column names.",
    n_rows=PUBLIC_INT,
    feature_names=FieldSpec("json", _PUBLIC, max_len=1_000_000),
)
register(
    "psi.guest_points",
    doc="Guest -> host: a batch of a*P(a) in the guest's secret order (stored only).",
    start=PUBLIC_INT,
    points=_POINTS,
)
register(
    "psi.guest_points_blinded",
    doc=(
        "Host -> guest (default mode, last step): b*a*P(a) for guest points "
        "[start, stop), in the order the guest sent them; only after the host has "
        "every point and has checked its minimum intersection size."
    ),
    start=PUBLIC_INT,
    points=_POINTS,
)
register(
    "psi.fetch",
    doc="Guest -> host: request points [start, stop) of a host-side list.",
    start=PUBLIC_INT,
    stop=PUBLIC_INT,
)
register(
    "psi.host_points",
    doc="Host -> guest: a batch of b*P(b) in the host's secret order.",
    start=PUBLIC_INT,
    points=_POINTS,
)
register(
    "psi.host_points_reblinded",
    doc="Guest -> host (default mode only): a*b*P(b) in the host's order.",
    start=PUBLIC_INT,
    points=_POINTS,
)
register(
    "psi.host_tags",
    doc=(
        "Guest -> host (cardinality mode only): tags SHA-256(domain||salt||a*b*P(b)) of "
        "all host points under one secret shuffle, so the host can count the "
        "intersection (and check its minimum) without learning which of its rows match."
    ),
    start=PUBLIC_INT,
    tags=_TAGS,
)
register(
    "psi.shuffled_doubles",
    doc=(
        "Host -> guest (cardinality mode, last step): b*a*P(a) of all guest points, "
        "shuffled; only after the host has every tag and has checked its minimum "
        "intersection size."
    ),
    start=PUBLIC_INT,
    points=_POINTS,
)
register(
    "psi.received",
    doc="Acknowledgement with the number of points received so far.",
    count=PUBLIC_INT,
)
register(
    "psi.assign",
    doc=(
        "Guest -> host: the host's doubly blinded values in the final aligned order, "
        "the aligned positions they occupy and the number of aligned rows."
    ),
    alignment_id=_str(),
    points=_POINTS,
    positions=FieldSpec(
        "array", _PUBLIC, ndim=1, dtypes=("int64",), per_sample=True, max_len=MAX_POINTS
    ),
    n_rows=PUBLIC_INT,
)
register(
    "psi.commit",
    doc="Guest -> host: every party accepted the alignment; store it.",
    alignment_id=_str(),
)
