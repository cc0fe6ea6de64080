"""Parties on different processes: ``ftl serve`` over gRPC with mutual TLS and a policy.

Every test here starts real ``ftl serve`` subprocesses on 127.0.0.1 with
certificates made by ``ftl certs``, and drives them from this process exactly as
a data scientist's notebook would.
"""

from __future__ import annotations

import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest

import ftl
from ftl.federation.certs import make_certificates
from ftl.federation.tls import PeerIdentityError
from tests.conftest import SMALL_KEY

grpc = pytest.importorskip("grpc")

DATA = Path(ftl.__file__).parent / "datasets" / "data"


class Host:
    """One ``ftl serve`` subprocess and what a driver needs to reach it."""

    def __init__(
        self,
        tmp: Path,
        name: str,
        csv: Path,
        policy: str,
        server: str = "",
        config_name: str | None = None,
    ):
        self.tmp, self.name = tmp, name
        self.audit = tmp / f"{name}-audit.jsonl"
        self.config = tmp / f"{config_name or name}.toml"
        self.config.write_text(
            textwrap.dedent(
                f"""
                [party]
                name = "{name}"
                data = "{csv}"
                id_column = "id"

                [server]
                listen = "127.0.0.1:0"
                audit_log = "{self.audit.name}"
                {server}

                [tls]
                cert = "certs/{name}.crt"
                key = "certs/{name}.key"
                ca = "certs/ca.crt"
                """
            )
            + textwrap.dedent(policy)
        )
        self.proc: subprocess.Popen | None = None
        self.address = ""

    def start(self) -> Host:
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "ftl", "serve", "--config", str(self.config)],
            stdout=subprocess.PIPE,
            stderr=open(self.tmp / f"{self.name}-serve.log", "ab"),  # noqa: SIM115
            text=True,
        )
        line = self.proc.stdout.readline()
        if "listening on" not in line:
            self.stop()
            log = (self.tmp / f"{self.name}-serve.log").read_text()
            raise RuntimeError(f"ftl serve did not start: {line!r}\n{log}")
        self.address = line.strip().rpartition(" ")[2]
        return self

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(10)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.kill()

    def log(self) -> str:
        return (self.tmp / f"{self.name}-serve.log").read_text()


def tls(tmp: Path, name: str) -> ftl.TLSConfig:
    return ftl.TLSConfig(
        ca=tmp / "certs" / "ca.crt",
        cert=tmp / "certs" / f"{name}.crt",
        key=tmp / "certs" / f"{name}.key",
    )


PLAINTEXT_POLICY = """
    [policy]
    allow_plaintext = true
    min_key_size = 512
    min_intersection = 10

    [[policy.peers]]
    identity = "hospital"
"""


@pytest.fixture(scope="module")
def certs_dir(tmp_path_factory) -> Path:
    tmp = tmp_path_factory.mktemp("remote")
    make_certificates(tmp / "certs", ["hospital", "lab", "stranger"])
    return tmp


@pytest.fixture(scope="module")
def lab(certs_dir):
    host = Host(certs_dir, "lab", DATA / "breast_hetero_host.csv", PLAINTEXT_POLICY).start()
    yield host
    host.stop()


@pytest.fixture(scope="module")
def breast_parties():
    return ftl.datasets.load_breast_cancer()


def remote_lab(certs_dir, lab, **kw) -> ftl.RemoteParty:
    return ftl.RemoteParty("lab", lab.address, tls=tls(certs_dir, "hospital"), **kw)


def test_remote_party_reports_public_facts(certs_dir, lab, breast_parties):
    shop = remote_lab(certs_dir, lab)
    local = breast_parties[1]
    assert shop.n_rows == local.n_rows
    assert shop.feature_names == local.feature_names
    assert not shop.has_labels
    assert "lab" in repr(shop)
    assert shop.policy["min_intersection"] == 10
    # every protocol's setting is announced, the defaults included
    settings = shop.policy["protocol_settings"]
    assert settings["allow_lbfgs"] is True and settings["sbt_min_samples_leaf"] == 20


def test_remote_fit_equals_in_process_fit_in_plaintext(certs_dir, lab, breast_parties):
    guest, local_host = breast_parties
    remote = remote_lab(certs_dir, lab)
    X_r, y_r = ftl.align(guest, remote, order="id")
    X_l, y_l = ftl.align(guest, local_host, order="id")
    np.testing.assert_array_equal(X_r.ids, X_l.ids)
    params = dict(encryption=None, random_state=0, max_iter=5, batch_size=128)
    fed_r = ftl.FederatedLogisticRegression(**params).fit(X_r, y_r)
    fed_l = ftl.FederatedLogisticRegression(**params).fit(X_l, y_l)
    np.testing.assert_array_equal(fed_r.coef_, fed_l.coef_)
    np.testing.assert_array_equal(fed_r.intercept_, fed_l.intercept_)
    # Prediction masks the host's margin with fresh random masks, which in
    # plaintext mode are added and removed in float64: equal to rounding.
    np.testing.assert_allclose(
        fed_r.decision_function(X_r), fed_l.decision_function(X_l), rtol=0, atol=1e-12
    )


def test_remote_encrypted_fit_matches_in_process_to_fixed_point_precision(
    certs_dir, lab, breast_parties
):
    guest, local_host = breast_parties
    X_r, y_r = ftl.align(guest, remote_lab(certs_dir, lab), order="id")
    X_l, y_l = ftl.align(guest, local_host, order="id")
    params = dict(random_state=0, max_iter=3, batch_size=256, **SMALL_KEY)
    fed_r = ftl.FederatedLogisticRegression(**params).fit(X_r, y_r)
    fed_l = ftl.FederatedLogisticRegression(**params).fit(X_l, y_l)
    np.testing.assert_allclose(fed_r.coef_, fed_l.coef_, atol=1e-4)
    np.testing.assert_allclose(
        fed_r.decision_function(X_r[:50]), fed_l.decision_function(X_l[:50]), atol=1e-3
    )
    # What crossed is the same list of message types in both runs.
    assert [r.type for r in fed_r.transcript_] == [r.type for r in fed_l.transcript_]


def test_both_sides_keep_an_audit_log_that_ftl_report_reads(certs_dir, lab, breast_parties):
    guest = breast_parties[0]
    driver_log = certs_dir / "hospital-audit.jsonl"
    remote = remote_lab(certs_dir, lab, audit_log=driver_log)
    X, y = ftl.align(guest, remote)
    clf = ftl.FederatedLogisticRegression(encryption=None, max_iter=2, random_state=0).fit(X, y)
    ours = ftl.Transcript.from_jsonl(driver_log)
    sent = [r for r in clf.transcript_ if r.receiver == "lab" or r.sender == "lab"]
    assert [r.type for r in ours][-len(sent) :] == [r.type for r in sent]
    theirs = ftl.Transcript.from_jsonl(lab.audit)
    session = clf.transcript_.records[-1].session
    assert [r.type for r in theirs if r.session == session] == [
        r.type for r in sent if r.session == session
    ]
    assert {r.sender for r in theirs} <= {"hospital", "lab"}
    assert {r.sender for r in ours} == {r.receiver for r in ours} == {"hospital", "lab"}
    text = ftl.report(str(lab.audit))
    assert "lr.contribution" in text


def test_pipeline_with_per_party_scaling_runs_on_the_remote_party(certs_dir, lab, breast_parties):
    from sklearn.pipeline import make_pipeline

    guest = breast_parties[0]
    X, y = ftl.align(guest, remote_lab(certs_dir, lab), order="id")
    pipe = make_pipeline(
        ftl.preprocessing.FederatedStandardScaler(),
        ftl.FederatedLogisticRegression(encryption=None, max_iter=5, random_state=0),
    )
    pipe.fit(X[:400], y[:400])
    assert pipe.score(X[400:], y[400:]) > 0.9


def test_cross_validation_runs_sessions_in_parallel_workers(certs_dir, lab, breast_parties):
    from sklearn.model_selection import cross_val_score

    guest = breast_parties[0]
    X, y = ftl.align(guest, remote_lab(certs_dir, lab), order="id")
    clf = ftl.FederatedLogisticRegression(encryption=None, max_iter=3, random_state=0)
    scores = cross_val_score(clf, X, y, cv=3, n_jobs=2, scoring="roc_auc")
    assert scores.min() > 0.95


@pytest.mark.filterwarnings("ignore::sklearn.exceptions.ConvergenceWarning")
def test_transfer_classifier_runs_against_a_remote_target(certs_dir):
    import pandas as pd

    data = ftl.datasets.load_breast_transfer(overlap=150)
    target = data.target
    rows = np.arange(target.n_rows)
    frame = pd.DataFrame(target.raw_features(rows), columns=target.feature_names)
    frame.insert(0, "id", target.local_ids())
    csv = certs_dir / "breast_target.csv"
    frame.to_csv(csv, index=False)
    assert (data.source.name, target.name) == ("hospital", "lab")  # the certificates' names
    # scoring rows by raw id is off unless the target's policy allows it (score_ids)
    host = Host(certs_dir, "lab", csv, PLAINTEXT_POLICY + "    score_ids = true\n").start()
    try:
        remote = remote_lab(certs_dir, host)
        X, y = ftl.align(data.source, remote, how="left")
        clf = ftl.FederatedTransferClassifier(
            encryption=None, max_iter=3, pretrain_epochs=3, random_state=0
        ).fit(X, y)
        assert clf.predict(X).shape == (len(X),)
        wanted = data.target_only_ids[:20]  # the target's minimum rows per request
        scored = clf.decision_function(remote.select(wanted))
        assert scored.shape == (20,)
    finally:
        host.stop()


# -- the host's policy, enforced by the host -------------------------------------------

STRICT_POLICY = """
    [policy]
    min_key_size = 2048
    min_intersection = 100
    max_alignments_per_day = 3

    [[policy.peers]]
    identity = "hospital"
    protocols = ["psi", "lr"]
    columns = ["x0", "x1", "x2", "x3", "x4"]
"""


@pytest.fixture(scope="module")
def strict_lab(certs_dir):
    host = Host(
        certs_dir,
        "lab",
        DATA / "breast_hetero_host.csv",
        STRICT_POLICY,
        server='state_file = "lab-state.json"',
        config_name="strict-lab",
    )
    host.start()
    yield host
    host.stop()


def test_unauthenticated_client_is_rejected(certs_dir, lab):
    ca = (certs_dir / "certs" / "ca.crt").read_bytes()
    channel = grpc.secure_channel(lab.address, grpc.ssl_channel_credentials(root_certificates=ca))
    info = channel.unary_unary("/ftl.Party/Info")
    with pytest.raises(grpc.RpcError) as err:
        info(b"", timeout=10)
    assert err.value.code() == grpc.StatusCode.UNAVAILABLE  # the TLS handshake fails
    channel.close()
    plain = grpc.insecure_channel(lab.address)
    with pytest.raises(grpc.RpcError):
        plain.unary_unary("/ftl.Party/Info")(b"", timeout=10)
    plain.close()


def test_certificate_from_another_ca_cannot_connect(certs_dir, lab, tmp_path):
    make_certificates(tmp_path / "other", ["hospital"])
    other = ftl.TLSConfig(
        ca=certs_dir / "certs" / "ca.crt",
        cert=tmp_path / "other" / "hospital.crt",
        key=tmp_path / "other" / "hospital.key",
    )
    with pytest.raises(ftl.federation.PartyUnavailableError, match="lab"):
        ftl.RemoteParty("lab", lab.address, tls=other, connect_timeout=10, retries=0)


def test_peer_not_in_the_policy_is_refused(certs_dir, lab):
    with pytest.raises(ftl.PolicyError, match="'stranger' is not allowed"):
        ftl.RemoteParty("lab", lab.address, tls=tls(certs_dir, "stranger"))
    assert "refused info from stranger" in lab.log()


def test_wrong_party_name_is_a_clear_error(certs_dir, lab):
    # The lab's certificate does not name "shop": TLS refuses it before any request.
    with pytest.raises(PeerIdentityError, match="certificate for 'lab.ftl'.*'shop.ftl'"):
        ftl.RemoteParty("shop", lab.address, tls=tls(certs_dir, "hospital"), retries=0)


def test_the_pinned_server_name_can_be_set_per_party(certs_dir, lab, caplog):
    # A PKI that names the party otherwise: pin a name its certificate carries.
    remote = ftl.RemoteParty(
        "lab", lab.address, tls=tls(certs_dir, "hospital"), server_name="localhost"
    )
    assert remote.server_name == "localhost" and remote.n_rows > 0
    with pytest.raises(PeerIdentityError, match="'stranger.ftl'"):
        ftl.RemoteParty(
            "lab", lab.address, tls=tls(certs_dir, "hospital"), server_name="stranger.ftl"
        )
    # at once: a name that does not match is not retried for `retry_for` seconds
    assert "retrying for up to" not in caplog.text
    # One server name for every party dialled with a configuration would pin none.
    shared = ftl.TLSConfig(**{**tls(certs_dir, "hospital").__dict__, "server_name": "localhost"})
    with pytest.raises(ValueError, match="server_name is no longer used"):
        ftl.RemoteParty("lab", lab.address, tls=shared)


def test_policy_columns_protocols_plaintext_and_key_size(certs_dir, strict_lab, breast_parties):
    guest = breast_parties[0]
    remote = remote_lab(certs_dir, strict_lab)
    assert remote.feature_names == ["x0", "x1", "x2", "x3", "x4"]  # the rest do not exist
    X, y = ftl.align(guest, remote)
    assert X.shape[1] == guest.n_features + 5
    with pytest.raises(ftl.PolicyError, match="encryption=None is not allowed"):
        ftl.FederatedLogisticRegression(encryption=None, max_iter=1).fit(X, y)
    with pytest.raises(ftl.PolicyError, match="insecure test keys is not allowed"):
        ftl.FederatedLogisticRegression(key_size=1024, insecure_for_tests=True).fit(X, y)
    with pytest.raises(ftl.PolicyError, match="may not run 'prep.party'"):
        ftl.preprocessing.FederatedStandardScaler().fit(X)
    log = strict_lab.log()
    assert "encryption=None is not allowed" in log and "may not run 'prep.party'" in log


def test_min_intersection_stops_membership_probing(certs_dir, strict_lab, breast_parties):
    guest = breast_parties[0]
    few = ftl.Party(
        "hospital",
        np.zeros((5, 1)),
        ids=guest.local_ids()[:5],
        labels=np.array([0, 1, 0, 1, 0]),
    )
    remote = remote_lab(certs_dir, strict_lab)
    with pytest.raises(ftl.PolicyError, match="100"):
        ftl.align(few, remote)


def test_alignments_per_day_are_limited_and_survive_a_restart(certs_dir, breast_parties, tmp_path):
    guest = breast_parties[0]
    policy = STRICT_POLICY.replace("max_alignments_per_day = 3", "max_alignments_per_day = 1")
    (certs_dir / "rate-state.json").unlink(missing_ok=True)
    host = Host(
        certs_dir,
        "lab",
        DATA / "breast_hetero_host.csv",
        policy,
        server='state_file = "rate-state.json"',
        config_name="rate-lab",
    )
    host.start()
    try:
        remote = remote_lab(certs_dir, host)
        ftl.align(guest, remote)
        with pytest.raises(ftl.PolicyError, match="alignment"):
            ftl.align(guest, remote)
        host.stop()
        host.start()
        remote = remote_lab(certs_dir, host)
        with pytest.raises(ftl.PolicyError, match="alignment"):
            ftl.align(guest, remote)
    finally:
        host.stop()


# -- faults ---------------------------------------------------------------------------


def test_killed_host_mid_fit_gives_clean_error_and_restarted_host_serves(certs_dir, breast_parties):
    import threading

    guest = breast_parties[0]
    host = Host(
        certs_dir, "lab", DATA / "breast_hetero_host.csv", PLAINTEXT_POLICY, config_name="fault-lab"
    )
    host.start()
    try:
        # a killed host refuses connections: retried for retry_for seconds, then clean
        remote = remote_lab(certs_dir, host, timeout=30, retry_for=5)
        X, y = ftl.align(guest, remote)
        killer = threading.Timer(1.5, host.kill)
        killer.start()
        t0 = time.perf_counter()
        with pytest.raises(ftl.federation.PartyUnavailableError, match="lab.*did not answer"):
            ftl.FederatedLogisticRegression(max_iter=200, tol=0, **SMALL_KEY).fit(X, y)
        assert time.perf_counter() - t0 < 30
        killer.join()
        host.start()  # a fresh process: alignments are gone, the next fit aligns again
        remote = remote_lab(certs_dir, host)
        X, y = ftl.align(guest, remote)
        clf = ftl.FederatedLogisticRegression(encryption=None, max_iter=3).fit(X, y)
        assert clf.score(X, y) > 0.9
    finally:
        host.stop()


def scores_after_a_restart(certs_dir, host, guest, path):
    """Restart ``host``, re-align with it and reload the driver's file ``path``: the
    reloaded model's scores of the first 20 rows (by id)."""
    host.stop()
    host.start()
    X, _ = ftl.align(guest, remote_lab(certs_dir, host), order="id")
    return ftl.load_model(path).decision_function(X[:20])


def host_keeping_models(certs_dir, tmp_path, config_name: str) -> Host:
    """A started lab host that keeps model shards in ``tmp_path / "models"``."""
    host = Host(
        certs_dir,
        "lab",
        DATA / "breast_hetero_host.csv",
        PLAINTEXT_POLICY,
        server=f'model_dir = "{tmp_path / "models"}"',
        config_name=config_name,
    )
    return host.start()


def test_host_keeps_model_shards_across_a_restart(certs_dir, breast_parties, tmp_path):
    guest = breast_parties[0]
    host = host_keeping_models(certs_dir, tmp_path, "models-lab")
    try:
        remote = remote_lab(certs_dir, host)
        X, y = ftl.align(guest, remote, order="id")
        clf = ftl.FederatedLogisticRegression(random_state=0, max_iter=3, **SMALL_KEY).fit(X, y)
        before = clf.decision_function(X[:20])
        ftl.save_model(clf, tmp_path / "hospital.json")
        shard = tmp_path / "models" / "hospital" / f"{clf.models_[0]['model_id']}.json"
        assert shard.exists() and shard.stat().st_mode & 0o077 == 0
        after = scores_after_a_restart(certs_dir, host, guest, tmp_path / "hospital.json")
        np.testing.assert_allclose(after, before, atol=1e-6)
    finally:
        host.stop()


@pytest.mark.slow
def test_remote_fit_on_default_2048_bit_keys_under_a_strict_policy(
    certs_dir, strict_lab, breast_parties
):
    guest = breast_parties[0]
    remote = remote_lab(certs_dir, strict_lab)
    X, y = ftl.align(guest, remote)
    clf = ftl.FederatedLogisticRegression(max_iter=2, random_state=0).fit(X, y)
    assert clf.score(X, y) > 0.9
    kinds = clf.transcript_.messages_by_kind()
    assert kinds.get("ciphertext", 0) > 0 and "plaintext" not in kinds
    per_sample = [f for r in clf.transcript_ for f in r.fields if f.per_sample]
    assert per_sample and all(f.kind in ("ciphertext", "masked") for f in per_sample)
    report = ftl.report(clf)
    assert "2048" in report


def test_host_keeps_a_pipeline_model_and_its_transformer_across_a_restart(
    certs_dir, breast_parties, tmp_path
):
    from sklearn.pipeline import make_pipeline

    guest = breast_parties[0]
    host = host_keeping_models(certs_dir, tmp_path, "pipeline-lab")
    try:
        remote = remote_lab(certs_dir, host)
        X, y = ftl.align(guest, remote, order="id")
        pipe = make_pipeline(
            ftl.preprocessing.FederatedStandardScaler(),
            ftl.FederatedLogisticRegression(encryption=None, random_state=0, max_iter=3),
        ).fit(X, y)
        before = pipe.decision_function(X[:20])
        path = ftl.save_model(pipe, tmp_path / "hospital-pipeline.json")
        after = scores_after_a_restart(certs_dir, host, guest, path)
        np.testing.assert_allclose(after, before, atol=1e-9)
    finally:
        host.stop()
