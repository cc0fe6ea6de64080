"""FederatedTransferClassifier: the secure protocol against its pooled reference,
encrypted against plaintext, accuracy against honest baselines, and the transcript."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from sklearn.exceptions import ConvergenceWarning
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import roc_auc_score
from sklearn.model_selection import GridSearchCV, cross_val_score

import ftl
from ftl.federation.channel import Channel
from ftl.federation.transcript import Transcript
from ftl.transfer._objective import label_coding, reference_gradients
from ftl.transfer.source import TransferSource
from tests.conftest import SMALL_KEY

FAST = dict(n_components=8, hidden_layer_sizes=(8,), pretrain_epochs=5)


def _by_id(X, y):
    order = np.argsort(X.ids)  # PSI's own order is random by design
    return X[order], y[order]


@pytest.fixture(scope="module")
def breast_transfer():
    data = ftl.datasets.load_breast_transfer()
    X, y = _by_id(*ftl.align(data.source, data.target, how="left"))
    return data, X, y


def _target_only(data):
    ids = data.target_only_ids
    return data.target.select(ids), data.target_labels.loc[ids].to_numpy()


def _opened_source(data, X, codes, n_classes, params):
    """A source driver with its target session open, for step-by-step protocol tests."""
    src = TransferSource(
        data.source,
        data.target,
        X.alignment.id,
        X.positions,
        X.alignment.overlap[X.positions],
        codes,
        n_classes,
        params,
        Channel("hospital", Transcript()),
        np.random.default_rng(0),
    )
    src._open_sessions()
    return src


def _params(encryption, **kw):
    clf = ftl.FederatedTransferClassifier(encryption=encryption, **{**FAST, **kw})
    return clf._params()


@pytest.mark.parametrize(
    "encryption, kw, atol",
    [(None, {}, 1e-10), ("paillier", SMALL_KEY, 2e-4), (None, {"gamma": 0.3}, 1e-10)],
)
@pytest.mark.parametrize("multiclass", [False, True])
def test_secure_gradients_equal_pooled_reference(breast_transfer, encryption, kw, atol, multiclass):
    """One protocol step with SGD (lr = 1) moves each party's output layer by exactly
    minus the gradient of the pooled Taylor objective."""
    data, X, y = breast_transfer
    overlap = X.alignment.overlap[X.positions]
    codes = np.unique(y, return_inverse=True)[1]
    n_classes = 2
    if multiclass:  # three classes: benign split by a source feature's sign
        src_rows = data.source.aligned_rows(X.alignment.id, X.positions)
        codes = codes + (data.source.local_features(src_rows)[:, 0] > 0.5) * (codes == 1)
        n_classes = 3
    params = _params(
        encryption, optimizer="sgd", learning_rate=1.0, alpha=0.01, gamma_warmup=0, **kw
    )
    src = _opened_source(data, X, codes, n_classes, params)
    try:
        (target,) = data.target.endpoint._sessions.values()
        w_a, w_b = src.w.copy(), target.w.copy()
        batch = np.arange(0, overlap.sum(), 2)
        src._batch(batch)
    finally:
        data.target.endpoint._sessions.clear()
    coding = label_coding(codes, n_classes)
    rows = src.overlap_idx[batch]
    _, g_a, g_b = reference_gradients(
        w_a,
        w_b,
        src.h,
        src.h[rows],
        target.h[batch],
        coding,
        coding.beta[rows],
        params["gamma"],
        params["alpha"],
    )
    np.testing.assert_allclose(w_a - src.w, g_a, atol=atol)
    np.testing.assert_allclose(w_b - target.w, g_b, atol=atol)


def test_encrypted_fit_equals_plaintext_fit(breast_transfer):
    data, X, y = breast_transfer
    Xt, _ = _target_only(data)
    plain = ftl.FederatedTransferClassifier(encryption=None, random_state=0, max_iter=3, **FAST)
    enc = ftl.FederatedTransferClassifier(random_state=0, max_iter=3, **FAST, **SMALL_KEY)
    plain.fit(X, y)
    enc.fit(X, y)
    np.testing.assert_allclose(enc.prototypes_, plain.prototypes_, atol=1e-3)
    np.testing.assert_allclose(enc.decision_function(Xt), plain.decision_function(Xt), atol=5e-3)


def test_auc_on_target_only_customers_beats_non_private_baseline(breast_transfer):
    """(a) >= (c) - 0.01: (c) is what a user would build without FTL -- sklearn on
    the target's features of the shared rows, with the source's labels handed over."""
    data, X, y = breast_transfer
    Xt, yt = _target_only(data)
    clf = ftl.FederatedTransferClassifier(encryption=None, random_state=0).fit(X, y)
    auc = roc_auc_score(yt, clf.predict_proba(Xt)[:, 1])
    ov = data.overlap_ids
    xb = data.target.local_features(data.target.rows_for_ids(ov))
    yb = data.target_labels.loc[ov].to_numpy()
    base = LogisticRegression(max_iter=1000).fit(xb, yb)
    auc_c = roc_auc_score(yt, base.predict_proba(data.target.local_features(Xt.rows))[:, 1])
    assert auc >= auc_c - 0.01, (auc, auc_c)
    assert set(clf.predict(Xt)) <= set(clf.classes_)
    losses = [h["source_side_loss"] for h in clf.history_]
    assert losses[-1] < losses[0] and all(h["seconds"] > 0 for h in clf.history_)


def test_transcript_shows_no_plaintext_per_sample_value(breast_transfer):
    data, X, y = breast_transfer
    Xt, _ = _target_only(data)
    clf = ftl.FederatedTransferClassifier(random_state=0, max_iter=2, **FAST, **SMALL_KEY)
    clf.fit(X, y)
    clf.predict_proba(Xt)
    clf.predict_proba(X[:40])  # aligned rows: shared ones through the target
    owner = {}
    for rec in clf.transcript_:
        for f in rec.fields:
            if f.key_id and rec.type in (
                "ftl.source_terms",
                "ftl.target_terms",
                "ftl.predict_open",
            ):
                owner.setdefault(f.key_id, rec.sender)
    assert set(owner.values()) == {"hospital", "lab"}
    for rec in clf.transcript_:
        assert rec.sender != rec.receiver
        for f in rec.fields:
            assert f.kind != "plaintext", (rec.type, f.name)
            if f.per_sample:
                assert f.kind == "ciphertext", (rec.type, f.name)
                if rec.type == "ftl.scores":
                    # the driver's own result: the scores it asked for, under its key
                    assert rec.receiver == "hospital" and owner[f.key_id] == "hospital"
                else:  # never sent back to the key owner
                    assert owner[f.key_id] != rec.receiver, (rec.type, f.name)
            if f.kind == "masked":
                assert not f.per_sample
    to_target = {r.type for r in clf.transcript_ if r.receiver == "lab"}
    assert to_target <= {
        "ftl.open",
        "ftl.source_terms",
        "ftl.exchange",
        "ftl.epoch_end",
        "ftl.finish",
        "ack",
        "ftl.predict_open",
    }
    # the only per-row public field reaching the target is which shared rows are used
    for rec in clf.transcript_:
        if rec.receiver == "lab":
            for f in rec.fields:
                if f.kind == "public" and f.shape and f.shape[0] > 30:
                    assert f.name in ("positions", "batch"), (rec.type, f.name)


def test_plaintext_mode_is_recorded_as_plaintext(breast_transfer):
    data, X, y = breast_transfer
    clf = ftl.FederatedTransferClassifier(encryption=None, max_iter=1, **FAST).fit(X, y)
    kinds = {f.kind for r in clf.transcript_ for f in r.fields}
    assert "plaintext" in kinds and "ciphertext" not in kinds


def test_real_key_size_fit_and_predict(breast_transfer):
    data, X, y = breast_transfer
    Xt, _ = _target_only(data)
    kw = dict(random_state=0, max_iter=1, n_components=4, hidden_layer_sizes=(), n_jobs=2)
    enc = ftl.FederatedTransferClassifier(**kw).fit(X, y)
    plain = ftl.FederatedTransferClassifier(encryption=None, **kw).fit(X, y)
    np.testing.assert_allclose(enc.decision_function(Xt), plain.decision_function(Xt), atol=1e-3)
    terms = [r for r in enc.transcript_ if r.type == "ftl.source_terms"]
    for rec in terms:  # 2048-bit keys: 512-byte ciphertexts on the wire
        (rows,) = [f for f in rec.fields if f.name == "rows"]
        assert rows.kind == "ciphertext" and rec.nbytes >= 512 * rows.shape[0]


def test_multiclass_prototypes_on_vehicle():
    guest, host = ftl.datasets.load_vehicle()
    X, y = _by_id(*ftl.align(guest, host))
    rng = np.random.default_rng(0)
    test = rng.random(len(y)) < 0.3
    clf = ftl.FederatedTransferClassifier(encryption=None, random_state=0)
    clf.fit(X[~test], y[~test])
    assert clf.prototypes_.shape == (4, 32) and len(clf.classes_) == 4
    proba = clf.predict_proba(X[test])
    np.testing.assert_allclose(proba.sum(axis=1), 1.0)
    # chance 0.25; sklearn LogisticRegression on the target's 9 features: 0.69
    assert (clf.predict(X[test]) == y[test]).mean() > 0.6


def test_multiclass_encrypted_equals_plaintext():
    guest, host = ftl.datasets.load_vehicle()
    X, y = _by_id(*ftl.align(guest, host))
    X, y = X[:120], y[:120]
    plain = ftl.FederatedTransferClassifier(encryption=None, random_state=0, max_iter=2, **FAST)
    enc = ftl.FederatedTransferClassifier(random_state=0, max_iter=2, **FAST, **SMALL_KEY)
    np.testing.assert_allclose(
        enc.fit(X, y).decision_function(X), plain.fit(X, y).decision_function(X), atol=5e-3
    )


def test_source_rows_are_scored_locally_and_shared_rows_securely(breast_transfer):
    data, X, y = breast_transfer
    clf = ftl.FederatedTransferClassifier(encryption=None, random_state=0, **FAST).fit(X, y)
    overlap = X.alignment.overlap[X.positions]
    n_before = len(clf.transcript_)
    scores = clf.decision_function(X)
    assert len(clf.transcript_) > n_before  # shared rows went to the target
    src_only = data.source.select(X.ids[~overlap])
    np.testing.assert_allclose(clf.decision_function(src_only), scores[~overlap])
    shared = data.target.select(X.ids[overlap])
    np.testing.assert_allclose(clf.decision_function(shared), scores[overlap])


def test_cross_val_score_and_grid_search_on_handles(breast_transfer):
    data, X, y = breast_transfer
    clf = ftl.FederatedTransferClassifier(encryption=None, random_state=0, **FAST)
    scores = cross_val_score(clf, X, y, cv=3, scoring="roc_auc")
    assert scores.shape == (3,) and scores.mean() > 0.9
    grid = GridSearchCV(clf, {"gamma": [0.1, 1.0]}, cv=2, scoring="roc_auc").fit(X, y)
    assert grid.best_params_["gamma"] in (0.1, 1.0)


def test_plain_array_is_a_simulated_federation():
    rng = np.random.RandomState(0)
    x = rng.normal(size=(80, 4))
    y = (x[:, 2] + x[:, 3] > 0).astype(int)  # the simulated target's columns
    clf = ftl.FederatedTransferClassifier(encryption=None, random_state=0, gamma=0.1)
    with pytest.warns(ConvergenceWarning, match="little signal"):  # the source has none
        clf.fit(x, y)
    assert clf.score(x, y) > 0.8  # shared rows are scored from the target's features
    with pytest.raises(ValueError, match="expecting 4 features"):
        clf.predict(x[:, :3])


def test_collapsed_representations_are_reported():
    rng = np.random.RandomState(0)
    x = rng.normal(size=(80, 4))
    y = (x[:, 0] + x[:, 2] + x[:, 3] > 0).astype(int)
    clf = ftl.FederatedTransferClassifier(encryption=None, random_state=0, gamma=5.0)
    with pytest.warns(ConvergenceWarning, match="collapsed"):  # both shrink to zero
        clf.fit(x, y)


def test_bad_inputs_give_clear_errors(breast_transfer):
    data, X, y = breast_transfer
    overlap = X.alignment.overlap[X.positions]
    clf = ftl.FederatedTransferClassifier(encryption=None, max_iter=1, **FAST)
    with pytest.raises(ValueError, match="none of the training rows is shared"):
        clf.fit(X[~overlap], y[~overlap])
    with pytest.raises(ValueError, match="2 classes"):
        clf.fit(X, np.zeros(len(y)))
    with pytest.raises(ValueError, match="1-d with"):
        clf.fit(X, y[:-1])
    with pytest.raises(ValueError, match="minimum 2048"):
        ftl.FederatedTransferClassifier(key_size=1024).fit(X, y)
    clf.fit(X, y)
    other = ftl.Party("other", pd.DataFrame({"id": [1, 2], "f": [0.0, 1.0]}), id_column="id")
    with pytest.raises(ValueError, match="fitted over"):
        clf.predict(other.select())
    with pytest.raises(ValueError, match="aligned data handle"):
        clf.predict(np.zeros((3, X.shape[1])))


def test_tampered_slot_width_is_refused(breast_transfer, monkeypatch):
    """The source decrypts only gradients at the public slot width (never per-row values)."""
    from ftl.crypto import packed

    data, X, y = breast_transfer
    real = packed.slot_bits
    calls = {"n": 0}

    def wide_in_target(n_rows, dim):
        import inspect

        caller = inspect.stack()[1].function
        return real(n_rows, dim) + (8 if caller == "terms" else 0)

    monkeypatch.setattr(packed, "slot_bits", wide_in_target)
    clf = ftl.FederatedTransferClassifier(max_iter=1, **FAST, **SMALL_KEY)
    with pytest.raises(ValueError, match="slot width"):
        clf.fit(X, y)
    assert data.target.endpoint.open_sessions == 0
    del calls


def test_target_that_disappears_mid_fit_gives_clear_error_and_frees_session(breast_transfer):
    from ftl.federation import PartyService, PartyUnavailableError
    from tests.linear_model.test_logistic import _DiesAfter

    data, X, y = breast_transfer
    service = PartyService(data.target)
    data.target._service = _DiesAfter(service, 5)
    clf = ftl.FederatedTransferClassifier(encryption=None, random_state=0, **FAST)
    try:
        with pytest.raises(PartyUnavailableError, match="lab.*did not answer"):
            clf.fit(X, y)
        assert service.open_sessions == 0
        assert not hasattr(clf, "prototypes_")
    finally:
        data.target._service = service  # back online: the next fit works
    assert clf.fit(X, y).n_iter_ >= 1


def test_target_refuses_malformed_batches(breast_transfer):
    from ftl.federation.messages import Message, PlainArray
    from ftl.transfer import _messages as msg

    data, X, y = breast_transfer
    codes = np.unique(y, return_inverse=True)[1]
    src = _opened_source(data, X, codes, 2, _params(None))
    channel = src.channel
    d = FAST["n_components"]
    try:
        for batch, rows, err in [
            (np.array([0, 0]), 2, "repeats"),
            (np.array([0, 10_000]), 2, "out of range"),
            (np.array([0, 1]), 3, "do not match"),
        ]:
            request = Message(
                msg.SOURCE_TERMS.name,
                {
                    "batch": batch,
                    "rows": PlainArray(np.zeros((rows, d))),
                    "matrix": PlainArray(np.zeros((d, d))),
                },
            )
            with pytest.raises(ValueError, match=err):
                channel.call(data.target.endpoint, "ftl.target.terms", request)
        with pytest.raises(ValueError, match="exchange before terms"):
            src.channel.call(
                data.target.endpoint,
                "ftl.target.exchange",
                Message(
                    msg.EXCHANGE.name,
                    {
                        "decrypted": PlainArray(np.zeros((d, 9))),
                        "gradient": PlainArray(np.zeros((d, 9))),
                        "slot_bits": 0,
                    },
                ),
            )
    finally:
        data.target.endpoint._sessions.clear()


def test_too_many_classes_for_packed_scores_is_refused_before_training():
    rng = np.random.RandomState(0)
    x = rng.normal(size=(60, 4))
    y = np.arange(60) % 6  # 6 classes; a 512-bit key holds 4 scores per ciphertext
    clf = ftl.FederatedTransferClassifier(random_state=0, **FAST, **SMALL_KEY)
    with pytest.raises(ValueError, match="6 classes need 6 scores"):
        clf.fit(x, y)


def test_batches_too_small_to_stay_private_are_refused(breast_transfer):
    data, X, y = breast_transfer
    overlap = X.alignment.overlap[X.positions]
    keep = ~overlap | (np.cumsum(overlap) <= 18)  # 18 shared rows, widths 9 -> need 19
    clf = ftl.FederatedTransferClassifier(random_state=0, max_iter=1, **FAST, **SMALL_KEY)
    with pytest.raises(ValueError, match="too few for a private fit"):
        clf.fit(X[keep], y[keep])
    # a small batch_size is raised to the private minimum, never below it
    clf.set_params(batch_size=4).fit(X, y)
    sizes = [r.fields for r in clf.transcript_ if r.type == "ftl.source_terms"]
    assert all(dict((f.name, f.shape) for f in fs)["rows"][0] >= 19 for fs in sizes)


@pytest.mark.parametrize("n_classes", [2, 4])
def test_exact_loss_slope_and_taylor_agree_near_zero(n_classes):
    """The Taylor form is the exact loss's expansion at z = 0: same value and slope
    there (so the benchmark's exact-loss comparison is the right one)."""
    from ftl.transfer._objective import exact_loss_and_slope, taylor_loss

    rng = np.random.default_rng(0)
    coding = label_coding(rng.integers(0, n_classes, 30), n_classes)
    z = 1e-3 * rng.normal(size=(30, coding.width))
    exact, slope = exact_loss_and_slope(z, coding.beta, coding.Q)
    taylor = taylor_loss(z, coding.beta, coding.Q, coding.constant)
    np.testing.assert_allclose(exact, taylor, atol=1e-8)
    np.testing.assert_allclose(slope, z @ coding.Q.T - coding.beta, atol=1e-6)


def test_unsettled_training_is_reported(breast_transfer):
    data, X, y = breast_transfer
    clf = ftl.FederatedTransferClassifier(encryption=None, random_state=0, max_iter=1)
    with pytest.warns(ConvergenceWarning, match="not settled"):
        clf.fit(X, y)
