"""The background pool of precomputed DJN random factors (``ftl.crypto.pool``).

Small insecure keys keep these tests fast; the pool's background process (one per
test process, started by the first refill) takes a second or two to start.
"""

from __future__ import annotations

import copy
import gc
import os
import pickle
import subprocess
import sys
import textwrap
import time
from concurrent.futures import wait

import numpy as np
import phe
import pytest

from ftl.crypto import fixedpoint, pool
from ftl.crypto.scheme import VALUE_FRAC_BITS, PaillierOwnKey, make_own_key

TIMEOUT = 60  # generous: the machine may be busy, and the pool runs at nice 19


def _key(capacity: int, n_jobs=None) -> PaillierOwnKey:
    return make_own_key(
        "paillier", 512, insecure_for_tests=True, n_jobs=n_jobs, pool_capacity=capacity
    )


def _poll(condition, timeout: float = TIMEOUT) -> bool:
    """Wait for ``condition()`` without touching the pool (no refill is triggered)."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.02)
    return True


def test_pooled_and_on_demand_factors_are_never_reused(monkeypatch):
    own = _key(64)
    randomness = own.randomness_pool
    assert randomness.wait_until_full(TIMEOUT)
    taken = []
    original = randomness.take

    def counting_take(count):
        got = original(count)
        taken.append(len(got))
        return got

    monkeypatch.setattr(randomness, "take", counting_take)
    pk, sk = own.public_key, own.private_key
    cts = []
    for size in (200, 64, 3):  # pool + on demand, then pool only (refilled in between)
        assert randomness.wait_until_full(TIMEOUT)
        cts += [int(c) for c in own.encrypt(np.zeros(size)).values]
    cts += [int(c) for c in _key(0).encrypt(np.zeros(50)).values]  # never pooled
    assert taken == [64, 64, 3]  # the first call also computed 136 factors on demand
    assert len(set(cts)) == len(cts)  # a factor is never used twice
    assert 1 not in cts  # encryptions of 0 are never the deterministic 1 + 0 * n
    # a value: phe decrypts it and its arithmetic works on our ciphertexts
    v = np.array([0.5, -3.25, 7.0])
    ct = own.encrypt(v)
    ints = fixedpoint.encode(v, VALUE_FRAC_BITS)
    for c, m in zip(ct.values, ints, strict=True):
        assert int(c) != (1 + int(m) % pk.n * pk.n) % pk.nsquare
        number = phe.EncryptedNumber(pk, int(c), 0)
        assert sk.decrypt(number) == int(m)
        assert sk.decrypt(number * 3 + 1) == 3 * int(m) + 1
    np.testing.assert_allclose(own.decrypt_values(ct, VALUE_FRAC_BITS), v)


def test_pool_refills_in_the_background_after_a_take():
    own = _key(50)
    randomness = own.randomness_pool
    assert randomness.wait_until_full(TIMEOUT)
    assert len(randomness.take(30)) == 30 and len(randomness) == 20  # take never refills
    own.encrypt(np.ones(20))  # takes the other 20, then starts the refill
    assert _poll(lambda: len(randomness) == 50)  # no further call needed


def test_a_failing_background_task_leaves_encryption_on_demand():
    broken = pool.RandomnessPool(os.getpid, capacity=10)  # os.getpid(count) raises
    assert not broken.wait_until_full(TIMEOUT)  # returns once nothing is in the making
    assert isinstance(broken.last_error, TypeError)
    assert broken.take(10) == [] and not broken._futures  # and no retry loop


def test_the_background_process_is_replaced_if_it_dies():
    import signal

    worker = pool._get_executor().submit(os.getpid).result(timeout=TIMEOUT)
    os.kill(worker, signal.SIGKILL)  # our own child (e.g. killed for lack of memory)
    randomness = _key(20).randomness_pool
    # the first refill may still go to the dead executor and fail; the next starts anew
    assert any(randomness.wait_until_full(TIMEOUT) for _ in range(3))
    assert pool._get_executor().submit(os.getpid).result(timeout=TIMEOUT) != worker


def test_capacity_is_respected():
    randomness = _key(40).randomness_pool
    assert randomness.wait_until_full(TIMEOUT)
    for _ in range(5):
        randomness.refill()  # nothing to do: full, nothing more is queued
        assert len(randomness) == 40 and not randomness._futures
    time.sleep(0.2)
    assert len(randomness) == 40
    got = randomness.take(1000)
    assert len(got) == 40 and len(randomness) == 0
    randomness.refill()  # from empty: a bounded number of chunks queued at a time
    assert len(randomness._futures) <= pool.MAX_TASKS_IN_FLIGHT
    assert randomness._in_flight <= 40
    assert randomness.wait_until_full(TIMEOUT) and len(randomness) == 40


def test_off_switch_and_automatic_setting(monkeypatch):
    from ftl.crypto import paillier

    off = _key(0, n_jobs=2)
    assert off.randomness_pool is None
    ct = off.encrypt(np.array([1.0, 1.0]))
    assert ct.values[0] != ct.values[1]
    assert _key(None).randomness_pool is None  # n_jobs=None: serial, no extra process
    auto = _key(None, n_jobs=2)
    assert auto.randomness_pool.capacity == pool.DEFAULT_CAPACITY
    auto.randomness_pool.close()
    # under a non-local joblib backend (dask) the encryptions go to the cluster
    monkeypatch.setattr(paillier, "local_joblib_backend", lambda: False)
    assert auto.randomness_pool is None
    assert _key(8, n_jobs=2).randomness_pool is not None  # an explicit capacity wins


def test_local_backend_detection():
    import joblib

    from ftl.crypto.workers import local_joblib_backend

    assert local_joblib_backend()
    with joblib.parallel_config(backend="threading"):
        assert local_joblib_backend()


def test_close_and_shutdown():
    own = _key(30)
    randomness = own.randomness_pool
    assert randomness.wait_until_full(TIMEOUT)
    randomness.close()
    assert len(randomness) == 0 and randomness.take(5) == []
    randomness.refill()
    assert not randomness._futures  # a closed pool stays empty
    # the key makes a new pool; a shut-down background process starts anew
    pool.shutdown()
    assert own.randomness_pool is not randomness
    assert own.randomness_pool.wait_until_full(TIMEOUT)
    assert len(own.encrypt(np.ones(3)).values) == 3


def test_a_dropped_pool_leaves_the_background_process_idle():
    randomness = _key(10**6).randomness_pool  # far more than is ever made here
    randomness.refill()
    futures = randomness._futures  # the finalizer's reference, not the pool's
    del randomness
    gc.collect()
    wait(tuple(futures), timeout=TIMEOUT)
    assert all(f.done() for f in futures) and len(futures) <= pool.MAX_TASKS_IN_FLIGHT
    # nothing else is queued: the background process answers at once
    assert pool._get_executor().submit(os.getpid).result(timeout=TIMEOUT) > 0


def test_pickled_or_copied_keys_carry_no_factors():
    own = _key(20)
    assert own.randomness_pool.wait_until_full(TIMEOUT)
    for clone in (pickle.loads(pickle.dumps(own)), copy.deepcopy(own), copy.copy(own)):
        assert clone._pool is None and clone._encryptor is None
        assert clone.randomness_pool is not own.randomness_pool
        assert len(clone.randomness_pool) == 0
        clone.randomness_pool.close()
    assert len(own.randomness_pool) == 20  # the original keeps its own
    with pytest.raises(TypeError, match="never pickled"):
        pickle.dumps(own.randomness_pool)
    with pytest.raises(TypeError, match="never copied"):
        copy.copy(own.randomness_pool)


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork")
def test_a_forked_child_does_not_inherit_the_parents_factors():
    own = _key(25)
    randomness = own.randomness_pool
    assert randomness.wait_until_full(TIMEOUT)
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # child: report what it could take, never return into pytest
        try:
            os.write(write, str(len(randomness.take(25))).encode())
        finally:
            os._exit(0)
    os.close(write)
    child_took = int(os.read(read, 100))
    os.close(read)
    os.waitpid(pid, 0)
    assert child_took == 0
    assert len(randomness.take(25)) == 25  # the parent's factors are still its own


def test_pid_check_catches_forks_that_skip_the_fork_hook(monkeypatch):
    randomness = _key(10).randomness_pool
    assert randomness.wait_until_full(TIMEOUT)
    real_pid = os.getpid()
    monkeypatch.setattr(os, "getpid", lambda: real_pid + 1)  # "another process"
    assert randomness.take(10) == []
    monkeypatch.undo()


def test_interpreter_exit_is_prompt_and_stops_the_background_process():
    psutil = pytest.importorskip("psutil")
    script = textwrap.dedent(
        """
        import os, time
        from ftl.crypto import pool

        def slow_pids(count):
            time.sleep(0.2)
            return [os.getpid()] * count

        p = pool.RandomnessPool(slow_pids, capacity=10**6, chunk=10)
        p.refill()
        deadline = time.monotonic() + 60
        while not len(p) and time.monotonic() < deadline:
            time.sleep(0.02)
        print(p.take(1)[0], flush=True)
        # exit now, with the pool far from full
        """
    )
    start = time.monotonic()
    proc = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=120
    )
    assert proc.returncode == 0, proc.stderr
    worker = int(proc.stdout.split()[-1])
    assert time.monotonic() - start < 60  # no wait for the unfinished work

    def gone() -> bool:
        try:
            return psutil.Process(worker).status() == psutil.STATUS_ZOMBIE
        except psutil.NoSuchProcess:
            return True

    assert _poll(gone, timeout=10)


def test_pool_on_a_real_key_size():
    own = PaillierOwnKey(2048, pool_capacity=8)
    assert own.randomness_pool.wait_until_full(TIMEOUT)
    ct = own.encrypt(np.array([0.5, 0.5, 0.0]))
    vals = [int(v) for v in ct.values]
    assert len(set(vals)) == 3 and 1 not in vals
    np.testing.assert_allclose(own.decrypt_values(ct, VALUE_FRAC_BITS), [0.5, 0.5, 0.0])
