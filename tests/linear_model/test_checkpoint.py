"""Checkpoint and resume of the federated linear fits (``checkpoint_dir``).

A fit interrupted at any point -- the driver's process killed, a host's session
lost -- resumes from its last completed iteration and ends with the model of an
uninterrupted fit: bit-identical in plaintext mode, to fixed-point precision
when encrypted. Simulated federations keep the hosts' checkpoints next to the
guest's; ``tests/data/test_remote_resume.py`` restarts a served host.
"""

from __future__ import annotations

import json
import os
import signal
import stat
import subprocess
import sys
import textwrap
import time
import warnings
from pathlib import Path

import numpy as np
import pytest
from sklearn.datasets import make_classification

import ftl
from ftl.exceptions import CheckpointError, ProtocolError
from ftl.federation import Channel
from ftl.federation.checkpoints import PartyCheckpoints, attached
from ftl.linear_model import guest as guest_role
from tests.conftest import SMALL_KEY

ROOT = Path(__file__).resolve().parents[2]
PLAIN = dict(encryption=None, random_state=0)
LOGISTIC = ftl.FederatedLogisticRegression


class Crash(BaseException):
    """The driver dies here (BaseException: nothing in ftl catches it)."""


def crash_on(monkeypatch, method: str, count: int) -> None:
    """Make the guest's ``method`` raise :class:`Crash` on its ``count``-th call (after
    running it: e.g. after the hosts kept their step, before the guest did)."""
    real = getattr(guest_role.LogisticGuest, method)
    seen = {"n": 0}

    def wrapped(self, *args, **kwargs):
        out = real(self, *args, **kwargs)
        seen["n"] += 1
        if seen["n"] == count:
            raise Crash
        return out

    monkeypatch.setattr(guest_role.LogisticGuest, method, wrapped)


def crashed_fit(
    monkeypatch, X, y, folder, params, method: str, count: int, estimator=LOGISTIC
) -> None:
    """A fit of ``estimator`` with ``checkpoint_dir=folder`` that crashes at
    ``method``'s ``count``-th call (:func:`crash_on`), leaving its checkpoint behind."""
    with monkeypatch.context() as patch:
        crash_on(patch, method, count)
        with pytest.raises(Crash):
            estimator(checkpoint_dir=folder, **params).fit(X, y)
    assert list(Path(folder).glob("lr-*.json"))


def fit_with_crashes(monkeypatch, X, y, folder, params, crashes, estimator=LOGISTIC):
    """Fit ``estimator``, crashing at each ``(method, count)`` of ``crashes`` in turn
    and fitting again (a new estimator, as a restarted driver would); the final fit."""
    for method, count in crashes:
        crashed_fit(monkeypatch, X, y, folder, params, method, count, estimator)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a resumed fit warns about nothing
        clf = estimator(checkpoint_dir=folder, **params).fit(X, y)
    assert not list(Path(folder).iterdir())  # the finished fit leaves nothing behind
    return clf


def assert_same_model(clf, reference) -> None:
    np.testing.assert_array_equal(clf.coef_, reference.coef_)
    np.testing.assert_array_equal(clf.intercept_, reference.intercept_)
    assert clf.n_iter_.tolist() == reference.n_iter_.tolist()
    assert [len(h) for h in clf.history_] == [len(h) for h in reference.history_]


@pytest.mark.parametrize(
    "params, crashes",
    [
        # L-BFGS: after a pass, after the hosts kept a step but before the guest did,
        # after the guest kept one
        (dict(PLAIN), [("_batch", 3), ("_accept", 4), ("_keep", 6)]),
        (dict(PLAIN, optimizer="adam", max_iter=6), [("_batch", 9), ("_keep", 3)]),
        (dict(PLAIN, optimizer="sgd", max_iter=5, simulated_hosts=2), [("_batch", 5)]),
        (dict(PLAIN, simulated_hosts=2), [("_accept", 3), ("_batch", 7)]),
    ],
    ids=["lbfgs", "adam", "sgd-two-hosts", "lbfgs-two-hosts"],
)
def test_resumed_plaintext_fit_is_the_uninterrupted_fit(
    breast_array, tmp_path, monkeypatch, params, crashes
):
    X, y = breast_array
    reference = ftl.FederatedLogisticRegression(**params).fit(X, y)
    clf = fit_with_crashes(monkeypatch, X, y, tmp_path / "ckpt", params, crashes)
    assert_same_model(clf, reference)


def test_resumed_multiclass_fit_keeps_the_finished_models(tmp_path, monkeypatch):
    X, y = make_classification(300, 6, n_informative=4, n_classes=3, random_state=0)
    reference = ftl.FederatedLogisticRegression(**PLAIN).fit(X, y)
    # the first binary model keeps its open, its first base point and every
    # iteration; crash at the second model's fourth step
    first = len(reference.history_[0]) + 2
    clf = fit_with_crashes(monkeypatch, X, y, tmp_path, PLAIN, [("_keep", first + 4)])
    assert_same_model(clf, reference)
    # the resumed fit talked to the host about models 2 and 3 only
    assert len({r.session for r in clf.transcript_}) == 2


def test_resumed_encrypted_fit_equals_the_uninterrupted_one(breast_array, tmp_path, monkeypatch):
    X, y = breast_array
    params = dict(random_state=0, max_iter=2, **SMALL_KEY)
    reference = ftl.FederatedLogisticRegression(**params).fit(X, y)
    clf = fit_with_crashes(monkeypatch, X, y, tmp_path, params, [("_batch", 3)])
    np.testing.assert_allclose(clf.coef_, reference.coef_, atol=1e-6)
    np.testing.assert_allclose(clf.intercept_, reference.intercept_, atol=1e-6)


def lose_session_at(monkeypatch, host, count: int, when: str = "lr.host.update") -> None:
    """Make ``host`` forget the fit's session before the driver's ``count``-th call of
    ``when``, as a restarted host would."""
    real = Channel.call
    seen = {"n": 0}

    def call(self, endpoint, op, request, origin=None):
        if op == when:
            seen["n"] += 1
            if seen["n"] == count:
                host.endpoint.end_session(self.session)
        return real(self, endpoint, op, request, origin)

    monkeypatch.setattr(Channel, "call", call)


@pytest.mark.parametrize("when, count", [("lr.host.update", 6), ("lr.host.finish", 1)])
def test_a_lost_host_session_is_resumed_in_process(breast_array, monkeypatch, caplog, when, count):
    """A host whose session is gone mid-fit (a restart, as far as the driver can tell)
    is resumed at the last step from its checkpoints, without ``checkpoint_dir``."""
    X, y = breast_array
    handle = ftl.data.simulate.simulate_federation(X, y)
    reference = ftl.FederatedLogisticRegression(**PLAIN).fit(handle, y)
    host = handle.alignment.hosts[0]
    lose_session_at(monkeypatch, host, count, when)
    with attached(host, PartyCheckpoints(None, "<simulation>")):
        with caplog.at_level("WARNING", logger="ftl.checkpoint"):
            clf = ftl.FederatedLogisticRegression(**PLAIN).fit(handle, y)
    assert [r for r in caplog.records if "resuming the fit at its last step" in r.getMessage()]
    assert_same_model(clf, reference)
    assert len({r.session for r in clf.transcript_}) == 2  # it went on in a new session


def test_a_host_that_cannot_resume_fails_the_fit_with_the_original_error(breast_array, monkeypatch):
    X, y = breast_array
    handle = ftl.data.simulate.simulate_federation(X, y)
    lose_session_at(monkeypatch, handle.alignment.hosts[0], 4)
    with pytest.raises(ProtocolError, match="no open lr.host session") as info:
        ftl.FederatedLogisticRegression(**PLAIN).fit(handle, y)  # the host keeps nothing
    assert isinstance(info.value.__cause__, CheckpointError)


def test_checkpoint_file_is_private_json_with_the_guest_state(breast_array, tmp_path, monkeypatch):
    X, y = breast_array
    crashed_fit(monkeypatch, X, y, tmp_path / "c", PLAIN, "_keep", 3)
    (path,) = (tmp_path / "c").glob("lr-*.json")
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert stat.S_IMODE((tmp_path / "c").stat().st_mode) == 0o700
    doc = json.loads(path.read_text())  # plain JSON: never a pickle
    assert doc["format"] == "ftl.checkpoint" and doc["kind"] == "lr.guest"
    state = doc["body"]["current"]["state"]
    assert state["step"] == 2 and {"own_key", "block", "lbfgs", "rng", "params"} <= set(state)
    # the in-process host kept its own part, in a folder of its own
    (host_file,) = (tmp_path / "c").glob("lr-*.parties/sim_host1/lr/*.json")
    assert json.loads(host_file.read_text())["body"]["identity"] == "<simulation>"


def test_tampered_checkpoint_is_refused_with_a_clear_error(breast_array, tmp_path, monkeypatch):
    X, y = breast_array
    crashed_fit(monkeypatch, X, y, tmp_path, PLAIN, "_keep", 4)
    (path,) = tmp_path.glob("lr-*.json")
    doc = json.loads(path.read_text())
    weights = doc["body"]["current"]["state"]["block"]["weights"]["__ndarray__"]["data"]
    weights[0] += 1.0
    path.write_text(json.dumps(doc))
    with pytest.raises(CheckpointError, match="corrupted or was modified.*refused"):
        ftl.FederatedLogisticRegression(checkpoint_dir=tmp_path, **PLAIN).fit(X, y)
    # a host's part (here the simulation's) that was modified cannot be resumed either
    folder = tmp_path / "second"
    crashed_fit(monkeypatch, X, y, folder, PLAIN, "_keep", 4)
    (host_file,) = folder.glob("lr-*.parties/sim_host1/lr/*.json")
    host_file.write_text(host_file.read_text().replace('"step": 3', '"step": 2', 1))
    with pytest.warns(UserWarning, match="cannot be resumed.*corrupted or was modified"):
        clf = ftl.FederatedLogisticRegression(checkpoint_dir=folder, **PLAIN).fit(X, y)
    assert_same_model(clf, ftl.FederatedLogisticRegression(**PLAIN).fit(X, y))


def test_checkpoint_of_another_fit_is_ignored_with_a_warning(breast_array, tmp_path, monkeypatch):
    X, y = breast_array
    crashed_fit(monkeypatch, X, y, tmp_path, PLAIN, "_keep", 3)
    other = dict(PLAIN, C=0.5)
    with pytest.warns(UserWarning, match="checkpoint.*of other fits.*ignored"):
        clf = ftl.FederatedLogisticRegression(checkpoint_dir=tmp_path, **other).fit(X, y)
    assert_same_model(clf, ftl.FederatedLogisticRegression(**other).fit(X, y))
    assert len(list(tmp_path.glob("lr-*.json"))) == 1  # the other fit's, left alone


# -- the driver's process killed at random moments ---------------------------------------

DRIVER = """
    import sys
    import numpy as np
    from sklearn.datasets import make_classification
    import ftl

    X, y = make_classification(2000, 10, n_informative=6, random_state=0)
    params = {params!r}
    print("fitting", flush=True)
    clf = ftl.FederatedLogisticRegression(checkpoint_dir=sys.argv[1], **params).fit(X, y)
    print("model", list(map(float, clf.coef_.ravel())), float(clf.intercept_[0]), flush=True)
"""


def kept_step(folder: Path) -> int:
    """The step of the fit's checkpoint in ``folder`` (-1 if there is none yet)."""
    for path in folder.glob("lr-*.json"):
        try:
            current = json.loads(path.read_text())["body"]["current"]
        except (OSError, ValueError):  # replaced while read: look again
            continue
        return -1 if current is None else current["state"]["step"]
    return -1


def kill_after_step(proc, folder: Path, step: int, delay: float, timeout: float = 60.0) -> None:
    """SIGKILL ``proc`` ``delay`` seconds after its checkpoint reached ``step``."""
    deadline = time.monotonic() + timeout
    while kept_step(folder) < step and proc.poll() is None:
        assert time.monotonic() < deadline, f"step {step} not reached in {timeout} s"
        time.sleep(0.01)
    time.sleep(delay)
    proc.send_signal(signal.SIGKILL)


def killed_and_resumed(tmp_path, params: dict, kills) -> tuple[list, list[str]]:
    """Run the driver script and SIGKILL it at each ``(steps, delay)`` of ``kills``:
    ``delay`` seconds after its checkpoint moved ``steps`` steps on (or when it
    finished first); then once more to the end. The final coefficients (intercept
    last) and the runs' logs."""
    script = tmp_path / "driver.py"
    script.write_text(textwrap.dedent(DRIVER.format(params=params)))
    folder = tmp_path / "ckpt"
    argv = [sys.executable, str(script), str(folder)]
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    logs = []
    for kill in [*kills, None]:
        at = kept_step(folder)
        proc = subprocess.Popen(
            argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env
        )
        assert proc.stdout.readline().strip() == "fitting"
        if kill is not None:
            kill_after_step(proc, folder, at + kill[0], kill[1])
        out, err = proc.communicate(timeout=120)
        logs.append(err)
        if proc.returncode == 0:  # it finished before the kill: that is the model
            break
    assert proc.returncode == 0, err
    (line,) = [x for x in out.splitlines() if x.startswith("model")]
    coef, intercept = line[len("model ") :].rsplit(" ", 1)
    return [*json.loads(coef), float(intercept)], logs


def random_kills(seed: int, n: int, most_steps: int, most_seconds: float) -> list:
    """``n`` kills: 1 to ``most_steps`` steps on, then up to ``most_seconds`` more."""
    rng = np.random.default_rng(seed)
    return list(
        zip(
            rng.integers(1, most_steps + 1, size=n).tolist(),
            rng.uniform(0, most_seconds, size=n).tolist(),
            strict=True,
        )
    )


def test_driver_killed_at_random_moments_resumes_to_the_same_model(tmp_path):
    params = dict(PLAIN, max_iter=20, tol=0.0)
    X, y = make_classification(2000, 10, n_informative=6, random_state=0)
    reference = ftl.FederatedLogisticRegression(**params).fit(X, y)
    # kills mid-iteration (an iteration takes about 0.1 s here)
    model, logs = killed_and_resumed(tmp_path, params, random_kills(17, 2, 6, 0.1))
    assert model == [*reference.coef_.ravel().tolist(), float(reference.intercept_[0])]
    assert len(logs) == 3, logs
    assert all("fit resumes from its checkpoint" in log for log in logs[1:]), logs
    assert not list((tmp_path / "ckpt").iterdir())


@pytest.mark.slow
def test_encrypted_driver_killed_repeatedly_resumes_to_the_same_model(tmp_path):
    params = dict(random_state=0, max_iter=8, tol=0.0, **SMALL_KEY)
    X, y = make_classification(2000, 10, n_informative=6, random_state=0)
    reference = ftl.FederatedLogisticRegression(**params).fit(X, y)
    model, logs = killed_and_resumed(tmp_path, params, random_kills(5, 4, 2, 1.0))
    np.testing.assert_allclose(model[:-1], reference.coef_.ravel(), atol=1e-6)
    np.testing.assert_allclose(model[-1], reference.intercept_[0], atol=1e-6)
    assert len(logs) == 5, logs
    assert all("fit resumes from its checkpoint" in log for log in logs[1:]), logs


@pytest.fixture(scope="module")
def breast_array():
    from sklearn.datasets import load_breast_cancer
    from sklearn.preprocessing import StandardScaler

    X, y = load_breast_cancer(return_X_y=True)
    return StandardScaler().fit_transform(X), y


@pytest.mark.parametrize(
    "estimator, crashes",
    [
        # after a pass, after the hosts kept a step but before the guest did, after
        # the guest kept one
        (ftl.FederatedLinearRegression, [("_batch", 3), ("_accept", 4), ("_keep", 6)]),
        (ftl.FederatedPoissonRegressor, [("_accept", 3), ("_batch", 7)]),
    ],
    ids=["ridge", "poisson"],
)
def test_resumed_regressor_fit_is_the_uninterrupted_fit(tmp_path, monkeypatch, estimator, crashes):
    """The regressors run the same guest, so they keep and resume the same checkpoints."""
    rng = np.random.default_rng(0)
    X = rng.normal(size=(200, 6))
    y = rng.poisson(np.exp(0.3 * X[:, 0] - 0.2 * X[:, 4] + 0.5)).astype(np.float64)
    reference = estimator(**PLAIN).fit(X, y)
    reg = fit_with_crashes(monkeypatch, X, y, tmp_path, PLAIN, crashes, estimator)
    np.testing.assert_array_equal(reg.coef_, reference.coef_)
    assert reg.intercept_ == reference.intercept_
    assert (reg.n_iter_, len(reg.history_)) == (reference.n_iter_, len(reference.history_))
