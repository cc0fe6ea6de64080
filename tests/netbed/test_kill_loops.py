"""Kill loops on the other machine: the driver and ``ftl serve`` killed by turns.

Each test runs a driver script in the guest's namespace through the fault-injecting
proxy (40 ms round trips, and a reset of the connections early in every run of
the script) against a lab whose ``ftl serve`` keeps checkpoints. While the run goes
on, a seeded plan kills (SIGKILL) the driver and the lab by turns, a few times: each
kill waits until the run has moved a random number of steps past the last one, then
a random fraction of a step more. A killed driver is started again with the same
script and folders, a killed lab on the same address with the same configuration;
each resumes the run. A kill the run outpaced (it ended first) is no kill. The run
must end with exactly what an uninterrupted run gives, and the lab's audit log must
show that nothing was run twice with effect: one run opened and charged, the rest
resumed, each PSI batch stored once, no finished prediction batch scored again.
"""

from __future__ import annotations

import json
import math
import signal
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

import ftl

from .bed import DriverProcess, NetBed, ServeProcess, result_line
from .conftest import ROWS
from .deployment import TEST_POLICY
from .test_network import PLAINTEXT, RTT_MS, assert_same_model
from .test_psi_resume import kept_psi_step
from .test_resume import kept_step, serve_on

pytestmark = pytest.mark.slow

#: Who a kill stops, by turns (the driver first: it comes back faster).
VICTIMS = ("driver", "lab")
#: Longest wait for a run to reach the next kill, or to end (seconds).
PATIENCE = 60.0
#: Each run of a driver script has the proxy reset its connections this many bytes
#: after the run's protocol starts (early in it: every run moves more).
RESET_AFTER = 10_000


def kill_plan(seed: int, kills: int, most_steps: int, most_delay: float) -> list[tuple]:
    """``kills`` kills ``(victim, steps, delay)``, the driver first, then by turns:
    each ``1..most_steps`` steps past the last, then ``delay <= most_delay`` seconds."""
    rng = np.random.default_rng(seed)
    steps = rng.integers(1, most_steps + 1, size=kills).tolist()
    delays = rng.uniform(0, most_delay, size=kills).tolist()
    victims = [VICTIMS[k % len(VICTIMS)] for k in range(kills)]
    return list(zip(victims, steps, delays, strict=True))


@dataclass
class KillLoop:
    """A driver run and the lab it talks to, killed and started again by a plan.

    ``progress()`` is the run's step (monotone while it runs; -1 before it starts).
    """

    bed: NetBed
    config: Path
    lab: ServeProcess
    driver: DriverProcess
    progress: Callable[[], int]
    kills: list = field(default_factory=list)

    def run(self, plan) -> dict:
        """Follow ``plan`` (see :func:`kill_plan`); the driver's result."""
        for victim, steps, delay in plan:
            if not self._reach(max(self.progress(), 0) + steps):
                break  # the run ended first: no more kills
            time.sleep(delay)
            if self.driver.proc.poll() is not None:
                break
            self.kills.append((victim, self.progress()))
            if victim == "driver":
                printed = self.driver.kill()
                if result_line(printed) is not None:  # it had finished: no kill
                    self.kills.pop()
                    return json.loads(result_line(printed))
                self.driver.restart()
            else:
                self.lab.proc.send_signal(signal.SIGKILL)
                self.lab.proc.wait(10)
                self.lab = serve_on(self.bed, self.config, self.lab.address)
        return self.driver.result(PATIENCE)

    def _reach(self, step: int) -> bool:
        """Wait until the run is at ``step``; False if the driver ended first."""
        deadline = time.monotonic() + PATIENCE
        while self.progress() < step:
            if self.driver.proc.poll() is not None:
                return False
            assert time.monotonic() < deadline, f"step {step} not reached in {PATIENCE} s"
            time.sleep(0.01)
        return True


def kill_loop(
    bed, deployment, name: str, script, progress_of, plan, watch: str = "lab"
) -> tuple[dict, KillLoop]:
    """Run ``script(driver folder)`` through the proxy against a lab keeping checkpoints
    (and model shards), killed by ``plan``; the result and the loop, which killed both
    the driver and the lab, while the proxy reset the connections at least once, and
    left no checkpoint behind.
    ``progress_of(folder)`` reads the run's step in the lab's folder, or the driver's
    (``watch``)."""
    lab_folder, driver_folder = deployment.workdir / f"{name}-lab", deployment.workdir / name
    server = {"checkpoint_dir": str(lab_folder), "model_dir": str(lab_folder / "models")}
    config = deployment.write_config(f"lab-{name}", TEST_POLICY, server=server)
    lab = bed.serve(config)
    through = bed.proxy(lab.address, rtt_ms=RTT_MS, name=name)
    audit = deployment.workdir / f"{name}-driver.jsonl"
    driver = bed.start(
        script(driver_folder), deployment.driver(through.address, audit, through.control)
    )
    watched = {"lab": lab_folder, "driver": driver_folder}[watch]
    loop = KillLoop(bed, config, lab, driver, lambda: progress_of(watched))
    try:
        result = loop.run(plan)
    finally:
        if loop.driver.proc.poll() is None:  # the loop failed
            loop.driver.kill()
        for process in (loop.lab, through):
            process.stop()
    # both the driver and the lab were killed mid-run (every plan fits in its run),
    # and the proxy reset the link
    assert {victim for victim, _ in loop.kills} == set(VICTIMS), loop.kills
    assert any(e["event"] == "reset" for e in through.events()), through.events()
    # the finished run left nothing to resume on either side: the lab keeps only
    # alignment tables and model shards, the driver what its first run made
    kept = {*lab_folder.glob("*/alignments/*.json"), *lab_folder.glob("models/*/*.json")}
    assert set(lab_folder.rglob("*.json")) == kept
    assert set(driver_folder.rglob("*.*")) == set(driver_folder.glob("*.joblib"))
    return result, loop


def lab_records(deployment, name: str) -> list:
    """The lab's audit records of the loop ``name``: its requests and replies."""
    return ftl.Transcript.from_jsonl(deployment.audit_log(f"lab-{name}")).records


def budget_used(deployment, name: str, limit: str) -> list[int]:
    """Every reading of the budget ``limit`` the lab logged in the loop ``name``
    (in memory: a restarted lab counts from 0)."""
    lines = deployment.audit_log(f"lab-{name}").read_text().splitlines()
    readings = [json.loads(line).get("budget") for line in lines]
    return [b["readings"][limit]["used"] for b in readings if b]


def accepted(records, kind: str) -> int:
    """How many requests of message type ``kind`` the lab ran (outcome accepted)."""
    return sum(r.type == kind and r.outcome == "accepted" for r in records)


def assert_one_run_resumed_after_each_kill(
    deployment, name: str, loop: KillLoop, opened: str, resumed: str, charged: str
) -> list:
    """The lab ran one ``opened`` request of the loop ``name``'s run and charged it
    once to its budget ``charged``, and one ``resumed`` after each kill (not charged);
    its audit records."""
    records = lab_records(deployment, name)
    assert accepted(records, opened) == 1
    assert accepted(records, resumed) == len(loop.kills)
    used = budget_used(deployment, name, charged)
    assert max(used) == 1, used
    return records


# -- 1. a fit ------------------------------------------------------------------------------

#: Long enough for three kills a step or two apart (L-BFGS does not stop early at tol=0).
FIT_PARAMS = dict(PLAINTEXT, max_iter=8, tol=0.0)


def fit_script(folder: Path) -> str:
    """First run: the reference fit in-process and the alignment with the lab, kept;
    every run: the fit with ``checkpoint_dir`` (it resumes after a kill)."""
    return f"""
        import ftl
        from netbed.guest import *

        params, folder = {FIT_PARAMS!r}, {str(folder)!r}

        def setup():
            guest = guest_party()
            lab = remote_party(timeout=30, retry_for=60)
            return ftl.align(guest, lab, order="id"), reference_fit(guest, params)[1]

        (X, y), reference = once(folder + "/setup.joblib", setup)
        inject(after_bytes={RESET_AFTER}, reset=True)
        clf = ftl.FederatedLogisticRegression(checkpoint_dir=folder, **params).fit(X, y)
        emit(model=model_summary(clf, X), reference=reference)
    """


def test_fit_killed_by_turns_through_a_faulty_link_ends_with_the_uninterrupted_model(
    bed, deployment
):
    plan = kill_plan(seed=1, kills=3, most_steps=2, most_delay=0.3)
    result, loop = kill_loop(bed, deployment, "fit-loop", fit_script, kept_step, plan)
    assert_same_model(result)  # to the bit
    assert_one_run_resumed_after_each_kill(
        deployment, "fit-loop", loop, "lr.open", "lr.resume", "fits_per_day"
    )


# -- 2. an alignment -----------------------------------------------------------------------

#: Guest batches of the alignment (of 32 ids: 10 of the guest's, 11 of the lab's).
PSI_BATCH = 32
#: A short fit: on the alignment (the lab's side of it is the in-process one too), and
#: the model whose scores the prediction loop resumes.
SHORT_FIT = dict(PLAINTEXT, max_iter=2)


def align_script(folder: Path) -> str:
    """First run: the guest's party (its secret start, for the fits to match), the
    reference alignment and fit in-process, kept; every run: the named alignment with
    the lab (it resumes after a kill), kept once it ends; the same fit on it."""
    return f"""
        import ftl
        from netbed.guest import *

        params, folder = {SHORT_FIT!r}, {str(folder)!r}

        def setup():
            guest = guest_party()
            X_ref, reference = reference_fit(guest, params)
            return guest, X_ref.ids.tolist(), reference

        def align():
            lab = remote_party(timeout=30, retry_for=60)
            return ftl.align(
                guest, lab, order="id", batch_size={PSI_BATCH}, checkpoint_dir=folder
            )

        guest, ids, reference = once(folder + "/reference.joblib", setup)
        inject(after_bytes={RESET_AFTER}, reset=True)
        X, y = once(folder + "/aligned.joblib", align)
        clf = ftl.FederatedLogisticRegression(**params).fit(X, y)
        emit(same_ids=X.ids.tolist() == ids, model=model_summary(clf, X), reference=reference)
    """


def test_alignment_killed_by_turns_through_a_faulty_link_ends_with_the_uninterrupted_one(
    bed, deployment
):
    plan = kill_plan(seed=2, kills=3, most_steps=8, most_delay=0.1)
    result, loop = kill_loop(bed, deployment, "psi-loop", align_script, kept_psi_step, plan)
    assert result["same_ids"]
    assert_same_model(result)  # the lab's side of the alignment is the same too
    records = assert_one_run_resumed_after_each_kill(
        deployment, "psi-loop", loop, "psi.start", "psi.resume", "alignments_per_day"
    )
    assert accepted(records, "psi.commit") == 1
    # each batch was stored once: none sent again after a kill (a lab killed after
    # storing a batch and before logging it may leave one unlogged)
    lab_kills = sum(victim == "lab" for victim, _ in loop.kills)
    for kind, table in [
        ("psi.guest_points", "guest_csv"),
        ("psi.host_points_reblinded", "host_csv"),
    ]:
        batches = math.ceil(len(pd.read_csv(getattr(deployment, table))) / PSI_BATCH)
        assert batches - lab_kills <= accepted(records, kind) <= batches, kind


# -- 3. batch prediction -------------------------------------------------------------------

#: Rows per prediction batch: 10 batches of the 300 aligned rows.
BATCH_ROWS = 30


def predict_script(folder: Path) -> str:
    """First run: the alignment, the fit and the uninterrupted batched scores with the
    lab, kept; every run: the same scores with ``checkpoint_dir`` (they resume after a
    kill; a lab killed during a batch fails the call, and calling again resumes)."""
    return f"""
        import sys
        import ftl
        from netbed.guest import *

        params, folder = {SHORT_FIT!r}, {str(folder)!r}

        def setup():
            lab = remote_party(timeout=30, retry_for=60)
            X, y = ftl.align(guest_party(), lab, order="id")
            clf = ftl.FederatedLogisticRegression(predict_batch_rows={BATCH_ROWS}, **params)
            clf.fit(X, y)
            return X, clf, clf.decision_function(X).tolist()

        X, clf, reference = once(folder + "/setup.joblib", setup)
        inject(after_bytes={RESET_AFTER}, reset=True)
        clf.set_params(checkpoint_dir=folder)
        for calls in range(1, 10):
            try:
                scores = clf.decision_function(X).tolist()
                break
            except ftl.exceptions.ProtocolError as exc:
                print("calling again after:", exc, file=sys.stderr, flush=True)
        else:
            raise SystemExit("no scores after 9 calls")
        emit(scores=scores, reference=reference, calls=calls)
    """


def scored_batches(driver_folder: Path) -> int:
    """The batches the driver has scored (and kept)."""
    return len(list(driver_folder.glob("scores-*/*.json")))


def test_batch_prediction_killed_by_turns_through_a_faulty_link_gives_the_same_scores(
    bed, deployment
):
    plan = kill_plan(seed=3, kills=3, most_steps=2, most_delay=0.2)
    result, loop = kill_loop(
        bed, deployment, "predict-loop", predict_script, scored_batches, plan, watch="driver"
    )
    assert result["scores"] == result["reference"]  # to the bit
    records = lab_records(deployment, "predict-loop")
    assert accepted(records, "lr.open") == 1  # the model was fitted once
    # each kill re-scored at most the batch it interrupted: no finished batch again
    batches = ROWS // BATCH_ROWS
    scored = accepted(records, "lr.predict_open") - batches  # less the reference's
    assert batches <= scored <= batches + len(loop.kills), (scored, loop.kills)
