"""Attack: the guest uses prediction to decrypt anything under the host's key (issue 13,
item 11).

``lr.predict.decrypt`` decrypts the guest's "masked margins" and returns them.
When it decrypted under the host's *training* key, without limit, a guest could
submit any ciphertext it received in training -- e.g. the host's encrypted clipped
margins ``[[s]]`` of an intermediate L-BFGS pass -- blinded with a mask of its own,
and read the plaintext. Now each prediction session has a fresh key pair, and it
decrypts exactly once, after its own contribution.
"""

from __future__ import annotations

import numpy as np

import ftl
from ftl.crypto.scheme import VALUE_FRAC_BITS, column, peer_key_from_public
from ftl.federation.channel import Channel
from ftl.federation.messages import CiphertextArray, Message, MessageError, decode
from ftl.federation.service import PartyService, ProtocolError

SMALL_KEY = dict(key_size=512, insecure_for_tests=True)
N_ROWS = 60


class Recorder:
    """The guest's end of the wire to the host: it sees every reply the host sends."""

    def __init__(self, inner: PartyService):
        self.inner = inner
        self.name = inner.name
        self.replies: list[tuple[str, Message]] = []

    def handle(self, session, op, payload, *args, **kwargs):
        raw = self.inner.handle(session, op, payload, *args, **kwargs)
        self.replies.append((op, decode(raw)))
        return raw

    def __getattr__(self, name):
        return getattr(self.inner, name)


def trained_federation():
    rng = np.random.default_rng(0)
    ids = np.arange(N_ROWS)
    xg, xh = rng.normal(size=(N_ROWS, 2)), rng.normal(size=(N_ROWS, 3))
    y = (xg[:, 0] + xh[:, 0] > 0).astype(int)
    bank = ftl.Party("bank", xg, ids=ids, labels=y)
    shop = ftl.Party("shop", xh, ids=ids)
    wire = Recorder(PartyService(shop))
    shop._service = wire
    X, y = ftl.align(bank, shop)
    clf = ftl.FederatedLogisticRegression(max_iter=3, random_state=0, **SMALL_KEY).fit(X, y)
    return X, clf, shop, wire


def training_ciphertext(wire: Recorder) -> CiphertextArray:
    """The host's last encrypted clipped margins ``[[s]]`` of training (L-BFGS: every row)."""
    replies = [m for op, m in wire.replies if op == "lr.host.contribution"]
    return column(replies[-1]["values"], 0)


def open_prediction(shop, channel, X, clf) -> Message:
    request = Message(
        "lr.predict_open",
        {
            "model_id": clf.models_[0]["model_id"],
            "public_keys": {},
            "alignment": X.alignment.id,
            "positions": np.asarray(X.positions, dtype=np.int64),
        },
    )
    return channel.call(shop.endpoint, "lr.predict.open", request)


def decrypt_through_prediction(X, clf, shop, stolen: CiphertextArray):
    """The guest blinds a training ciphertext like a masked margin and has the host
    decrypt it in a prediction session; returns what it learns (None if refused)."""
    channel = Channel("bank")
    opened = open_prediction(shop, channel, X, clf)
    try:
        channel.call(shop.endpoint, "lr.predict.contribution", Message("ack", {}))
        public = clf.models_[0]["host_public_keys"]["shop"]
        training_key = peer_key_from_public(
            {k: (int(v) if k in ("n", "hs") else v) for k, v in public.items()},
            "paillier",
            insecure_for_tests=True,
        )
        masked, state = training_key.masked_vector(stolen)
        if opened.type == "lr.opened":  # label it as the session key's, to get past checks
            masked = CiphertextArray(masked.values, opened["public_key"]["key_id"], masked.width)
        request = Message(
            "lr.masked_margin",
            {"values": masked, "slot_bits": state.slot_bits, "count": len(state.masks)},
        )
        try:
            reply = channel.call(shop.endpoint, "lr.predict.decrypt", request)
        except (ValueError, MessageError, ProtocolError):
            return None
        return training_key.unmask(reply["values"], state)
    finally:
        channel.call(shop.endpoint, "lr.predict.close", Message("ack", {}))


def test_a_training_ciphertext_cannot_be_decrypted_through_prediction():
    X, clf, shop, wire = trained_federation()
    stolen = training_ciphertext(wire)
    # what the guest is after (only the test can compute it: the host's training key)
    secret = shop.load_model(clf.models_[0]["model_id"])["own_key"].decrypt_values(
        stolen, VALUE_FRAC_BITS
    )
    assert np.abs(secret.astype(float)).max() > 0.01  # a real, non-zero margin
    learned = decrypt_through_prediction(X, clf, shop, stolen)
    assert learned is None or not np.allclose(learned.astype(float), secret.astype(float))


def test_a_prediction_session_decrypts_once():
    """Its own margins, masked, twice: the second request is refused."""
    X, clf, shop, wire = trained_federation()
    channel = Channel("bank")
    opened = open_prediction(shop, channel, X, clf)
    public = opened["public_key"] if opened.type == "lr.opened" else None
    public = public or clf.models_[0]["host_public_keys"]["shop"]
    key = peer_key_from_public(
        {k: (int(v) if k in ("n", "hs") else v) for k, v in public.items()},
        "paillier",
        insecure_for_tests=True,
    )
    margins = channel.call(shop.endpoint, "lr.predict.contribution", Message("ack", {}))
    answers = 0
    for _ in range(2):
        masked, state = key.masked_vector(column(margins["values"], 0))
        request = Message(
            "lr.masked_margin",
            {"values": masked, "slot_bits": state.slot_bits, "count": len(state.masks)},
        )
        try:
            channel.call(shop.endpoint, "lr.predict.decrypt", request)
            answers += 1
        except ValueError as exc:
            assert "decrypts once" in str(exc)
    channel.call(shop.endpoint, "lr.predict.close", Message("ack", {}))
    assert answers == 1


def test_prediction_uses_a_fresh_key_and_still_matches_training():
    """The fix keeps predictions exact: a fresh key per session, same decision values."""
    X, clf, shop, wire = trained_federation()
    first, second = clf.decision_function(X), clf.decision_function(X)
    np.testing.assert_allclose(first, second, atol=1e-8)
    opened = [m for op, m in wire.replies if op == "lr.predict.open"]
    keys = [m.fields.get("public_key", {}).get("key_id") for m in opened]
    training = clf.models_[0]["host_public_keys"]["shop"]["key_id"]
    assert len(keys) == 2 and len(set(keys)) == 2 and training not in keys
