"""A guest and ``ftl serve`` on two machines (namespaces), through a misbehaving network.

Each test runs a driver script in the guest's namespace that aligns with the lab
over the link and fits a plaintext model (``encryption=None``, ``order="id"``:
the very protocol, bit-reproducible), through the fault-injecting proxy
(:mod:`proxy`) with 40 ms of round-trip time unless said otherwise. The script
also fits the same model in-process (the guest's own party, hence the same
secret start), the reference every networked fit must reproduce exactly.

Faults are timed by bytes (``after_bytes``): a clean fit here moves about
300 kB, so a fault after 60 kB strikes while the fit's requests are in flight
whatever the machine's load.
"""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from collections import Counter

import numpy as np
import pytest

import ftl

from . import bed as bed_module
from .conftest import require_namespaces
from .deployment import TEST_POLICY

RTT_MS = 40
#: Bytes through the proxy after which a fault strikes: within the fit's requests.
MID_FIT = 60_000
PLAINTEXT = dict(encryption=None, random_state=0, max_iter=5)


def fit_script(
    timeout: float,
    faults=(),
    params=PLAINTEXT,
    *,
    heal_after: float = 0.0,
    reference: bool = True,
    proxy: bool = True,
) -> str:
    """A driver script: reference fit, PSI with the lab, ``faults``, fit, prediction.

    A fit that fails with :class:`~ftl.federation.PartyUnavailableError` reports the
    error and how long it took; with ``heal_after`` the script then waits that long
    (from the fit's start) and fits again on the same alignment. ``proxy=False``: the
    script dials the lab directly (no faults, no proxy counters).
    """
    return f"""
        import time
        import ftl
        from netbed.guest import *

        params = {params!r}
        guest = guest_party()
        result = {{}}
        if {reference!r}:  # first, so that it also loads everything the fit needs
            X_ref, y_ref = ftl.align(guest, local_host(), order="id")
            reference = ftl.FederatedLogisticRegression(**params).fit(X_ref, y_ref)
            result["reference"] = model_summary(reference, X_ref)
        lab = remote_party(timeout={timeout!r})
        with timed(result, "psi"):
            X, y = ftl.align(guest, lab, order="id")
        for fault in {list(faults)!r}:
            inject(**fault)
        started = time.monotonic()
        try:
            with timed(result, "fit"):
                clf = ftl.FederatedLogisticRegression(**params).fit(X, y)
        except ftl.federation.PartyUnavailableError as exc:
            result["error"] = str(exc)
            result["error_after"] = time.monotonic() - started
            time.sleep(max(0.0, started + {heal_after!r} - time.monotonic()))
            clf = ftl.FederatedLogisticRegression(**params).fit(X, y)
        result["model"] = model_summary(clf, X)
        result["proxy"] = proxy_stats() if {proxy!r} else None
        emit(**result)
    """


def drive(bed, deployment, lab, name: str, script: str, rtt_ms=RTT_MS, **proxy) -> dict:
    """Run ``script`` in the guest's namespace through a fresh proxy; the result, with
    the proxy's fault events and the driver's sessions."""
    through = bed.proxy(lab.address, rtt_ms=rtt_ms, name=name, **proxy)
    audit = deployment.workdir / f"{name}-driver.jsonl"
    try:
        result = bed.drive(script, deployment.driver(through.address, audit, through.control))
    finally:
        through.stop()
    records = ftl.Transcript.from_jsonl(audit).records
    result["events"] = through.events()
    result["sessions"] = {r.session for r in records}
    result["requests"] = Counter(r.session for r in records if r.receiver == deployment.host)
    return result


def host_outcomes(deployment, sessions) -> dict[str, Counter]:
    """Per session of ``sessions``: the lab's audit outcomes of its requests."""
    outcomes: dict[str, Counter] = {}
    for r in ftl.Transcript.from_jsonl(deployment.audit_log("lab")):
        if r.session in sessions and r.outcome is not None:
            outcomes.setdefault(r.session, Counter())[r.outcome] += 1
    return outcomes


def assert_same_model(result) -> None:
    """The networked fit is the in-process one, to the bit (plaintext, order="id")."""
    model, reference = result["model"], result["reference"]
    assert model["coef"] == reference["coef"]
    assert model["intercept"] == reference["intercept"]
    assert model["n_iter"] == reference["n_iter"]
    # prediction masks the host's margin with fresh masks: equal to rounding
    assert model["decision"] == pytest.approx(reference["decision"], rel=0, abs=1e-12)


def assert_each_request_ran_once(result, deployment) -> Counter:
    """Every request the driver sent was run once at the lab: as many accepted as
    sent, per session; returns the outcomes over all the run's sessions."""
    outcomes = host_outcomes(deployment, result["sessions"])
    for session, sent in result["requests"].items():
        assert outcomes[session]["accepted"] == sent, (session, outcomes[session], sent)
    return sum(outcomes.values(), Counter())


# -- the bed itself -------------------------------------------------------------------


def test_skips_with_the_reason_where_namespaces_cannot_be_made(monkeypatch):
    def not_root(argv, **kw):
        return subprocess.CompletedProcess(argv, 1, "", "mount --make-shared: Permission denied")

    monkeypatch.setattr(bed_module.subprocess, "run", not_root)
    with pytest.raises(pytest.skip.Exception, match="Permission denied.*needs root"):
        require_namespaces()
    monkeypatch.setattr(bed_module.shutil, "which", lambda name: None)
    with pytest.raises(pytest.skip.Exception, match="iproute2"):
        require_namespaces()


def test_bed_is_two_machines_on_one_link(bed, lab):
    host, port = lab.address.rsplit(":", 1)
    assert host == bed.host_addr  # ftl serve listens on the host's link address only
    connect = f"import socket; socket.create_connection(({host!r}, {port}), timeout=2)"
    from_guest = ["ip", "netns", "exec", bed.guest_ns, sys.executable, "-c", connect]
    assert subprocess.run(from_guest, capture_output=True).returncode == 0
    # the link is the bed's own: this machine's namespace has no route to it
    from_outside = subprocess.run([sys.executable, "-c", connect], capture_output=True)
    assert from_outside.returncode != 0


# -- the same model over any link -------------------------------------------------------


@pytest.mark.parametrize("rtt_ms, jitter_ms", [(0, 0), (RTT_MS, 4)])
def test_fit_through_the_bed_is_the_in_process_fit(bed, deployment, lab, rtt_ms, jitter_ms):
    script = fit_script(timeout=30)
    result = drive(bed, deployment, lab, f"clean-{rtt_ms}", script, rtt_ms, jitter_ms=jitter_ms)
    assert_same_model(result)
    outcomes = assert_each_request_ran_once(result, deployment)
    assert outcomes["repeated"] == outcomes["refused"] == 0
    # every call is a round trip: at 40 ms (+-4 ms each way) no call is faster
    fit = result["fit"]
    assert fit["seconds"] >= fit["calls"] * (rtt_ms - 2 * jitter_ms) / 1000


@pytest.mark.slow
def test_encrypted_fit_on_default_keys_through_the_bed(bed, deployment, lab):
    params = dict(random_state=0, max_iter=2)  # Paillier with the default 2048-bit keys
    result = drive(bed, deployment, lab, "default-keys", fit_script(timeout=120, params=params))
    model, reference = result["model"], result["reference"]
    # equal to fixed-point precision (each party's encryption randomness differs)
    np.testing.assert_allclose(model["coef"], reference["coef"], atol=1e-4)
    np.testing.assert_allclose(model["decision"], reference["decision"], atol=1e-3)
    assert_each_request_ran_once(result, deployment)


def test_direct_link_without_proxy_gives_the_same_model(bed, deployment, lab):
    audit = deployment.workdir / "direct-driver.jsonl"
    result = bed.drive(fit_script(timeout=30, proxy=False), deployment.driver(lab.address, audit))
    assert_same_model(result)


# -- faults shorter than the timeout are survived ----------------------------------------


@pytest.mark.parametrize("fault", ["stall", "partition"])
def test_outage_shorter_than_the_timeout_is_survived(bed, deployment, lab, fault):
    seconds = 3.0
    script = fit_script(timeout=20, faults=[{"after_bytes": MID_FIT, fault: seconds}])
    result = drive(bed, deployment, lab, f"short-{fault}", script)
    start, end = result["events"]
    assert (start["event"], end["event"]) == (f"{fault}-start", f"{fault}-end")
    assert end["held_bytes"] > 0  # it held back the fit's traffic, mid-fit
    assert "error" not in result
    assert result["fit"]["seconds"] >= seconds
    assert_same_model(result)
    # no duplicate effects: the lab ran every request exactly once, none twice
    outcomes = assert_each_request_ran_once(result, deployment)
    assert outcomes["repeated"] == 0


def test_partition_longer_than_the_timeout_fails_cleanly_and_the_lab_stays_healthy(
    bed, deployment, lab
):
    timeout, partition = 2.0, 8.0
    script = fit_script(
        timeout=timeout,
        faults=[{"after_bytes": MID_FIT, "partition": partition}],
        heal_after=partition + 1,
    )
    result = drive(bed, deployment, lab, "long-partition", script)
    assert "did not answer" in result["error"]
    # the call in flight waits out its timeout, then the fit's best-effort close of
    # the session waits at most min(timeout, connect_timeout): the error reaches the
    # driver after at most about 2 * timeout (a deadline is not retried)
    assert timeout <= result["error_after"] <= 2 * timeout + 2.0
    # the same driver fits again after the partition, on the same alignment
    assert_same_model(result)


# -- connection resets -------------------------------------------------------------------


@pytest.mark.parametrize("reset", [True, "reply"], ids=["in-flight", "reply-lost"])
def test_connection_reset_mid_fit_is_survived_by_a_retry(bed, deployment, lab, reset):
    script = fit_script(timeout=20, faults=[{"after_bytes": MID_FIT, "reset": reset}])
    result = drive(bed, deployment, lab, f"reset-{reset}", script)
    (event,) = result["events"]
    assert event["event"] == "reset" and event["connections"] == 1
    assert result["proxy"]["connections"] == 2  # the client reconnected once
    assert "error" not in result
    assert_same_model(result)
    outcomes = assert_each_request_ran_once(result, deployment)
    if reset == "reply":
        # the lab had run the request when its reply was lost: the retransmission
        # was answered with the stored reply, not run again
        assert outcomes["repeated"] == 1


def test_repeated_resets_mid_fit_are_survived(bed, deployment, lab):
    faults = [{"after_bytes": MID_FIT * k, "reset": True} for k in (1, 2, 3)]
    result = drive(bed, deployment, lab, "resets", fit_script(timeout=20, faults=faults))
    assert [e["event"] for e in result["events"]] == ["reset"] * 3
    assert_same_model(result)
    assert_each_request_ran_once(result, deployment)


def test_outage_refusing_connections_shorter_than_the_timeout_is_survived(bed, deployment, lab):
    # what a host restart or a firewall fail-over looks like: connections reset, and new
    # ones refused for a few seconds
    outage = 4.0
    faults = [
        {"after_bytes": MID_FIT, "partition": outage, "new": "refuse"},
        {"after_bytes": MID_FIT, "reset": True},
    ]
    script = fit_script(timeout=20, faults=faults, heal_after=outage + 1)
    result = drive(bed, deployment, lab, "refused", script)
    assert_same_model(result)  # the fit after the outage works either way
    assert "error" not in result, f"after {result['error_after']:.1f} s: {result['error']}"


# -- ftl serve's own exit ------------------------------------------------------------------


def test_serve_stops_on_sigterm_leaving_no_process_behind(bed, deployment):
    before = set(bed.pids(bed.host_ns))
    policy = {**TEST_POLICY, "n_jobs": 2}  # the host's own worker processes
    host = bed.serve(deployment.write_config("lab-sigterm", policy))
    # an encrypted fit starts the host's workers and its randomness pool's process
    encrypted = dict(encryption="paillier", key_size=1024, insecure_for_tests=True, max_iter=2)
    script = fit_script(timeout=30, params=encrypted, reference=False, proxy=False)
    bed.drive(script, deployment.driver(host.address, deployment.workdir / "sigterm.jsonl"))
    started = set(bed.pids(bed.host_ns)) - before
    assert host.proc.pid in started and len(started) > 1
    stopping = time.monotonic()
    host.proc.send_signal(signal.SIGTERM)
    assert host.proc.wait(10) == 0
    assert time.monotonic() - stopping < 6.0  # it finishes open calls for up to 5 s
    assert "ftl.serve INFO stopped" in host.log_text()
    while set(bed.pids(bed.host_ns)) - before and time.monotonic() - stopping < 10:
        time.sleep(0.1)
    left = set(bed.pids(bed.host_ns)) - before
    assert not left, f"ftl serve left processes behind: {left}"
