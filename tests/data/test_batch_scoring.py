"""Batch prediction in batches of rows, resumed after a crash from the guest's checkpoint.

Each estimator family is interrupted at random host calls in a bounded loop -- the
driver dying (a ``BaseException``, as a killed process stops) or a host failing
(``PartyUnavailableError``) -- and called again after each interruption; the last
call must return what an uninterrupted call returns (bit-identical in plaintext mode,
to fixed-point precision encrypted). A served host killed between batches:
tests/data/test_remote_batch_scoring.py.
"""

from __future__ import annotations

import hashlib
import json
import warnings
from dataclasses import replace

import numpy as np
import pytest
from sklearn.exceptions import ConvergenceWarning

import ftl
from ftl.data.batch_scoring import batch_bounds, score_in_batches
from ftl.exceptions import CheckpointError, PartyUnavailableError, PolicyError
from ftl.federation import Channel, checkpoints
from ftl.federation.budget import BudgetLimits, HostGuard
from tests.conftest import SMALL_KEY, aligned_by_id

#: Interruptions per test (each followed by a call that resumes).
KILLS = 4


class DriverKilled(BaseException):
    """The driver's process dies (not an ``Exception``: nothing catches it)."""


# -- the helper on its own -----------------------------------------------------------------
@pytest.mark.parametrize("n_rows, batch_rows", [(100, 30), (99, 33), (20, 50), (7, 1), (5, None)])
def test_batches_cover_every_row_once_and_none_is_shorter_than_asked(n_rows, batch_rows):
    bounds = batch_bounds(n_rows, batch_rows)
    assert bounds[0][0] == 0 and bounds[-1][1] == n_rows
    assert all(a == b for (_, a), (b, _) in zip(bounds[:-1], bounds[1:], strict=True))
    sizes = [b - a for a, b in bounds]
    assert min(sizes) >= min(n_rows, batch_rows or n_rows)
    assert max(sizes) - min(sizes) <= 1


@pytest.mark.parametrize("bad", [0, -3, 2.5, True, "10"])
def test_batch_rows_must_be_a_positive_integer(bad):
    with pytest.raises(ValueError, match="predict_batch_rows"):
        batch_bounds(10, bad)


def scores_of(rows: slice) -> np.ndarray:
    """Deterministic 2-column scores of rows (a stand-in for a prediction request)."""
    r = np.arange(rows.start, rows.stop, dtype=float)
    return np.column_stack([np.sin(r) / 3, np.cos(r) * 1e-7])


RUN = {"protocol": "test", "model": {"w": np.arange(3.0)}, "rows": {"positions": "p"}}


def crash_at(count: int):
    """A scoring function that scores ``count`` batches, then the driver dies."""
    seen = []

    def score(rows: slice) -> np.ndarray:
        if len(seen) == count:
            raise DriverKilled
        seen.append((rows.start, rows.stop))
        return scores_of(rows)

    return score, seen


def test_a_resumed_run_scores_only_the_missing_batches(tmp_path, caplog):
    rng = np.random.default_rng(0)
    reference = score_in_batches(100, scores_of, RUN, batch_rows=10)
    scored = []
    for _ in range(KILLS):  # each run dies after 0 to 2 more batches
        score, seen = crash_at(int(rng.integers(0, 3)))
        with pytest.raises(DriverKilled):
            score_in_batches(100, score, RUN, batch_rows=10, checkpoint_dir=tmp_path)
        scored += seen
    with caplog.at_level("WARNING", logger="ftl.checkpoint"):
        score, seen = crash_at(-1)
        result = score_in_batches(100, score, RUN, batch_rows=10, checkpoint_dir=tmp_path)
    np.testing.assert_array_equal(result, reference)
    assert len(scored) == len(set(scored)) and not set(seen) & set(scored)  # each batch once
    assert len(scored) + len(seen) == 10
    assert f"({len(scored)} of 10 batches done)" in caplog.text
    assert not list(tmp_path.iterdir())  # the finished run keeps nothing


def kept_files(folder, run=RUN, batches=2):
    """Interrupt a run after ``batches`` batches; its kept files."""
    score, _ = crash_at(batches)
    with pytest.raises(DriverKilled):
        score_in_batches(100, score, run, batch_rows=10, checkpoint_dir=folder)
    (run_folder,) = folder.glob("scores-*")
    return run_folder, sorted(run_folder.glob("*.json"))


def test_kept_scores_are_private_files(tmp_path):
    run_folder, files = kept_files(tmp_path)
    assert [f.name for f in files] == ["0.json", "1.json"]
    assert run_folder.stat().st_mode & 0o777 == 0o700
    assert all(f.stat().st_mode & 0o777 == 0o600 for f in files)


def edit_first_score(path, value: float, matching_digest: bool = False) -> None:
    """Edit the first score kept in ``path``; with ``matching_digest``, as someone who
    may write the folder could, also write the digest of the edited content."""
    envelope = json.loads(path.read_text())
    envelope["body"]["scores"]["__ndarray__"]["data"][0] = value
    if matching_digest:
        del envelope["digest"]
        envelope["digest"] = hashlib.sha256(checkpoints._dumps(envelope)).hexdigest()
    path.write_text(json.dumps(envelope))


def test_an_edited_score_is_refused_by_the_digest(tmp_path):
    _, files = kept_files(tmp_path)
    edit_first_score(files[1], 0.999)
    with pytest.raises(CheckpointError, match="1.json is corrupted or was modified"):
        score_in_batches(100, scores_of, RUN, batch_rows=10, checkpoint_dir=tmp_path)


def test_without_the_digest_check_the_edit_would_be_a_prediction(tmp_path):
    """The same edit with a matching digest (the check defeated) comes back as the
    row's score: the digest is what refuses an edit, and the folder's permissions
    (0700, files 0600) are what keep others from writing one (docs)."""
    _, files = kept_files(tmp_path)
    edit_first_score(files[1], 0.999, matching_digest=True)
    result = score_in_batches(100, scores_of, RUN, batch_rows=10, checkpoint_dir=tmp_path)
    assert result[10, 0] == 0.999 and result[11, 0] == scores_of(slice(11, 12))[0, 0]


def test_a_batch_file_renamed_or_from_another_run_is_refused(tmp_path):
    run_folder, files = kept_files(tmp_path)
    files[0].rename(run_folder / "5.json")  # a valid digest, but batch 0's scores
    with pytest.raises(CheckpointError, match="does not hold the scores of batch 5"):
        score_in_batches(100, scores_of, RUN, batch_rows=10, checkpoint_dir=tmp_path)
    other = {**RUN, "rows": {"positions": "q"}}
    other_folder, _ = kept_files(tmp_path / "other", other, batches=1)
    (run_folder / "1.json").replace(other_folder / "1.json")  # the other run's batch 1
    with pytest.raises(CheckpointError, match="belongs to another run"):
        score_in_batches(100, scores_of, other, batch_rows=10, checkpoint_dir=tmp_path / "other")


def test_other_models_rows_or_batches_start_afresh(tmp_path):
    kept_files(tmp_path)
    for run, batch_rows in [({**RUN, "model": {"w": np.ones(3)}}, 10), (RUN, 20)]:
        calls = []

        def score(rows, calls=calls):
            calls.append(rows)
            return scores_of(rows)

        score_in_batches(100, score, run, batch_rows=batch_rows, checkpoint_dir=tmp_path)
        assert len(calls) == 100 // batch_rows
    assert len(list(tmp_path.glob("scores-*"))) == 1  # the interrupted run's files stay


# -- the estimators ------------------------------------------------------------------------
def interrupt_and_resume(monkeypatch, predict, prefix: str, seed: int) -> np.ndarray:
    """Call ``predict()`` (which keeps a checkpoint) until it returns: the first
    :data:`KILLS` calls are cut short at a random one of the calls still to make of
    operations starting with ``prefix`` -- the driver dies, or the host fails -- and
    each next call resumes. The last call's result."""
    from ftl.data import batch_scoring

    rng = np.random.default_rng(seed)
    real_call, real_write = Channel.call, batch_scoring.write_checkpoint
    counter = {"calls": 0, "at": 0}
    done_at: list[int] = []  # calls made when each batch was kept (uninterrupted)

    def call(self, endpoint, op, request, origin=None):
        if op.startswith(prefix) and not op.endswith(".close"):  # a close may fail quietly
            counter["calls"] += 1
            if counter["calls"] == counter["at"]:
                if counter["at"] % 2:
                    raise DriverKilled
                raise PartyUnavailableError(f"{endpoint.name!r} was killed")
        return real_call(self, endpoint, op, request, origin)

    def write(path, *args):
        done_at.append(counter["calls"])
        return real_write(path, *args)

    monkeypatch.setattr(Channel, "call", call)
    with monkeypatch.context() as patch:
        patch.setattr(batch_scoring, "write_checkpoint", write)
        predict()  # where the batches of an uninterrupted run end
    kept = 0
    for _ in range(KILLS):
        base = done_at[kept - 1] if kept else 0  # calls of the batches kept so far
        at = int(rng.integers(1, done_at[-1] - base + 1))
        counter.update(calls=0, at=at)
        with pytest.raises((DriverKilled, PartyUnavailableError)):
            predict()
        kept += sum(1 for b in done_at[kept:] if b - base < at)
    counter.update(calls=0, at=0)
    result = predict()
    # the last call made only the calls of the batches not kept, and some were kept
    assert counter["calls"] == done_at[-1] - (done_at[kept - 1] if kept else 0)
    assert kept > 0
    return result


@pytest.fixture(scope="module")
def breast():
    return aligned_by_id(*ftl.datasets.load_breast_cancer())


LINEAR = [
    (ftl.FederatedLogisticRegression, "decision_function"),
    (ftl.FederatedLinearRegression, "predict"),
    (ftl.FederatedPoissonRegressor, "predict"),
]


@pytest.mark.parametrize("Estimator, method", LINEAR)
def test_linear_prediction_resumes_bit_identical_in_plaintext(
    Estimator, method, breast, tmp_path, monkeypatch
):
    X, y = breast
    clf = Estimator(encryption=None, max_iter=5, predict_batch_rows=50)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        clf.fit(X, y)
    reference = getattr(clf, method)(X)
    clf.set_params(checkpoint_dir=tmp_path)
    resumed = interrupt_and_resume(monkeypatch, lambda: getattr(clf, method)(X), "lr.predict", 1)
    np.testing.assert_array_equal(resumed, reference)
    # batches change only the float rounding of the margins' products
    np.testing.assert_allclose(
        reference, getattr(clf.set_params(predict_batch_rows=None), method)(X)
    )
    assert not list(tmp_path.iterdir())


def test_logistic_prediction_of_a_reloaded_model_resumes_encrypted(breast, tmp_path, monkeypatch):
    """Small keys; the driver 'restarts' by loading the saved model each time."""
    X, y = breast
    X, y = X[:120], y[:120]
    clf = ftl.FederatedLogisticRegression(max_iter=2, random_state=0, **SMALL_KEY)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        clf.fit(X, y)
    reference = clf.predict_proba(X)
    ftl.save_model(clf, tmp_path / "model.json")

    def predict():
        model = ftl.load_model(tmp_path / "model.json")
        model.set_params(predict_batch_rows=30, checkpoint_dir=tmp_path / "scores")
        return model.predict_proba(X)

    resumed = interrupt_and_resume(monkeypatch, predict, "lr.predict", 2)
    np.testing.assert_allclose(resumed, reference, atol=1e-9)


def fitted_transfer():
    data = ftl.datasets.load_breast_transfer()
    X, y = ftl.align(data.source, data.target, how="left")
    clf = ftl.FederatedTransferClassifier(
        encryption=None, random_state=0, max_iter=3, pretrain_epochs=3, predict_batch_rows=40
    )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        clf.fit(X, y)
    return clf, data, X


def test_transfer_prediction_resumes_for_aligned_rows_and_rows_by_id(tmp_path, monkeypatch):
    clf, data, X = fitted_transfer()
    by_id = data.target.select(data.target_only_ids)
    for rows, seed in [(X, 3), (by_id, 4)]:
        reference = clf.set_params(checkpoint_dir=None).predict_proba(rows)
        clf.set_params(checkpoint_dir=tmp_path)
        resumed = interrupt_and_resume(
            monkeypatch, lambda rows=rows: clf.predict_proba(rows), "ftl.target_predict", seed
        )
        np.testing.assert_array_equal(resumed, reference)
        assert not list(tmp_path.iterdir())


@pytest.mark.parametrize(
    "Estimator, method",
    [
        (ftl.ensemble.FederatedGradientBoostingClassifier, "predict_proba"),
        (ftl.ensemble.FederatedGradientBoostingRegressor, "predict"),
    ],
)
def test_boosting_prediction_resumes_bit_identical_in_plaintext(
    Estimator, method, breast, tmp_path, monkeypatch
):
    X, y = breast
    clf = Estimator(encryption=None, max_iter=4, max_depth=3, random_state=0).fit(X, y)
    reference = getattr(clf, method)(X)
    clf.set_params(predict_batch_rows=60, checkpoint_dir=tmp_path)
    resumed = interrupt_and_resume(monkeypatch, lambda: getattr(clf, method)(X), "sbt.predict", 5)
    np.testing.assert_array_equal(resumed, reference)  # a tree walk has no rounding
    assert not list(tmp_path.iterdir())


# -- the host's budget ---------------------------------------------------------------------
def guarded_host(X, **limits) -> HostGuard:
    """A guard at the (in-process) host with only the given prediction limits."""
    guard = HostGuard("guest", replace(BudgetLimits.unrestricted(), **limits))
    X.alignment.hosts[0].guard = guard
    return guard


def test_the_host_counts_every_re_scored_batch_and_refuses_past_its_budget(
    breast, tmp_path, monkeypatch
):
    """A guest cannot use "resume" to score more than the host's policy allows: the
    host is never told that a batch is a retry, so each re-scored batch is a new
    request, counted and, past the budget, refused."""
    X, y = breast
    clf = ftl.FederatedLogisticRegression(encryption=None, max_iter=3).fit(X, y)
    clf.set_params(predict_batch_rows=100, checkpoint_dir=tmp_path)  # 5 batches
    bounds = batch_bounds(len(X), 100)
    n_batches, third = len(bounds), bounds[2][1] - bounds[2][0]
    guard = guarded_host(X, min_prediction_rows=100, max_predictions_per_alignment=n_batches + 1)
    try:
        real = Channel.call
        decrypts = {"n": 0}

        def call(self, endpoint, op, request, origin=None):
            # the driver dies in the 3rd batch, after the host admitted (and counted) it
            if op == "lr.predict.decrypt":
                decrypts["n"] += 1
                if decrypts["n"] == 3:
                    raise DriverKilled
            return real(self, endpoint, op, request, origin)

        with monkeypatch.context() as patch:
            patch.setattr(Channel, "call", call)
            with pytest.raises(DriverKilled):
                clf.decision_function(X)
        assert guard.ledger.used("guest", "prediction") == 3
        clf.decision_function(X)  # resumes: batches 3 to 5, the 3rd scored again
        assert guard.ledger.used("guest", "prediction") == n_batches + 1
        assert guard.ledger.used("guest", "prediction", rows=True) == len(X) + third
        # the budget is spent: a guest that "resumes" again (its checkpoint deleted,
        # or claiming a retry) is refused like any other request
        with pytest.raises(PolicyError, match="max_predictions_per_alignment"):
            clf.decision_function(X)
        with monkeypatch.context() as patch:  # the same with the host's check off: answered
            patch.setattr(guard, "enforce", False)
            assert clf.decision_function(X).shape == (len(X),)
        # a batch below the host's minimum is refused too, whatever the guest says
        guard.ledger = type(guard.ledger)()
        with pytest.raises(PolicyError, match="min_prediction_rows"):
            clf.set_params(predict_batch_rows=50).decision_function(X)
    finally:
        X.alignment.hosts[0].guard = None
