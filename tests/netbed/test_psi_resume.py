"""A host restarted mid-alignment (or mid-count) on the other machine, through a slow link.

The lab's ``ftl serve`` keeps checkpoints (``checkpoint_dir``); the test kills it
(SIGKILL) once it has kept a good part of a named PSI run and starts it again on
the same address a second later, while the proxy delays every byte by 20 ms each
way. The driver's calls are retried until the lab is back, which refuses the
lost session; the driver resumes the run there (``psi.resume``), and the
alignment is the in-process one: the same ids, and the same model fitted on it
(a cardinality run: the same count).
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
from .test_network import PLAINTEXT, assert_same_model, drive

#: Batches the lab keeps (of 3 lists of 10 batches) before it is killed.
KILL_AT_STEP = 14


def kept_psi_step(folder: Path) -> int:
    """The latest step the lab kept of a PSI run in ``folder`` (-1: none yet)."""
    for path in folder.glob("*/psi/*.json"):
        with contextlib.suppress(CheckpointError):  # replaced while read: look again
            return read_checkpoint(path, "psi")["latest"]["step"]
    return -1


def align_script(checkpoint_dir: Path) -> str:
    """Reference alignment and fit in-process; a named alignment with the lab and the
    same fit on it."""
    return f"""
        import ftl
        from netbed.guest import *

        params = {PLAINTEXT!r}
        guest = guest_party()
        result = {{}}
        X_ref, y_ref = ftl.align(guest, local_host(), order="id")
        reference = ftl.FederatedLogisticRegression(**params).fit(X_ref, y_ref)
        result["reference"] = model_summary(reference, X_ref)
        lab = remote_party(timeout=30, retry_for=60)
        with timed(result, "psi"):
            X, y = ftl.align(
                guest, lab, order="id", batch_size=32, checkpoint_dir={str(checkpoint_dir)!r}
            )
        result["same_ids"] = X.ids.tolist() == X_ref.ids.tolist()
        clf = ftl.FederatedLogisticRegression(**params).fit(X, y)
        result["model"] = model_summary(clf, X)
        emit(**result)
    """


def count_script(checkpoint_dir: Path) -> str:
    """Reference count in-process; a named count with the lab."""
    return f"""
        import ftl
        from netbed.guest import *

        guest = guest_party()
        result = {{"reference": ftl.intersection_size(guest, local_host())}}
        lab = remote_party(timeout=30, retry_for=60)
        with timed(result, "psi"):
            result["count"] = ftl.intersection_size(
                guest, lab, batch_size=32, checkpoint_dir={str(checkpoint_dir)!r}
            )
        emit(**result)
    """


@contextlib.contextmanager
def restarted(restarter):
    """While the block runs, ``restarter`` kills and restarts the lab; both lab
    processes are stopped after it, and the restart must have happened."""
    restarter.start()
    try:
        yield
    finally:
        restarter.join(5)
        for process in (restarter.lab, restarter.restarted):
            if process is not None:
                process.stop()
    assert restarter.error is None, restarter.error
    assert restarter.restarted is not None, "the lab was not restarted mid-alignment"


def restart_mid_run(bed, deployment, monkeypatch, name: str, script) -> dict:
    """Run ``script(guest checkpoint folder)`` while the lab, keeping its checkpoints,
    is killed and restarted mid-run; the result. Exactly one session resumed the run,
    and the finished run left nothing at the lab."""
    folder = deployment.workdir / f"lab-{name}-checkpoints"
    config = deployment.write_config(
        f"lab-{name}-resume", TEST_POLICY, server={"checkpoint_dir": str(folder)}
    )
    lab = bed.serve(config)
    monkeypatch.setattr(test_resume, "kept_step", kept_psi_step)  # watch the PSI run
    with restarted(test_resume.Restarter(bed, config, lab, folder, KILL_AT_STEP)):
        code = script(deployment.workdir / f"guest-{name}-checkpoints")
        result = drive(bed, deployment, lab, f"{name}-restart", code)
    assert "error" not in result, result.get("error")
    records = ftl.Transcript.from_jsonl(deployment.audit_log(f"lab-{name}-resume")).records
    assert len({r.session for r in records if r.type == "psi.resume"}) == 1
    assert not list(folder.glob("*/psi/*.json"))  # finished: nothing left to resume
    return result


@pytest.mark.slow
def test_host_restart_mid_alignment_through_the_link_is_resumed(bed, deployment, monkeypatch):
    result = restart_mid_run(bed, deployment, monkeypatch, "psi", align_script)
    assert result["same_ids"]
    assert_same_model(result)


@pytest.mark.slow
def test_host_restart_mid_count_through_the_link_is_resumed(bed, deployment, monkeypatch):
    result = restart_mid_run(bed, deployment, monkeypatch, "count", count_script)
    assert result["count"] == result["reference"]
