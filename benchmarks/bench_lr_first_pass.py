"""The cheaper first pass at the host's zero start, measured (issue 14).

One default ``FederatedLogisticRegression`` fit (``max_iter=2``: three passes) on the
first 3 000 aligned default-credit rows with 2048-bit keys, with the host's
zero-margin first pass (``on``) or with it disabled (``off``: the host always sends
its pieces), printing the fit's wall and CPU seconds (psutil, over this process and
its children) and each pass's wall and process CPU seconds.

Usage: PYTHONPATH=. python benchmarks/bench_lr_first_pass.py on|off [N_JOBS]
(``N_JOBS=1`` gives the cleanest CPU figures: with ``-1`` the randomness pool's
background work is counted too.)
"""

from __future__ import annotations

import sys
import threading
import time

import psutil

import ftl
from ftl.linear_model import guest as guest_role
from ftl.linear_model import host as host_role


def cpu_seconds(process: psutil.Process) -> float:
    """User and system CPU seconds of ``process`` and its children so far."""
    total = 0.0
    for p in [process, *process.children(recursive=True)]:
        try:
            t = p.cpu_times()
        except psutil.Error:
            continue
        total += t.user + t.system + t.children_user + t.children_system
    return total


def main(mode: str, n_jobs: int) -> None:
    if mode == "off":
        host_role.LogisticHost._at_zero_start = lambda self: False
    bank, shop = ftl.datasets.load_default_credit()
    X, y = ftl.align(bank, shop, order="id")
    X, y = X[:3000], y[:3000]
    real_batch = guest_role.LogisticGuest._batch
    per_pass = []

    def timed(self, rows):
        wall, proc = time.perf_counter(), time.process_time()
        out = real_batch(self, rows)
        per_pass.append(
            (round(time.perf_counter() - wall, 2), round(time.process_time() - proc, 2))
        )
        return out

    guest_role.LogisticGuest._batch = timed
    me = psutil.Process()
    peak = [0.0]
    done = threading.Event()

    def sample() -> None:  # worker processes may exit before the end: keep their peak
        while not done.is_set():
            peak[0] = max(peak[0], cpu_seconds(me))
            time.sleep(0.2)

    threading.Thread(target=sample, daemon=True).start()
    c0, t0 = cpu_seconds(me), time.perf_counter()
    clf = ftl.FederatedLogisticRegression(max_iter=2, tol=0, n_jobs=n_jobs, random_state=0)
    clf.fit(X, y)
    t1 = time.perf_counter()
    time.sleep(0.5)
    done.set()
    c1 = max(cpu_seconds(me), peak[0])
    print(
        f"{mode} n_jobs={n_jobs} wall {t1 - t0:.1f} s, cpu {c1 - c0:.1f} s, "
        f"iterations {clf.n_iter_}, passes (wall s, process cpu s) {per_pass}",
        flush=True,
    )


if __name__ == "__main__":
    main(sys.argv[1], int(sys.argv[2]) if len(sys.argv) > 2 else 1)
