"""Attack: a host answers the driver's session opening with a weaker key than asked for.

The driver chooses the run's ``key_size`` (3072 bits, say, for data that must stay
confidential for decades) and every host makes its own Paillier key of that size
when the session opens, returning the public key in its reply. A host that makes a
smaller key instead -- 2048 bits, or with the test switch on 512 -- weakens every
value encrypted under it, and the driver used to accept any key of at least 2048
bits (any size at all with ``insecure_for_tests``), so the run silently went on at
the host's strength, not the driver's. The driver now checks each peer key it
receives against its own ``key_size`` and refuses the session.

Each test opens a real session in which the host's own code makes its key at the
size the attacker chose, and records whether the driver went on after the host's
reply.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import pytest

import ftl
from ftl.crypto.scheme import make_own_key, peer_key_from_public, public_key_json
from ftl.federation import Message, decode, encode
from ftl.federation.messages import MessageError


class DriverWentOn(Exception):
    """Raised at the host once the driver used the session after the weak key."""


class WeakKeyHost:
    """The host's in-process service, but the host makes its session key at
    ``bits`` bits whatever the driver asked for (its own code does the rest)."""

    def __init__(self, service, open_op: str, bits: int):
        self.service, self.open_op, self.bits = service, open_op, bits
        self.opened = False
        self.after_open: list[str] = []

    def handle(self, session, op, payload, *args, **kwargs):
        if op == self.open_op:
            payload = self._weaken(payload)
            reply = self.service.handle(session, op, payload, *args, **kwargs)
            self.opened = True
            return reply
        if self.opened and not op.endswith(".close"):
            self.after_open.append(op)
            raise DriverWentOn(op)  # enough to know: the driver accepted the weak key
        return self.service.handle(session, op, payload, *args, **kwargs)

    def _weaken(self, payload: bytes) -> bytes:
        message = decode(payload)
        params = {**message["params"], "key_size": self.bits}
        return encode(Message(message.type, {**message.fields, "params": params}))

    def __getattr__(self, name):
        return getattr(self.service, name)


def run_against_weak_host(
    host: ftl.Party, open_op: str, bits: int, fit: Callable[[], object]
) -> tuple[list[str], Exception | None]:
    """Run ``fit`` while the host makes ``bits``-bit keys; return the operations the
    driver sent after the host's key arrived, and the driver's error."""
    weak = WeakKeyHost(host.endpoint, open_op, bits)
    host._service = weak  # the endpoint the driver's channel talks to
    try:
        fit()
    except Exception as exc:  # noqa: BLE001 - inspected by the caller
        error = exc
    else:
        error = None
    assert weak.opened, "the host never opened a session"
    return weak.after_open, error


def toy_parties(n: int = 60, seed: int = 0) -> tuple[ftl.Party, ftl.Party]:
    rng = np.random.default_rng(seed)
    x_guest, x_host = rng.normal(size=(n, 2)), rng.normal(size=(n, 2))
    y = (x_guest[:, 0] + x_host[:, 0] > 0).astype(int)
    guest = ftl.Party("bank", x_guest, ids=np.arange(n), labels=y)
    return guest, ftl.Party("shop", x_host, ids=np.arange(n))


def test_lr_driver_refuses_a_host_key_below_its_key_size():
    # The driver asks for 3072 bits (no test switch); the host makes 2048.
    guest, host = toy_parties()
    X, y = ftl.align(guest, host)
    clf = ftl.FederatedLogisticRegression(key_size=3072, max_iter=1, random_state=0)
    went_on, error = run_against_weak_host(host, "lr.host.open", 2048, lambda: clf.fit(X, y))
    assert went_on == [], f"the driver went on with the host's 2048-bit key: {went_on}"
    assert isinstance(error, ftl.PolicyError)
    assert "2048 bits" in str(error) and "3072" in str(error)


def test_lr_driver_refuses_a_smaller_host_key_also_with_the_test_switch():
    guest, host = toy_parties(seed=1)
    X, y = ftl.align(guest, host)
    clf = ftl.FederatedLogisticRegression(
        key_size=1024, insecure_for_tests=True, max_iter=1, random_state=0
    )
    went_on, error = run_against_weak_host(host, "lr.host.open", 512, lambda: clf.fit(X, y))
    assert went_on == [], f"the driver went on with the host's 512-bit key: {went_on}"
    assert isinstance(error, ftl.PolicyError) and "512 bits" in str(error)


def test_transfer_source_refuses_a_smaller_target_key():
    source, target = toy_parties(seed=2)
    X, y = ftl.align(source, target, how="left")
    clf = ftl.FederatedTransferClassifier(
        key_size=1024,
        insecure_for_tests=True,
        max_iter=1,
        n_components=4,
        hidden_layer_sizes=(4,),
        pretrain_epochs=1,
        random_state=0,
    )
    went_on, error = run_against_weak_host(target, "ftl.target.open", 512, lambda: clf.fit(X, y))
    assert went_on == [], f"the source went on with the target's 512-bit key: {went_on}"
    assert isinstance(error, ftl.PolicyError) and "512 bits" in str(error)


@pytest.mark.parametrize(
    "field, value",
    [("n", 2.0**1000), ("n", True), ("n", "0x1f"), ("n", " 12"), ("hs", 3.0), ("n", None)],
)
def test_a_key_whose_fields_are_not_integers_is_refused(field, value):
    own = make_own_key("paillier", 512, True)
    public = {**public_key_json(own), field: value}
    with pytest.raises(MessageError, match="not an integer"):
        peer_key_from_public(public, "paillier", True)
