"""Attack: a PSI peer sends ristretto255 points in a second, non-canonical encoding.

RFC 9496 §4.3.1 makes every group element's encoding unique: the 32 bytes, read
little-endian, must be a field element below ``2**255 - 19``, non-negative, with
bit 255 clear. The libsodium that rbcl bundles masks bit 255 off before decoding,
so ``P`` and ``P`` with bit 255 set decoded to the same point: each party accepted
a second encoding of every point from its peer, and the protocol went on matching
it to the first -- the documented check ("a canonical encoding") was not made, and
anything that compares points by their bytes (duplicate checks, lookups) could be
fooled by a peer choosing which encoding to send. Both roles now refuse such
points on receipt, naming how many there were.

Each test runs a real ``ftl.align`` with one party's messages altered on the way,
as a deviating peer would send them, and returns what the alignment produced.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

import ftl
from ftl.federation import Message, decode, encode

N = 40


def parties() -> tuple[ftl.Party, ftl.Party]:
    guest = ftl.Party("bank", np.zeros((N, 1)), ids=np.arange(N), labels=np.arange(N) % 2)
    host = ftl.Party("shop", np.ones((N, 1)), ids=np.arange(10, 10 + N))
    return guest, host


def set_bit_255(payload: bytes) -> bytes:
    """The same message with bit 255 of every point set: the same group elements,
    each in its second encoding."""
    message = decode(payload)
    points = np.array(message["points"], dtype=np.uint8, copy=True)
    points[:, -1] |= 0x80
    return encode(Message(message.type, {**message.fields, "points": points}))


class Tampered:
    """A party's in-process service whose requests to, or replies from, one
    operation are altered (what the deviating peer sends instead)."""

    def __init__(self, service, op: str, where: str, alter: Callable[[bytes], bytes]):
        self.service, self.op, self.where, self.alter = service, op, where, alter
        self.altered = 0

    def handle(self, session, op, payload, *args, **kwargs):
        if op == self.op and self.where == "request":
            payload, self.altered = self.alter(payload), self.altered + 1
        reply = self.service.handle(session, op, payload, *args, **kwargs)
        if op == self.op and self.where == "reply":
            reply, self.altered = self.alter(reply), self.altered + 1
        return reply

    def __getattr__(self, name):
        return getattr(self.service, name)


def align_with_second_encodings(op: str, where: str) -> tuple[int | None, Exception | None]:
    """Align bank and shop while the messages of ``op`` carry non-canonical points.

    Returns the number of aligned rows (``None`` if refused) and the refusal.
    """
    guest, host = parties()
    tampered = Tampered(host.endpoint, op, where, set_bit_255)
    host._service = tampered  # the endpoint the driver's channel talks to
    try:
        X, _ = ftl.align(guest, host)
    except ValueError as exc:  # MessageError is a ValueError
        assert tampered.altered, "the attack never ran"
        return None, exc
    assert tampered.altered, "the attack never ran"
    return len(X), None


def test_host_refuses_guest_points_in_their_second_encoding():
    # A deviating guest submits a*P(x) with bit 255 set.
    rows, error = align_with_second_encodings("psi.host.submit", "request")
    assert rows is None, f"the host matched {rows} rows from non-canonical points"
    assert "not a canonical encoding" in str(error)
    assert f"{N} of {N} points refused" in str(error)


def test_guest_refuses_host_points_in_their_second_encoding():
    # A deviating host sends b*P(y) with bit 255 set.
    rows, error = align_with_second_encodings("psi.host.own", "reply")
    assert rows is None, f"the guest matched {rows} rows from non-canonical points"
    assert "not a canonical encoding" in str(error)
    assert f"{N} of {N} points refused" in str(error)


def test_the_honest_exchange_still_aligns():
    guest, host = parties()
    X, _ = ftl.align(guest, host)
    assert len(X) == N - 10
