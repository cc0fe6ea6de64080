"""Guest role of vertical logistic regression, and the driver that runs the protocol.

The guest holds the labels and runs the driver. The approximated residual is
``scale * (sigmoid(z) - y) = sum_k G[:, k] * H[:, k]`` with guest columns ``G`` and
host columns ``H`` (see ``_sigmoid.py``: Taylor-1, or the two-party per-row
polynomial). Per batch (see docs/protocols.md):

1. every host H sends its columns encrypted under its own key (``[[u_H]]_H``, or
   ``[[phi_1(s)]]_H, ..., [[phi_K(s)]]_H``); the guest encrypts its columns under
   its key;
2. guest gradient: for each host, the guest computes the masked sum of its
   weighted cross terms ``[[sum_k (X_G * w_k).T h_k + r]]_H``, the host decrypts
   it, the guest removes ``r``;
3. host gradient: each host computes the masked sum of its cross terms on every
   other party's columns (the guest's and, with several hosts, the other hosts',
   relayed by the driver), that party decrypts, the masked values go back;
4. Adam/SGD: every party steps its own weights with its own optimiser. L-BFGS
   (default; every batch is all rows): every party forms its gradient; the driver
   assembles the next direction from the parties' Gram matrices (``_fit_lbfgs``).

While the host's weights are exactly zero (its start) it answers step 1 with
``lr.zero_margin`` instead: the guest knows the whole residual, forms its own
gradient alone and sends the residual as one piece for the host's (``lr.residual``).

No party holds another's private key; there is no arbiter.

The guest's other parts live beside it: its secret and random start
(``_start.py``), its minimum batch sizes (``_batching.py``), the L-BFGS driver
(``_lbfgs.py``), the progress bar (``_progress.py``), its steps and how a fit
resumes from one (``_resume.py``), its exchanges for the hosts' gradients and the
zero-margin pass (``_guest_terms.py``) and prediction (``_prediction.py``); their
names are importable from here as before.
"""

from __future__ import annotations

import time
import uuid
from dataclasses import asdict, dataclass, field

import numpy as np

from ftl.crypto.scheme import make_own_key, public_key_json, row
from ftl.federation.channel import Channel
from ftl.federation.messages import Message
from ftl.linear_model import _lbfgs
from ftl.linear_model import _messages as msg
from ftl.linear_model import _pieces as pieces
from ftl.linear_model._batching import (
    MIN_BATCH_ROWS,
    MIN_BATCH_ROWS_PER_HOST_COLUMN,
    batch_rows,
    min_batch_rows,
)
from ftl.linear_model._block import WeightBlock
from ftl.linear_model._guest_terms import HostTerms, at_zero_margin
from ftl.linear_model._links import make_link
from ftl.linear_model._prediction import predict_margin
from ftl.linear_model._progress import FitProgress
from ftl.linear_model._resume import ResumableGuest
from ftl.linear_model._start import (
    START_MARGIN_SPREAD,
    guest_secret,
    random_start,
    start_for_link,
    start_seed,
)
from ftl.linear_model.host import _peer_keys

__all__ = [
    "MIN_BATCH_ROWS",
    "MIN_BATCH_ROWS_PER_HOST_COLUMN",
    "START_MARGIN_SPREAD",
    "LogisticGuest",
    "TrainingResult",
    "guest_secret",
    "min_batch_rows",
    "predict_margin",
    "random_start",
    "start_seed",
]


@dataclass
class TrainingResult:
    """What the guest keeps after training: its own block and references to hosts'."""

    coef: np.ndarray
    intercept: float
    model_id: str
    host_public_keys: dict
    n_iter: int
    history: list = field(default_factory=list)


class LogisticGuest(ResumableGuest):
    """Runs the training protocol from the guest's side.

    Parameters
    ----------
    guest : Party
        The labelled party (local to the driver).
    hosts : sequence of Party or remote endpoints
        Feature-only parties, reached through their ``endpoint``.
    alignment_id : str
        Alignment whose rows are used.
    positions : ndarray of int
        Aligned row positions of the training rows.
    y : ndarray of float
        Binary targets of those rows (the guest's own data): 0/1 labels, or with
        label privacy the debiased randomized responses (any real values).
    params : dict
        Public protocol parameters (also sent to the hosts).
    channel : Channel
        Where every cross-party message goes through.
    random_state : numpy.random.Generator
        Draws the batch order (which the hosts see anyway).
    verbose : bool, default=False
        Show a progress bar.
    start : numpy.random.SeedSequence, optional
        Seed of the guest's secret random start (:func:`random_start`), derived
        from the guest's secret; ``None`` draws it from the OS.
    model : tuple of (int, int), optional
        ``(k, n)``: this run trains binary model ``k`` (from 1) of ``n``
        (one-vs-rest), for the progress bar.
    checkpoint : ModelCheckpoint, optional
        Where the run keeps its state after every step, and resumes from
        (:mod:`~ftl.linear_model._resume`); without it the state is kept in
        memory only (a host's lost session still resumes).
    """

    def __init__(
        self,
        guest,
        hosts,
        alignment_id,
        positions,
        y,
        params,
        channel: Channel,
        random_state: np.random.Generator,
        verbose: bool = False,
        start: np.random.SeedSequence | None = None,
        model: tuple[int, int] | None = None,
        checkpoint=None,
    ):
        self.checkpoint = checkpoint
        self._reset_steps()
        self.guest = guest
        self.hosts = list(hosts)
        self.alignment_id = alignment_id
        self.positions = np.asarray(positions, dtype=np.int64)
        self.y = np.asarray(y, dtype=np.float64)
        self.params = params
        self.channel = channel
        self.rng = random_state
        self.verbose = verbose
        self.model = model
        self.name = guest.name
        rows = guest.aligned_rows(alignment_id, self.positions)
        features = guest.local_features(rows)
        self.block = WeightBlock(features, params, params["fit_intercept"])
        # The guest's weights start at a secret random point, never at zero: the
        # host's gradient is then never a known function of the labels (§5.2).
        weights = random_start(features, params["fit_intercept"], np.random.default_rng(start))
        # a regressor's start masks the first residual in the targets' units (§3.12)
        self.block.start_at(start_for_link(weights, params, self.y))

    # ------------------------------------------------------------------ set-up
    def _open_sessions(self, resume_step: int | None = None) -> None:
        """Open a session with every host; or, from step ``resume_step`` of this fit,
        re-open them as a resume (the guest's key and parameters restored)."""
        if resume_step is None:
            p = self.params
            insecure = bool(p.get("insecure_for_tests", False))
            self.own = make_own_key(p["encryption"], int(p["key_size"]), insecure, p.get("n_jobs"))
            widths = {self.name: self.block.features.shape[1]}
            for host in self.hosts:
                widths[host.name] = host.n_features
            # the fit id names the hosts' checkpoints of this run, for a resume
            self.params = {
                **p,
                "widths": widths,
                "guest": self.name,
                "fit_id": uuid.uuid4().hex,
                # we answer a host's lr.zero_margin (hosts that know it use it only then)
                "zero_margin_form": True,
            }
        p = self.params
        public = {self.name: public_key_json(self.own)}
        self.widths = p["widths"]
        self.approx = make_link(p)
        self.track_loss = bool(p.get("track_loss", False))
        self.lbfgs = p["optimizer"] == "lbfgs"
        self._loss_total, self._loss_own, self._loss_rows = None, 0.0, 0
        fields = {"params": p, "alignment": self.alignment_id, "positions": self.positions}
        for host in self.hosts:
            request = (
                Message(msg.OPEN.name, {**fields, "public_keys": public})
                if resume_step is None
                else Message(
                    msg.RESUME.name, {**fields, "public_keys": public, "step": resume_step}
                )
            )
            reply = self.channel.call(host.endpoint, "lr.host.open", request)
            public[host.name] = reply["public_key"]
        self.public_keys = public
        scheme = "paillier" if p["encryption"] == "paillier" else "plain"
        insecure = bool(p.get("insecure_for_tests", False))
        self.peers = _peer_keys(public, self.name, scheme, insecure, p.get("n_jobs"), p["key_size"])
        if len(self.hosts) > 1:
            for host in self.hosts:
                self.channel.call(
                    host.endpoint,
                    "lr.host.peer_keys",
                    Message(msg.PEER_KEYS.name, {"public_keys": public}),
                )

    # ------------------------------------------------------------------ one batch
    def _batch(self, batch: np.ndarray) -> float:
        """One pass of the protocol over ``batch``; every party takes its gradient.

        Returns the directional derivative ``g . d`` at the new gradient, summed
        over the parties (L-BFGS; 0 for the other optimisers).
        """
        ch = self.channel
        approx = self.approx
        request = Message(msg.BATCH.name, {"batch": batch})
        contributions = {
            h.name: ch.call(h.endpoint, "lr.host.contribution", request) for h in self.hosts
        }
        u_guest = self.block.start_batch(batch)
        y = self.y[batch]
        x = self.block.batch_features()
        weights = approx.guest_weights(u_guest)
        if self._at_zero_margin(contributions):
            return self._zero_margin_batch(u_guest, y, x, weights)
        if self.track_loss:
            self._accumulate_loss(contributions[self.hosts[0].name]["values"], u_guest, y)
        n_train = len(self.positions)
        own_message = Message(
            msg.CONTRIBUTION.name,
            {
                "owner": self.name,
                "values": pieces.encrypt_pieces(self.own, approx.guest_values(u_guest, y), n_train),
            },
        )

        # guest gradient: masked cross terms on each host's encrypted columns
        guest_terms = []
        for h in self.hosts:
            values = contributions[h.name]["values"]
            peer = self.peers[h.name]
            pieces.check_columns(values, peer, len(batch), approx.host_width, n_train, h.name)
            # pieces are summed under the host's key before masking: the host decrypts,
            # and the guest learns, only the total cross term
            masked, state, slot_bits, count = pieces.masked_cross(
                peer, [x * weights[:, k : k + 1] for k in range(approx.host_width)], values, n_train
            )
            request = Message(
                msg.CROSS_TERM.name,
                {
                    "owner": h.name,
                    "requester": self.name,
                    "values": masked,
                    "slot_bits": slot_bits,
                    "count": count,
                },
            )
            reply = ch.call(h.endpoint, "lr.host.decrypt", request)
            guest_terms.append(self.peers[h.name].unmask(row(reply["values"], 0), state))

        # host gradients: each host's masked cross terms on every other party's columns
        terms = self._host_terms()
        slope = 0.0
        for h in self.hosts:
            slope += terms.gradient(
                h, own_message, contributions, self.hosts, len(batch), approx.guest_width
            )
        return self._step(u_guest, y, guest_terms, slope)

    def _step(self, u_guest, y, cross_terms: list, host_slope: float) -> float:
        """Step our block on our gradient of the batch (own part and ``cross_terms``).

        Returns the pass's ``g . d``: ``host_slope`` (the hosts') plus ours (L-BFGS;
        0 for the other optimisers).
        """
        approx = self.approx
        self.block.apply_gradient(approx.guest_own(u_guest, y), cross_terms, approx.scale)
        return host_slope + self.block.slope() if self.lbfgs else 0.0

    def _host_terms(self) -> HostTerms:
        """Our side of the exchanges that give a host its gradient (``_guest_terms.py``)."""
        return HostTerms(
            self.channel, self.own, self.name, self.widths, len(self.positions), self.lbfgs
        )

    # ------------------------------------------------------------------ zero host margin
    def _at_zero_margin(self, contributions: dict) -> bool:
        """Whether the (single) host answered the batch with ``lr.zero_margin``."""
        return at_zero_margin(contributions, self.hosts, self.track_loss)

    def _zero_margin_batch(self, u_guest, y, x, weights) -> float:
        """The batch at the host's zero weights: we know the whole residual
        (:meth:`~ftl.linear_model._guest_terms.HostTerms.zero_margin_pass`)."""
        cross, slope = self._host_terms().zero_margin_pass(
            self.hosts[0], self.approx, u_guest, y, x, weights
        )
        return self._step(u_guest, y, [cross], slope)

    # ------------------------------------------------------------------ training loss
    def _accumulate_loss(self, values, u_guest: np.ndarray, y: np.ndarray) -> None:
        """Add the batch's log-loss terms on the host's ciphertexts to the epoch total."""
        approx, peer = self.approx, self.peers[self.hosts[0].name]
        own, weights = approx.loss_guest(u_guest, y)
        total = pieces.cross_total(
            peer,
            [weights[:, k : k + 1] for k in range(approx.host_width)],
            values,
            len(self.positions),
        )
        self._loss_total = (
            total if self._loss_total is None else peer.add_totals(self._loss_total, total)
        )
        self._loss_own += float(np.sum(own))
        self._loss_rows += len(y)

    def _epoch_loss(self) -> float:
        """The epoch's mean training log-loss: one masked total, decrypted by the host."""
        host = self.hosts[0]
        peer = self.peers[host.name]
        masked, state, slot_bits, count = pieces.mask_cross(
            peer, self._loss_total, self._loss_rows, self.approx.host_width, len(self.positions)
        )
        reply = self.channel.call(
            host.endpoint,
            "lr.host.decrypt_loss",
            Message(msg.LOSS_TERM.name, {"values": masked, "slot_bits": slot_bits, "count": count}),
        )
        if reply.type != msg.MASKED_LOSS.name or reply["values"].shape != (1,):
            raise ValueError(f"{host.name!r} answered the loss total with a malformed reply")
        cross = float(np.asarray(peer.unmask(reply["values"], state)).reshape(-1)[0])
        loss = (self._loss_own + cross) / self._loss_rows
        self._loss_total, self._loss_own, self._loss_rows = None, 0.0, 0
        return loss

    # ------------------------------------------------------------------ training loop
    def batch_rows(self, batch_size: int | str | None) -> int:
        """Rows per batch (:func:`~ftl.linear_model._batching.batch_rows`); raises
        ``ValueError`` before any message is sent if they are too few."""
        return batch_rows(
            batch_size,
            len(self.positions),
            [h.n_features for h in self.hosts],
            full_batch=self.params["optimizer"] == "lbfgs",
        )

    def fit(
        self, max_iter: int, tol: float | str, batch_size: int | str | None = "auto"
    ) -> TrainingResult:
        """Train; ``tol`` is a number or, for L-BFGS, ``"auto"`` (:mod:`._lbfgs`).

        With a checkpoint of this run, go on from its last step (or return the
        model it finished); a host's session lost mid-fit is resumed at the last
        step (:mod:`._resume`).
        """
        bs = self.batch_rows(batch_size)  # before any message: a refusal sends nothing
        if self.checkpoint is not None and self.checkpoint.result is not None:
            return TrainingResult(**self.checkpoint.result)  # finished before a restart
        with self._local_host_checkpoints():
            self._start_sessions()
            self.progress = FitProgress(
                max_iter,
                self.params["encryption"] or "plaintext",
                self.lbfgs,
                self.model,
                enabled=self.verbose,
            )
            model_id = uuid.uuid4().hex

            def train() -> list:
                if self.lbfgs:
                    history = self._fit_lbfgs(max_iter, tol)
                else:
                    history = self._fit_epochs(max_iter, tol, bs)
                finish = Message(msg.FINISH.name, {"model_id": model_id})
                for h in self.hosts:
                    self.channel.call(h.endpoint, "lr.host.finish", finish)
                return history

            try:
                history = self._run_resuming(train)
            finally:
                self.progress.close()
                for h in self.hosts:
                    try:
                        self.channel.call(h.endpoint, "lr.host.close", Message("ack", {}))
                    except Exception:  # noqa: BLE001 - best effort; the real error is already raised
                        pass
        w = self.block.weights
        coef, intercept = (w[:-1], float(w[-1])) if self.block.fit_intercept else (w, 0.0)
        result = TrainingResult(
            coef.copy(),
            intercept,
            model_id,
            {k: v for k, v in self.public_keys.items() if k != self.name},
            len(history),
            history,
        )
        if self.checkpoint is not None:
            self.checkpoint.finished(asdict(result))
        return result

    def _record(self, history: list, started: float, delta: float, norm: float, **extra) -> float:
        """Append one epoch (L-BFGS: iteration) to the history and the progress bar.

        ``extra`` holds the run's own numbers: the passes so far, the loss (verbose),
        and for L-BFGS the estimated decrease still to gain.
        """
        change = float(np.sqrt(delta / max(norm, 1e-300)))
        entry = {
            "epoch": len(history),
            "relative_change": change,
            "seconds": time.perf_counter() - started,
            **{k: v for k, v in extra.items() if v is not None},
        }
        history.append(entry)
        shown = {"decrease": f"{extra['decrease']:.1e}"} if "decrease" in extra else {}
        self.progress.step(change, extra.get("loss"), **shown)
        return change

    def _fit_epochs(self, max_iter: int, tol: float, bs: int) -> list:
        """Mini-batch epochs; every party steps its own block with its own optimiser.

        Each epoch's permutation is cut into ``n // bs`` batches of (nearly) equal
        size, every one at least ``bs`` rows: a short last batch would fall below the
        guest's (and the hosts') minimum.
        """
        n = len(self.positions)
        n_batches = max(1, n // bs)
        while self.epoch < max_iter and not self.converged:
            started = time.perf_counter()
            order = self.rng.permutation(n)
            for done, batch in enumerate(np.array_split(order, n_batches), start=1):
                self._batch(batch)
                self.progress.batch_done(done, n_batches)
            self.passes += 1
            loss = self._epoch_loss() if self.track_loss else None
            delta, norm = self.block.end_epoch()
            for h in self.hosts:
                reply = self.channel.call(
                    h.endpoint,
                    "lr.host.epoch_end",
                    Message(msg.EPOCH_END.name, {"epoch": self.epoch}),
                )
                delta, norm = _add_weight_change(reply, delta, norm, h.name)
            change = self._record(self.history, started, delta, norm, passes=self.passes, loss=loss)
            self.epoch, self.converged = self.epoch + 1, change < tol
            self._keep()
        return self.history

    def _fit_lbfgs(self, max_iter: int, tol: float | str) -> list:
        """Full-batch L-BFGS, the direction assembled from the parties' Gram matrices.

        Each iteration: every party reports the inner products of its own blocks of
        the basis vectors (``lr.accept``); the driver adds them, runs the two-loop
        recursion on coefficients and sends them with a step length (``lr.move``);
        one protocol pass gives every party its gradient at the trial point and the
        driver the directional derivative ``g . d`` (summed ``lr.slope`` scalars).
        The line search and the stopping rule are in :mod:`._lbfgs`.
        """
        rows = np.arange(len(self.positions))
        started = time.perf_counter()

        def iteration_done(delta: float, norm: float, direction: _lbfgs.Direction) -> None:
            nonlocal started
            self._record(
                self.history,
                started,
                delta,
                norm,
                passes=self.passes,
                loss=self.pass_loss,
                decrease=direction.decrease,
            )
            started = time.perf_counter()

        def at_boundary(reached: _lbfgs.Boundary) -> None:
            self.boundary = reached
            self._keep()

        _lbfgs.minimise(
            lambda: self._pass(rows),
            self._accept,
            self._move,
            max_iter,
            tol,
            iteration_done,
            start=self.boundary,
            at_boundary=at_boundary,
        )
        return self.history

    def _pass(self, rows: np.ndarray) -> float:
        """One L-BFGS pass over ``rows``; counted, and its verbose loss shown."""
        slope = self._batch(rows)
        self.passes += 1
        # verbose: the training loss at this pass's weights (one masked scalar per pass)
        self.pass_loss = self._epoch_loss() if self.track_loss else None
        self.progress.pass_done(self.passes, self.pass_loss)
        return slope

    def _accept(self, keep_pair: bool, clear_memory: bool) -> tuple[np.ndarray, float, float]:
        """Every party makes its trial point the base; summed Gram matrix and norms."""
        gram, delta, norm = self.block.accept(keep_pair, clear_memory)
        request = Message(
            msg.ACCEPT.name, {"keep_pair": int(keep_pair), "clear_memory": int(clear_memory)}
        )
        for h in self.hosts:
            reply = self.channel.call(h.endpoint, "lr.host.accept", request)
            part = reply["gram"] if reply.type == msg.GRAM.name else None
            if part is None or part.shape != gram.shape or not np.isfinite(part).all():
                raise ValueError(f"{h.name!r} sent a malformed Gram matrix")
            gram = gram + part
            delta, norm = _add_weight_change(reply, delta, norm, h.name)
        return gram, delta, norm

    def _move(self, coefficients: np.ndarray, step: float) -> None:
        """Every party moves to ``base + step * d`` along the common direction."""
        self.block.move(coefficients, step)
        request = Message(
            msg.MOVE.name, {"coefficients": coefficients, "step": np.array([float(step)])}
        )
        for h in self.hosts:
            self.channel.call(h.endpoint, "lr.host.move", request)


def _add_weight_change(reply: Message, delta: float, norm: float, sender: str):
    """Add a host's ``||Δw_H||²`` and ``||w_H||²`` (its ``delta_sq`` field) to the totals."""
    pair = reply["delta_sq"]
    if pair.shape != (2,) or not np.isfinite(pair).all():
        raise ValueError(f"{sender!r} sent a malformed pair of weight norms")
    return delta + float(pair[0]), norm + float(pair[1])
