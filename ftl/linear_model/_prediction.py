"""The guest's side of prediction: its own margin plus each host's, masked on the way."""

from __future__ import annotations

import numpy as np

from ftl.crypto.scheme import column, packing_of, peer_key_from_public
from ftl.federation.channel import Channel
from ftl.federation.messages import Message
from ftl.linear_model import _messages as msg

__all__ = ["predict_margin"]


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
            # best effort: a host that restarted mid-prediction has no session to close,
            # and the error that ended the prediction is the one to show
            try:
                channel.call(h.endpoint, "lr.predict.close", Message("ack", {}))
            except Exception:  # noqa: BLE001
                pass
    return margin
