"""Benchmark: ECDH PSI via ``align`` (two local parties), optionally vs OpenMined PSI.

Run from the repository root::

    python benchmarks/bench_psi.py                 # 10k x 10k and 100k x 100k
    python benchmarks/bench_psi.py --sizes 10000   # one size only
    python benchmarks/bench_psi.py --sizes 1000000 --no-openmined   # ftl alone

The ``ftl`` of this checkout is measured (its root goes first on ``sys.path``),
even if another copy is installed; the path is printed.

Each party has ``n`` integer ids, half of them shared. Prints wall-clock seconds,
throughput (ids of both parties per second), bytes on the wire and the process's
peak RSS so far; CPU seconds are given too, since wall time on a shared machine
is inflated by other jobs. If ``openmined_psi`` (``pip install openmined-psi``) is
importable, its ECDH PSI (P-256, raw set, intersection revealed to the client) is
timed in the same process on the same ids and the time ratio is printed.
"""

from __future__ import annotations

import argparse
import importlib.metadata
import os
import platform
import resource
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd

# Measure this checkout, not whatever copy of ftl happens to be installed.
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import ftl  # noqa: E402
from ftl.data.align import align  # noqa: E402
from ftl.data.party import Party  # noqa: E402
from ftl.federation import Transcript  # noqa: E402


def _version(dist: str) -> str:
    try:
        return importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
        return "not installed"


def peak_rss_mb() -> float:
    # ru_maxrss is in KiB on Linux (bytes on macOS).
    scale = 1 if sys.platform == "darwin" else 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * scale / 2**20


def make_parties(n: int) -> tuple[Party, Party]:
    guest_ids = np.arange(n, dtype=np.int64)
    host_ids = np.arange(n // 2, n // 2 + n, dtype=np.int64)
    rng = np.random.default_rng(0)
    guest = Party(
        "guest",
        pd.DataFrame({"id": guest_ids, "x": rng.normal(size=n), "y": rng.integers(0, 2, n)}),
        id_column="id",
        label_column="y",
    )
    host = Party("host", pd.DataFrame({"id": host_ids, "z": rng.normal(size=n)}), id_column="id")
    return guest, host


def bench_ftl(n: int, batch_size: int) -> float:
    guest, host = make_parties(n)
    transcript = Transcript()
    start, cpu = time.perf_counter(), time.process_time()
    X, _ = align(guest, host, transcript=transcript, batch_size=batch_size)
    seconds, cpu = time.perf_counter() - start, time.process_time() - cpu
    assert len(X) == n - n // 2, len(X)
    print(
        f"ftl.align        {n:>7} x {n:<7} {seconds:8.2f} s ({cpu:6.1f} s cpu)  "
        f"{2 * n / seconds:9.0f} ids/s  {transcript.total_bytes / 2**20:7.1f} MiB wire  "
        f"{len(transcript):4d} msgs  peak RSS {peak_rss_mb():7.1f} MiB",
        flush=True,
    )
    return seconds


def bench_openmined(n: int) -> float | None:
    try:
        import private_set_intersection.python as om  # the openmined_psi wheel
    except ImportError:
        try:
            import openmined_psi as om  # older wheels
        except ImportError:
            print("openmined_psi not importable; skipped (pip install openmined-psi)")
            return None
    client_items = [str(i) for i in range(n)]
    server_items = [str(i) for i in range(n // 2, n // 2 + n)]
    start, cpu = time.perf_counter(), time.process_time()
    client = om.client.CreateWithNewKey(True)
    server = om.server.CreateWithNewKey(True)
    # RAW: exact set, no false positives -- closest to what ftl computes.
    setup = server.CreateSetupMessage(1e-9, len(client_items), server_items, om.DataStructure.RAW)
    request = client.CreateRequest(client_items)
    # Round-trip through bytes, as a real deployment would.
    setup = om.ServerSetup.FromString(setup.SerializeToString())
    request = om.Request.FromString(request.SerializeToString())
    response = server.ProcessRequest(request)
    response = om.Response.FromString(response.SerializeToString())
    found = client.GetIntersection(setup, response)
    seconds, cpu = time.perf_counter() - start, time.process_time() - cpu
    assert len(found) == n - n // 2, len(found)
    print(
        f"openmined_psi    {n:>7} x {n:<7} {seconds:8.2f} s ({cpu:6.1f} s cpu)  "
        f"{2 * n / seconds:9.0f} ids/s  (v{getattr(om, '__version__', '?')}, P-256, RAW)  "
        f"peak RSS {peak_rss_mb():7.1f} MiB",
        flush=True,
    )
    return seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[10_000, 100_000])
    parser.add_argument("--batch-size", type=int, default=100_000)
    parser.add_argument(
        "--openmined",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="also time openmined_psi on the same ids (default: yes)",
    )
    args = parser.parse_args()
    print(
        f"{platform.platform()} | {os.cpu_count()} cores | Python {platform.python_version()} | "
        f"{time.strftime('%Y-%m-%d')} | load average {os.getloadavg()[0]:.1f}"
    )
    print(f"ftl from {Path(ftl.__file__).parent} | rbcl {_version('rbcl')}", flush=True)
    for n in args.sizes:
        ours = bench_ftl(n, args.batch_size)
        theirs = bench_openmined(n) if args.openmined else None
        if theirs:
            print(
                f"ratio ftl / openmined_psi time at {n}: {ours / theirs:.2f} "
                f"(ftl throughput {theirs / ours:.2f}x openmined_psi's)"
            )


if __name__ == "__main__":
    main()
