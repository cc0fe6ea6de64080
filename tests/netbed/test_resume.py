"""A host restarted mid-fit on the other machine, through a slow and resetting link.

The lab's ``ftl serve`` keeps checkpoints (``checkpoint_dir``); the test kills it
(SIGKILL) once it has kept a few iterations of the fit and starts it again on the
same address a second later, while the fault-injecting proxy delays every byte
by 20 ms each way and resets the connections once. The driver's calls are
retried until the lab is back, which refuses the lost session; the driver then
resumes the fit there, and the model is the in-process one to the bit.
"""

from __future__ import annotations

import json
import signal
import sys
import threading
import time
from collections import Counter
from pathlib import Path

import pytest

import ftl

from .bed import ServeProcess
from .deployment import TEST_POLICY
from .test_network import MID_FIT, assert_same_model, drive, fit_script

#: Iterations the lab keeps before it is killed.
KILL_AT_STEP = 3


def kept_step(folder: Path) -> int:
    """The latest step the lab kept of a fit in ``folder`` (-1: none yet)."""
    for path in folder.glob("*/lr/*.json"):
        try:
            return json.loads(path.read_text())["body"]["latest"]["step"]
        except (OSError, ValueError, KeyError):  # replaced while read: look again
            continue
    return -1


def serve_on(bed, config: Path, address: str) -> ServeProcess:
    """``ftl serve`` with ``config`` in the host's namespace, listening on ``address``."""
    argv = [sys.executable, "-m", "ftl", "serve", "--config", str(config), "--listen", address]
    log = config.with_suffix(".log")
    return ServeProcess(bed.popen(bed.host_ns, argv, log), log)


class Restarter(threading.Thread):
    """Kills the lab once its checkpoint of the fit reached ``step``; starts it again
    on the same address ``pause`` seconds later."""

    def __init__(self, bed, config: Path, lab: ServeProcess, folder: Path, step: int, pause=1.0):
        super().__init__(daemon=True)
        self.bed, self.config, self.lab, self.folder = bed, config, lab, folder
        self.step, self.pause = step, pause
        self.restarted: ServeProcess | None = None
        self.error: BaseException | None = None

    def run(self) -> None:
        try:
            deadline = time.monotonic() + 120
            while kept_step(self.folder) < self.step:
                if time.monotonic() > deadline:
                    raise TimeoutError(f"the lab never kept step {self.step}")
                time.sleep(0.01)
            self.lab.proc.send_signal(signal.SIGKILL)
            self.lab.proc.wait(10)
            time.sleep(self.pause)
            self.restarted = serve_on(self.bed, self.config, self.lab.address)
        except BaseException as exc:  # noqa: BLE001 - reported by the test
            self.error = exc


@pytest.mark.slow
def test_host_restart_mid_fit_through_a_faulty_link_is_resumed(bed, deployment):
    folder = deployment.workdir / "lab-checkpoints"
    config = deployment.write_config(
        "lab-resume", TEST_POLICY, server={"checkpoint_dir": str(folder)}
    )
    lab = bed.serve(config)
    restarter = Restarter(bed, config, lab, folder, KILL_AT_STEP)
    restarter.start()
    try:
        # 40 ms round trips, a reset mid-fit, and the lab down for a second
        script = fit_script(timeout=30, faults=[{"after_bytes": MID_FIT, "reset": True}])
        result = drive(bed, deployment, lab, "restart", script)
    finally:
        restarter.join(5)
        for process in (lab, restarter.restarted):
            if process is not None:
                process.stop()
    assert restarter.error is None, restarter.error
    assert restarter.restarted is not None, "the lab was not restarted mid-fit"
    assert "error" not in result, result.get("error")
    assert_same_model(result)
    # the fit went on in a session opened with lr.resume, whose requests the
    # restarted lab each ran once
    records = ftl.Transcript.from_jsonl(deployment.audit_log("lab-resume")).records
    resumed = {r.session for r in records if r.type == "lr.resume"}
    assert len(resumed) == 1 and resumed <= result["sessions"]
    outcomes = Counter(r.outcome for r in records if r.session in resumed and r.outcome)
    assert outcomes["accepted"] == result["requests"][resumed.pop()]
    assert set(outcomes) == {"accepted"}
    assert not list(folder.glob("*/lr/*.json"))  # finished: nothing left to resume
