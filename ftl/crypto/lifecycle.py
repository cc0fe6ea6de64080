"""Every process ftl starts ends with its owner.

ftl starts two kinds of processes: the randomness pool's background worker
(:mod:`ftl.crypto.pool`) and joblib's loky workers for long loops
(:mod:`ftl.crypto.workers`). Both stop by themselves after an idle timeout, and at
the normal end of an interpreter loky stops them. But a ``multiprocessing`` child
(a job runner, a process pool; spawn or fork) joins its own children *before*
those hooks run: it would wait for our idle workers -- minutes, or for ever with
a worker that keeps being reused -- and never exit.

:func:`stop_on_exit` registers :func:`end_worker_processes` once per process as a
``multiprocessing`` finalizer with a high exit priority: it runs first in
``multiprocessing``'s exit function, before children are joined, in the main
interpreter and in every ``multiprocessing`` child. ``ftl serve`` calls it on
SIGTERM too.
"""

from __future__ import annotations

import multiprocessing.util as mp_util
import os
import threading

__all__ = ["end_worker_processes", "stop_on_exit"]

#: Exit priority of the finalizer: above every finalizer multiprocessing and
#: loky register (0-100), so our workers are stopped before children are joined.
_EXIT_PRIORITY = 1000

_lock = threading.Lock()
_registered_pid: int | None = None
_loky_used_pid: int | None = None


def stop_on_exit(uses_loky: bool = False) -> None:
    """Make sure this process stops ftl's worker processes when it exits.

    Cheap after the first call in a process. ``uses_loky`` records that ftl
    handed work to joblib's local (loky) workers in this process, so that
    :func:`end_worker_processes` stops them too.
    """
    global _registered_pid, _loky_used_pid
    pid = os.getpid()
    if _registered_pid == pid and (not uses_loky or _loky_used_pid == pid):
        return
    with _lock:
        if uses_loky:
            _loky_used_pid = pid
        if _registered_pid != pid:  # a forked child inherits the flag, not the hook
            mp_util.Finalize(None, end_worker_processes, exitpriority=_EXIT_PRIORITY)
            _registered_pid = pid


def end_worker_processes() -> None:
    """Stop the randomness pool's background process and the loky workers ftl used.

    Safe to call at any time: the next encryption or parallel loop starts new
    workers. The loky workers are joblib's shared reusable pool, which other code
    in this process may also use; they are stopped only if ftl used them, and a
    later joblib call starts a new pool.
    """
    from ftl.crypto import pool  # here, not at import: pool registers this hook

    pool.shutdown(wait=True)
    if _loky_used_pid != os.getpid():
        return
    from joblib.externals.loky import reusable_executor

    with reusable_executor._executor_lock:
        executor = reusable_executor._executor
        reusable_executor._executor = None
    if executor is not None:
        executor.shutdown(wait=True, kill_workers=True)
