"""Prediction's errors: the one that ended a prediction is the one raised."""

from __future__ import annotations

import pytest

import ftl
from ftl.exceptions import ProtocolError
from ftl.federation import Channel


def test_a_failed_close_does_not_mask_the_error_that_ended_the_prediction(breast, monkeypatch):
    """A host that restarted mid-prediction refuses the close too (no session): the
    driver shows why the prediction failed, not the close's refusal."""
    X, y = breast
    clf = ftl.FederatedLogisticRegression(encryption=None, random_state=0, max_iter=3).fit(X, y)
    real = Channel.call

    def call(self, endpoint, op, request, origin=None):
        if op == "lr.predict.decrypt":
            raise ProtocolError("the host restarted mid-prediction")
        if op == "lr.predict.close":
            raise ProtocolError("no open lr.predict session; start the fit again")
        return real(self, endpoint, op, request, origin)

    monkeypatch.setattr(Channel, "call", call)
    with pytest.raises(ProtocolError, match="restarted mid-prediction"):
        clf.predict(X)
