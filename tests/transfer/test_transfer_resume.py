"""A transfer fit resumes instead of restarting (issue 17), and only as its target allows.

The driver (the source) is killed, or the target loses its session (a restart, as
far as the driver can tell), at random protocol calls; the fit goes on from its
last epoch and ends with the uninterrupted model: to the bit in plaintext mode,
to fixed-point precision encrypted. The target protects itself: only the fit's
own peer resumes it, under the current policy and without a second charge; a
resume supersedes the session that ran the fit; a resumed epoch replays its
batches, and each epoch is resumed at most once (docs/transfer.md, resume).
"""

from __future__ import annotations

import logging
import threading
import warnings
from contextlib import ExitStack
from pathlib import Path

import numpy as np
import pytest

import ftl
from ftl.data import fit_checkpoint
from ftl.exceptions import CheckpointError, PolicyError, ProtocolError
from ftl.federation import Channel, Message
from ftl.federation.budget import BudgetLedger, BudgetLimits, HostGuard
from ftl.federation.checkpoints import PartyCheckpoints
from ftl.transfer import _messages as msg
from ftl.transfer import source as source_role
from ftl.transfer import target as target_role
from tests.conftest import SMALL_KEY

# the served lab of the linear models' resume tests (fixtures certs_dir, lab)
from tests.data.test_remote_resume import certs_dir, lab, on_call, remote  # noqa: F401


class _Recorded(logging.Handler):
    def __init__(self):
        super().__init__(logging.WARNING)
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.messages.append(record.getMessage())


@pytest.fixture
def checkpoint_log(monkeypatch):
    """The ``ftl.checkpoint`` warnings of the test, read at the logger itself: another
    test's logging set-up (a disabled logger, a handler that stops propagation) cannot
    hide them from it."""
    logger = logging.getLogger("ftl.checkpoint")
    recorded = _Recorded()
    monkeypatch.setattr(logger, "disabled", False)
    monkeypatch.setattr(logger, "level", logging.WARNING)
    logger.addHandler(recorded)
    yield recorded.messages
    logger.removeHandler(recorded)


PLAIN = dict(
    encryption=None,
    random_state=0,
    n_components=8,
    hidden_layer_sizes=(8,),
    pretrain_epochs=5,
    max_iter=6,
    batch_size=32,
    tol=0.0,
    verbose=False,
)
#: Calls of one epoch: terms and exchange per batch (150 shared rows, 4 batches), epoch_end.
CALLS_PER_EPOCH = 2 * 4 + 1


class Crash(BaseException):
    """The driver dies here (BaseException: nothing in ftl catches it)."""


@pytest.fixture(scope="module")
def breast_transfer():
    data = ftl.datasets.load_breast_transfer()
    X, y = ftl.align(data.source, data.target, how="left")
    order = np.argsort(X.ids)  # PSI's own order is random by design
    return data, X[order], y[order]


class Kills:
    """Kill the fit at ``(epoch, call)`` points of the protocol, once per epoch.

    ``kills`` maps an epoch to the number of the target call within it (the
    open or resume counts as call 1 of its epoch) and how to kill: the driver dies
    before the call or right after its answer (``Crash``), or the target loses the
    fit's session (a restart) before the call.
    """

    def __init__(self, kills: dict[int, tuple[int, str]], target):
        self.kills, self.target = kills, target
        self.epoch, self.calls, self.fired = 0, 0, []
        self.opens = 0  # sessions opened afresh (not resumed)

    def install(self, monkeypatch) -> None:
        real = Channel.call

        def call(channel, endpoint, op, request, origin=None):
            kill = None
            if op.startswith("ftl.target.") and op != "ftl.target.close":
                self.opens += request.type == msg.OPEN.name
                if request.type in (msg.OPEN.name, msg.RESUME.name):
                    self.epoch = request["step"] if request.type == msg.RESUME.name else 0
                    self.calls = 0
                self.calls += 1
                planned = self.kills.get(self.epoch)
                if planned and planned[0] == self.calls and self.epoch not in self.fired:
                    kill = planned[1]
                    self.fired.append(self.epoch)
            if kill == "target":
                self.target.endpoint.end_session(channel.session)
            elif kill == "driver-before":
                raise Crash
            reply = real(channel, endpoint, op, request, origin)
            if kill == "driver-after":
                raise Crash
            if op == "ftl.target.epoch_end":
                self.epoch, self.calls = request["epoch"] + 1, 0
            return reply

        monkeypatch.setattr(Channel, "call", call)


def random_kills(seed: int, max_iter: int, n: int) -> dict[int, tuple[int, str]]:
    """``n`` kills in distinct epochs, at random calls, of random kinds."""
    rng = np.random.default_rng(seed)
    kills = {}
    for epoch in sorted(rng.choice(max_iter + 1, size=n, replace=False).tolist()):
        kind = str(rng.choice(["driver-before", "driver-after", "target"]))
        last = 1 if epoch == max_iter else CALLS_PER_EPOCH + (epoch == 0)  # finish / open
        first = 2 if epoch == 0 and kind == "target" else 1  # a session to lose
        kills[epoch] = (int(rng.integers(first, last + 1)), kind)
    return kills


def fit_with_kills(monkeypatch, X, y, folder, params, kills):
    """Fit, a restarted driver (a new estimator on the same ``checkpoint_dir``) after
    each crash; the finished estimator and what was killed."""
    schedule = Kills(kills, X.alignment.hosts[0])
    with monkeypatch.context() as patch, warnings.catch_warnings():
        warnings.filterwarnings("error", message=".*cannot be resumed")  # never afresh
        schedule.install(patch)
        for _ in range(len(kills) + 1):
            try:
                clf = ftl.FederatedTransferClassifier(checkpoint_dir=folder, **params)
                clf.fit(X, y)
                break
            except Crash:
                assert list(Path(folder).glob("ftl-*.json")) or schedule.epoch == 0
    assert schedule.fired == sorted(kills)
    # every kill resumed the fit (but one before the source kept its first step)
    assert schedule.opens == 1 + (kills.get(0, (0, ""))[0] == 1 and kills[0][1] != "target")
    assert not list(Path(folder).iterdir())  # the finished fit leaves nothing behind
    return clf


def assert_same_model(clf, reference, X, exact=True) -> None:
    same = (
        np.testing.assert_array_equal
        if exact
        else lambda a, b: np.testing.assert_allclose(a, b, rtol=0, atol=1e-6)
    )
    same(clf.prototypes_, reference.prototypes_)
    same(clf._source_model["output"], reference._source_model["output"])
    same(
        np.asarray(clf._source_model["hidden"]["weights"][0]),
        reference._source_model["hidden"]["weights"][0],
    )
    # the target's network, through its scores of the shared rows
    same(clf.decision_function(X), reference.decision_function(X))
    assert clf.n_iter_ == reference.n_iter_
    for mine, theirs in zip(clf.history_, reference.history_, strict=True):
        same(mine["relative_change"], theirs["relative_change"])
        same(mine["source_side_loss"], theirs["source_side_loss"])


@pytest.mark.parametrize("seed, optimizer", [(0, "adam"), (1, "adam"), (2, "sgd"), (3, "adam")])
def test_a_fit_killed_at_random_calls_resumes_to_the_uninterrupted_model(
    breast_transfer, tmp_path, monkeypatch, seed, optimizer
):
    _, X, y = breast_transfer
    params = dict(PLAIN, optimizer=optimizer)
    reference = ftl.FederatedTransferClassifier(**params).fit(X, y)
    kills = random_kills(seed, PLAIN["max_iter"], 3)
    clf = fit_with_kills(monkeypatch, X, y, tmp_path / "ckpt", params, kills)
    assert_same_model(clf, reference, X)


def test_an_encrypted_fit_resumes_to_fixed_point_precision(breast_transfer, tmp_path, monkeypatch):
    _, X, y = breast_transfer
    params = dict(PLAIN, max_iter=3, n_components=4, hidden_layer_sizes=(4,), **SMALL_KEY)
    del params["encryption"]
    reference = ftl.FederatedTransferClassifier(**params).fit(X, y)
    kills = {1: (4, "driver-after"), 2: (6, "target")}
    clf = fit_with_kills(monkeypatch, X, y, tmp_path, params, kills)
    assert_same_model(clf, reference, X, exact=False)


def test_a_restarted_driver_resumes_without_pretraining_again(
    breast_transfer, tmp_path, monkeypatch, checkpoint_log
):
    _, X, y = breast_transfer
    reference = ftl.FederatedTransferClassifier(**PLAIN).fit(X, y)
    with monkeypatch.context() as patch:
        Kills({3: (2, "driver-after")}, X.alignment.hosts[0]).install(patch)
        with pytest.raises(Crash):
            ftl.FederatedTransferClassifier(checkpoint_dir=tmp_path, **PLAIN).fit(X, y)
    (saved,) = tmp_path.glob("ftl-*.json")
    assert saved.stat().st_mode & 0o777 == 0o600

    def pretrain(*args, **kwargs):
        raise AssertionError("pre-trained again")

    monkeypatch.setattr(source_role, "pretrain_classifier", pretrain)
    monkeypatch.setattr(target_role, "pretrain_autoencoder", pretrain)
    clf = ftl.FederatedTransferClassifier(checkpoint_dir=tmp_path, **PLAIN).fit(X, y)
    assert [m for m in checkpoint_log if "resumes from its checkpoint" in m]
    assert len({r.session for r in clf.transcript_}) == 1  # the resumed session only
    assert_same_model(clf, reference, X)


# -- the target's protection ---------------------------------------------------------
class Served:
    """The target as ``ftl serve`` keeps it for a peer: the peer's guard (one shared
    ledger) and checkpoints in the peer's own folder; the driver attaches nothing."""

    def __init__(self, target, folder: Path, monkeypatch):
        self.target, self.folder, self.monkeypatch = target, folder, monkeypatch
        self.ledger = BudgetLedger()
        # a remote target keeps its own checkpoints: the driver's are not attached
        monkeypatch.setattr(source_role, "local_party_checkpoints", lambda *a: ExitStack())

    def peer(self, identity: str = "hospital", **limits) -> HostGuard:
        """Serve the peer ``identity`` under ``limits`` from now on."""
        guard = HostGuard(identity, BudgetLimits(**limits), self.ledger)
        self.monkeypatch.setattr(self.target, "guard", guard, raising=False)
        store = PartyCheckpoints.for_peer(self.folder, identity)
        self.monkeypatch.setattr(self.target, "checkpoints", store, raising=False)
        return guard


@pytest.fixture
def served(breast_transfer, tmp_path, monkeypatch):
    served = Served(breast_transfer[1].alignment.hosts[0], tmp_path / "target", monkeypatch)
    served.peer()
    return served


def abandoned_fit(monkeypatch, X, y, kills, folder=None) -> list:
    """A fit whose driver dies at ``kills`` without closing its session (as a killed
    process would); every call it made, as ``(session, op, request)``."""
    calls = []
    with monkeypatch.context() as patch:
        Kills(kills, X.alignment.hosts[0]).install(patch)
        real = Channel.call

        def call(channel, endpoint, op, request, origin=None):
            if op == "ftl.target.close":
                return Message("ack", {})
            calls.append((channel.session, op, request))
            return real(channel, endpoint, op, request, origin)

        patch.setattr(Channel, "call", call)
        with pytest.raises(Crash):
            ftl.FederatedTransferClassifier(checkpoint_dir=folder, **PLAIN).fit(X, y)
    return calls


def resume_request(calls: list, step: int) -> Message:
    """The fit's resume at ``step``, as its driver (or anyone who saw its open) sends it."""
    (opened,) = [r for _, _, r in calls if r.type == msg.OPEN.name]
    return Message(msg.RESUME.name, {**opened.fields, "step": step})


def terms_of_epoch(calls: list, epoch: int) -> list:
    """The batches' requests the driver sent in ``epoch``."""
    ends = [i for i, (_, op, _) in enumerate(calls) if op == "ftl.target.epoch_end"]
    start = 0 if epoch == 0 else ends[epoch - 1]
    stop = ends[epoch] if epoch < len(ends) else len(calls)
    return [r for _, op, r in calls[start:stop] if op == "ftl.target.terms"]


def open_at(target, request: Message) -> Channel:
    """A new session opened at the target with ``request`` (a peer's own channel)."""
    channel = Channel("hospital")
    channel.call(target.endpoint, "ftl.target.open", request)
    return channel


def test_only_the_fits_own_peer_can_resume_it(breast_transfer, served, monkeypatch):
    _, X, y = breast_transfer
    resume = resume_request(abandoned_fit(monkeypatch, X, y, {2: (3, "driver-after")}), 2)
    target = served.target
    # a stranger (another peer of the target) names the hospital's fit and rows
    served.peer("stranger")
    with pytest.raises(ValueError, match="no resumable transfer run"):
        open_at(target, resume)
    # with the peers' folders off (every peer's checkpoints in one), the fit is still
    # bound to the hospital's identity
    monkeypatch.setattr(
        target, "checkpoints", PartyCheckpoints(served.folder / "hospital", "hospital")
    )
    with pytest.raises(ValueError, match="other parameters, keys, rows or data"):
        open_at(target, resume)
    # with neither (the target takes the stranger for the hospital), it resumes
    served.peer("hospital")
    open_at(target, resume)


def test_a_resume_is_checked_against_the_policy_and_not_charged_again(
    breast_transfer, served, tmp_path, monkeypatch
):
    _, X, y = breast_transfer
    served.peer("auditor")
    reference = ftl.FederatedTransferClassifier(**PLAIN).fit(X, y)
    served.peer(max_fits_per_alignment=1)
    driver = tmp_path / "driver"
    resume = resume_request(abandoned_fit(monkeypatch, X, y, {2: (3, "driver-after")}, driver), 2)
    # the target lowered its caps since: the resume is refused
    served.peer(max_fits_per_alignment=1, max_hidden_units=4)
    with pytest.raises(PolicyError, match="hidden_units"):
        ftl.FederatedTransferClassifier(checkpoint_dir=driver, **PLAIN).fit(X, y)
    served.peer(max_fits_per_alignment=1, max_epochs=1)
    with pytest.raises(PolicyError, match="epochs"):
        open_at(served.target, resume)
    # (with the caps unchecked it would resume; the once-per-epoch rule is tested below)
    monkeypatch.setattr(target_role, "RESUMES_PER_STEP", 99)
    with monkeypatch.context() as patch:
        patch.setattr(HostGuard, "cap", lambda self, name, value: int(value))
        open_at(served.target, resume)
    # under the old policy it resumes: the fit's one admission is used, and the
    # resume is not charged again
    guard = served.peer(max_fits_per_alignment=1)
    used = guard.readings()
    clf = ftl.FederatedTransferClassifier(checkpoint_dir=driver, **PLAIN).fit(X, y)
    assert guard.readings() == used
    assert_same_model(clf, reference, X)


def test_a_resume_supersedes_the_session_that_ran_the_fit(breast_transfer, served, monkeypatch):
    """A driver that died left its session open at the target: a resume takes the
    fit over, and the old session answers nothing more (else both would answer at
    the same weights)."""
    _, X, y = breast_transfer
    target = served.target.endpoint
    for superseding in (True, False):
        calls = abandoned_fit(monkeypatch, X, y, {2: (3, "driver-before")})
        dead = Channel("hospital", session=calls[-1][0])  # still open at the target
        late = terms_of_epoch(calls, 2)[0]  # a request of the dead driver, in flight
        with monkeypatch.context() as patch:
            if not superseding:  # off: both sessions answer at the same weights
                patch.setattr(fit_checkpoint, "refuse_superseded", lambda *a: None)
                patch.setattr(PartyCheckpoints, "_check_owner", lambda *a: None)
            channel = open_at(served.target, resume_request(calls, 2))
            if superseding:
                with pytest.raises(ProtocolError, match="resumed in another session"):
                    dead.call(target, "ftl.target.terms", late)
            else:
                dead.call(target, "ftl.target.terms", late)
            channel.call(target, "ftl.target.terms", late)  # the resumed session answers


def test_a_resumed_epoch_replays_its_batches_and_resumes_once(breast_transfer, served, monkeypatch):
    """A deviating source that resumed an epoch has the target answer other batches
    at the weights that answered the first ones (differencing two answers) -- the
    target refuses: the resumed epoch replays the batches it answered, in order; and
    each epoch is resumed once, so every batch is answered at most twice at the same
    weights (docs/transfer.md)."""
    _, X, y = breast_transfer
    calls = abandoned_fit(monkeypatch, X, y, {1: (4, "driver-after")})  # 2 batches answered
    first, second = terms_of_epoch(calls, 1)
    other = Message(first.type, {**first.fields, "batch": second["batch"]})
    target = served.target.endpoint
    channel = open_at(served.target, resume_request(calls, 1))
    with pytest.raises(ProtocolError, match="must replay the batches"):
        channel.call(target, "ftl.target.terms", other)
    channel.call(target, "ftl.target.terms", first)  # the same batch again: answered
    with pytest.raises(ValueError, match="resumed 1 time"):
        open_at(served.target, resume_request(calls, 1))
    # with both checks off, the deviating source has another batch answered
    monkeypatch.setattr(target_role, "RESUMES_PER_STEP", 99)
    monkeypatch.setattr(target_role.TransferTarget, "_check_replay", lambda self, batch: None)
    open_at(served.target, resume_request(calls, 1)).call(target, "ftl.target.terms", other)


# -- a target that loses its session --------------------------------------------------
def test_a_lost_target_session_is_resumed_in_process(breast_transfer, monkeypatch, checkpoint_log):
    """A target whose session is gone mid-fit (a restart, as far as the driver can
    tell) is resumed at the last epoch from its checkpoints, without ``checkpoint_dir``."""
    _, X, y = breast_transfer
    reference = ftl.FederatedTransferClassifier(**PLAIN).fit(X, y)
    target = X.alignment.hosts[0]
    monkeypatch.setattr(target, "checkpoints", PartyCheckpoints(None, "<sim>"), raising=False)
    with monkeypatch.context() as patch:
        Kills({2: (5, "target")}, target).install(patch)
        clf = ftl.FederatedTransferClassifier(**PLAIN).fit(X, y)
    assert [m for m in checkpoint_log if "resuming the fit at its last step" in m]
    assert len({r.session for r in clf.transcript_}) == 2  # it went on in a new session
    assert_same_model(clf, reference, X)


def test_a_target_that_cannot_resume_fails_the_fit_with_the_original_error(
    breast_transfer, monkeypatch
):
    _, X, y = breast_transfer
    Kills({2: (5, "target")}, X.alignment.hosts[0]).install(monkeypatch)
    with pytest.raises(ProtocolError, match="no open ftl.target session") as info:
        ftl.FederatedTransferClassifier(**PLAIN).fit(X, y)  # the target keeps nothing
    assert isinstance(info.value.__cause__, CheckpointError)


def test_a_served_target_restarted_mid_fit_is_resumed(certs_dir, lab, tmp_path, monkeypatch):  # noqa: F811
    """``ftl serve`` killed mid-epoch and back a second later, with the same
    ``checkpoint_dir``: the fit goes on and ends with the uninterrupted model."""
    hospital, local_lab = ftl.datasets.load_breast_cancer()
    params = dict(PLAIN, batch_size=128)
    X_ref, y_ref = ftl.align(hospital, local_lab, order="id")
    reference = ftl.FederatedTransferClassifier(**params).fit(X_ref, y_ref)
    X, y = ftl.align(hospital, remote(certs_dir, lab, retry_for=30), order="id")

    def restart() -> None:
        lab.kill()
        threading.Timer(1.0, lab.start).start()

    on_call(monkeypatch, "ftl.target.exchange", 10, restart)  # in the third epoch
    clf = ftl.FederatedTransferClassifier(**params).fit(X, y)
    assert len({r.session for r in clf.transcript_}) == 2  # resumed in a new session
    np.testing.assert_array_equal(clf.prototypes_, reference.prototypes_)
    np.testing.assert_array_equal(clf.decision_function(X), reference.decision_function(X_ref))
    assert not list((tmp_path / "checkpoints" / "hospital" / "transfer").glob("*.json"))
