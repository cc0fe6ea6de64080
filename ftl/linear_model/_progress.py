"""The progress bar of one binary model's fit: a fixed total, never one that grows.

L-BFGS advances one step per iteration and Adam or SGD one per epoch, both against
``max_iter``; the passes over the data (L-BFGS: one per line-search trial) or the
batches of the current epoch are a sub-count in the bar's postfix, with the secure
training loss when the run tracks it (verbose, one host).
"""

from __future__ import annotations

from tqdm import tqdm

__all__ = ["FitProgress"]


class FitProgress:
    """A tqdm bar over ``max_iter`` iterations (L-BFGS) or epochs (Adam, SGD).

    Parameters
    ----------
    max_iter : int
        The bar's total.
    mode : str
        ``"paillier"`` or ``"plaintext"``, shown in the description.
    lbfgs : bool
        Count iterations (and passes) rather than epochs (and batches).
    model : tuple of (int, int), optional
        ``(k, n)``: this is binary model ``k`` (from 1) of ``n`` (one-vs-rest).
    enabled : bool
        Show the bar at all.
    """

    def __init__(
        self,
        max_iter: int,
        mode: str,
        lbfgs: bool,
        model: tuple[int, int] | None = None,
        enabled: bool = True,
    ):
        desc = f"federated LR ({mode})"
        if model is not None and model[1] > 1:
            desc += f", model {model[0]} of {model[1]}"
        self.loss: float | None = None
        self.bar = tqdm(
            total=int(max_iter),
            desc=desc,
            unit="it" if lbfgs else "epoch",
            disable=not enabled,
            leave=False,
        )
        self._postfix: dict = {}

    def pass_done(self, passes: int, loss: float | None = None) -> None:
        """L-BFGS: ``passes`` over the data so far (the loss at the last one's weights,
        if tracked)."""
        self.loss = loss
        self._show(passes=passes)

    def batch_done(self, done: int, of: int) -> None:
        """Adam and SGD: ``done`` of the epoch's ``of`` batches are through."""
        self._show(batch=f"{done}/{of}")

    def step(self, change: float, loss: float | None = None, **extra) -> None:
        """One iteration or epoch is complete."""
        if loss is not None:
            self.loss = loss
        self.bar.update(1)
        self._show(change=f"{change:.2e}", **extra)

    def _show(self, **values) -> None:
        self._postfix.update(values)
        if self.loss is not None:
            self._postfix["loss"] = f"{self.loss:.4f}"
        self.bar.set_postfix(self._postfix, refresh=False)
        self.bar.refresh()

    def close(self) -> None:
        self.bar.close()
