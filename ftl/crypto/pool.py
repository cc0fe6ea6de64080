"""Random factors for Paillier encryption, computed ahead of time in the background.

A key owner's ciphertext is ``(1 + m n) * r mod n**2`` with a fresh random factor
``r = hs**a`` (DJN, see :mod:`ftl.crypto.engine`). The factor does not depend on
the message, so it can be computed before the message exists: a
:class:`RandomnessPool` keeps up to ``capacity`` factors of one key, made by a
background process while this party has nothing else to do (in a deployment it
mostly waits for the other parties' messages), and an encryption then costs one
multiplication modulo ``n**2`` per value instead of ~180 modulo ``p**2``/``q**2``.

The background process runs at the lowest CPU priority (``nice`` 19), so on a busy
machine it takes only cycles nobody else wants: it hides latency, it does not save
CPU (a factor costs the same wherever it is computed). Encryption never waits for
it -- what the pool lacks is computed on demand.

Safety rules, each enforced here:

* every factor is handed out once (popped under a lock) and never pickled: a
  pool cannot be pickled or copied, and a forked child starts with an empty pool
  (an ``os.register_at_fork`` hook, and a pid check on every call for forks that
  bypass it), so two processes never use the same factor;
* one pool per key: factors of one key never encrypt under another;
* bounded memory: at most ``capacity`` factors are stored or in the making (a
  2048-bit key's factor is 512 bytes), and at most :data:`MAX_TASKS_IN_FLIGHT`
  chunks per pool are queued, so a pool that goes away (its key was garbage
  collected, or :meth:`RandomnessPool.close`) leaves at most that much work to
  the background process, and interpreter exit never waits for more.
"""

from __future__ import annotations

import os
import threading
import weakref
from collections import deque
from collections.abc import Callable
from functools import partial

from joblib.externals.loky import BrokenProcessPool, ProcessPoolExecutor

from ftl.crypto.lifecycle import stop_on_exit

__all__ = ["DEFAULT_CAPACITY", "MAX_TASKS_IN_FLIGHT", "RandomnessPool", "shutdown"]

#: Factors a key's pool holds when its capacity is not set (2 MB at 2048 bits).
DEFAULT_CAPACITY = 4096
#: Factors made per background task: about 50 ms of work at 2048 bits.
CHUNK = 128
#: Background tasks a pool keeps queued at once; more are submitted as they finish.
MAX_TASKS_IN_FLIGHT = 2
#: A background process idle for this long exits (and frees its tables).
IDLE_TIMEOUT = 120
_NICENESS = 19

_executor: ProcessPoolExecutor | None = None
_executor_pid: int | None = None
_executor_lock = threading.Lock()
_live_pools: weakref.WeakSet[RandomnessPool] = weakref.WeakSet()


class RandomnessPool:
    """Precomputed one-time values (random factors), refilled in the background.

    Parameters
    ----------
    produce : callable
        ``produce(count)`` returns a list of ``count`` fresh values; it runs in the
        background process, so it must be picklable (a module-level function, or a
        :func:`functools.partial` of one).
    capacity : int
        Most values stored or being made at once.
    chunk : int, default=CHUNK
        Values per background task.

    Notes
    -----
    :meth:`take` never blocks and never returns a value twice. :meth:`refill` only
    submits work and returns at once; results are added by the executor's thread.
    """

    def __init__(self, produce: Callable[[int], list], capacity: int, chunk: int = CHUNK):
        if capacity < 0 or chunk < 1:
            raise ValueError("capacity must be >= 0 and chunk >= 1")
        self._produce = produce
        self.capacity = int(capacity)
        self.chunk = int(chunk)
        self._futures: set = set()
        self._closed = False
        #: The last background failure (None if none): encryption then computes
        #: on demand, and the next :meth:`refill` tries again.
        self.last_error: BaseException | None = None
        self._start_in_this_process()
        _live_pools.add(self)

    def _start_in_this_process(self) -> None:
        """Fresh state owned by the calling process (also a forked child's reset).

        Never touches the old lock: a child forked while another thread held it
        would wait forever.
        """
        self._lock = threading.RLock()  # re-entrant: a finished future's callback
        self._changed = threading.Condition(self._lock)  # may run inside submit
        self._items: deque = deque()
        self._futures.clear()  # in a child, copies of the parent's futures: dead
        self._in_flight = 0
        self._pid = os.getpid()

    def _check_owner(self) -> None:
        if self._pid != os.getpid():  # forked by a path that skipped the fork hook
            self._start_in_this_process()

    def __len__(self) -> int:
        """Values ready to be taken."""
        self._check_owner()
        return len(self._items)

    def __reduce__(self):
        raise TypeError("a RandomnessPool is never pickled: each value must be used once")

    def __copy__(self):
        raise TypeError("a RandomnessPool is never copied: each value must be used once")

    def __deepcopy__(self, memo):
        return self.__copy__()

    def take(self, count: int) -> list:
        """Remove and return up to ``count`` values (fewer, or none, if not ready)."""
        self._check_owner()
        with self._lock:
            k = min(max(count, 0), len(self._items))
            return [self._items.popleft() for _ in range(k)]

    def refill(self) -> None:
        """Start making values up to capacity in the background; returns at once."""
        self._check_owner()
        with self._lock:
            self._submit_locked()

    def wait_until_full(self, timeout: float | None = None) -> bool:
        """Refill, then block until the pool is full; ``False`` after ``timeout`` s.

        Also returns (``False``) when nothing is left in the making, e.g. after the
        background process failed or the pool was closed.
        """
        self.refill()
        with self._changed:
            self._changed.wait_for(
                lambda: len(self._items) >= self.capacity or not self._futures, timeout
            )
            return len(self._items) >= self.capacity

    def close(self) -> None:
        """Drop stored values and stop refilling.

        Work already queued (at most :data:`MAX_TASKS_IN_FLIGHT` chunks) is left to
        finish and its values are dropped: cancelling a queued loky task can make
        the executor's manager thread fail when the executor shuts down (loky sets
        an exception on every pending future then), leaving its worker running.
        """
        self._check_owner()
        with self._lock:
            self._closed = True
            self._items.clear()
            self._changed.notify_all()

    @property
    def closed(self) -> bool:
        return self._closed

    def _submit_locked(self) -> None:
        while not self._closed and len(self._futures) < MAX_TASKS_IN_FLIGHT:
            size = min(self.chunk, self.capacity - len(self._items) - self._in_flight)
            if size <= 0:
                return
            try:
                future = _submit(self._produce, size)
            except RuntimeError:  # interpreter exit, or the executor cannot start
                return
            self._futures.add(future)
            self._in_flight += size
            future.add_done_callback(partial(_deliver, weakref.ref(self), size))

    def _receive(self, future, size: int) -> None:
        """A background task finished (runs in the executor's thread)."""
        if self._pid != os.getpid():
            return
        with self._lock:
            self._futures.discard(future)
            self._in_flight -= size
            if not (self._closed or future.cancelled()):
                if future.exception() is None:
                    room = self.capacity - len(self._items)
                    self._items.extend(future.result()[: max(room, 0)])
                    self._submit_locked()  # keep going until full
                else:  # no retry loop: the next refill() tries again
                    self.last_error = future.exception()
            self._changed.notify_all()


def _deliver(pool_ref: weakref.ref, size: int, future) -> None:
    pool = pool_ref()
    if pool is not None:
        pool._receive(future, size)


def _lower_priority() -> None:
    """Background process initializer: take only CPU time nobody else wants."""
    if hasattr(os, "nice"):
        try:
            os.nice(_NICENESS)
        except OSError:  # not permitted here: normal priority is still correct
            pass


def _get_executor(replace: bool = False) -> ProcessPoolExecutor:
    """This process's single background worker (loky: no fork of this process)."""
    global _executor, _executor_pid
    stop_on_exit()  # the background process ends with this one, child or not
    with _executor_lock:
        if replace and _executor is not None and _executor_pid == os.getpid():
            _executor.shutdown(wait=False, kill_workers=True)
        if replace or _executor is None or _executor_pid != os.getpid():
            _executor = ProcessPoolExecutor(
                max_workers=1, timeout=IDLE_TIMEOUT, initializer=_lower_priority
            )
            _executor_pid = os.getpid()
        return _executor


def _submit(fn, *args):
    try:
        return _get_executor().submit(fn, *args)
    except BrokenProcessPool:  # the worker died (killed, out of memory): start anew
        return _get_executor(replace=True).submit(fn, *args)


def shutdown(wait: bool = True) -> None:
    """Close every pool of this process and stop the background process.

    Not needed before exit (loky stops its workers then, after at most
    :data:`MAX_TASKS_IN_FLIGHT` chunks per live pool); the next refill starts a new
    background process.
    """
    global _executor
    for pool in list(_live_pools):
        pool.close()
    with _executor_lock:
        executor, _executor = _executor, None
    if executor is not None and _executor_pid == os.getpid():
        # No queued task was cancelled (see RandomnessPool.close): loky's manager
        # thread then shuts the worker down cleanly.
        executor.shutdown(wait=wait, kill_workers=True)


def _after_fork_in_child() -> None:
    """A forked child owns none of its parent's values, tasks or executor."""
    global _executor, _executor_lock
    _executor, _executor_lock = None, threading.Lock()
    for pool in list(_live_pools):
        pool._start_in_this_process()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork_in_child)
