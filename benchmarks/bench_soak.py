"""A bounded soak of ``ftl serve``: two peers, a mixed stream of sessions, flat memory.

Starts ``ftl serve`` for the lab (breast cancer, 569 rows x 20 features) as a
subprocess on 127.0.0.1 with throwaway certificates and an unlimited privacy
budget, then drives it from two peer identities (a hospital and a clinic, one
thread each) with a mixed stream of sessions -- PSI on a fresh subset of the
guest's rows, a fit of a small logistic regression on the peer's latest
alignment, a prediction with its latest model -- for ``--minutes``, sampling the
server's resident memory (RSS) every ``--sample`` seconds. Prints the sessions per
minute of each kind, the memory at the start and the end, the least-squares
slope of RSS over the second half of the run and over its last 20 minutes, and
whether memory stayed flat (slope below ``--flat`` MiB/min after the warm-up
half). The lab's leases (``alignment_ttl_hours``, ``model_ttl_hours``) are set to
``--lease-minutes``, so that the alignments and models the peers no longer use
expire during the run; how many did is read from the lab's audit log.

``--sessions N`` measures throughput instead: each peer runs 1, then N, jobs at
once (every job PSI, fit and prediction), and the sessions per minute of both
are compared.

Fits use the real 2048-bit default keys unless ``--small-keys`` (512-bit
insecure test keys: flagged as INSECURE in the output).

Usage::

    nice -n 10 python benchmarks/bench_soak.py [--minutes 15] [--sample 5] [--small-keys]
        [--lease-minutes 5]
    nice -n 10 python benchmarks/bench_soak.py --sessions 16 [--jobs 2]
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import sys
import tempfile
import threading
import time
from collections import defaultdict
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import ftl  # noqa: E402
from ftl.federation.certs import make_certificates  # noqa: E402
from tests.data.test_remote import DATA, Host, tls  # noqa: E402

PEERS = ("hospital", "clinic")
KINDS = ("psi", "fit", "predict")
#: Guest rows a PSI session aligns (of 569): a fresh random subset every time.
PSI_ROWS = 400
#: The policy: no budget limit (a soak runs thousands of sessions), both peers.
POLICY = """
[policy]
min_intersection = 10
max_alignments_per_day = -1
max_fits_per_day = -1
max_fits_per_alignment = -1
max_predictions_per_day = -1
max_predictions_per_alignment = -1
max_rows_scored_per_day = -1
{keys}

[[policy.peers]]
identity = "hospital"

[[policy.peers]]
identity = "clinic"
"""
MIB = 1 << 20


def rss_bytes(pid: int) -> int:
    """Resident memory of process ``pid`` (psutil if installed, else /proc)."""
    try:
        import psutil
    except ImportError:
        with open(f"/proc/{pid}/status") as fh:
            line = next(line for line in fh if line.startswith("VmRSS:"))
        return int(line.split()[1]) * 1024
    return psutil.Process(pid).memory_info().rss


class Peer:
    """One peer identity's stream of sessions against the lab, and its state: its
    latest alignment and model."""

    def __init__(self, name: str, remote, guest: ftl.Party, fit_params: dict, seed: int):
        self.name, self.remote, self.fit_params = name, remote, fit_params
        self.rng = np.random.default_rng(seed)
        self._guest = guest
        self.X = self.y = self.model = None

    def psi(self) -> None:
        rows = np.sort(self.rng.choice(self._guest.n_rows, PSI_ROWS, replace=False))
        guest = ftl.Party(
            self.name,
            self._guest.raw_features(rows),
            ids=self._guest.local_ids()[rows],
            labels=self._guest.local_labels(rows),
            feature_names=self._guest.feature_names,
        )
        self.X, self.y = ftl.align(guest, self.remote)

    def fit(self) -> None:
        if self.X is None:
            self.psi()
        seed = int(self.rng.integers(1 << 31))
        params = dict(self.fit_params, random_state=seed)
        self.model = ftl.FederatedLogisticRegression(**params).fit(self.X, self.y)

    def predict(self) -> None:
        if self.model is None:
            self.fit()
        self.model.decision_function(self.X[:200])

    def run(self, kind: str) -> float:
        """Run one session of ``kind``; its wall time."""
        start = time.perf_counter()
        getattr(self, kind)()
        return time.perf_counter() - start


class Tally:
    """Sessions run, by kind, with their times, and the errors (thread-safe)."""

    def __init__(self):
        self.times: dict[str, list[float]] = defaultdict(list)
        self.errors: list[str] = []
        self._lock = threading.Lock()

    def add(self, kind: str, seconds: float) -> None:
        with self._lock:
            self.times[kind].append(seconds)

    def fail(self, kind: str, exc: Exception) -> None:
        with self._lock:
            self.errors.append(f"{kind}: {type(exc).__name__}: {exc}"[:300])

    @property
    def total(self) -> int:
        return sum(len(t) for t in self.times.values())


def stream(peer: Peer, kinds, until: float, tally: Tally) -> None:
    """Run sessions of ``kinds`` (an iterator) until the monotonic time ``until``."""
    for kind in kinds:
        if time.monotonic() >= until:
            return
        try:
            tally.add(kind, peer.run(kind))
        except Exception as exc:  # noqa: BLE001 - a soak counts failures, goes on
            tally.fail(kind, exc)


def sample_memory(pid: int, every: float, stop: threading.Event, samples: list) -> None:
    start = time.monotonic()
    while True:
        samples.append((time.monotonic() - start, rss_bytes(pid)))
        if stop.wait(every):
            samples.append((time.monotonic() - start, rss_bytes(pid)))
            return


def slope_mib_per_min(samples: list, last_minutes: float | None = None) -> float:
    """Least-squares slope of RSS (MiB/min) over the second half of the run, or
    over its last ``last_minutes``."""
    t = np.array([s[0] for s in samples])
    rss = np.array([s[1] for s in samples]) / MIB
    late = t >= (t[-1] / 2 if last_minutes is None else t[-1] - 60 * last_minutes)
    if late.sum() < 2:
        return float("nan")
    return float(np.polyfit(t[late] / 60, rss[late], 1)[0])


def expired_leases(audit_log: Path) -> dict[str, int]:
    """How many alignments and models the lab's audit log says expired."""
    counts: dict[str, int] = defaultdict(int)
    if audit_log.exists():
        with audit_log.open(encoding="utf-8") as fh:
            for line in fh:
                if line.startswith('{"expired"'):
                    counts[json.loads(line)["expired"]["kind"]] += 1
    return dict(counts)


def run_threads(targets) -> None:
    threads = [threading.Thread(target=fn, args=args, daemon=True) for fn, args in targets]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()


def soak(args, peers: dict, pid: int, audit_log: Path) -> int:
    tally, samples, stop = Tally(), [], threading.Event()
    sampler = threading.Thread(target=sample_memory, args=(pid, args.sample, stop, samples))
    sampler.start()
    start = time.monotonic()
    until = start + 60 * args.minutes
    # each peer cycles through the kinds, the clinic shifted by one: all three run
    run_threads(
        (stream, (peer, itertools.islice(itertools.cycle(KINDS), i, None), until, tally))
        for i, peer in enumerate(peers.values())
    )
    minutes = (time.monotonic() - start) / 60
    stop.set()
    sampler.join()
    print(f"{'session':<10}{'count':>7}{'per min':>9}{'mean s':>8}{'max s':>8}")
    for kind in KINDS:
        times = tally.times[kind]
        if times:
            print(
                f"{kind:<10}{len(times):>7}{len(times) / minutes:>9.1f}"
                f"{np.mean(times):>8.2f}{max(times):>8.2f}"
            )
    print(f"{'all':<10}{tally.total:>7}{tally.total / minutes:>9.1f} sessions/min")
    report_errors(tally)
    rss = [s[1] / MIB for s in samples]
    slope = slope_mib_per_min(samples)
    flat = slope < args.flat
    last = slope_mib_per_min(samples, last_minutes=20) if minutes > 25 else float("nan")
    print(
        f"server RSS: start {rss[0]:.1f} MiB, end {rss[-1]:.1f} MiB, max {max(rss):.1f} MiB "
        f"({len(samples)} samples every {args.sample:g} s)"
    )
    per_minute = [f"{r:.0f}" for r in rss[:: max(1, round(60 / args.sample))]]
    print(f"RSS each minute (MiB): {' '.join(per_minute)}")
    print(
        f"RSS slope over the second half: {slope:+.3f} MiB/min -> "
        f"{'FLAT' if flat else 'GROWING'} (threshold {args.flat:g} MiB/min)"
    )
    if minutes > 25:
        print(f"RSS slope over the last 20 minutes: {last:+.3f} MiB/min")
    expired = expired_leases(audit_log)
    print(
        f"leases ({args.lease_minutes:g} min) expired during the run: "
        f"{expired.get('alignment', 0)} alignments, {expired.get('model', 0)} models"
    )
    return 0 if flat and not tally.errors else 1


def concurrency(args, peers_for, pid: int) -> int:
    """Sessions per minute with 1 and with N jobs per peer at once."""
    print(f"{'jobs/peer':>10}{'sessions':>10}{'wall s':>8}{'per min':>9}{'max RSS MiB':>13}")
    rates = {}
    for n in (1, args.sessions):
        tally, peak = Tally(), []
        # every job: its own peer connection and state, PSI then fit then prediction
        jobs = [
            (stream, (peer, iter(KINDS * args.jobs), float("inf"), tally)) for peer in peers_for(n)
        ]
        stop = threading.Event()
        sampler = threading.Thread(target=sample_memory, args=(pid, 1.0, stop, peak))
        sampler.start()
        start = time.monotonic()
        run_threads(jobs)
        wall = time.monotonic() - start
        stop.set()
        sampler.join()
        rates[n] = tally.total / wall * 60
        print(
            f"{n:>10}{tally.total:>10}{wall:>8.1f}{rates[n]:>9.1f}"
            f"{max(s[1] for s in peak) / MIB:>13.1f}"
        )
        report_errors(tally)
        if tally.errors:
            return 1
    print(f"throughput {args.sessions} vs 1 job per peer: {rates[args.sessions] / rates[1]:.2f}x")
    return 0


def report_errors(tally: Tally) -> None:
    print(f"errors: {len(tally.errors)}")
    for line in tally.errors[:5]:
        print(f"  {line}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--minutes", type=float, default=15.0, help="length of the soak")
    parser.add_argument("--sample", type=float, default=5.0, help="seconds between RSS samples")
    parser.add_argument("--flat", type=float, default=1.0, help="largest flat slope, MiB/min")
    parser.add_argument("--sessions", type=int, default=0, help="N concurrent jobs per peer")
    parser.add_argument("--jobs", type=int, default=1, help="jobs each concurrent thread runs")
    parser.add_argument("--epochs", type=int, default=2, help="epochs of each fit")
    parser.add_argument("--small-keys", action="store_true", help="512-bit INSECURE test keys")
    parser.add_argument(
        "--lease-minutes", type=float, default=5.0, help="the lab's alignment and model TTL"
    )
    args = parser.parse_args()

    if args.small_keys:
        keys = "allow_plaintext = true  # insecure test keys\nmin_key_size = 512"
        fit_params = dict(key_size=512, insecure_for_tests=True)
    else:
        keys, fit_params = "min_key_size = 2048", {}
    fit_params.update(
        sigmoid="taylor", optimizer="adam", max_iter=args.epochs, tol=0.0, verbose=False
    )
    n = max(args.sessions, 1)
    server = (
        f"max_sessions_per_peer = {max(n, 16)}\n"
        f"max_streams_per_peer = {max(n, 4)}\nmax_workers = {max(2 * n + 2, 8)}\n"
        f"alignment_ttl_hours = {args.lease_minutes / 60}\n"
        f"model_ttl_hours = {args.lease_minutes / 60}"
    )
    load = os.getloadavg()
    guest = ftl.datasets.load_breast_cancer()[0]
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        make_certificates(tmp / "certs", ["lab", *PEERS])
        lab = Host(tmp, "lab", DATA / "breast_hetero_host.csv", POLICY.format(keys=keys), server)
        lab.start()
        try:

            def peer(name: str, seed: int) -> Peer:
                remote = ftl.RemoteParty("lab", lab.address, tls=tls(tmp, name))
                return Peer(name, remote, guest, fit_params, seed)

            key_note = (
                "512-bit INSECURE test keys"
                if args.small_keys
                else "2048-bit keys (the default; host and guest keys made per fit)"
            )
            print(
                f"ftl serve soak: lab = breast cancer (569 rows x 20 features), peers "
                f"{' + '.join(PEERS)}; PSI on {PSI_ROWS} guest rows; fits: LR, {key_note}, "
                f"taylor/adam, {args.epochs} epochs; predictions on 200 rows"
            )
            print(
                f"machine: {os.cpu_count()} cores, load average at start "
                f"{load[0]:.2f} / {load[1]:.2f} / {load[2]:.2f} (1/5/15 min; shared); "
                f"MALLOC_ARENA_MAX={os.environ.get('MALLOC_ARENA_MAX', 'unset')}"
            )
            if args.sessions:
                status = concurrency(
                    args,
                    lambda k: [peer(p, 100 * i + j) for i, p in enumerate(PEERS) for j in range(k)],
                    lab.proc.pid,
                )
            else:
                peers = {p: peer(p, i) for i, p in enumerate(PEERS)}
                status = soak(args, peers, lab.proc.pid, lab.audit)
        finally:
            lab.stop()
    end = os.getloadavg()
    print(f"load average at end {end[0]:.2f} / {end[1]:.2f} / {end[2]:.2f}")
    return status


if __name__ == "__main__":
    sys.exit(main())
