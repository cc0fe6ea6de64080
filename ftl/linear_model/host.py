"""Host role of vertical logistic regression (runs where the host's data is).

Message sequence per batch, as seen from a host H (see docs/protocols.md):

1. ``contribution``: H computes its margins ``u_H = X_H w_H`` on the batch and
   returns its columns of the residual, encrypted under its own key:
   ``[[u_H]]_H`` (Taylor-1) or ``[[s]], [[s**2]], ..., [[s**K]]`` with
   ``s = c(u_H) / R``, ``c`` a smooth clip to ``[-R, R]`` (two-party polynomial,
   see ``_sigmoid``). At its start (weights exactly zero, a guest that declared
   ``zero_margin_form``, one peer, no loss tracked) H answers ``lr.zero_margin``
   instead: its pieces are then the public values at margin 0, the guest sends its
   whole residual as one piece (``lr.residual``) in step 2, and H decrypts nothing
   in step 3.
2. ``cross``: for every other party Q, H receives Q's encrypted columns
   ``[[c_Q,k]]_Q`` and returns ``[[(X_H * w_k).T c_Q,k + r_k]]_Q`` (masked,
   re-randomised), with its own per-row weights ``w_k`` (times ``c'(u_H)``), for
   Q to decrypt.
3. ``decrypt``: H decrypts the masked cross terms other parties computed on its
   ciphertexts and returns them still masked.
4. ``update``: H receives its own masked cross terms back as plaintext, removes
   its masks and forms its gradient. Adam/SGD: it steps its own weights. L-BFGS
   (a pass over all rows): it answers with its part ``g_H . d_H`` of the slope.

L-BFGS adds, per iteration, ``accept`` (H makes its weights the base point and
returns the inner products of its own blocks of the basis vectors) and ``move``
(H steps to ``base + t d_H`` with the driver's coefficients).

Checkpoints: where the party keeps them (``ftl serve``'s ``checkpoint_dir``, see
:mod:`ftl.federation.checkpoints`), H keeps its state at the open and after every
``accept`` or ``epoch_end``; a session opened with ``lr.resume`` restores the step
the driver names (the same peer's run, not charged again) and supersedes the
session that ran the fit before.

The host never sees the labels, the guest's features or weights, or any
unmasked per-sample value of another party.
"""

from __future__ import annotations

import copy

import numpy as np

from ftl.crypto.scheme import (
    FEATURE_FRAC_BITS,
    VALUE_FRAC_BITS,
    OwnKey,
    expected_margin_slot_bits,
    make_own_key,
    peer_key_from_public,
    public_key_json,
    row,
    stack_rows,
)
from ftl.data.fit_checkpoint import in_current_run as _in_current_run
from ftl.data.fit_checkpoint import take_over
from ftl.exceptions import CheckpointError
from ftl.federation.budget import guard_of
from ftl.federation.checkpoints import checkpoints_of, digest, fingerprint, safe_id
from ftl.federation.json_forms import key_from_json, key_to_json
from ftl.federation.messages import Message, PlainArray
from ftl.federation.service import operation, role
from ftl.linear_model import _messages as msg
from ftl.linear_model import _pieces as pieces
from ftl.linear_model._block import WeightBlock
from ftl.linear_model._links import make_link

#: Fixed-point scale of a masked loss total (coefficients x host values).
LOSS_FRAC_BITS = VALUE_FRAC_BITS + FEATURE_FRAC_BITS


def _peer_keys(table: dict, me: str, scheme: str, insecure: bool, n_jobs, min_bits=None) -> dict:
    keys = {}
    for name, pub in table.items():
        if name == me:
            continue
        keys[name] = peer_key_from_public(pub, scheme, insecure, n_jobs, min_bits=min_bits)
    return keys


#: The open's parameters every host session reads (the rest have defaults).
_REQUIRED_PARAMS = ("encryption", "key_size", "widths", "guest", "optimizer", "penalty", "alpha")


@role("lr.host", opens=(msg.OPEN.name, msg.RESUME.name))
class LogisticHost:
    """Training state of one host: its weight block, key pair and masks."""

    #: Set when a resume (in another session) takes this session's fit over.
    superseded = False

    def __init__(self, party, request: Message):
        if request.type not in (msg.OPEN.name, msg.RESUME.name):
            raise ValueError("lr.host sessions open with an lr.open (or lr.resume) message")
        params = request["params"]
        required = _REQUIRED_PARAMS
        if params.get("optimizer") != "lbfgs":
            required += ("learning_rate", "decay")
        missing = [k for k in required if k not in params]
        if missing:  # a malformed open or resume: refused before any state is made
            raise ValueError(f"{request.type} lacks the parameters {missing}")
        self.party = party
        self.name = party.name
        self.params = params
        self.scheme = "paillier" if params["encryption"] == "paillier" else "plain"
        self.insecure = bool(params.get("insecure_for_tests", False))
        # The host's budget and its own parallelism, never the guest's n_jobs.
        self.guard = guard_of(party)
        self.n_jobs = self.guard.n_jobs(params.get("n_jobs"))
        rows = party.aligned_rows(request["alignment"], request["positions"])
        if (rows < 0).any():
            raise ValueError("training rows include rows this host does not have")
        self.block = WeightBlock(party.local_features(rows), params, fit_intercept=False)
        # the training rows bound every cross term's sum (the pieces' public layout)
        self.n_train = len(rows)
        self.peers = _peer_keys(
            request["public_keys"], self.name, self.scheme, self.insecure, self.n_jobs
        )
        # rows of all batches so far: passes over the data are capped by the host
        self.rows_processed = 0
        # Drivers name each fit (older ones do not: nothing is kept for them). A
        # checkpoint binds the fit to this peer, its parameters, rows and data.
        self.fit_id = params.get("fit_id")
        self.checkpoints = None if self.fit_id is None else checkpoints_of(party)
        if self.checkpoints is not None:  # they name files: checked before any budget
            safe_id(self.fit_id, "fit id")
            safe_id(request["alignment"], "alignment id")
        self.step = 0
        self.bound = {
            "identity": self.guard.identity,
            "params": fingerprint(params),
            "positions": digest(np.asarray(request["positions"], dtype=np.int64)),
            "features": digest(self.block.features),
        }
        if request.type == msg.RESUME.name:
            self._resume(request["step"], len(rows), party.n_features)
        else:
            # Admitted last, once the request is known to be well formed (a refused or
            # malformed open consumes no budget), and before the costly key generation.
            self.guard.admit_fit("lr", request["alignment"], len(rows), party.n_features)
            self.own = make_own_key(
                params["encryption"], int(params["key_size"]), self.insecure, self.n_jobs
            )
        self.widths = {str(k): int(v) for k, v in params["widths"].items()}
        self.guest = str(params["guest"])
        self.approx = make_link(params)
        self.margin: np.ndarray | None = None
        # this batch was answered with lr.zero_margin: no ciphertext of ours is out
        self.zero_margin = False
        self.masks: dict = {}
        self.decrypted: set[str] = set()
        # verbose runs: the guest learns the epoch's total training loss (one scalar)
        self.track_loss = bool(params.get("track_loss", False))
        self.loss_rows = 0
        self.loss_own = 0.0
        if self.checkpoints is not None:
            opening = request.type == msg.OPEN.name
            previous = take_over(self, "lr", request, party, opening)
            if previous is not None:  # still alive: it stops, its passes count here too
                self.rows_processed = max(self.rows_processed, previous.rows_processed)
            if opening:
                self._keep()

    # ------------------------------------------------------------------ checkpoints
    def _keep(self) -> None:
        """Keep this step's state where the party keeps checkpoints (if anywhere)."""
        if self.checkpoints is None:
            return
        state = {
            "step": self.step,
            "rows": self.rows_processed,
            "bound": self.bound,
            "own_key": key_to_json(self.own),
            "block": self.block.state(),
        }
        # only while this session runs the fit: a superseded one's late step is dropped
        self.checkpoints.keep("lr", self.fit_id, state, owner=self)

    def _resume(self, step: int, n_rows: int, n_features: int) -> None:
        """Restore step ``step`` of this peer's fit: same parameters, rows and data;
        checked again against the policy's row minimum, not charged again."""
        if self.checkpoints is None:
            raise CheckpointError(f"{self.name}: this party keeps no checkpoints to resume from")
        state = self.checkpoints.load("lr", self.fit_id, step)
        if state.get("bound") != self.bound:
            raise CheckpointError(
                f"{self.name}: fit {self.fit_id} ran with other parameters, rows or data "
                "than this resume asks for; refused"
            )
        self.guard.check_fit_rows("lr", n_rows, n_features)
        self.own = key_from_json(state["own_key"], self.insecure, self.n_jobs)
        self.block.restore(state["block"])
        self.rows_processed, self.step = int(state["rows"]), int(state["step"])

    def opened(self) -> Message:
        return Message(
            msg.OPENED.name,
            {
                "public_key": public_key_json(self.own),
                "n_features": self.block.features.shape[1],
            },
        )

    @operation(accepts=(msg.PEER_KEYS.name,))
    @_in_current_run
    def peer_keys(self, request: Message) -> Message:
        """Learn the other hosts' public keys (multi-host runs)."""
        self.peers.update(
            _peer_keys(request["public_keys"], self.name, self.scheme, self.insecure, self.n_jobs)
        )
        return Message("ack", {})

    @operation(accepts=(msg.BATCH.name,))
    @_in_current_run
    def contribution(self, request: Message) -> Message:
        """Margins on the batch; return this host's residual columns, encrypted."""
        # The host's own minimum batch size (its policy, not the guest's parameter):
        # the guest learns norms of our weight change, which a tiny batch would tie
        # to a few of our rows.
        self.guard.admit_batch(len(request["batch"]), self.block.features.shape[0])
        self.margin = self.block.start_batch(request["batch"])
        self.masks = {}
        self.decrypted = set()
        if self.track_loss:
            self.loss_rows += len(self.margin)
            self.loss_own += self.approx.loss_host_own(self.margin)
        self.zero_margin = self._at_zero_start()
        if self.zero_margin:
            return Message(msg.ZERO_MARGIN.name, {"owner": self.name})
        return Message(
            msg.CONTRIBUTION.name,
            {
                "owner": self.name,
                "values": pieces.encrypt_pieces(
                    self.own, self.approx.host_values(self.margin), self.n_train
                ),
            },
        )

    def _at_zero_start(self) -> bool:
        """Whether this batch's pieces are the public ``phi_k(0)``: our weights are
        still our start, zero, which both parties know (no row processed yet: zero
        weights reached later, e.g. under an L1 penalty, are not told), we have one
        peer (the guest), the run tracks no loss (its total needs our ciphertexts)
        and the guest declared it answers an ``lr.zero_margin`` (older guests do not)."""
        return (
            bool(self.params.get("zero_margin_form", False))
            and not self.track_loss
            and list(self.peers) == [self.guest]
            and self.rows_processed == 0
            and not self.block.weights.any()
        )

    def _check_residual(self, owner: str) -> None:
        """Refuse a one-piece residual unless this batch is at our zero margin: the
        guest's residual ``r`` is then ``sum_k c_k phi_k(0)``, so ``X_H.T r`` is our
        gradient; at any other margin it would not be (a guest's wrong answer)."""
        if not (self.zero_margin and owner == self.guest):
            raise ValueError(
                f"{self.name}: a one-piece residual is accepted only at our zero margin"
            )

    @operation(accepts=(msg.CONTRIBUTION.name, msg.RESIDUAL.name))
    @_in_current_run
    def cross(self, request: Message) -> Message:
        """Masked ``(X_H * w_k).T @ [[c_k]]`` for each column k of a peer's ciphertexts.

        After our ``lr.zero_margin`` the guest may send its whole residual as one
        piece (``lr.residual``): accepted only then, since at any other margin its
        cross term would not be our gradient.
        """
        owner = request["owner"]
        if owner not in self.peers:
            raise ValueError(f"{self.name}: no public key for {owner!r}")
        if owner in self.masks:
            raise ValueError(f"{self.name}: cross term for {owner!r} already computed")
        values = request["values"]
        n_rows = len(self.margin)
        if request.type == msg.RESIDUAL.name:
            self._check_residual(owner)
            weights = np.ones((n_rows, 1))
        elif owner == self.guest:
            weights = self.approx.host_weights(self.margin)
        else:
            weights = np.ones((n_rows, 1))  # another host's margin (Taylor-1, several hosts)
        weights = weights * self.approx.host_chain(self.margin)[:, None]
        width = weights.shape[1]
        peer = self.peers[owner]
        pieces.check_columns(values, peer, n_rows, width, self.n_train, owner)
        x = self.block.batch_features()
        # all pieces are summed under the owner's key before masking: the owner
        # decrypts, and this host learns, only its total cross term
        masked, state, slot_bits, count = pieces.masked_cross(
            peer, [x * weights[:, k : k + 1] for k in range(width)], values, self.n_train
        )
        self.masks[owner] = state
        return Message(
            msg.CROSS_TERM.name,
            {
                "owner": owner,
                "requester": self.name,
                "values": masked,
                "slot_bits": slot_bits,
                "count": count,
            },
        )

    @operation(accepts=(msg.CROSS_TERM.name,))
    @_in_current_run
    def decrypt(self, request: Message) -> Message:
        if request["owner"] != self.name:
            raise ValueError(f"{self.name}: asked to decrypt values under another key")
        if self.zero_margin:
            raise ValueError(f"{self.name}: none of our ciphertexts is out in this batch")
        requester = request["requester"]
        # Decrypt only what the protocol calls for: one set of cross terms per peer and
        # batch, each exactly as wide as that peer's weight block (public) -- never a
        # per-sample vector.
        if request["count"] != self.widths.get(requester, -1):
            raise ValueError(f"{self.name}: cross term of {requester!r} has the wrong width")
        n_pieces = self.approx.host_width if requester == self.guest else 1
        if requester in self.decrypted:
            raise ValueError(f"{self.name}: {requester!r} already had a cross term decrypted")
        try:
            values = pieces.decrypt_term(
                self.own, request, len(self.margin), n_pieces, self.n_train
            )
        except ValueError as exc:
            raise ValueError(f"{self.name}: cross term of {requester!r}: {exc}") from None
        self.decrypted.add(requester)
        return Message(
            msg.MASKED_VALUES.name, {"requester": requester, "values": stack_rows([values])}
        )

    @operation(accepts=(msg.UPDATE.name,))
    @_in_current_run
    def update(self, request: Message) -> Message:
        """Unmask the cross terms (row i was decrypted by owners[i]); take a step."""
        owners = request["owners"]
        values = request["values"]
        if sorted(owners) != sorted(self.masks) or len(owners) != values.shape[0]:
            raise ValueError(f"{self.name}: update must carry one cross term per peer")
        self._count_pass_rows(len(self.margin))
        terms = [
            self.peers[owner].unmask(row(values, i), self.masks[owner])
            for i, owner in enumerate(owners)
        ]
        own = self.approx.host_own(self.margin)
        self.block.apply_gradient(own, terms, self.approx.scale)
        self.masks = {}
        if self.params["optimizer"] == "lbfgs":
            return Message(msg.SLOPE.name, {"slope": np.array([self.block.slope()])})
        return Message("ack", {})

    def _count_pass_rows(self, n_rows: int) -> None:
        """Refuse to go on past the host's cap on passes over the training rows.

        Counted in rows, so a driver cannot escape the cap by never ending an epoch;
        an L-BFGS iteration may take a few passes (its line search).
        """
        n_train = self.block.features.shape[0]
        self.guard.cap("epochs", -(-(self.rows_processed + n_rows) // n_train))
        self.rows_processed += n_rows

    @operation(accepts=(msg.ACCEPT.name,))
    @_in_current_run
    def accept(self, request: Message) -> Message:
        """L-BFGS: the trial point becomes the base; return our partial Gram matrix.

        The driver adds every party's Gram matrix to find the next direction; the
        matrix holds only inner products of this host's own blocks of weight and
        gradient changes (docs/protocols.md §3.8), never per-sample values.
        """
        gram, delta, norm = self.block.accept(
            bool(request["keep_pair"]), bool(request["clear_memory"])
        )
        self.step += 1
        self._keep()
        return Message(msg.GRAM.name, {"gram": gram, "delta_sq": np.array([delta, norm])})

    @operation(accepts=(msg.MOVE.name,))
    @_in_current_run
    def move(self, request: Message) -> Message:
        """L-BFGS: step to ``base + step * d`` with ``d`` from the driver's coefficients."""
        if request["step"].shape != (1,):
            raise ValueError(f"{self.name}: a move carries one step length")
        step = float(request["step"][0])
        if not np.isfinite(step) or step <= 0 or not np.isfinite(request["coefficients"]).all():
            raise ValueError(f"{self.name}: the step must be positive and finite")
        self.block.move(request["coefficients"], step)
        return Message("ack", {})

    @operation(accepts=(msg.LOSS_TERM.name,))
    @_in_current_run
    def decrypt_loss(self, request: Message) -> Message:
        """Decrypt the guest's masked loss total for the epoch and add our own terms.

        Only when the run tracks its loss (``verbose``), once per epoch, and only a
        single value whose slot width matches the epoch's public row count: the
        guest learns one aggregate scalar per epoch, never a per-row value.
        """
        if not self.track_loss:
            raise ValueError(f"{self.name}: this run does not track its loss")
        if self.loss_rows == 0:
            raise ValueError(f"{self.name}: the epoch's loss was already decrypted")
        if request["count"] != 1:
            raise ValueError(f"{self.name}: a loss total is a single value")
        try:
            values = pieces.decrypt_term(
                self.own, request, self.loss_rows, self.approx.host_width, self.n_train
            )
        except ValueError as exc:
            raise ValueError(f"{self.name}: the loss total: {exc}") from None
        if isinstance(values, PlainArray):
            values = PlainArray(values.values + self.loss_own)
        else:
            # Adding our own terms to the masked value: the guest learns only the sum.
            values[0] = int(values[0]) + int(round(self.loss_own * 2.0**LOSS_FRAC_BITS))
        # one decryption per accumulated total: the next needs new rows
        self.loss_rows, self.loss_own = 0, 0.0
        return Message(msg.MASKED_LOSS.name, {"values": values})

    @operation(accepts=(msg.EPOCH_END.name,))
    @_in_current_run
    def epoch_end(self, request: Message) -> Message:
        self.loss_rows, self.loss_own = 0, 0.0
        delta, norm = self.block.end_epoch()
        self.step += 1
        self._keep()
        return Message(msg.WEIGHT_CHANGE.name, {"delta_sq": np.array([delta, norm])})

    @operation(accepts=(msg.FINISH.name,))
    @_in_current_run
    def finish(self, request: Message) -> Message:
        """Keep the trained weights (and this key pair) as a model shard at the host."""
        self.party.store_model(
            request["model_id"],
            {
                "kind": "lr",
                "coef": self.block.weights.copy(),
                # the key without its encryption tables (~40 MB at 2048 bits) or
                # randomness pool, which a kept shard never needs: it only names its
                # key's kind and size and exports its factors
                "own_key": copy.copy(self.own),
                "scheme": self.scheme,
                "insecure": self.insecure,
                "n_jobs": self.n_jobs,
            },
        )
        if self.checkpoints is not None:  # a finished fit cannot be resumed
            self.checkpoints.discard("lr", self.fit_id)
        return Message("ack", {})


@role("lr.predict", opens=(msg.PREDICT_OPEN.name,))
class LogisticHostPredictor:
    """Prediction with a stored host shard: encrypted margins, masked decryption.

    Each prediction session makes a key pair of its own (``lr.opened`` carries
    its public key): the margins are encrypted under it, and ``decrypt`` serves
    exactly one request per session, of exactly one masked margin per scored row,
    after ``contribution``. The guest can therefore have decrypted only (masked
    versions of) this session's own margins -- never a ciphertext from training,
    which is under the training key, nor anything twice (docs/protocols.md §3.10).
    """

    def __init__(self, party, request: Message):
        if request.type != msg.PREDICT_OPEN.name:
            raise ValueError("lr.predict sessions open with an lr.predict_open message")
        model = party.load_model(request["model_id"])
        self.name = party.name
        self.coef = model["coef"]
        rows = party.aligned_rows(request["alignment"], request["positions"])
        if (rows < 0).any():
            raise ValueError("prediction rows include rows this host does not have")
        self.features = party.local_features(rows)
        guard = guard_of(party)
        guard.admit_prediction("lr", request["alignment"], len(rows))
        self.own = _session_key(model, guard.n_jobs(model.get("n_jobs")))
        self.sent = False  # margins encrypted in this session
        self.decrypted = False

    def opened(self) -> Message:
        return Message(
            msg.OPENED.name,
            {"public_key": public_key_json(self.own), "n_features": len(self.coef)},
        )

    @operation(accepts=("ack",))
    def contribution(self, request: Message) -> Message:
        if self.sent:
            raise ValueError(f"{self.name}: this prediction session already sent its margins")
        self.sent = True
        margin = (self.features @ self.coef)[:, None]
        return Message(
            msg.CONTRIBUTION.name, {"owner": self.name, "values": self.own.encrypt(margin)}
        )

    @operation(accepts=(msg.MASKED_MARGIN.name,))
    def decrypt(self, request: Message) -> Message:
        if not self.sent or self.decrypted:
            raise ValueError(
                f"{self.name}: a prediction session decrypts once, after its contribution"
            )
        count, slot_bits = request["count"], request["slot_bits"]
        if count != self.features.shape[0]:
            raise ValueError("expected one masked margin per prediction row")
        if self.own.scheme == "paillier" and slot_bits != expected_margin_slot_bits():
            raise ValueError("masked margins are not packed as the public bounds require")
        self.decrypted = True
        values = self.own.decrypt_packed(request["values"], slot_bits, count)
        return Message(msg.MASKED_MARGIN_VALUES.name, {"values": values})


def _session_key(model: dict, n_jobs: int | None) -> OwnKey:
    """A fresh key pair for one prediction session, of the training key's kind and size.

    Prediction never uses the training key: a guest could otherwise submit any
    ciphertext it saw in training (e.g. the host's encrypted margin powers) as
    "masked margins" and have it decrypted. Key generation costs ~0.1-0.4 s at
    2048 bits, once per session.
    """
    trained = model["own_key"]
    if trained.scheme == "plain":
        return make_own_key(None, 0, n_jobs=n_jobs)
    bits = int(trained.n).bit_length()
    # one batch of encryptions per session: no background pool of random factors
    insecure = bool(model.get("insecure", False))
    return make_own_key("paillier", bits, insecure, n_jobs, pool_capacity=0)
