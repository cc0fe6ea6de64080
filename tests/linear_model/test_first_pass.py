"""The first pass at the host's zero start (docs/protocols.md §3.6).

While the host's weights are exactly zero its pieces are the public values at
margin 0: it answers the batch with ``lr.zero_margin`` (no ciphertexts), the
guest forms its own gradient alone and sends its whole residual as one piece
(``lr.residual``). The fit is the one the full form gives; the host accepts the
one-piece form only at its zero margin, and only from a guest that declared it.
"""

from __future__ import annotations

import numpy as np
import pytest

import ftl
from ftl.crypto.arrays import PlainArray
from ftl.data.simulate import simulate_federation
from ftl.exceptions import ProtocolError
from ftl.federation.messages import Message
from ftl.linear_model import guest as guest_role
from ftl.linear_model import host as host_role
from tests.conftest import SMALL_KEY, pooled

LOGISTIC = ftl.FederatedLogisticRegression


@pytest.fixture
def data(breast):
    X, y = breast
    return X[:200], y[:200]


def zero_answers(monkeypatch) -> list:
    """Record the host's decision, batch by batch (True: ``lr.zero_margin``)."""
    real = host_role.LogisticHost._at_zero_start
    seen = []

    def recording(self):
        seen.append(real(self))
        return seen[-1]

    monkeypatch.setattr(host_role.LogisticHost, "_at_zero_start", recording)
    return seen


def full_form(monkeypatch) -> None:
    """The host always sends its pieces (what a host before the zero form does)."""
    monkeypatch.setattr(host_role.LogisticHost, "_at_zero_start", lambda self: False)


def fit_both(monkeypatch, make, X, y):
    """The fit with the zero form, and the same fit with the full form only."""
    with monkeypatch.context() as m:
        seen = zero_answers(m)
        fast = make().fit(X, y)
    with monkeypatch.context() as m:
        full_form(m)
        full = make().fit(X, y)
    return fast, full, seen


def coefficients(est) -> np.ndarray:
    return np.append(np.ravel(est.coef_), np.ravel(est.intercept_))


@pytest.mark.parametrize(
    "make",
    [
        lambda: LOGISTIC(encryption=None, random_state=0, max_iter=5),
        lambda: LOGISTIC(encryption=None, random_state=0, max_iter=3, sigmoid="taylor"),
        lambda: LOGISTIC(encryption=None, random_state=0, max_iter=2, optimizer="adam"),
    ],
    ids=["poly-lbfgs", "taylor-lbfgs", "poly-adam"],
)
def test_plaintext_fit_is_the_full_form_fit(monkeypatch, data, make):
    """Only the first pass (adam: the first batch) is at zero; the weights agree to
    summation order (~1e-12; five L-BFGS iterations amplify it)."""
    fast, full, seen = fit_both(monkeypatch, make, *data)
    assert seen[0] and not any(seen[1:])
    np.testing.assert_allclose(coefficients(fast), coefficients(full), rtol=0, atol=1e-10)


@pytest.mark.parametrize("estimator", ["FederatedLinearRegression", "FederatedPoissonRegressor"])
def test_regression_links_use_it_too(monkeypatch, data, estimator):
    """The identity and log links: their pieces at margin 0 are public too."""
    X, y = data
    y = np.asarray(y, dtype=float) + (1.0 if estimator == "FederatedPoissonRegressor" else 0.0)
    make = lambda: getattr(ftl, estimator)(encryption=None, random_state=0, max_iter=3)  # noqa: E731
    fast, full, seen = fit_both(monkeypatch, make, X, y)
    assert seen[0]
    np.testing.assert_allclose(coefficients(fast), coefficients(full), rtol=0, atol=1e-10)


def test_encrypted_fit_is_the_full_form_fit_to_fixed_point_precision(monkeypatch, data):
    """Both differ from the plaintext fit by ~1e-6 after two L-BFGS iterations (the
    first pass's guest gradient, now in plaintext, has no fixed-point error at all)."""
    make = lambda: LOGISTIC(random_state=0, max_iter=2, **SMALL_KEY)  # noqa: E731
    fast, full, seen = fit_both(monkeypatch, make, *data)
    assert seen[0]
    types = {r.type for r in fast.transcript_}
    assert {"lr.zero_margin", "lr.residual", "lr.contribution"} <= types
    np.testing.assert_allclose(coefficients(fast), coefficients(full), atol=1e-5)


def test_old_guest_gets_the_full_form(monkeypatch, data):
    """A guest that does not declare ``zero_margin_form`` (older versions) never sees
    an ``lr.zero_margin``: its fit is message for message as before."""
    real = host_role.LogisticHost.__init__

    def old_guest_open(self, party, request):
        params = {k: v for k, v in request["params"].items() if k != "zero_margin_form"}
        real(self, party, Message(request.type, {**request.fields, "params": params}))

    monkeypatch.setattr(host_role.LogisticHost, "__init__", old_guest_open)
    seen = zero_answers(monkeypatch)
    clf = LOGISTIC(random_state=0, max_iter=2, **SMALL_KEY).fit(*data)
    assert not any(seen)
    assert not {"lr.zero_margin", "lr.residual"} & {r.type for r in clf.transcript_}


def test_verbose_and_several_hosts_keep_the_full_form(monkeypatch, data):
    """The loss total needs the host's ciphertexts; other hosts need its margin."""
    X, y = data
    seen = zero_answers(monkeypatch)
    LOGISTIC(encryption=None, random_state=0, max_iter=2, verbose=True).fit(X, y)
    three = simulate_federation(pooled(X), y, n_hosts=2)
    kw = dict(encryption=None, random_state=0, max_iter=2, sigmoid="taylor")
    LOGISTIC(simulated_hosts=2, **kw).fit(three, y)
    assert len(seen) > 3 and not any(seen)


def _deviating_guest(monkeypatch) -> None:
    """A guest that sends its one-piece residual at every pass, whatever the host said."""
    monkeypatch.setattr(guest_role.LogisticGuest, "_at_zero_margin", lambda self, c: True)


def test_host_refuses_a_one_piece_residual_off_its_zero_margin(monkeypatch, data):
    """The attack: with the host's check off, a guest's one-piece residual at the
    second pass (host weights no longer zero) is taken, and the host's weights are
    not those of the protocol; with the check on, the host refuses it."""
    honest = LOGISTIC(encryption=None, random_state=0, max_iter=2).fit(*data)
    with monkeypatch.context() as m:
        _deviating_guest(m)
        m.setattr(host_role.LogisticHost, "_check_residual", lambda self, owner: None)
        fooled = LOGISTIC(encryption=None, random_state=0, max_iter=2).fit(*data)
    assert not np.allclose(fooled.coef_, honest.coef_, atol=1e-6)
    _deviating_guest(monkeypatch)
    with pytest.raises((ProtocolError, ValueError), match="one-piece residual"):
        LOGISTIC(encryption=None, random_state=0, max_iter=2).fit(*data)


def test_host_decrypts_nothing_in_a_zero_margin_batch(monkeypatch, data):
    """No ciphertext of the host's is out in that batch: a decryption request then is
    refused (it could only be of an older batch's ciphertexts)."""
    real = guest_role.LogisticGuest._zero_margin_batch

    def ask_decryption(self, u_guest, y, x, weights):
        host = self.hosts[0]
        request = Message(
            "lr.cross_term",
            {
                "owner": host.name,
                "requester": self.name,
                "values": PlainArray(np.zeros(1)),
                "slot_bits": 0,
                "count": self.widths[self.name],
            },
        )
        self.channel.call(host.endpoint, "lr.host.decrypt", request)
        return real(self, u_guest, y, x, weights)

    monkeypatch.setattr(guest_role.LogisticGuest, "_zero_margin_batch", ask_decryption)
    with pytest.raises((ProtocolError, ValueError), match="none of our ciphertexts"):
        LOGISTIC(encryption=None, random_state=0, max_iter=2).fit(*data)
