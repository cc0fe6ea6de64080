"""Guest role of vertical logistic regression, and the driver that runs the protocol.

The guest holds the labels and runs the driver. The approximated residual is
``scale * (sigmoid(z) - y) = sum_k G[:, k] * H[:, k]`` with guest columns ``G`` and
host columns ``H`` (see ``_sigmoid.py``: Taylor-1, or the two-party per-row
polynomial). Per batch (see docs/protocols.md):

1. every host H sends its columns encrypted under its own key (``[[u_H]]_H``, or
   ``[[s]]_H, ..., [[s**K]]_H``); the guest encrypts its columns under its key;
2. guest gradient: for each host, the guest computes the masked sum of its
   weighted cross terms ``[[sum_k (X_G * w_k).T h_k + r]]_H``, the host decrypts
   it, the guest removes ``r``;
3. host gradient: each host computes the masked sum of its cross terms on every
   other party's columns (the guest's and, with several hosts, the other hosts',
   relayed by the driver), that party decrypts, the masked values go back;
4. Adam/SGD: every party steps its own weights with its own optimiser. L-BFGS
   (default; every batch is all rows): every party forms its gradient; the driver
   assembles the next direction from the parties' Gram matrices (``_fit_lbfgs``).

No party holds another's private key; there is no arbiter.
"""

from __future__ import annotations

import hashlib
import secrets
import time
import uuid
from dataclasses import dataclass, field

import numpy as np
from tqdm import tqdm

from ftl.crypto.scheme import (
    column,
    expected_slot_bits,
    make_own_key,
    packing_of,
    peer_key_from_public,
    public_key_json,
    row,
    stack_rows,
)
from ftl.federation.channel import Channel
from ftl.federation.messages import Message
from ftl.linear_model import _messages as msg
from ftl.linear_model._block import WeightBlock
from ftl.linear_model._optim import LBFGS_MEMORY, basis_size, lbfgs_coefficients
from ftl.linear_model._sigmoid import make_approximation
from ftl.linear_model.host import _peer_keys

#: L-BFGS: trial points per iteration before the memory is cleared.
_MAX_LINE_SEARCH = 8

#: Fewest rows of a mini-batch the guest sends (a full batch may be smaller, then the
#: per-column minimum below still holds). Protects the guest's labels: each batch
#: gives every host its gradient, ``p_H`` equations in the batch's residuals.
MIN_BATCH_ROWS = 32
#: Rows every batch (also a full batch) needs per host column, summed over the
#: hosts (colluding hosts pool their equations). With ``b <= p_H`` rows a host
#: solves its gradient for every row's residual ``sigmoid(z) - y``, whose sign is
#: the label; twice ``p_H`` leaves as many unknowns as equations.
MIN_BATCH_ROWS_PER_HOST_COLUMN = 2
#: Standard deviation of the guest's secret starting margins over the training rows
#: (docs/protocols.md §5.2): of the order of the label signal ``sigmoid(u) - y``,
#: small enough that the optimiser starts near the usual region.
START_MARGIN_SPREAD = 1.0
#: Streams of the guest's secret: one per binary model's start.
_START_STREAM = 0x53545254  # "STRT"


def min_batch_rows(host_widths) -> int:
    """The guest's minimum rows per batch given the hosts' block widths."""
    return max(MIN_BATCH_ROWS, MIN_BATCH_ROWS_PER_HOST_COLUMN * int(sum(host_widths)))


def guest_secret(party) -> int:
    """The guest party's secret (256 bits from the OS when the party was created).

    It never leaves the guest. It seeds the random start and randomized response,
    so a host that knows or guesses ``random_state`` cannot reproduce them; a guest
    that fits again on the same :class:`~ftl.Party` gets the same start and noise.
    """
    base = party
    while getattr(base, "_base", None) is not None:  # a preprocessed view of the party
        base = base._base
    secret = base.__dict__.get("_secret")
    if secret is None:  # a party unpickled from an older version: make one now
        secret = base._secret = secrets.token_bytes(32)
    return int.from_bytes(secret, "big")


def start_seed(
    secret: int | None, model: int, seed: int | None = None, rows: np.ndarray | None = None
) -> np.random.SeedSequence:
    """Seed of binary model ``model``'s random start.

    Drawn from the guest's secret and the set of training rows (the guest's own row
    numbers ``rows``), and from ``seed`` (the fit's, from ``random_state``) if given.
    Without ``seed`` the start is a fixed function of the rows: a deterministic
    optimiser (L-BFGS) then repeats exactly the same run on the same rows, so
    repeated fits show a host nothing it could average the start away with; other
    rows give an independent start. ``secret=None`` (a simulated federation, whose
    driver holds every party's data) uses ``seed`` alone.
    """
    if secret is None:
        entropy = [int(seed or 0)]
    else:
        canonical = np.sort(np.asarray(rows, dtype=np.int64)).astype("<i8").tobytes()
        digest = int.from_bytes(hashlib.sha256(canonical).digest(), "big")
        entropy = [int(secret), digest] + ([] if seed is None else [int(seed)])
    return np.random.SeedSequence(entropy=entropy, spawn_key=(_START_STREAM, int(model)))


def random_start(features: np.ndarray, fit_intercept: bool, rng: np.random.Generator) -> np.ndarray:
    """The guest's secret starting weights (and intercept, last).

    A random direction of the guest's columns, scaled so that the starting margins
    ``u_G = X_G w + b`` spread with standard deviation :data:`START_MARGIN_SPREAD`
    over the training rows, centred on a random offset (``N(0, 1/4)``). From a zero
    start every party's first gradient would be ``X_P.T (sigmoid(u_H) - y)`` with
    ``u_H`` known to the host, so the host's first gradient would be a known
    function of the labels (docs/protocols.md §5.2); with ``u_G`` secret per row it
    is not. The objective is convex, so L-BFGS reaches the same optimum from here.
    """
    features = np.asarray(features, dtype=np.float64)
    weights = rng.standard_normal(features.shape[1])
    margins = features @ weights
    spread = float(np.std(margins)) if len(margins) else 0.0
    if spread > 0:
        weights *= START_MARGIN_SPREAD / spread
        margins *= START_MARGIN_SPREAD / spread
    else:  # constant or no columns: only an intercept can move the margins
        weights[:] = 0.0
        margins[:] = 0.0
    if not fit_intercept:
        return weights
    offset = 0.5 * START_MARGIN_SPREAD * rng.standard_normal()
    intercept = offset - (float(np.mean(margins)) if len(margins) else 0.0)
    return np.append(weights, intercept)


@dataclass
class TrainingResult:
    """What the guest keeps after training: its own block and references to hosts'."""

    coef: np.ndarray
    intercept: float
    model_id: str
    host_public_keys: dict
    n_iter: int
    history: list = field(default_factory=list)


class LogisticGuest:
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
    ):
        self.guest = guest
        self.hosts = list(hosts)
        self.alignment_id = alignment_id
        self.positions = np.asarray(positions, dtype=np.int64)
        self.y = np.asarray(y, dtype=np.float64)
        self.params = params
        self.channel = channel
        self.rng = random_state
        self.verbose = verbose
        self.name = guest.name
        rows = guest.aligned_rows(alignment_id, self.positions)
        features = guest.local_features(rows)
        self.block = WeightBlock(features, params, params["fit_intercept"])
        # The guest's weights start at a secret random point, never at zero: the
        # host's gradient is then never a known function of the labels (§5.2).
        self.block.start_at(
            random_start(features, params["fit_intercept"], np.random.default_rng(start))
        )

    # ------------------------------------------------------------------ set-up
    def _open_sessions(self) -> None:
        p = self.params
        insecure = bool(p.get("insecure_for_tests", False))
        self.own = make_own_key(p["encryption"], int(p["key_size"]), insecure, p.get("n_jobs"))
        public = {self.name: public_key_json(self.own)}
        widths = {self.name: self.block.features.shape[1]}
        for host in self.hosts:
            widths[host.name] = host.n_features
        p = {**p, "widths": widths, "guest": self.name}
        self.widths = widths
        self.approx = make_approximation(p)
        self.params = p
        self.track_loss = bool(p.get("track_loss", False))
        self.lbfgs = p["optimizer"] == "lbfgs"
        self._loss_total, self._loss_own, self._loss_rows = None, 0.0, 0
        for host in self.hosts:
            reply = self.channel.call(
                host.endpoint,
                "lr.host.open",
                Message(
                    msg.OPEN.name,
                    {
                        "params": p,
                        "public_keys": public,
                        "alignment": self.alignment_id,
                        "positions": self.positions,
                    },
                ),
            )
            public[host.name] = reply["public_key"]
        self.public_keys = public
        scheme = "paillier" if p["encryption"] == "paillier" else "plain"
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
        if self.track_loss:
            self._accumulate_loss(contributions[self.hosts[0].name]["values"], u_guest, y)
        own_message = Message(
            msg.CONTRIBUTION.name,
            {
                "owner": self.name,
                "values": self.own.encrypt(approx.guest_values(u_guest, y)),
            },
        )

        # guest gradient: masked cross terms on each host's encrypted columns
        guest_terms = []
        weights = approx.guest_weights(u_guest)
        x = self.block.batch_features()
        for h in self.hosts:
            values = contributions[h.name]["values"]
            if values.shape != (len(batch), approx.host_width):
                raise ValueError(f"{h.name!r} sent residual columns of the wrong shape")
            # pieces are summed under the host's key before masking: the host decrypts,
            # and the guest learns, only the total cross term
            masked, state = self.peers[h.name].masked_cross_term(
                [x * weights[:, k : k + 1] for k in range(approx.host_width)],
                [column(values, k) for k in range(approx.host_width)],
            )
            slot_bits, count = packing_of(masked, state)
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
        by_name = {h.name: h for h in self.hosts}
        slope = 0.0
        for h in self.hosts:
            owners, values = [], []
            for owner in [self.name, *(o.name for o in self.hosts if o is not h)]:
                if owner == self.name:
                    term = ch.call(h.endpoint, "lr.host.cross", own_message)
                    # decrypt only what the protocol calls for: one total cross term exactly
                    # as wide as this host's block, packed with the public slot width
                    # (never a per-sample vector of ours)
                    if term["count"] != self.widths[h.name] or (
                        self.own.scheme == "paillier"
                        and term["slot_bits"] != expected_slot_bits(len(batch), approx.guest_width)
                    ):
                        raise ValueError(f"{h.name!r} returned a malformed cross term")
                    decrypted = stack_rows(
                        [self.own.decrypt_packed(term["values"], term["slot_bits"], term["count"])]
                    )
                else:
                    term = ch.call(h.endpoint, "lr.host.cross", contributions[owner], origin=owner)
                    decrypted = ch.call(
                        by_name[owner].endpoint, "lr.host.decrypt", term, origin=h.name
                    )["values"]
                for i in range(decrypted.shape[0]):
                    owners.append(owner)
                    values.append(row(decrypted, i))
            reply = ch.call(
                h.endpoint,
                "lr.host.update",
                Message(msg.UPDATE.name, {"owners": owners, "values": stack_rows(values)}),
            )
            if self.lbfgs:
                slope += _scalar(reply, msg.SLOPE.name, "slope", h.name)
        self.block.apply_gradient(approx.guest_own(u_guest, y), guest_terms, approx.scale)
        return slope + self.block.slope() if self.lbfgs else 0.0

    # ------------------------------------------------------------------ training loss
    def _accumulate_loss(self, values, u_guest: np.ndarray, y: np.ndarray) -> None:
        """Add the batch's log-loss terms on the host's ciphertexts to the epoch total."""
        approx, peer = self.approx, self.peers[self.hosts[0].name]
        own, weights = approx.loss_guest(u_guest, y)
        total = peer.cross_total(
            [weights[:, k : k + 1] for k in range(approx.host_width)],
            [column(values, k) for k in range(approx.host_width)],
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
        masked, state = peer.mask_total(self._loss_total, self._loss_rows, self.approx.host_width)
        slot_bits, count = packing_of(masked, state)
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
        """Rows per batch for ``batch_size`` (int, ``"auto"`` or ``None``: all rows).

        The guest protects its labels itself: it refuses a mini-batch of fewer than
        :data:`MIN_BATCH_ROWS` rows and any batch (a full one too) of fewer than
        :data:`MIN_BATCH_ROWS_PER_HOST_COLUMN` rows per host column; ``"auto"``
        (``n // 16`` clipped to 32..1024) is raised to that minimum. Raises
        ``ValueError`` before any message is sent.
        """
        n = len(self.positions)
        widths = [int(h.n_features) for h in self.hosts]
        floor = min_batch_rows(widths)
        if batch_size is None or self.params["optimizer"] == "lbfgs":
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

    def fit(
        self, max_iter: int, tol: float, batch_size: int | str | None = "auto"
    ) -> TrainingResult:
        bs = self.batch_rows(batch_size)  # before any message: a refusal sends nothing
        self._open_sessions()
        mode = self.params["encryption"] or "plaintext"
        self.bar = tqdm(
            total=1,
            desc=f"federated LR ({mode})",
            unit="pass",
            disable=not self.verbose,
            leave=False,
        )
        try:
            if self.lbfgs:
                history = self._fit_lbfgs(max_iter, tol)
            else:
                history = self._fit_epochs(max_iter, tol, bs)
            model_id = uuid.uuid4().hex
            for h in self.hosts:
                self.channel.call(
                    h.endpoint, "lr.host.finish", Message(msg.FINISH.name, {"model_id": model_id})
                )
        finally:
            self.bar.close()
            for h in self.hosts:
                try:
                    self.channel.call(h.endpoint, "lr.host.close", Message("ack", {}))
                except Exception:  # noqa: BLE001 - best effort; the real error is already raised
                    pass
        w = self.block.weights
        coef, intercept = (w[:-1], float(w[-1])) if self.block.fit_intercept else (w, 0.0)
        return TrainingResult(
            coef.copy(),
            intercept,
            model_id,
            {k: v for k, v in self.public_keys.items() if k != self.name},
            len(history),
            history,
        )

    def _record(self, history: list, started: float, delta: float, norm: float, loss) -> float:
        """Append one epoch (iteration) to the history and the progress bar."""
        change = float(np.sqrt(delta / max(norm, 1e-300)))
        entry = {
            "epoch": len(history),
            "relative_change": change,
            "seconds": time.perf_counter() - started,
        }
        postfix = {"epoch": len(history), "change": f"{change:.2e}"}
        if loss is not None:
            entry["loss"] = loss
            postfix["loss"] = f"{loss:.4f}"
        self.bar.set_postfix(postfix)
        history.append(entry)
        return change

    def _fit_epochs(self, max_iter: int, tol: float, bs: int) -> list:
        """Mini-batch epochs; every party steps its own block with its own optimiser.

        Each epoch's permutation is cut into ``n // bs`` batches of (nearly) equal
        size, every one at least ``bs`` rows: a short last batch would fall below the
        guest's (and the hosts') minimum.
        """
        n = len(self.positions)
        n_batches = max(1, n // bs)
        self.bar.total = n_batches
        history: list = []
        for epoch in range(max_iter):
            started = time.perf_counter()
            order = self.rng.permutation(n)
            for batch in np.array_split(order, n_batches):
                self._batch(batch)
                self.bar.update(1)
            loss = self._epoch_loss() if self.track_loss else None
            delta, norm = self.block.end_epoch()
            for h in self.hosts:
                reply = self.channel.call(
                    h.endpoint,
                    "lr.host.epoch_end",
                    Message(msg.EPOCH_END.name, {"epoch": epoch}),
                )
                delta, norm = _add_weight_change(reply, delta, norm, h.name)
            self.bar.total = n_batches * (epoch + 2)  # grows until convergence
            self.bar.refresh()
            if self._record(history, started, delta, norm, loss) < tol:
                break
        return history

    def _fit_lbfgs(self, max_iter: int, tol: float) -> list:
        """Full-batch L-BFGS, the direction assembled from the parties' Gram matrices.

        Each iteration: every party reports the inner products of its own blocks of
        the basis vectors (``lr.accept``); the driver adds them, runs the two-loop
        recursion on coefficients and sends them with a step length (``lr.move``);
        one protocol pass gives every party its gradient at the trial point and the
        driver the directional derivative ``g . d`` (summed ``lr.slope`` scalars).
        The step is accepted once ``g . d <= |g0 . d| / 2`` (for a convex objective a
        non-positive slope proves descent); otherwise a secant step on the slope is
        tried. Stops when ``||g|| <= tol`` (``g`` over all parties' weights).
        """
        rows = np.arange(len(self.positions))
        history: list = []
        started = time.perf_counter()
        self._pass(rows)
        gram, delta, norm = self._accept(keep_pair=False, clear_memory=False)
        n_pairs = 0
        for _ in range(max_iter):
            if np.sqrt(max(gram[2 * n_pairs, 2 * n_pairs], 0.0)) <= tol:
                break
            coefficients = lbfgs_coefficients(gram, n_pairs)
            slope0 = float(coefficients @ gram[:, 2 * n_pairs])
            if not slope0 < 0:  # not a descent direction: restart from -H g
                coefficients = np.zeros(basis_size(n_pairs))
                coefficients[-1] = -1.0
                slope0 = float(coefficients @ gram[:, 2 * n_pairs])
            step, accepted = 1.0, False
            for _trial in range(_MAX_LINE_SEARCH):
                self._move(coefficients, step)
                slope = self._pass(rows)
                if slope <= 0.5 * abs(slope0):
                    accepted = True
                    break
                step *= slope0 / (slope0 - slope)  # secant: zero of the slope on the line
            curvature = step * (slope - slope0)  # s . y
            keep = accepted and curvature > 1e-12 * step * abs(slope0)
            gram, delta, norm = self._accept(keep_pair=keep, clear_memory=not accepted)
            n_pairs = min(n_pairs + 1, LBFGS_MEMORY) if keep else (n_pairs if accepted else 0)
            self._record(history, started, delta, norm, self.pass_loss)
            started = time.perf_counter()
        return history

    def _pass(self, rows: np.ndarray) -> float:
        slope = self._batch(rows)
        # verbose: the training loss at this pass's weights (one masked scalar per pass)
        self.pass_loss = self._epoch_loss() if self.track_loss else None
        self.bar.total = self.bar.n + 2  # one pass per step; the end is not known
        self.bar.update(1)
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


def _scalar(reply: Message, kind: str, field_name: str, sender: str) -> float:
    """The single finite number a reply of type ``kind`` must carry."""
    if reply.type != kind or reply[field_name].shape != (1,):
        raise ValueError(f"{sender!r} answered with a malformed {kind} message")
    value = float(reply[field_name][0])
    if not np.isfinite(value):
        raise ValueError(f"{sender!r} sent a non-finite {field_name}")
    return value


def predict_margin(
    guest,
    hosts,
    alignment_id,
    positions,
    coef,
    intercept,
    model_id,
    host_public_keys,
    encryption,
    channel: Channel,
    insecure: bool = False,
):
    """Decision values for aligned rows; only the guest (the driver) learns them.

    Each host returns ``[[u_H]]_H``; the guest adds a mask and the host decrypts
    ``u_H + r``; the guest removes ``r``. The host learns nothing; the guest learns
    the host's margins of these rows, which the prediction itself reveals anyway.
    """
    rows = guest.aligned_rows(alignment_id, positions)
    margin = guest.local_features(rows) @ coef + intercept
    scheme = "paillier" if encryption == "paillier" else "plain"
    open_message = Message(
        msg.PREDICT_OPEN.name,
        {
            "model_id": model_id,
            "public_keys": {},
            "alignment": alignment_id,
            "positions": np.asarray(positions, dtype=np.int64),
        },
    )
    for h in hosts:
        # each prediction session has a key of its own (lr.opened); the training key
        # (host_public_keys) is never used to decrypt predictions
        opened = channel.call(h.endpoint, "lr.predict.open", open_message)
        try:
            if opened.type != msg.OPENED.name:
                raise ValueError(f"{h.name!r} opened prediction without a session key")
            pub = {k: (int(v) if k in ("n", "hs") else v) for k, v in opened["public_key"].items()}
            trained = int(host_public_keys[h.name].get("n", 0)).bit_length()  # its key's size
            peer = peer_key_from_public(pub, scheme, insecure, min_bits=trained)
            enc = channel.call(h.endpoint, "lr.predict.contribution", Message("ack", {}))
            values = enc["values"]
            if values.shape != (len(positions), 1):
                raise ValueError(f"{h.name!r} sent margins of the wrong shape")
            masked, state = peer.masked_vector(column(values, 0))
            slot_bits, count = packing_of(masked, state)
            request = Message(
                msg.MASKED_MARGIN.name,
                {"values": masked, "slot_bits": slot_bits, "count": count},
            )
            reply = channel.call(h.endpoint, "lr.predict.decrypt", request)
            margin = margin + peer.unmask(reply["values"], state)
        finally:
            channel.call(h.endpoint, "lr.predict.close", Message("ack", {}))
    return margin
