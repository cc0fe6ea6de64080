"""A host restarted mid SecureBoost fit on the other machine, through a faulty link.

The lab's ``ftl serve`` keeps checkpoints (``checkpoint_dir``); the test kills it
(SIGKILL) once it has kept a few boosting iterations of the fit and starts it again
on the same address a second later, while the fault-injecting proxy delays every
byte by 20 ms each way and resets the connections once. The driver's calls are
retried until the lab is back, which refuses the lost session; the driver resumes
the fit there (``sbt.resume``), and the trees are the in-process fit's to the bit.
"""

from __future__ import annotations

import contextlib
from pathlib import Path

import pytest

import ftl
from ftl.exceptions import CheckpointError
from ftl.federation.checkpoints import read_checkpoint

from . import test_resume
from .deployment import TEST_POLICY
from .test_network import MID_FIT, drive
from .test_psi_resume import restarted

#: Boosting iterations the lab keeps before it is killed (of ``PARAMS["max_iter"]``).
KILL_AT_STEP = 3
#: A plaintext fit (the very protocol, bit-reproducible); leaves of the policy's size.
PARAMS = dict(encryption=None, random_state=0, max_iter=8, max_leaf_nodes=8, min_samples_leaf=20)


def kept_sbt_step(folder: Path) -> int:
    """The latest step the lab kept of a SecureBoost fit in ``folder`` (-1: none yet)."""
    for path in folder.glob("*/sbt/*.json"):
        with contextlib.suppress(CheckpointError):  # replaced while read: look again
            return read_checkpoint(path, "sbt")["latest"]["step"]
    return -1


def boosting_script(faults: list) -> str:
    """Reference fit in-process; PSI with the lab, ``faults``, the same fit with it."""
    return f"""
        import ftl
        from netbed.guest import *

        params = {PARAMS!r}
        Boosting = ftl.ensemble.FederatedGradientBoostingClassifier

        def summary(clf, X):
            trees = [t for per_iteration in clf.trees_ for t in per_iteration]
            return {{
                "values": [t.value.tolist() for t in trees],
                "blocks": [t.block.tolist() for t in trees],
                "raw": clf.decision_function(X).tolist(),
            }}

        guest = guest_party()
        result = {{}}
        X_ref, y_ref = ftl.align(guest, local_host(), order="id")
        result["reference"] = summary(Boosting(**params).fit(X_ref, y_ref), X_ref)
        lab = remote_party(timeout=30, retry_for=60)
        X, y = ftl.align(guest, lab, order="id")
        for fault in {faults!r}:
            inject(**fault)
        with timed(result, "fit"):
            clf = Boosting(**params).fit(X, y)
        result["model"] = summary(clf, X)
        emit(**result)
    """


@pytest.mark.slow
def test_host_restart_mid_boosting_through_a_faulty_link_is_resumed(bed, deployment, monkeypatch):
    folder = deployment.workdir / "lab-sbt-checkpoints"
    config = deployment.write_config(
        "lab-sbt-resume", TEST_POLICY, server={"checkpoint_dir": str(folder)}
    )
    lab = bed.serve(config)
    monkeypatch.setattr(test_resume, "kept_step", kept_sbt_step)  # watch the boosting fit
    with restarted(test_resume.Restarter(bed, config, lab, folder, KILL_AT_STEP)):
        # 40 ms round trips, a reset mid-fit, and the lab down for a second
        script = boosting_script([{"after_bytes": MID_FIT, "reset": True}])
        result = drive(bed, deployment, lab, "sbt-restart", script)
    assert "error" not in result, result.get("error")
    assert result["model"] == result["reference"]  # the same trees, to the bit
    assert any(e["event"] == "reset" for e in result["events"]), result["events"]
    # the fit went on in one session opened with sbt.resume, whose requests the
    # restarted lab each ran once
    records = ftl.Transcript.from_jsonl(deployment.audit_log("lab-sbt-resume")).records
    resumed = {r.session for r in records if r.type == "sbt.resume"}
    assert len(resumed) == 1 and resumed <= result["sessions"]
    outcomes = [r.outcome for r in records if r.session in resumed and r.outcome]
    assert set(outcomes) == {"accepted"}
    assert len(outcomes) == result["requests"][resumed.pop()]
    assert not list(folder.glob("*/sbt/*.json"))  # finished: nothing left to resume
