"""Target role of federated transfer learning (runs where the target's data is).

The target holds features but no labels. Per batch of overlap rows, as seen from
the target T (the source is S; see docs/transfer.md):

1. ``terms``: T receives ``[[a_i]]_S`` (per-row vectors, packed) and the columns of
   ``[[M]]_S``; computes its representations ``u_i = W_T [h_i; 1]`` and returns
   ``[[u_i]]_T`` and ``[[U'U / n]]_T`` (packed under its own key) together with its
   own weight gradient, computed under S's key and masked::

       [[ M G + 2 gamma G - sum_i a_i [h_i; 1]' + r ]]_S,   G = U' [H, 1]

2. ``exchange``: T receives its masked gradient decrypted by S (still masked),
   removes ``r`` and steps; it decrypts S's masked gradient (masked by S) and
   returns it.

Checkpoints: where the party keeps them (``ftl serve``'s ``checkpoint_dir``, see
:mod:`ftl.federation.checkpoints`), T keeps its state at the open and after every
``epoch_end`` (its pretrained hidden layers too); a session opened with
``ftl.resume`` restores the epoch the source names (the same peer's fit, checked
against the policy again, not charged again), supersedes the session that ran the
fit before, replays the batches that epoch answered before in their order, and is
refused for an epoch resumed once already (:data:`RESUMES_PER_STEP`).

T never sees the labels, the prototypes, the source's representations or any
unmasked value computed from them; it learns its own weight gradient.
"""

from __future__ import annotations

import hashlib

import numpy as np

from ftl.crypto import packed
from ftl.crypto.scheme import make_own_key, peer_key_from_public, public_key_json
from ftl.data.fit_checkpoint import count_resume, in_current_run, load_bound_step, take_over
from ftl.exceptions import CheckpointError, PolicyError, ProtocolError
from ftl.federation.budget import guard_of
from ftl.federation.checkpoints import checkpoints_of, digest, fingerprint, safe_id
from ftl.federation.json_forms import key_from_json, key_to_json
from ftl.federation.messages import Message
from ftl.federation.service import operation, role
from ftl.transfer import _messages as msg
from ftl.transfer._network import (
    HiddenStack,
    glorot,
    make_optimizer,
    pretrain_autoencoder,
    with_bias,
)
from ftl.transfer.source import current_gamma, min_private_batch

__all__ = ["TransferTarget", "TransferTargetPredictor"]

#: The target's checkpoints of its fits are kept under this name.
PROTOCOL = "transfer"
#: How often one step of a fit may be resumed. A resumed step restores the
#: target's weights, so each batch of the step is answered twice at the same
#: weights (the replay check keeps them the same batches): the source's gradient
#: gives it ``m_S`` linear combinations of the batch's ``n`` target
#: representations per answer, and ``2 m_S < n`` (min_private_batch) still
#: leaves them under-determined. A third answer would not.
RESUMES_PER_STEP = 1


def _own_seed(features: np.ndarray, source_seed: int) -> int:
    """The target's initialisation seed: the source's seed mixed with a hash of the
    target's own data, so fits are reproducible for a given ``random_state`` while
    the source cannot predict the target's initial weights."""
    digest = hashlib.sha256(source_seed.to_bytes(8, "little"))
    digest.update(np.ascontiguousarray(features).tobytes())
    return int.from_bytes(digest.digest()[:8], "little")


def _network_size(guard, params: dict) -> tuple[tuple[int, ...], int, int]:
    """The network the source asks for, within this party's caps.

    Hidden layers, their units (summed), the output width ``n_components`` (no wider
    than the host lets any layer be) and the epochs of local pre-training all drive
    the target's own CPU and memory, so the target bounds them itself.
    """
    hidden = tuple(int(k) for k in params["hidden_layer_sizes"])
    if any(k < 1 for k in hidden):
        raise ValueError("hidden layer sizes must be positive")
    guard.cap("hidden_layers", len(hidden))
    guard.cap("hidden_units", sum(hidden))
    dim = int(params["n_components"])
    if dim < 1:
        raise ValueError("n_components must be positive")
    guard.cap("hidden_units", dim)
    return hidden, dim, guard.cap("pretrain_epochs", int(params["pretrain_epochs"]))


@role("ftl.target", opens=(msg.OPEN.name, msg.RESUME.name))
class TransferTarget:
    """Training state of the target: its network, key pair, optimiser and masks."""

    #: Set when a resume (in another session) takes this session's fit over.
    superseded = False

    def __init__(self, party, request: Message):
        if request.type not in (msg.OPEN.name, msg.RESUME.name):
            raise ValueError("ftl.target sessions open with an ftl.open (or ftl.resume) message")
        p = request["params"]
        self.party = party
        self.name = party.name
        self.params = p
        self.insecure = bool(p.get("insecure_for_tests", False))
        # The target's budget, caps and its own parallelism: never the source's n_jobs.
        self.guard = guard_of(party)
        self.n_jobs = self.guard.n_jobs(p.get("n_jobs"))
        hidden, self.dim, pretrain_epochs = _network_size(self.guard, p)
        rows = party.aligned_rows(request["alignment"], request["positions"])
        if (rows < 0).any():
            raise ValueError("training rows include rows the target does not have")
        self.rows = rows
        if p["encryption"] not in ("paillier", None):
            raise ValueError(f"encryption must be 'paillier' or None, got {p['encryption']!r}")
        scheme = "paillier" if p["encryption"] == "paillier" else "plain"
        self.source = peer_key_from_public(
            request["public_key"], scheme, self.insecure, self.n_jobs
        )
        # Sources name each fit (older ones do not: nothing is kept for them); the
        # checkpoints bind it to this peer, its parameters and key, rows and data.
        self.fit_id = p.get("fit_id")
        self.checkpoints = None if self.fit_id is None else checkpoints_of(party)
        if self.checkpoints is not None:  # they name files: checked before any budget
            safe_id(self.fit_id, "fit id")
            safe_id(request["alignment"], "alignment id")
        # all of the target's rows, read once (a derived party transforms on read)
        everything = party.local_features(np.arange(party.n_rows))
        self.bound = {
            "identity": self.guard.identity,
            "params": fingerprint(p),
            "source_key": fingerprint(request["public_key"]),
            "positions": digest(np.asarray(request["positions"], dtype=np.int64)),
            "features": digest(everything),
        }
        kept = None
        if request.type == msg.RESUME.name:
            kept = self._resume(request["step"], hidden)
        else:
            # Admitted once the request is well formed, before any costly work.
            self.guard.admit_fit("transfer", request["alignment"], len(rows), party.n_features)
            rng = np.random.default_rng(_own_seed(everything, int(p["seed"])))
            self.stack = HiddenStack(party.n_features, hidden, p["activation"], rng)
            # Hidden layers learn from all of the target's own rows, labels being
            # unknown here: an autoencoder, trained locally before the federated phase.
            pretrain_autoencoder(self.stack, everything, rng, epochs=pretrain_epochs)
        x = everything[rows]
        self.h = with_bias(self.stack.forward(x) if hidden else x)
        if kept is None:
            self.w = glorot(rng, self.h.shape[1] - 1, self.dim)
        else:
            self.w = np.array(kept["weights"], dtype=np.float64)
        self.opt = make_optimizer(p["optimizer"], [self.w], p["learning_rate"])
        self.alpha = float(p["alpha"])
        # digests of the batches since the step, in order: a resumed run replays them
        self.replay, self.replayed = [], 0
        if kept is None:
            self.own = make_own_key(p["encryption"], int(p["key_size"]), self.insecure, self.n_jobs)
            self.epoch, self.step = 0, 0
            self.epoch_start = self.w.copy()
        else:
            self._restore_step(kept)
        self.state = None
        self.batch = None
        opening = request.type == msg.OPEN.name
        if self.checkpoints is not None:
            take_over(self, PROTOCOL, request, party, opening)
        if opening:
            self._keep()

    # ------------------------------------------------------------------ checkpoints
    def _keep(self) -> None:
        """Keep this step where the party keeps checkpoints, if anywhere: the network
        (its pretrained hidden layers too), optimiser, epoch and key pair, and what
        the fit is bound to."""
        if self.checkpoints is not None:
            self.checkpoints.keep(PROTOCOL, self.fit_id, self._step_state(), owner=self)

    def _step_state(self) -> dict:
        return {
            "hidden": list(self.stack.weights),
            "weights": self.w.copy(),
            "optimizer": self.opt.state(),
            "epoch": self.epoch,
            "epoch_start": self.epoch_start.copy(),
            "own_key": key_to_json(self.own),
            "bound": self.bound,
            "step": self.step,
            "rows": self.epoch * len(self.rows),
        }

    def _resume(self, step: int, hidden: tuple) -> dict:
        """Load step ``step`` of this peer's fit (same parameters, key, rows and data),
        checked again against the policy (row minimum, caps on the network and the
        epochs), not charged again; each step resumes at most
        :data:`RESUMES_PER_STEP` times."""
        state = load_bound_step(self, PROTOCOL, step)
        self.guard.check_fit_rows("transfer", len(self.rows), self.party.n_features)
        self.guard.cap("epochs", int(state["epoch"]))
        count_resume(self, PROTOCOL, step, RESUMES_PER_STEP, "docs/transfer.md, resume")
        # the pretrained hidden layers are kept: pre-training again would cost as much
        self.stack = HiddenStack.from_dict(
            {"activation": self.params["activation"], "weights": state["hidden"]}
        )
        if [w.shape[0] for w in self.stack.weights] != list(hidden):
            raise CheckpointError(f"{self.name}: the kept network is not of this fit; refused")
        return state

    def _restore_step(self, state: dict) -> None:
        """Restore a loaded step's optimiser, key, counters and batches."""
        self.opt.restore(state["optimizer"])
        self.own = key_from_json(state["own_key"], self.insecure, self.n_jobs)
        self.epoch, self.step = int(state["epoch"]), int(state["step"])
        self.epoch_start = np.array(state["epoch_start"], dtype=np.float64)
        self.replay = self._batches_of(self.step)

    def _batches_of(self, step: int) -> list:
        try:
            kept = self.checkpoints.load_part(PROTOCOL, self.fit_id, f"batches-{step}")
        except CheckpointError:
            return []
        return list(kept["batches"])

    def _check_replay(self, batch: np.ndarray) -> None:
        """A resumed step answers the batches it answered before, in the same order,
        before any new one: a source cannot have a second batch answered at weights
        that answered another batch before (differencing the two answers)."""
        if self.checkpoints is None:
            return
        mark = digest(batch)
        if self.replayed < len(self.replay):
            if self.replay[self.replayed] != mark:
                raise ProtocolError(
                    f"{self.name}: a resumed fit must replay the batches of its step in order "
                    f"(batch {self.replayed} differs); refused"
                )
        else:
            self.replay.append(mark)
            self.checkpoints.keep_part(
                PROTOCOL,
                self.fit_id,
                f"batches-{self.step}",
                {"batches": list(self.replay)},
                owner=self,
            )
        self.replayed += 1

    def opened(self) -> Message:
        return Message(
            msg.OPENED.name,
            {"public_key": public_key_json(self.own), "n_inputs": int(self.h.shape[1])},
        )

    @operation(accepts=(msg.SOURCE_TERMS.name,))
    @in_current_run
    def terms(self, request: Message) -> Message:
        """Representations and Gram matrix (own key) and the masked own gradient."""
        batch = np.asarray(request["batch"], dtype=np.int64)
        if batch.size == 0 or batch.min() < 0 or batch.max() >= len(self.rows):
            raise ValueError("batch rows out of range")
        if len(np.unique(batch)) != len(batch):
            raise ValueError("batch repeats rows")
        n, d = len(batch), self.dim
        if self.own.scheme == "paillier":
            smallest = min_private_batch(self.params["source_inputs"], self.h.shape[1])
            if n < smallest:
                raise ValueError(
                    f"a batch of {n} rows is too small to keep per-row values private "
                    f"(at least {smallest})"
                )
        a, m_cols = request["rows"], request["matrix"]
        width = packed.slot_bits(n, d)
        n_ct = self._n_ct(width)
        if a.values.shape != (n, n_ct) or m_cols.values.shape != (d, n_ct):
            raise ValueError("source terms do not match the batch and dimension")
        self._check_replay(batch)
        h = self.h[batch]
        u = h @ self.w.T
        g = u.T @ h  # d x m, the target's own aggregate
        masked, self.state = packed.masked_combination(
            self.source,
            [(m_cols, g, "matrix"), (a, -h, "row")],
            2.0 * current_gamma(self.params, self.epoch) * g,
            width,
            n,
            d,
        )
        self.batch = (n, width)
        return Message(
            msg.TARGET_TERMS.name,
            {
                "rows": packed.encrypt_rows(self.own, u, width),
                "matrix": packed.encrypt_rows(self.own, (u.T @ u) / n, width),
                "gradient": masked,
                "slot_bits": width if self.state is not None else 0,
            },
        )

    def _n_ct(self, width: int) -> int:
        if self.own.scheme == "plain":
            return self.dim
        return packed.layout(int(self.source.n).bit_length(), width, self.dim)[1]

    @operation(accepts=(msg.EXCHANGE.name,))
    @in_current_run
    def exchange(self, request: Message) -> Message:
        """Step on the own gradient; decrypt the source's masked gradient."""
        if self.batch is None:
            raise ValueError("exchange before terms")
        n, width = self.batch
        self.batch = None
        m = self.h.shape[1]
        grad = packed.unmask_combination(self.source, request["decrypted"], self.state, self.dim, m)
        grad = grad / n + self.alpha * np.hstack([self.w[:, :-1], np.zeros((self.dim, 1))])
        self.opt.step([grad])
        theirs = request["gradient"]
        if self.own.scheme == "paillier" and request["slot_bits"] != width:
            raise ValueError("the source's gradient does not use the agreed slot width")
        n_out = int(self.params["source_inputs"])
        decrypted = packed.decrypt_combination(self.own, theirs, width, self.dim, n_out)
        return Message(msg.DECRYPTED.name, {"decrypted": decrypted})

    @operation(accepts=(msg.EPOCH_END.name,))
    @in_current_run
    def epoch_end(self, request: Message) -> Message:
        self.guard.cap("epochs", self.epoch + 1)
        delta = float(((self.w - self.epoch_start) ** 2).sum())
        norm = float((self.w**2).sum())
        self.epoch_start = self.w.copy()
        self.epoch += 1
        self.step += 1
        self.replay, self.replayed = [], 0
        self._keep()  # before answering: the target is at the source's step or one ahead
        return Message(msg.WEIGHT_CHANGE.name, {"delta_sq": np.array([delta, norm])})

    @operation(accepts=(msg.FINISH.name,))
    @in_current_run
    def finish(self, request: Message) -> Message:
        self.party.store_model(
            request["model_id"],
            {
                "kind": "ftl.target",
                "hidden": self.stack.to_dict(),
                "output": self.w.tolist(),
                "has_hidden": bool(self.stack.weights),
            },
        )
        if self.checkpoints is not None:  # a finished fit cannot be resumed
            self.checkpoints.discard(PROTOCOL, self.fit_id)
        return Message("ack", {})


def _shard_representations(shard: dict, x: np.ndarray) -> np.ndarray:
    stack = HiddenStack.from_dict(shard["hidden"])
    h = stack.forward(x) if shard["has_hidden"] else x
    return with_bias(h) @ np.asarray(shard["output"], dtype=np.float64).T


@role("ftl.target_predict", opens=(msg.PREDICT_OPEN.name,))
class TransferTargetPredictor:
    """Scores target rows: ``[[P u_j + offset]]`` under the source's key, for the source.

    The reply to ``open`` carries the scores; the target learns nothing (the
    prototypes arrive encrypted), the source learns ``P u_j`` -- the scores it asked
    for (``K'`` linear functions of each representation).
    """

    def __init__(self, party, request: Message):
        if request.type != msg.PREDICT_OPEN.name:
            raise ValueError("ftl.target_predict sessions open with ftl.predict_open")
        shard = party.load_model(request["model_id"])
        if shard.get("kind") != "ftl.target":
            raise ValueError("model shard is not a transfer target's")
        guard = guard_of(party)
        p = request["params"]
        scheme = "paillier" if p["encryption"] == "paillier" else "plain"
        insecure = bool(p.get("insecure_for_tests", False))
        self.source = peer_key_from_public(
            request["public_key"], scheme, insecure, guard.n_jobs(p.get("n_jobs"))
        )
        self.n_scores = int(p["n_scores"])
        self.prototypes = request["prototypes"]
        dim = len(shard["output"])  # n_components of the stored network
        expected = (dim, self.n_scores) if scheme == "plain" else (dim, 1)
        if self.prototypes.values.shape != expected:
            raise ValueError("prototypes do not match the representation dimension")
        if request["ids"]:
            rows = _rows_for_ids(party, guard, request["ids"])
        else:
            rows = party.aligned_rows(request["alignment"], request["positions"])
            if (rows < 0).any():
                raise ValueError("requested rows include rows the target does not have")
            guard.admit_prediction("transfer", request["alignment"], len(rows))
        self.u = _shard_representations(shard, party.local_features(rows))

    def opened(self) -> Message:
        width = packed.slot_bits(self.u.shape[1], self.n_scores)  # d products per score
        scores = packed.offset_combination(
            self.source, self.prototypes, self.u.T, width, self.n_scores
        )
        return Message(
            msg.SCORES.name,
            {"values": scores, "slot_bits": width, "count": int(self.u.shape[0])},
        )


#: The one answer to ids that cannot be scored, whatever the reason.
_IDS_REFUSED = "some requested ids cannot be scored at this party"


def _rows_for_ids(party, guard, ids) -> np.ndarray:
    """Local rows of ids the source named, if this party lets the source name rows.

    Scoring by raw id reaches customers outside any alignment, so the target
    decides (policy key ``score_ids``; off for a served party by default). The
    request is charged to the prediction budget before the ids are looked up --
    a refusal answers the question "are these all my customers?" too -- and the
    refusal never says which or how many ids are unknown.
    """
    if not guard.may_score_ids:
        raise PolicyError(
            "this party does not score rows by raw id (policy key 'score_ids'); score "
            "aligned rows (ftl.align) instead"
        )
    if not isinstance(ids, list) or not all(isinstance(i, str | int) for i in ids):
        raise ValueError("ids must be a list of ids")
    guard.admit_prediction("transfer", None, len(ids))
    try:
        return party.rows_for_ids(ids)
    except ValueError:
        raise ValueError(_IDS_REFUSED) from None
