"""A SecureBoost fit resumes instead of restarting (issue 17), and only as its hosts allow.

The driver (the guest) is killed, or a host loses the fit's session (a restart, as
far as the driver can tell), at random protocol calls; the fit goes on after its
last boosting iteration and grows the uninterrupted fit's trees: to the bit in
plaintext mode, to fixed-point precision encrypted. The hosts protect themselves:
only the fit's own peer resumes it, bound to its parameters, key, rows and data,
under the current policy and without a second charge; each step is resumed at most
once, so a guest cannot replay a tree with other gradients for more histograms;
the trees a resume grows again count against the pass cap; a resume supersedes
the session that ran the fit. The guest checks what a resumed host restored.
"""

from __future__ import annotations

import threading
import warnings
from contextlib import ExitStack
from pathlib import Path

import numpy as np
import pytest
from sklearn.datasets import make_classification, make_regression

import ftl
from ftl.crypto.scheme import make_own_key
from ftl.ensemble import _checkpoint, _resume
from ftl.ensemble import _messages as msg
from ftl.ensemble import guest as guest_role
from ftl.ensemble import host as host_role
from ftl.ensemble._remote import RemoteBlock
from ftl.exceptions import CheckpointError, PolicyError, ProtocolError
from ftl.federation import Channel, Message
from ftl.federation.budget import BudgetLimits
from ftl.federation.checkpoints import PartyCheckpoints
from tests.conftest import SMALL_KEY

# the served lab of the linear models' resume tests (fixtures certs_dir, lab)
from tests.data.test_remote_resume import certs_dir, lab, on_call, remote  # noqa: F401
from tests.transfer import test_transfer_resume as transfer_resume
from tests.transfer.test_transfer_resume import Crash

Classifier = ftl.ensemble.FederatedGradientBoostingClassifier
Regressor = ftl.ensemble.FederatedGradientBoostingRegressor

PLAIN = dict(encryption=None, random_state=0, max_iter=6, max_leaf_nodes=6, min_samples_leaf=10)


class Kills:
    """Kill the fit at ``(step, call)`` points of the protocol, once per step.

    ``kills`` maps a step (completed iterations) to the number of the host call
    within it (the open or resume is call 1 of its step) and how to kill: the
    driver dies before the call or right after its answer (``Crash``), or the host
    loses the fit's session (a restart) before the call. Every call is recorded in
    ``sent`` as ``(session, op, request)``; with ``abandon`` the driver closes no
    session (as a killed process would not).
    """

    def __init__(self, kills: dict[int, tuple[int, str]], abandon: bool = False):
        self.kills, self.abandon = kills, abandon
        self.step, self.calls, self.fired, self.sent = 0, 0, [], []
        self.opens = 0  # fits opened afresh (not resumed)
        self.opening = False  # within the opens (or resumes) of every host

    def install(self, monkeypatch) -> None:
        real = Channel.call

        def call(channel, endpoint, op, request, origin=None):
            if self.abandon and op == "sbt.host.close":
                return Message("ack", {})
            self.sent.append((channel.session, op, request))
            kill = None
            if op.startswith("sbt.host.") and op != "sbt.host.close":
                opens = request.type in (msg.OPEN.name, msg.RESUME.name)
                if opens and not self.opening:  # the first host's: a new session
                    self.opens += request.type == msg.OPEN.name
                    self.step = request["step"] if request.type == msg.RESUME.name else 0
                    self.calls = 0
                self.opening = opens
                self.calls += 1
                planned = self.kills.get(self.step)
                if planned and planned[0] == self.calls and self.step not in self.fired:
                    kill = planned[1]
                    self.fired.append(self.step)
            if kill == "host":
                endpoint.end_session(channel.session)
            elif kill == "driver-before":
                raise Crash
            reply = real(channel, endpoint, op, request, origin)
            if kill == "driver-after":
                raise Crash
            if op == "sbt.host.iteration_end" and request["step"] != self.step:
                self.step, self.calls = request["step"], 0  # the first host's
            return reply

        monkeypatch.setattr(Channel, "call", call)


def random_kills(seed: int, max_iter: int, n: int) -> dict[int, tuple[int, str]]:
    """``n`` kills in distinct steps, at random calls among each step's first few."""
    rng = np.random.default_rng(seed)
    kills = {}
    for step in sorted(rng.choice(max_iter + 1, size=n, replace=False).tolist()):
        kind = str(rng.choice(["driver-before", "driver-after", "host"]))
        last = 1 if step == max_iter else 4  # the finish; every iteration has 4 calls
        first = 2 if step == 0 and kind == "host" else 1  # a session to lose
        kills[step] = (int(rng.integers(first, last + 1)), kind)
    return kills


def fit_with_kills(monkeypatch, make, X, y, folder, kills):
    """Fit, a restarted driver (a new estimator on the same ``checkpoint_dir``) after
    each crash; the finished estimator."""
    schedule = Kills(kills)
    with monkeypatch.context() as patch, warnings.catch_warnings():
        warnings.filterwarnings("error", message=".*cannot be resumed")  # never afresh
        schedule.install(patch)
        for _ in range(len(kills) + 1):
            try:
                clf = make(checkpoint_dir=folder).fit(X, y)
                break
            except Crash:
                pass
    assert schedule.fired == sorted(kills)
    # every kill resumed the fit (but one before the guest kept its first step)
    assert schedule.opens == 1 + (kills.get(0, (0, ""))[0] == 1 and kills[0][1] != "host")
    assert not list(Path(folder).iterdir())  # the finished fit leaves nothing behind
    return clf


def assert_same_model(clf, reference, X, exact=True, X_reference=None) -> None:
    """The same trees node by node (but the hosts' split ids and pseudonyms, which
    every fit draws afresh), the same scores, and the same predictions of ``X`` (and
    of ``X_reference`` by the reference, if it was fitted on other parties)."""
    same = (
        np.testing.assert_array_equal
        if exact
        else lambda a, b: np.testing.assert_allclose(a, b, rtol=0, atol=1e-6)
    )
    assert clf.n_iter_ == reference.n_iter_
    for mine, theirs in zip(clf.trees_, reference.trees_, strict=True):
        for a, b in zip(mine, theirs, strict=True):
            for name in ("block", "bin_threshold", "left", "right", "is_leaf"):
                np.testing.assert_array_equal(getattr(a, name), getattr(b, name))
            # a host's features are pseudonyms, drawn afresh for every fit
            own = a.block == 0
            np.testing.assert_array_equal(a.feature[own], b.feature[own])
            same(a.value, b.value)
    same(clf.train_score_, reference.train_score_)
    same(clf.validation_score_, reference.validation_score_)
    same(clf._raw_predict(X), reference._raw_predict(X if X_reference is None else X_reference))


@pytest.fixture(scope="module")
def binary():
    return make_classification(n_samples=300, n_features=8, n_informative=5, random_state=0)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_a_fit_killed_at_random_calls_resumes_to_the_uninterrupted_model(
    binary, tmp_path, monkeypatch, seed
):
    X, y = binary
    # early stopping on held-out rows: the validation walk and scores are kept too
    params = dict(PLAIN, early_stopping=bool(seed % 2), n_iter_no_change=50)

    def make(**kw):
        return Classifier(**params, **kw)

    reference = make().fit(X, y)
    clf = fit_with_kills(monkeypatch, make, X, y, tmp_path / "ckpt", random_kills(seed, 6, 3))
    assert_same_model(clf, reference, X)


#: Kills of the single-host fits below: every kind, in three steps.
KILLS = {1: (2, "driver-after"), 3: (3, "host"), 4: (1, "driver-before")}


@pytest.mark.parametrize(
    "make_data, estimator, params, kills",
    [
        # multiclass: a step is an iteration of one tree per class
        (
            lambda: make_classification(
                n_samples=300, n_features=8, n_informative=5, n_classes=3, random_state=1
            ),
            Classifier,
            {},
            KILLS,
        ),
        # mixed trees over two hosts after a guest-only iteration: iterations 2 and 5
        # are the first host's, 3 the second's. Call 1 of a step is the second host's
        # iteration end: a crash there, right after a resume of the step before, would
        # resume that step twice (refused: the fit starts afresh)
        (
            lambda: make_classification(n_samples=300, n_features=9, random_state=2),
            Classifier,
            dict(tree_mode="mixed", simulated_hosts=2, guest_only_iterations=1),
            {2: (2, "driver-after"), 3: (3, "host"), 5: (2, "driver-before")},
        ),
        (
            lambda: make_regression(n_samples=300, n_features=8, random_state=3),
            Regressor,
            {},
            KILLS,
        ),
    ],
    ids=["multiclass", "mixed", "regression"],
)
def test_every_kind_of_fit_resumes_to_the_uninterrupted_model(
    tmp_path, monkeypatch, make_data, estimator, params, kills
):
    X, y = make_data()

    def make(**kw):
        return estimator(**PLAIN, **params, **kw)

    reference = make().fit(X, y)
    clf = fit_with_kills(monkeypatch, make, X, y, tmp_path, kills)
    assert_same_model(clf, reference, X)


def test_an_encrypted_fit_resumes_to_fixed_point_precision(tmp_path, monkeypatch):
    X, y = make_classification(n_samples=150, n_features=6, random_state=4)
    params = dict(PLAIN, max_iter=3, max_leaf_nodes=4, **SMALL_KEY)
    del params["encryption"]

    def make(**kw):
        return Classifier(**params, **kw)

    reference = make().fit(X, y)
    clf = fit_with_kills(
        monkeypatch, make, X, y, tmp_path, {1: (3, "driver-after"), 2: (2, "host")}
    )
    assert_same_model(clf, reference, X, exact=False)


def test_a_restarted_driver_resumes_from_its_private_file(binary, tmp_path, monkeypatch, caplog):
    X, y = binary
    reference = Classifier(**PLAIN).fit(X, y)
    crashed_fit(monkeypatch, X, y, {3: (2, "driver-after")}, tmp_path, abandon=False)
    (saved,) = tmp_path.glob("sbt-*.json")
    assert saved.stat().st_mode & 0o777 == 0o600
    (kept,) = tmp_path.glob("sbt-*.parties/*/sbt/*.json")  # the simulated host's part
    assert kept.stat().st_mode & 0o777 == 0o600
    with caplog.at_level("WARNING", logger="ftl.checkpoint"):
        clf = Classifier(checkpoint_dir=tmp_path, **PLAIN).fit(X, y)
    assert [r for r in caplog.records if "resumes from its checkpoint" in r.getMessage()]
    assert len({r.session for r in clf.transcript_}) == 1  # the resumed session only
    assert_same_model(clf, reference, X)


# -- the hosts' protection and the guest's ---------------------------------------------
class Served(transfer_resume.Served):
    """The host as ``ftl serve`` keeps it for a peer (the transfer tests' ``target``)."""

    def __init__(self, host, folder: Path, monkeypatch):
        super().__init__(host, folder, monkeypatch)
        # a served host keeps its own checkpoints: the driver attaches nothing
        monkeypatch.setattr(guest_role, "local_party_checkpoints", lambda *a: ExitStack())


@pytest.fixture(scope="module")
def breast():
    guest, host = ftl.datasets.load_breast_cancer()
    X, y = ftl.align(guest, host, order="id")
    return X, y


@pytest.fixture
def served(breast, tmp_path, monkeypatch):
    served = Served(breast[0].alignment.hosts[0], tmp_path / "host", monkeypatch)
    served.peer()
    return served


def crashed_fit(monkeypatch, X, y, kills, folder=None, abandon=True) -> list:
    """A fit whose driver dies at ``kills`` (by default without closing its session);
    every call it made, as ``(session, op, request)``."""
    schedule = Kills(kills, abandon)
    with monkeypatch.context() as patch:
        schedule.install(patch)
        with pytest.raises(Crash):
            Classifier(checkpoint_dir=folder, **PLAIN).fit(X, y)
    return schedule.sent


def resume_request(calls: list, step: int) -> Message:
    """The fit's resume at ``step``, as its driver (or anyone who saw its open) sends it."""
    (opened,) = [r for _, _, r in calls if r.type == msg.OPEN.name]
    return Message(msg.RESUME.name, {**opened.fields, "step": step})


class Replayer:
    """A deviating guest that resumes an abandoned fit at its steps, keeps steps that
    grew no tree, and starts the next tree with gradients of its choosing, for the
    root's histogram: another read of the host's bins each time."""

    def __init__(self, host, calls: list):
        self.host, self.calls = host, calls
        self.key = make_own_key(None, 0, False, None)

    def resume(self, step: int) -> RemoteBlock:
        channel = Channel("hospital")
        request = resume_request(self.calls, step)
        reply = channel.call(self.host.endpoint, "sbt.host.open", request)
        self.n = request["positions"].shape[0]
        return RemoteBlock(
            channel, self.host.endpoint, self.key, reply["n_bins_non_missing"], False
        )

    def empty_step(self, block: RemoteBlock, step: int) -> None:
        request = Message(msg.ITERATION_END.name, {"step": step})
        block.channel.call(self.host.endpoint, "sbt.host.iteration_end", request)

    def root_histogram(self, block: RemoteBlock, gradients: np.ndarray):
        block.begin_tree(gradients, np.full(self.n, 0.25), tree=-1)
        return block.histogram(0, np.arange(self.n))


def test_a_tree_cannot_be_replayed_with_other_gradients_more_than_once(breast, served, monkeypatch):
    X, y = breast
    # the driver died in the host's third tree (started once)
    guest = Replayer(served.target, crashed_fit(monkeypatch, X, y, {2: (2, "driver-before")}))
    rng = np.random.default_rng(0)
    block = guest.resume(2)
    guest.empty_step(block, 3)  # the host is where it was: its third tree comes next
    first = guest.root_histogram(block, rng.uniform(-1, 1, guest.n))  # a second start
    # the same step again: refused
    with pytest.raises(ValueError, match="was resumed 1 time"):
        guest.resume(2)
    # the empty step (resumed once) cannot start the third tree a third time
    block = guest.resume(3)
    with pytest.raises(ValueError, match="tree 3 of fit .* was started 2 times"):
        guest.root_histogram(block, rng.uniform(-1, 1, guest.n))
    # without the count the attack works: another histogram of the same tree, and so on
    monkeypatch.setattr(_checkpoint, "STARTS_PER_TREE", 10)
    second = guest.root_histogram(block, rng.uniform(-1, 1, guest.n))
    assert not np.allclose(first.sum_gradients, second.sum_gradients)


def test_only_the_fits_own_peer_resumes_it_bound_to_its_key_and_rows(breast, served, monkeypatch):
    X, y = breast
    resume = resume_request(crashed_fit(monkeypatch, X, y, {2: (2, "driver-before")}), 2)
    host = served.target
    served.peer("stranger")  # another peer of the host names the hospital's fit
    with pytest.raises(ValueError, match="no resumable sbt run"):
        Channel("stranger").call(host.endpoint, "sbt.host.open", resume)
    # with the peers' folders off, the fit is still bound to the hospital's identity
    monkeypatch.setattr(
        host, "checkpoints", PartyCheckpoints(served.folder / "hospital", "hospital")
    )
    with pytest.raises(ValueError, match="other parameters, keys, rows or data"):
        Channel("stranger").call(host.endpoint, "sbt.host.open", resume)
    served.peer("hospital")
    # the fit's own peer, with other rows or parameters: another fit, refused
    fewer = Message(msg.RESUME.name, {**resume.fields, "positions": resume["positions"][:-1]})
    deeper = Message(
        msg.RESUME.name, {**resume.fields, "params": {**resume["params"], "max_depth": 9}}
    )
    for request in (fewer, deeper):
        with pytest.raises(ValueError, match="other parameters, keys, rows or data"):
            Channel("hospital").call(host.endpoint, "sbt.host.open", request)
    Channel("hospital").call(host.endpoint, "sbt.host.open", resume)  # its own: resumes


def test_the_host_goes_back_one_step_at_most(breast, served, monkeypatch):
    """Only the last two steps are kept: a guest cannot roll the host back to before
    trees whose splits it recorded, to grow them again."""
    X, y = breast
    calls = crashed_fit(monkeypatch, X, y, {4: (2, "driver-before")})
    host = served.target
    for step in (0, 1, 2):
        with pytest.raises(CheckpointError, match=r"keeps steps \[3, 4\]"):
            Channel("hospital").call(host.endpoint, "sbt.host.open", resume_request(calls, step))


def test_a_resume_is_checked_against_the_policy_not_charged_again_and_supersedes(
    breast, served, tmp_path, monkeypatch
):
    X, y = breast
    served.peer("auditor")  # the reference fit is another peer's
    reference = Classifier(**PLAIN).fit(X, y)
    served.peer(max_fits_per_alignment=1)
    driver = tmp_path / "driver"
    calls = crashed_fit(monkeypatch, X, y, {3: (2, "driver-after")}, driver)
    # the host lowered its pass cap since: the 4 trees started (3 kept, the fourth
    # begun after the step) exceed it
    guard = served.target.guard
    monkeypatch.setattr(guard, "limits", BudgetLimits(max_fits_per_alignment=1, max_epochs=3))
    with pytest.raises(PolicyError, match="epochs=4"):
        Classifier(checkpoint_dir=driver, **PLAIN).fit(X, y)
    # under the first policy the fit resumes: the same fit, not charged again
    monkeypatch.setattr(guard, "limits", BudgetLimits(max_fits_per_alignment=1))
    abandoned = calls[-1][0]
    clf = Classifier(checkpoint_dir=driver, **PLAIN).fit(X, y)
    assert_same_model(clf, reference, X)
    # the abandoned session is still open at the host, but superseded: refused
    with pytest.raises(ProtocolError, match="resumed in another session"):
        Channel("hospital", session=abandoned).call(
            served.target.endpoint,
            "sbt.host.iteration_end",
            Message(msg.ITERATION_END.name, {"step": 4}),
        )


def test_the_trees_a_resume_grows_again_count_against_the_pass_cap(breast, served, monkeypatch):
    X, y = breast
    max_iter = PLAIN["max_iter"]
    served.peer(max_epochs=max_iter)  # exactly the trees of the fit
    # the driver dies mid-tree of iteration 3: the host restarts its session
    with monkeypatch.context() as patch:
        Kills({3: (3, "host")}).install(patch)
        with pytest.raises(PolicyError, match="epochs=7"):
            Classifier(**PLAIN).fit(X, y)
    served.peer(max_epochs=max_iter + 1)
    with monkeypatch.context() as patch:
        Kills({3: (3, "host")}).install(patch)
        Classifier(**PLAIN).fit(X, y)


def test_the_guest_refuses_a_host_that_resumes_with_other_splits(binary, tmp_path, monkeypatch):
    X, y = binary
    reference = Classifier(**PLAIN).fit(X, y)
    crashed_fit(monkeypatch, X, y, {3: (2, "driver-after")}, tmp_path, abandon=False)
    # a host that resumes with another split table than it had (one split forgotten)
    real = host_role.BoostingHost.opened

    def opened(self):
        reply = real(self)
        if reply.type == msg.OPENED_STEPS.name and reply["step"] > 0:
            reply.fields["splits"] = _checkpoint.splits_digest(self.splits.ids[1:])
        return reply

    monkeypatch.setattr(host_role.BoostingHost, "opened", opened)
    unchecked = tmp_path / "unchecked"
    crashed_fit(monkeypatch, X, y, {3: (2, "driver-after")}, unchecked, abandon=False)
    with monkeypatch.context() as patch:  # without the guest's check it is accepted
        patch.setattr(_resume.ResumableBoosting, "_check_resumed", lambda *a: None)
        with warnings.catch_warnings():
            warnings.filterwarnings("error", message=".*cannot be resumed")
            Classifier(checkpoint_dir=unchecked, **PLAIN).fit(X, y)
    with pytest.warns(UserWarning, match="other bins or splits than the guest kept"):
        clf = Classifier(checkpoint_dir=tmp_path, **PLAIN).fit(X, y)  # starts afresh
    assert_same_model(clf, reference, X)


# -- a served host: ftl serve restarted mid-fit, or out of reach for longer than the timeout
#: The lab's default policy: leaves of at least 20 rows.
SERVED = dict(PLAIN, min_samples_leaf=20)


def served_breast(certs, served_lab, retry_for: float) -> tuple:
    """The lab's rows aligned in-process and the reference model fitted on them, and
    the rows aligned with the served lab (``retry_for``) and the guest's labels."""
    guest, local_lab = ftl.datasets.load_breast_cancer()
    X_ref, y_ref = ftl.align(guest, local_lab, order="id")
    reference = Classifier(**SERVED).fit(X_ref, y_ref)
    X, y = ftl.align(guest, remote(certs, served_lab, retry_for=retry_for), order="id")
    return X_ref, reference, X, y


def restart_later(served_lab, pause: float) -> None:
    """Kill the lab now, start it again ``pause`` seconds later."""
    served_lab.kill()
    threading.Timer(pause, served_lab.start).start()


def test_a_served_host_restarted_mid_fit_is_resumed_with_one_log_line(
    certs_dir,  # noqa: F811 - the fixture
    lab,  # noqa: F811
    tmp_path,
    monkeypatch,
    caplog,
):
    X_ref, reference, X, y = served_breast(certs_dir, lab, retry_for=30)
    # killed mid-tree, back 1 s later: the call is retried
    on_call(monkeypatch, "sbt.host.grow", 12, lambda: restart_later(lab, 1.0))
    with caplog.at_level("WARNING", logger="ftl.checkpoint"):
        clf = Classifier(**SERVED).fit(X, y)
    assert [r for r in caplog.records if "resuming the fit" in r.getMessage()]
    assert_same_model(clf, reference, X, X_reference=X_ref)
    kept = tmp_path / "checkpoints" / "hospital"
    assert not list((kept / "sbt").glob("*.json"))  # finished: nothing left to resume


def test_a_partition_longer_than_the_timeout_leaves_a_resumable_fit(
    certs_dir,  # noqa: F811 - the fixture
    lab,  # noqa: F811
    tmp_path,
    monkeypatch,
):
    X_ref, reference, X, y = served_breast(certs_dir, lab, retry_for=2)
    with monkeypatch.context() as patch:
        on_call(patch, "sbt.host.grow", 12, lab.kill)  # and stays away
        with pytest.raises(ftl.federation.PartyUnavailableError):
            Classifier(checkpoint_dir=tmp_path / "driver", **SERVED).fit(X, y)
    assert list((tmp_path / "driver").glob("sbt-*.json"))  # the guest's part
    assert list((tmp_path / "checkpoints" / "hospital" / "sbt").glob("*.json"))  # the lab's
    lab.start()
    # the link is back: the client waits out its reconnection back-off this time
    monkeypatch.setattr(X.alignment.hosts[0]._client, "retry_for", 30.0)
    clf = Classifier(checkpoint_dir=tmp_path / "driver", **SERVED).fit(X, y)
    assert len({r.session for r in clf.transcript_}) == 1  # resumed, not started afresh
    assert_same_model(clf, reference, X, X_reference=X_ref)
