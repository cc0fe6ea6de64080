"""How many rows a batch has: the guest's own protection of its labels.

Every batch gives each host its gradient, ``p_H`` equations in the batch's residuals
``sigmoid(z) - y``; with as few rows as equations a host solves them, and a
residual's sign is the label (docs/protocols.md §5.2). The guest therefore refuses
small batches itself, whatever its caller asks, before any message is sent.
"""

from __future__ import annotations

import numpy as np

__all__ = ["MIN_BATCH_ROWS", "MIN_BATCH_ROWS_PER_HOST_COLUMN", "batch_rows", "min_batch_rows"]

#: Fewest rows of a mini-batch the guest sends (a full batch may be smaller, then the
#: per-column minimum below still holds). Protects the guest's labels: each batch
#: gives every host its gradient, ``p_H`` equations in the batch's residuals.
MIN_BATCH_ROWS = 32
#: Rows every batch (also a full batch) needs per host column, summed over the
#: hosts (colluding hosts pool their equations). With ``b <= p_H`` rows a host
#: solves its gradient for every row's residual ``sigmoid(z) - y``, whose sign is
#: the label; twice ``p_H`` leaves as many unknowns as equations.
MIN_BATCH_ROWS_PER_HOST_COLUMN = 2


def min_batch_rows(host_widths) -> int:
    """The guest's minimum rows per batch given the hosts' block widths."""
    return max(MIN_BATCH_ROWS, MIN_BATCH_ROWS_PER_HOST_COLUMN * int(sum(host_widths)))


def batch_rows(batch_size: int | str | None, n: int, host_widths, full_batch: bool) -> int:
    """Rows per batch for ``batch_size`` (int, ``"auto"`` or ``None``: all ``n`` rows).

    The guest refuses a mini-batch of fewer than :data:`MIN_BATCH_ROWS` rows and any
    batch (a full one too) of fewer than :data:`MIN_BATCH_ROWS_PER_HOST_COLUMN` rows
    per host column; ``"auto"`` (``n // 16`` clipped to 32..1024) is raised to that
    minimum. ``full_batch`` (L-BFGS) uses every row whatever ``batch_size`` says.

    Raises
    ------
    ValueError
        If the batches would be smaller than the guest's minimum.
    """
    widths = [int(w) for w in host_widths]
    floor = min_batch_rows(widths)
    if batch_size is None or full_batch:
        rows = n
    elif batch_size == "auto":
        rows = min(max(int(np.clip(n // 16, 32, 1024)), floor), n)
    else:
        rows = min(int(batch_size), n)
    if rows < n and rows < MIN_BATCH_ROWS:
        raise ValueError(
            f"batch_size={batch_size} is below the guest's minimum of {MIN_BATCH_ROWS} "
            "rows per mini-batch (small batches let a host solve its gradient for the "
            "batch's labels); use a larger batch_size or None (full batch)"
        )
    if rows < MIN_BATCH_ROWS_PER_HOST_COLUMN * sum(widths):
        what = "training set" if rows == n else f"batch_size={batch_size}"
        raise ValueError(
            f"the {what} has {rows} rows, fewer than {MIN_BATCH_ROWS_PER_HOST_COLUMN} per "
            f"host column ({sum(widths)} host columns): from batches that small a host "
            "could solve its gradient for every row's residual, hence label; use "
            f"batches of at least {floor} rows" + (" (more training rows)" if rows == n else "")
        )
    return rows
