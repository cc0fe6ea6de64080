"""Source role of federated transfer learning, and the driver that runs the protocol.

The source S holds the labels of all its rows and runs the driver; the target T
holds features only. Per batch of overlap rows (see docs/transfer.md):

1. S computes its representations of all its labelled rows, the prototypes
   ``P = R' U_S``, ``M = P'QP`` and per overlap row ``a_i = P'beta_i + 2 gamma u_S,i``;
   it sends ``[[a_i]]_S`` and the columns of ``[[M]]_S`` (packed row-wise).
2. T returns ``[[u_T,i]]_T``, ``[[U_T'U_T / n]]_T`` and its masked gradient under
   S's key; S decrypts the latter (learning only masked values).
3. S computes its own gradient (times n) under T's key,
   ``[[ (C/n) (n P'Q'T_S) - sum_i u_T,i (T_S' beta_i + 2 gamma h_i)' + 2 gamma U_S'H_S + r ]]_T``
   with ``C = U_T'U_T`` (T sent ``C/n``), ``T_S = R'H_S`` (how ``P`` moves with
   ``W_S``) and ``h_i`` the source's hidden activations with the bias column;
   T decrypts it, S removes ``r``. Both step.

Neither party ever holds the other's private key; there is no arbiter. S keeps
its state after every epoch and resumes from it (:mod:`ftl.transfer._resume`).
"""

from __future__ import annotations

import time
import uuid
from dataclasses import dataclass, field

import numpy as np
from tqdm import tqdm

from ftl.crypto import packed
from ftl.crypto.scheme import make_own_key, peer_key_from_public, public_key_json
from ftl.data.fit_checkpoint import local_party_checkpoints
from ftl.exceptions import ProtocolError
from ftl.federation.channel import Channel
from ftl.federation.messages import Message
from ftl.transfer import _messages as msg
from ftl.transfer._network import (
    HiddenStack,
    glorot,
    make_optimizer,
    pretrain_classifier,
    with_bias,
)
from ftl.transfer._objective import label_coding, taylor_loss
from ftl.transfer._resume import ResumableSource

__all__ = ["TransferSource", "TransferResult", "source_scores", "target_scores"]


@dataclass
class TransferResult:
    """What the source keeps: its own network and prototypes, a reference to T's shard."""

    hidden: dict
    output: np.ndarray
    prototypes: np.ndarray
    model_id: str
    n_iter: int
    history: list = field(default_factory=list)
    loss_at_zero: float = 0.0


def current_gamma(params: dict, epoch: int) -> float:
    """Alignment weight in ``epoch`` (from 0): ``gamma * min(1, (epoch + 1) / warmup)``.

    Both parties' representations start random and unrelated, so at full weight the
    alignment loss is cheapest to lower by shrinking both towards zero, a stationary
    point the classification loss (quadratic in the scale too) cannot leave. Ramping
    lets the classification loss shape the space first. Never exactly 0: with no
    alignment term the target's gradient would lie in the span of the prototypes
    and show it their direction. Public: both parties compute it from the epoch.
    """
    warmup = int(params.get("gamma_warmup", 0))
    scale = 1.0 if warmup <= 0 else min(1.0, (epoch + 1) / warmup)
    return float(params["gamma"]) * scale


def min_private_batch(source_inputs: int, target_inputs: int) -> int:
    """Fewest rows a batch may have when values are encrypted.

    Each party learns its own output-layer gradient: ``d x m`` numbers that are
    linear in the other party's ``n x d`` per-row values with coefficients it
    knows. With ``n <= m`` it could solve for them; twice the widest ``m`` keeps the
    system heavily under-determined. Both parties enforce it.
    """
    return 2 * max(int(source_inputs), int(target_inputs)) + 1


def _penalty(w: np.ndarray, alpha: float) -> np.ndarray:
    g = alpha * w
    g[:, -1] = 0.0
    return g


class TransferSource(ResumableSource):
    """Runs the transfer training protocol from the source's side.

    Parameters
    ----------
    source : Party
        The labelled party (local to the driver).
    target : Party or remote endpoint
        The party without labels, reached through its ``endpoint``.
    alignment_id : str
    positions : ndarray of int
        Aligned positions of the training rows (all source rows of the fit).
    overlap : ndarray of bool
        Which training rows the target also has.
    codes : ndarray of int
        Class codes ``0..n_classes-1`` of the training rows (the source's own labels).
    n_classes : int
    params : dict
        Public protocol parameters (also sent to the target).
    channel : Channel
    random_state : numpy Generator
    verbose : bool
    checkpoint : SourceCheckpoint, optional
        Where the run keeps its state after every epoch, and resumes from
        (:mod:`~ftl.transfer._resume`); without it the state is kept in memory
        only (a target's lost session still resumes).
    """

    def __init__(
        self,
        source,
        target,
        alignment_id,
        positions,
        overlap,
        codes,
        n_classes,
        params,
        channel: Channel,
        random_state: np.random.Generator,
        verbose: bool = False,
        checkpoint=None,
    ):
        self.source = source
        self.target = target
        self.alignment_id = alignment_id
        self.positions = np.asarray(positions, dtype=np.int64)
        self.overlap_idx = np.flatnonzero(np.asarray(overlap, dtype=bool))
        if self.overlap_idx.size == 0:
            raise ValueError(
                "none of the training rows is shared with the target: transfer learning "
                "needs some overlap (check ftl.align(..., how='left').alignment.overlap)"
            )
        self.coding = label_coding(codes, n_classes)
        self.codes = codes
        self.params = params
        self.channel = channel
        self.rng = random_state
        self.verbose = verbose
        self.checkpoint = checkpoint
        rows = source.aligned_rows(alignment_id, self.positions)
        self.x = source.local_features(rows)
        self.dim = int(params["n_components"])
        self.alpha = float(params["alpha"])
        self._fresh = self.rng.bit_generator.state  # to start afresh
        self._last_state, self._resumed = None, set()
        saved = None if checkpoint is None else checkpoint.saved
        if saved is None:
            self._initialise()
        else:  # the kept networks: pre-training again would cost as much
            self._restore(saved)

    def _initialise(self) -> None:
        """Pre-train the hidden layers and draw the output layer: no step yet."""
        self.rng.bit_generator.state = self._fresh
        hidden = tuple(self.params["hidden_layer_sizes"])
        self.stack = HiddenStack(self.x.shape[1], hidden, self.params["activation"], self.rng)
        # hidden layers: a classifier of the source's own labels, trained locally
        pretrain_classifier(
            self.stack, self.x, self.codes, self.rng, epochs=self.params["pretrain_epochs"]
        )
        self._set_hidden()
        self.w = glorot(self.rng, self.h.shape[1] - 1, self.dim)
        self.opt = make_optimizer(self.params["optimizer"], [self.w], self.params["learning_rate"])
        self._reset_steps()

    def _set_hidden(self) -> None:
        """The hidden activations of the training rows, and what depends on them."""
        self.h = with_bias(self.stack.forward(self.x) if self.stack.weights else self.x)
        self.t_s = self.coding.R.T @ self.h  # K' x m_S: how P moves with W_S

    # ------------------------------------------------------------------ set-up
    def _open_sessions(self, resume_step: int | None = None) -> None:
        """Open the target's session; or, from step ``resume_step`` of this fit,
        re-open it as a resume (the source's key and parameters restored)."""
        p = self.params
        insecure = bool(p.get("insecure_for_tests", False))
        if resume_step is None:
            self.own = make_own_key(p["encryption"], int(p["key_size"]), insecure, p.get("n_jobs"))
            # the fit id names the target's checkpoints of this run, for a resume
            self.params = p = {
                **p,
                "source_inputs": int(self.h.shape[1]),
                "seed": int(self.rng.integers(2**31)),
                "fit_id": uuid.uuid4().hex,
            }
        fields = {
            "params": p,
            "public_key": public_key_json(self.own),
            "alignment": self.alignment_id,
            "positions": self.positions[self.overlap_idx],
        }
        request = (
            Message(msg.OPEN.name, fields)
            if resume_step is None
            else Message(msg.RESUME.name, {**fields, "step": resume_step})
        )
        reply = self.channel.call(self.target.endpoint, "ftl.target.open", request)
        if resume_step is not None and reply["public_key"] != self.peer_public:
            raise ProtocolError("the target resumed the fit with another key; refused")
        self.peer_public = reply["public_key"]
        self.peer = peer_key_from_public(
            reply["public_key"], self.own.scheme, insecure, p.get("n_jobs"), min_bits=p["key_size"]
        )
        self.target_inputs = int(reply["n_inputs"])

    def source_side_loss(self) -> float:
        """Taylor loss of the shared rows scored from the *source's* representations.

        A progress signal that costs nothing and reveals nothing: the training loss
        itself scores the target's representations, which the source never sees
        (computing it securely would need per-slot products the row packing cannot
        do cheaply); the alignment term keeps both representations close.
        """
        rows = self.overlap_idx
        z = (self.h[rows] @ self.w.T) @ self.prototypes().T
        c = self.coding
        return float(taylor_loss(z, c.beta[rows], c.Q, c.constant).mean())

    def prototypes(self) -> np.ndarray:
        return self.coding.R.T @ (self.h @ self.w.T)

    # ------------------------------------------------------------------ one batch
    def _batch(self, batch: np.ndarray) -> None:
        n, d = len(batch), self.dim
        rows = self.overlap_idx[batch]
        coding, gamma = self.coding, current_gamma(self.params, self.epoch)
        p = self.prototypes()
        m_mat = p.T @ coding.Q @ p  # symmetric: its rows are its columns
        h_s = self.h[rows]
        u_s = h_s @ self.w.T
        beta = coding.beta[rows]
        width = packed.slot_bits(n, d)
        request = Message(
            msg.SOURCE_TERMS.name,
            {
                "batch": batch.astype(np.int64),
                "rows": packed.encrypt_rows(self.own, beta @ p + 2 * gamma * u_s, width),
                "matrix": packed.encrypt_rows(self.own, m_mat, width),
            },
        )
        reply = self.channel.call(self.target.endpoint, "ftl.target.terms", request)
        if self.own.scheme == "paillier" and reply["slot_bits"] != width:
            raise ValueError("the target's gradient does not use the agreed slot width")
        # decrypt only what the protocol calls for: one gradient of the target's
        # announced shape at the public slot width, never a per-row vector
        decrypted = packed.decrypt_combination(
            self.own, reply["gradient"], width, d, self.target_inputs
        )
        u_t, gram = reply["rows"], reply["matrix"]
        coef_matrix = n * (p.T @ coding.Q.T @ self.t_s)
        coef_rows = -(beta @ self.t_s) - 2 * gamma * h_s
        masked, state = packed.masked_combination(
            self.peer,
            [(gram, coef_matrix, "matrix"), (u_t, coef_rows, "row")],
            2 * gamma * u_s.T @ h_s,
            width,
            n,
            d,
        )
        back = self.channel.call(
            self.target.endpoint,
            "ftl.target.exchange",
            Message(
                msg.EXCHANGE.name,
                {
                    "decrypted": decrypted,
                    "gradient": masked,
                    "slot_bits": width if state is not None else 0,
                },
            ),
        )
        grad = packed.unmask_combination(self.peer, back["decrypted"], state, d, self.h.shape[1])
        self.opt.step([grad / n + _penalty(self.w, self.alpha)])

    # ------------------------------------------------------------------ training loop
    def fit(self, max_iter: int, tol: float, batch_size: int) -> TransferResult:
        """Train for at most ``max_iter`` epochs; with a checkpoint of this run, go on
        from its last epoch; a target session lost mid-fit is resumed at the last
        epoch (:mod:`._resume`)."""
        with local_party_checkpoints(self.checkpoint, [self.target]):
            self._start_sessions()
            n = len(self.overlap_idx)
            n_batches = max(1, n // self._batch_rows(n, batch_size))
            mode = self.params["encryption"] or "plaintext"
            bar = tqdm(
                total=n_batches * max_iter,
                initial=n_batches * self.epoch,
                desc=f"federated transfer ({mode})",
                unit="batch",
                disable=not self.verbose,
                leave=False,
            )
            model_id = uuid.uuid4().hex
            ch, endpoint = self.channel, self.target.endpoint

            def train() -> None:
                self._epochs(max_iter, tol, n_batches, bar)
                ch.call(
                    endpoint, "ftl.target.finish", Message(msg.FINISH.name, {"model_id": model_id})
                )

            try:
                self._run_resuming(train)
            finally:
                bar.close()
                try:
                    ch.call(endpoint, "ftl.target.close", Message("ack", {}))
                except Exception:  # noqa: BLE001 - best effort; the real error is already raised
                    pass
        if self.checkpoint is not None:
            self.checkpoint.remove()
        return TransferResult(
            self.stack.to_dict(),
            self.w.copy(),
            self.prototypes(),
            model_id,
            self.epoch,
            self.history,
            self.coding.constant,
        )

    def _batch_rows(self, n: int, batch_size: int) -> int:
        """Rows per batch: ``batch_size``, at least the private minimum if encrypted."""
        bs = min(int(batch_size), n)
        if self.own.scheme == "paillier":
            smallest = min_private_batch(self.h.shape[1], self.target_inputs)
            if n < smallest:
                raise ValueError(
                    f"{n} shared training rows are too few for a private fit with these "
                    f"networks: every batch needs at least {smallest} rows (more than twice "
                    "the widest output layer's inputs), or a party could solve its gradient "
                    "for the other's per-row values; use more shared rows or smaller "
                    "hidden_layer_sizes"
                )
            bs = max(bs, smallest)
        return bs

    def _epochs(self, max_iter: int, tol: float, n_batches: int, bar) -> None:
        """Epochs from the current one until ``max_iter`` or convergence; each ends
        with a step (:meth:`_keep`)."""
        n = len(self.overlap_idx)
        while self.epoch < max_iter and not self.converged:
            started = time.perf_counter()
            order = self.rng.permutation(n)
            # the remainder joins the other batches: a batch smaller than the
            # gradients' widths would let a party solve for per-row values
            for batch in np.array_split(order, n_batches):
                self._batch(batch)
                bar.update(1)
            reply = self.channel.call(
                self.target.endpoint,
                "ftl.target.epoch_end",
                Message(msg.EPOCH_END.name, {"epoch": self.epoch}),
            )
            delta = float(((self.w - self.start_w) ** 2).sum()) + float(reply["delta_sq"][0])
            norm = float((self.w**2).sum()) + float(reply["delta_sq"][1])
            self.start_w = self.w.copy()
            change = float(np.sqrt(delta / max(norm, 1e-300)))
            loss = self.source_side_loss()
            self.history.append(
                {
                    "epoch": self.epoch,
                    "relative_change": change,
                    "source_side_loss": loss,
                    "seconds": time.perf_counter() - started,
                }
            )
            bar.set_postfix(epoch=self.epoch, loss=f"{loss:.4f}", change=f"{change:.2e}")
            self.epoch, self.converged = self.epoch + 1, change < tol
            self._keep()


def source_scores(source, rows: np.ndarray, hidden: dict, output, prototypes) -> np.ndarray:
    """Scores ``P u_S`` of source rows, from the source's own representation (local)."""
    stack = HiddenStack.from_dict(hidden)
    x = source.local_features(rows)
    h = stack.forward(x) if stack.weights else x
    return (with_bias(h) @ np.asarray(output).T) @ np.asarray(prototypes).T


def target_scores(
    target,
    model_id: str,
    prototypes: np.ndarray,
    params: dict,
    channel: Channel,
    *,
    alignment_id: str = "",
    positions=None,
    ids=None,
) -> np.ndarray:
    """Scores ``P u_T`` of target rows; only the source (the driver) learns them.

    The source encrypts its prototypes under a fresh key; the target returns
    ``[[P u_T,j + offset]]`` (public offset, re-randomised); the source decrypts.
    """
    insecure = bool(params.get("insecure_for_tests", False))
    own = make_own_key(params["encryption"], int(params["key_size"]), insecure)
    n_scores = prototypes.shape[0]
    width = packed.slot_bits(prototypes.shape[1], n_scores)  # d products per score
    positions = np.zeros(0, dtype=np.int64) if positions is None else positions
    ids = [] if ids is None else [str(i) for i in ids]
    n_rows = len(ids) or len(positions)
    request = Message(
        msg.PREDICT_OPEN.name,
        {
            "model_id": model_id,
            "alignment": alignment_id,
            "positions": np.asarray(positions, dtype=np.int64),
            "ids": ids,
            "params": {
                "encryption": params["encryption"],
                "insecure_for_tests": insecure,
                "n_scores": int(n_scores),
                "n_jobs": params.get("n_jobs"),
            },
            "public_key": public_key_json(own),
            "prototypes": packed.encrypt_rows(own, prototypes.T, width),
        },
    )
    endpoint = target.endpoint
    # a refused open leaves no session to close (and its refusal is the error to show)
    reply = channel.call(endpoint, "ftl.target_predict.open", request)
    try:
        if reply["count"] != n_rows or (own.scheme == "paillier" and reply["slot_bits"] != width):
            raise ValueError("the target returned scores of the wrong layout")
        return packed.decrypt_offset(own, reply["values"], width, n_scores, n_rows)
    finally:
        channel.call(endpoint, "ftl.target_predict.close", Message("ack", {}))
