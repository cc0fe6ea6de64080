"""Host role of vertical logistic regression (runs where the host's data is).

Message sequence per batch, as seen from a host H (see docs/protocols.md):

1. ``contribution``: H computes its margins ``u_H = X_H w_H`` on the batch and
   returns ``[[u_H]]_H``, encrypted under its own key.
2. ``cross``: for every other party Q, H receives ``[[c_Q]]_Q`` and returns
   ``[[X_H.T c_Q + r]]_Q`` (masked, re-randomised) for Q to decrypt.
3. ``decrypt``: H decrypts the masked cross terms other parties computed on
   ``[[u_H]]_H`` and returns them still masked.
4. ``update``: H receives its own masked cross terms back as plaintext, removes
   its masks and takes a gradient step on its own weights.

The host never sees the labels, the guest's features or weights, or any
unmasked per-sample value of another party.
"""

from __future__ import annotations

import numpy as np

from ftl.crypto.scheme import make_own_key, peer_key_from_public
from ftl.federation.messages import Message
from ftl.federation.service import operation, role
from ftl.linear_model import _messages as msg
from ftl.linear_model._block import WeightBlock


def _public_key_json(own) -> dict:
    pub = own.public()
    return {k: (str(v) if isinstance(v, int) else v) for k, v in pub.items()}


def _peer_keys(table: dict, me: str, scheme: str, insecure: bool, n_jobs) -> dict:
    keys = {}
    for name, pub in table.items():
        if name == me:
            continue
        fields = {k: (int(v) if k in ("n", "hs") else v) for k, v in pub.items()}
        keys[name] = peer_key_from_public(fields, scheme, insecure, n_jobs)
    return keys


@role("lr.host")
class LogisticHost:
    """Training state of one host: its weight block, key pair and masks."""

    def __init__(self, party, request: Message):
        if request.type != msg.OPEN.name:
            raise ValueError("lr.host sessions open with an lr.open message")
        params = request["params"]
        self.party = party
        self.name = party.name
        self.params = params
        self.scheme = "paillier" if params["encryption"] == "paillier" else "plain"
        self.insecure = bool(params.get("insecure_for_tests", False))
        self.n_jobs = params.get("n_jobs")
        rows = party.aligned_rows(request["alignment"], request["positions"])
        if (rows < 0).any():
            raise ValueError("training rows include rows this host does not have")
        self.block = WeightBlock(party.local_features(rows), params, fit_intercept=False)
        self.own = make_own_key(
            params["encryption"], int(params["key_size"]), self.insecure, self.n_jobs
        )
        self.peers = _peer_keys(
            request["public_keys"], self.name, self.scheme, self.insecure, self.n_jobs
        )
        self.widths = {str(k): int(v) for k, v in params["widths"].items()}
        self.margin: np.ndarray | None = None
        self.masks: dict = {}
        self.decrypted: set[str] = set()

    def opened(self) -> Message:
        return Message(
            msg.OPENED.name,
            {
                "public_key": _public_key_json(self.own),
                "n_features": self.block.features.shape[1],
            },
        )

    @operation
    def peer_keys(self, request: Message) -> Message:
        """Learn the other hosts' public keys (multi-host runs)."""
        self.peers.update(
            _peer_keys(request["public_keys"], self.name, self.scheme, self.insecure, self.n_jobs)
        )
        return Message("ack", {})

    @operation
    def contribution(self, request: Message) -> Message:
        self.margin = self.block.start_batch(request["batch"])
        self.masks = {}
        self.decrypted = set()
        return Message(
            msg.CONTRIBUTION.name,
            {
                "owner": self.name,
                "values": self.own.encrypt(self.margin),
            },
        )

    @operation
    def cross(self, request: Message) -> Message:
        owner = request["owner"]
        if owner not in self.peers:
            raise ValueError(f"{self.name}: no public key for {owner!r}")
        masked, state = self.peers[owner].masked_cross_term(
            self.block.batch_features(), request["values"]
        )
        self.masks[owner] = state
        return Message(
            msg.CROSS_TERM.name,
            {
                "owner": owner,
                "requester": self.name,
                "values": masked,
            },
        )

    @operation
    def decrypt(self, request: Message) -> Message:
        if request["owner"] != self.name:
            raise ValueError(f"{self.name}: asked to decrypt values under another key")
        requester = request["requester"]
        # Decrypt only what the protocol calls for: one cross term per peer and batch,
        # exactly as wide as that peer's weight block (public); never per-sample vectors.
        if request["values"].shape != (self.widths.get(requester, -1),):
            raise ValueError(f"{self.name}: cross term of {requester!r} has the wrong width")
        if requester in self.decrypted:
            raise ValueError(f"{self.name}: {requester!r} already had a cross term decrypted")
        self.decrypted.add(requester)
        return Message(
            msg.MASKED_VALUES.name,
            {
                "requester": requester,
                "values": self.own.decrypt_masked(request["values"]),
            },
        )

    @operation
    def update(self, request: Message) -> Message:
        owners = request["owners"]
        if sorted(owners) != sorted(self.masks):
            raise ValueError(f"{self.name}: update must carry one cross term per peer")
        values = request["values"]
        terms = [self.peers[o].unmask(_row(values, i), self.masks[o]) for i, o in enumerate(owners)]
        self.block.apply_gradient(self.margin, terms)
        self.masks = {}
        return Message("ack", {})

    @operation
    def epoch_end(self, request: Message) -> Message:
        delta, norm = self.block.end_epoch()
        return Message(msg.WEIGHT_CHANGE.name, {"delta_sq": np.array([delta, norm])})

    @operation
    def finish(self, request: Message) -> Message:
        """Keep the trained weights (and this key pair) as a model shard at the host."""
        self.party.store_model(
            request["model_id"],
            {
                "kind": "lr",
                "coef": self.block.weights.copy(),
                "own_key": self.own,
                "scheme": self.scheme,
                "insecure": self.insecure,
                "n_jobs": self.n_jobs,
            },
        )
        return Message("ack", {})


def _row(values, i: int):
    from ftl.federation.messages import PlainArray

    if isinstance(values, PlainArray):
        return PlainArray(values.values[i])
    return values[i]


@role("lr.predict")
class LogisticHostPredictor:
    """Prediction with a stored host shard: encrypted margins, masked decryption."""

    def __init__(self, party, request: Message):
        if request.type != msg.PREDICT_OPEN.name:
            raise ValueError("lr.predict sessions open with an lr.predict_open message")
        model = party.load_model(request["model_id"])
        self.name = party.name
        self.own = model["own_key"]
        self.coef = model["coef"]
        rows = party.aligned_rows(request["alignment"], request["positions"])
        if (rows < 0).any():
            raise ValueError("prediction rows include rows this host does not have")
        self.features = party.local_features(rows)

    @operation
    def contribution(self, request: Message) -> Message:
        return Message(
            msg.CONTRIBUTION.name,
            {
                "owner": self.name,
                "values": self.own.encrypt(self.features @ self.coef),
            },
        )

    @operation
    def decrypt(self, request: Message) -> Message:
        values = request["values"]
        if values.shape != (self.features.shape[0],):
            raise ValueError("expected one masked margin per prediction row")
        return Message(msg.MASKED_MARGIN_VALUES.name, {"values": self.own.decrypt_masked(values)})
