"""Packed residual pieces in the linear protocol (``ftl.linear_model._pieces``).

The packed layout changes how many ciphertexts cross, never what is computed:
a fit with packed pieces is bit for bit the fit with one ciphertext per piece
(the cross terms are the same integers), with fewer ciphertexts in its transcript.
"""

from __future__ import annotations

import numpy as np
import pytest

import ftl
from ftl.crypto import diagonal
from ftl.linear_model import _pieces

#: Large enough for two pieces per ciphertext (a 512-bit key holds one).
KEY = dict(key_size=1024, insecure_for_tests=True)


def _separate(monkeypatch):
    monkeypatch.setattr(_pieces, "packs", lambda key, n_pieces, n_train: False)


def _contribution_widths(est) -> dict:
    """Ciphertexts per row of each party's lr.contribution."""
    widths = {}
    for rec in est.transcript_:
        if rec.type == "lr.contribution":
            (values,) = [f for f in rec.fields if f.name == "values"]
            widths[rec.sender] = values.shape[1]
    return widths


def test_packed_pieces_give_the_fit_of_separate_pieces_bit_for_bit(breast, monkeypatch):
    X, y = breast
    Xs, ys = X[:160], y[:160]
    kw = dict(random_state=0, max_iter=3, verbose=True, **KEY)
    packed = ftl.FederatedLogisticRegression(**kw).fit(Xs, ys)
    with monkeypatch.context() as m:
        _separate(m)
        separate = ftl.FederatedLogisticRegression(**kw).fit(Xs, ys)
    np.testing.assert_array_equal(packed.coef_, separate.coef_)
    np.testing.assert_array_equal(packed.intercept_, separate.intercept_)
    # the verbose run's secure training loss goes through the packed layout too
    losses = [[h.get("loss") for h in run[0]] for run in (packed.history_, separate.history_)]
    assert losses[0] == losses[1] and any(v is not None for v in losses[0])
    # K = 4 host pieces and K + 1 = 5 guest coefficients: 1024-bit keys hold 2 or 3
    width = diagonal.slot_bits(len(ys), 5)
    size = diagonal.group_size(1024, width)
    assert size >= 2
    got, before = _contribution_widths(packed), _contribution_widths(separate)
    assert sorted(before.values()) == [4, 5]
    assert all(got[p] == -(-before[p] // size) < before[p] for p in got)


def test_packed_poisson_guest_pieces_give_the_same_fit():
    """The log link's guest encrypts two pieces (``-y`` and ``exp(u_G)``)."""
    X, y = ftl.align(*ftl.datasets.load_dvisits(), order="id")
    Xs, ys = X[:150], y[:150]
    kw = dict(max_iter=3, **KEY)
    packed = ftl.FederatedPoissonRegressor(**kw).fit(Xs, ys)
    with pytest.MonkeyPatch.context() as m:
        _separate(m)
        separate = ftl.FederatedPoissonRegressor(**kw).fit(Xs, ys)
    np.testing.assert_array_equal(packed.coef_, separate.coef_)
    assert _contribution_widths(separate)[X.alignment.guest.name] == 2
    assert _contribution_widths(packed)[X.alignment.guest.name] == 1


def test_the_host_refuses_a_diagonal_of_another_slot_width(breast, monkeypatch):
    """A deviating guest declaring wider slots (to move more of the host's pieces into
    the slot it gets back) is refused by the host's own layout."""
    X, y = breast
    real = diagonal.mask_diagonal

    def wider(peer, totals, rows, n_pieces):
        masked, state = real(peer, totals, rows, n_pieces)
        state.slot_bits += 16
        return masked, state

    monkeypatch.setattr(diagonal, "mask_diagonal", wider)
    with pytest.raises(Exception, match="slots; this layout has"):
        ftl.FederatedLogisticRegression(random_state=0, max_iter=1, **KEY).fit(X[:160], y[:160])
