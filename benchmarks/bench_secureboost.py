"""SecureBoost (``ftl.ensemble``) against FATE 2.2 and scikit-learn, and at scale.

Prints, from one process (one host, simulated in this process as ``bench_lr.py``
does; ``n_jobs=-1``):

1. ``credit``: the bundled default credit data (PSI with ``order="id"``, 70/30 split,
   stratified, seed 0: 21 000 training rows) with FATE 2.2's hetero SecureBoost
   defaults (:data:`FATE`) for 3 trees (FATE's default) and 30 (FATE's benchmark
   config for this data): scikit-learn's ``HistGradientBoostingClassifier`` on the
   pooled columns, the plaintext protocol (``encryption=None``: same trees, so the
   same AUC), and Paillier at 2048 bits (ftl's default) and 1024 bits (FATE's; ftl
   needs ``insecure_for_tests=True`` below 2048; ``--key-sizes`` with no size:
   plaintext and scikit-learn only). Per encrypted tree: wall and CPU seconds
   (this process and its workers) and the wall time of each stage (:data:`STAGES`)
   timed at its call sites -- the kernel's four calls (``ftl.crypto.histograms``:
   encrypt g|h, bin sums, pack + re-randomise, decrypt), the host's bin counts,
   the guest's own histograms, the split search, the partitions and the messages'
   encoding -- the rest by difference; key generation, binning and the hosts'
   set-up are counted apart. Ratios to FATE's 37 s (81 CPU-s) per tree.
2. ``scale``: synthetic rows, ``--scale-features`` per party (guest + one host):
   a plaintext federated fit of 5 trees (depth 6, 31 leaves, 255 bins) on
   ``--scale-rows`` rows with its peak RSS, scikit-learn on the same columns;
   then one encrypted tree (depth 3, 255 bins, 2048 bits) on ``--encrypted-rows``
   rows and its extrapolation to ``--scale-rows`` (formula printed; none with
   ``--encrypted-rows 0``).
3. ``dask``: a small encrypted fit with every joblib loop on a Dask
   ``LocalCluster`` (two single-threaded worker processes), the functions that
   ran there, and the same fit run locally.

Load averages are printed with every section: the figures are from a shared machine.

Usage: python benchmarks/bench_secureboost.py [--quick] [--sections credit scale dask]
       [--rows R] [--trees 3 30] [--key-sizes [2048 1024]] [--n-jobs J] [--scale-rows N]
       [--scale-features F] [--encrypted-rows M] [--dask-rows D]

Run it against the checkout (``PYTHONPATH=.``, or an editable install): the script's
own folder, not the working directory, starts ``sys.path``.
"""

from __future__ import annotations

import argparse
import os
import threading
import time
from contextlib import ExitStack
from dataclasses import dataclass, field
from unittest import mock

import joblib
import numpy as np
import psutil
from bench_lr import pooled
from sklearn.ensemble import HistGradientBoostingClassifier
from sklearn.metrics import roc_auc_score
from sklearn.model_selection import train_test_split
from threadpoolctl import threadpool_limits

import ftl
from ftl.crypto import histograms
from ftl.ensemble import FederatedGradientBoostingClassifier, _grower, _remote, guest, host
from ftl.federation import channel, service

#: FATE 2.2's hetero SecureBoost defaults in scikit-learn's names (FederatedAI/FATE,
#: python/fate/components/components/hetero_secureboost.py: num_trees=3,
#: learning_rate=0.3, max_depth=3, max_bin=32, l2=0.1, min_leaf_node=1, Paillier
#: 1024 bits). FATE's min_child_weight=1 and min_impurity_split=1e-2 have no
#: scikit-learn counterpart (its min_hessian_to_split is 1e-3, min_gain_to_split 0).
FATE = dict(
    learning_rate=0.3,
    max_depth=3,
    max_leaf_nodes=None,
    max_bins=32,
    l2_regularization=0.1,
    min_samples_leaf=1,
    early_stopping=False,
)
#: FATE 2.2 on full default credit on this machine (issue 16): seconds and
#: CPU-seconds per tree at 1024 bits, quiet machine, and its test AUC per tree count.
FATE_SECONDS_PER_TREE = 37.0
FATE_CPU_PER_TREE = 81.0
FATE_AUC = {3: 0.76, 30: 0.779}
#: The scale run's trees: scikit-learn's default 31 leaves, at most depth 6.
SCALE = dict(max_depth=6, max_leaf_nodes=31, max_bins=255, early_stopping=False)
#: The encrypted tree measured for the extrapolation.
SCALE_ENCRYPTED = dict(max_depth=3, max_leaf_nodes=None, max_bins=255, early_stopping=False)

#: The stages of a tree, timed where the estimator calls them: (owner, name, label).
#: A stage's time excludes the stages called within it (the host's histogram
#: step calls the bin sums and the packing: "counts" is what it does besides).
TIMED_CALLS = (
    (_remote, "encrypt_gh", "encrypt"),
    (histograms, "encrypted_bin_sums", "bin sums"),
    (histograms, "compress_bins", "pack"),
    (_remote, "decrypt_bin_sums", "decrypt"),
    (host.BoostingHost, "_histogram", "counts"),
    (_grower.LocalBlock, "histogram", "guest hist."),
    (_grower, "find_best_split", "split search"),
    (_grower, "split_at", "split search"),
    (host.BoostingHost, "_split", "partitions"),
    (host.BoostingHost, "_apply_partitions", "partitions"),
    (_grower.LocalBlock, "split", "partitions"),
    (_remote, "left_mask", "partitions"),
    (channel, "encode", "messages"),
    (channel, "decode", "messages"),
    (service, "encode", "messages"),
    (service, "decode", "messages"),
)
STAGES = list(dict.fromkeys(label for _, _, label in TIMED_CALLS))


def load() -> str:
    one, five, fifteen = os.getloadavg()
    return f"load average {one:.2f}, {five:.2f}, {fifteen:.2f} ({os.cpu_count()} CPUs)"


def cpu_seconds() -> float:
    """CPU seconds of this process and all its children (joblib and pool workers)."""
    me = psutil.Process()
    total = sum(me.cpu_times()[:4])  # user, system, and of children already reaped
    for child in me.children(recursive=True):
        try:
            total += sum(child.cpu_times()[:2])
        except psutil.NoSuchProcess:
            pass
    return total


def tree_rss() -> int:
    """Resident bytes of this process and its children (joblib and pool workers)."""
    me = psutil.Process()
    total = me.memory_info().rss
    for child in me.children(recursive=True):
        try:
            total += child.memory_info().rss
        except psutil.NoSuchProcess:
            pass
    return total


class PeakMemory:
    """Peak resident memory of the process tree, sampled every 0.2 s in a thread
    (``ru_maxrss`` would count this process only, and its whole life)."""

    def __init__(self):
        self.peak = 0
        self._done = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)

    def _sample(self) -> None:
        while not self._done.is_set():
            self.peak = max(self.peak, tree_rss())
            self._done.wait(0.2)

    def __enter__(self) -> PeakMemory:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._done.set()
        self._thread.join()
        self.peak = max(self.peak, tree_rss())

    @property
    def gib(self) -> float:
        return self.peak / 2**30


@dataclass
class TreeTimes:
    """One tree: when it began (wall, CPU) and the wall seconds per kernel call."""

    wall0: float
    cpu0: float
    stages: dict = field(default_factory=lambda: dict.fromkeys(STAGES, 0.0))
    wall: float = 0.0
    cpu: float = 0.0


class FitProfile:
    """Times a fit per tree by patching the estimator's call sites (:data:`TIMED_CALLS`).

    A tree starts when the guest sends a host its gradients
    (``RemoteBlock.begin_tree``) and ends when the next one starts, or when the
    guest closes the fit (``BoostingGuest.finish``). Times before the first tree
    (key generation, binning, the hosts' set-up) go to ``setup``. A stage gets
    the time of its calls less that of the timed calls inside them.
    """

    def __init__(self):
        self.trees: list[TreeTimes] = []
        self.calls = dict.fromkeys(STAGES, 0)
        self.setup = 0.0
        self._stack = ExitStack()
        self._inner: list[float] = []  # per open timed call: time of the calls in it

    def _close_tree(self, wall: float, cpu: float) -> None:
        if self.trees:
            last = self.trees[-1]
            last.wall, last.cpu = wall - last.wall0, cpu - last.cpu0

    def _timed(self, function, label):
        def timed(*args, **kwargs):
            start = time.perf_counter()
            self._inner.append(0.0)
            try:
                return function(*args, **kwargs)
            finally:
                elapsed = time.perf_counter() - start
                inner = self._inner.pop()
                if self._inner:
                    self._inner[-1] += elapsed
                self.calls[label] += 1
                if self.trees:
                    self.trees[-1].stages[label] += elapsed - inner

        return timed

    def __enter__(self) -> FitProfile:
        begin_tree, finish = _remote.RemoteBlock.begin_tree, guest.BoostingGuest.finish
        started = time.perf_counter()

        def tree_begins(block, *args):
            wall, cpu = time.perf_counter(), cpu_seconds()
            self._close_tree(wall, cpu)
            if not self.trees:
                self.setup = wall - started
            self.trees.append(TreeTimes(wall, cpu))
            return begin_tree(block, *args)

        def fit_ends(*args):
            self._close_tree(time.perf_counter(), cpu_seconds())
            return finish(*args)

        patches = [
            mock.patch.object(_remote.RemoteBlock, "begin_tree", tree_begins),
            mock.patch.object(guest.BoostingGuest, "finish", fit_ends),
        ]
        for owner, name, label in TIMED_CALLS:
            patches.append(mock.patch.object(owner, name, self._timed(getattr(owner, name), label)))
        for patch in patches:
            self._stack.enter_context(patch)
        return self

    def __exit__(self, *exc) -> None:
        self._stack.close()
        if exc[0] is None and self.trees and not all(self.calls.values()):
            missing = [label for label, n in self.calls.items() if not n]
            raise RuntimeError(f"no calls timed for {missing}: the call sites moved")

    def median_wall(self) -> float:
        """Median wall seconds per tree: less moved than the mean by bursts of load."""
        return float(np.median([t.wall for t in self.trees]))

    def mean(self, what: str) -> float:
        """Mean over the trees of ``wall``, ``cpu``, a stage, or ``rest``."""
        if what in ("wall", "cpu"):
            values = [getattr(t, what) for t in self.trees]
        elif what == "rest":
            values = [t.wall - sum(t.stages.values()) for t in self.trees]
        else:
            values = [t.stages[what] for t in self.trees]
        return float(np.mean(values))


@dataclass
class Run:
    label: str
    fit_seconds: float
    auc: float
    raw: np.ndarray
    profile: FitProfile | None = None
    megabytes: float = 0.0
    predict_seconds: float = 0.0


def fit_federated(label, params, X_tr, y_tr, X_te, y_te) -> Run:
    """A profiled federated fit, scored on the test rows (the secure prediction walk)."""
    clf = FederatedGradientBoostingClassifier(random_state=0, **params)
    with FitProfile() as profile:
        start = time.perf_counter()
        clf.fit(X_tr, y_tr)
        fit_seconds = time.perf_counter() - start
    megabytes = clf.transcript_.total_bytes / 1e6
    start = time.perf_counter()
    raw = clf.decision_function(X_te)
    predict_seconds = time.perf_counter() - start
    run = Run(label, fit_seconds, roc_auc_score(y_te, raw), raw, profile, megabytes)
    run.predict_seconds = predict_seconds
    walls = " ".join(f"{t.wall:.1f}" for t in profile.trees)
    cpus = " ".join(f"{t.cpu:.1f}" for t in profile.trees)
    print(
        f"  {label}: fit {fit_seconds:.1f} s; per tree {walls} s wall, {cpus} CPU-s; {load()}",
        flush=True,
    )
    return run


def timed_sklearn(params, X, y, threads: int | None = None):
    """scikit-learn's HGB fitted on ``X``, and its fit seconds; ``threads``: OpenMP
    threads (its default: all cores). One thread is the steadier baseline on a
    loaded machine: OpenMP threads that wait for a busy core slow down far more
    than a single thread does (and ftl's plaintext kernel is single-threaded)."""
    sk_params = {k: v for k, v in params.items() if k not in ("n_jobs",)}
    with threadpool_limits(threads, user_api="openmp"):
        start = time.perf_counter()
        sk = HistGradientBoostingClassifier(random_state=0, **sk_params).fit(X, y)
        return sk, time.perf_counter() - start


def fit_sklearn(params, X_tr, y_tr, X_te, y_te, threads: int | None = None) -> Run:
    sk, fit_seconds = timed_sklearn(params, X_tr, y_tr, threads)
    raw = sk.decision_function(X_te)
    label = "scikit-learn HGB, pooled" + (f" ({threads} thread)" if threads else "")
    return Run(label, fit_seconds, roc_auc_score(y_te, raw), raw)


def profile_table(runs: list[Run], n_trees: int, plain: Run) -> None:
    """Markdown table of the encrypted runs, per tree, with FATE's ratios."""
    print(
        f"\n| {n_trees} trees | s/tree (median) | CPU-s/tree | {' | '.join(STAGES)} | rest "
        "| set-up s | MB/tree | test AUC | AUC − plaintext | FATE s ÷ ours (median) "
        "| FATE CPU-s ÷ ours |"
    )
    print("|---|" + "---:|" * (len(STAGES) + 9))
    for run in runs:
        p = run.profile
        wall, median, cpu = p.mean("wall"), p.median_wall(), p.mean("cpu")
        stages = " | ".join(f"{p.mean(s):.2f}" for s in [*STAGES, "rest"])
        print(
            f"| {run.label} | {wall:.2f} ({median:.2f}) | {cpu:.1f} | {stages} | "
            f"{p.setup:.1f} | {run.megabytes / len(p.trees):.1f} | {run.auc:.4f} | "
            f"{run.auc - plain.auc:+.1e} | **{FATE_SECONDS_PER_TREE / wall:.1f}×** "
            f"({FATE_SECONDS_PER_TREE / median:.1f}×) | {FATE_CPU_PER_TREE / cpu:.1f}× |"
        )


def credit(args) -> None:
    print(f"\n## default credit, FATE's defaults ({load()})", flush=True)
    bank, shop = ftl.datasets.load_default_credit()
    X, y = ftl.align(bank, shop, order="id")
    if args.rows:
        X, y = X[: args.rows], y[: args.rows]
    X_tr, X_te, y_tr, y_te = train_test_split(X, y, test_size=0.3, stratify=y, random_state=0)
    P_tr, P_te = pooled(X_tr), pooled(X_te)
    print(f"{len(X_tr)} training rows, {len(X_te)} test rows, {X.shape[1]} features", flush=True)
    for n_trees in args.trees:
        params = dict(FATE, max_iter=n_trees)
        sk = fit_sklearn(params, P_tr, y_tr, P_te, y_te)
        sk1 = fit_sklearn(params, P_tr, y_tr, P_te, y_te, threads=1)
        plain = fit_federated(
            "plaintext", dict(params, encryption=None, n_jobs=args.n_jobs), X_tr, y_tr, X_te, y_te
        )
        encrypted = []
        for key_size in args.key_sizes:
            mode = dict(key_size=key_size, insecure_for_tests=key_size < 2048, n_jobs=args.n_jobs)
            run = fit_federated(
                f"Paillier {key_size}", dict(params, **mode), X_tr, y_tr, X_te, y_te
            )
            encrypted.append(run)
        print(f"\n{n_trees} trees, {load()}")
        print(
            f"plaintext federated fit ÷ scikit-learn HGB: {plain.fit_seconds / sk.fit_seconds:.1f}×"
            f" (÷ one thread of it: {plain.fit_seconds / sk1.fit_seconds:.1f}×)"
        )
        print("| model | fit s | s/tree | test AUC | FATE's AUC |")
        print("|---|---:|---:|---:|---:|")
        for run in (sk, sk1, plain, *encrypted):
            print(
                f"| {run.label} | {run.fit_seconds:.2f} | {run.fit_seconds / n_trees:.3f} | "
                f"{run.auc:.6f} | {FATE_AUC.get(n_trees, float('nan')):.3f} |"
            )
        same = plain.auc == sk.auc
        print(
            f"plaintext vs scikit-learn: AUC equal: {same}; max |raw difference| "
            f"{np.abs(plain.raw - sk.raw).max():.1e}; secure prediction of "
            f"{len(X_te)} rows: {(encrypted or [plain])[0].predict_seconds:.2f} s"
        )
        if encrypted:
            profile_table(encrypted, n_trees, plain)


def synthetic(n_rows: int, n_per_party: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Gaussian columns (guest's first, then the host's); labels from both parties'
    columns, with an interaction across parties so that trees need both."""
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((n_rows, 2 * n_per_party))
    h = n_per_party
    logit = X[:, :3].sum(axis=1) - X[:, h : h + 3].sum(axis=1) + X[:, 3] * X[:, h + 3]
    y = (rng.random(n_rows) < 1 / (1 + np.exp(-logit))).astype(int)
    return X, y


def stages(profile: FitProfile, trees: slice = slice(None)) -> str:
    """Wall seconds per kernel call and the rest, summed over ``trees``."""
    chosen = profile.trees[trees]
    parts = {s: sum(t.stages[s] for t in chosen) for s in STAGES}
    parts["rest"] = sum(t.wall for t in chosen) - sum(parts.values())
    return ", ".join(f"{k} {v:.1f}" for k, v in parts.items())


def scale(args) -> None:
    n, f = args.scale_rows, args.scale_features
    print(f"\n## scale: {n:,} rows x {f} features per party ({load()})", flush=True)
    params = dict(SCALE, max_iter=5, n_jobs=args.n_jobs)
    plain = FederatedGradientBoostingClassifier(encryption=None, random_state=0, **params)
    before = tree_rss() / 2**30
    with PeakMemory() as memory:
        X, y = synthetic(n, f)
        with FitProfile() as profile:
            start = time.perf_counter()
            plain.fit(X, y)
            seconds = time.perf_counter() - start
    print(
        f"plaintext federated fit, 5 trees: {seconds:.1f} s (set-up {profile.setup:.1f} s; "
        f"trees {' '.join(f'{t.wall:.1f}' for t in profile.trees)} s; summed: "
        f"{stages(profile)}); peak RSS with the data {memory.gib:.2f} GiB "
        f"(before: {before:.2f} GiB), < 24 GiB: {memory.gib < 24}; {load()}",
        flush=True,
    )
    sk, sk_seconds = timed_sklearn(dict(SCALE, max_iter=5), X, y)
    _, one_thread = timed_sklearn(dict(SCALE, max_iter=5), X, y, threads=1)
    check = slice(0, min(n, 100_000))
    diff = np.abs(plain.decision_function(X[check]) - sk.decision_function(X[check])).max()
    print(
        f"scikit-learn HGB, same columns: {sk_seconds:.1f} s, one thread {one_thread:.1f} s; "
        f"federated ÷ scikit-learn {seconds / sk_seconds:.1f}× (÷ one thread "
        f"{seconds / one_thread:.1f}×); max |raw difference| on {check.stop:,} rows: {diff:.1e}; "
        f"{load()}",
        flush=True,
    )
    del X, plain, sk
    if args.encrypted_rows:
        encrypted_tree(args)


def encrypted_tree(args) -> None:
    """One encrypted tree on ``--encrypted-rows`` rows, extrapolated to ``--scale-rows``."""
    m, n, f = args.encrypted_rows, args.scale_rows, args.scale_features
    X, y = synthetic(m, f, seed=1)
    params = dict(SCALE_ENCRYPTED, max_iter=1, n_jobs=args.n_jobs)
    clf = FederatedGradientBoostingClassifier(random_state=0, **params)
    with PeakMemory() as memory, FitProfile() as p:
        start = time.perf_counter()
        clf.fit(X, y)
        seconds = time.perf_counter() - start
    t = p.trees[0]
    s = t.stages
    print(
        f"\nencrypted tree (depth 3, 255 bins, 2048 bits) on {m:,} rows x {f}+{f} features: "
        f"fit {seconds:.1f} s (set-up {p.setup:.1f} s), tree {t.wall:.1f} s wall, "
        f"{t.cpu:.0f} CPU-s: {stages(p)}; {clf.transcript_.total_bytes / 1e6:.0f} MB; "
        f"peak RSS {memory.gib:.2f} GiB; {load()}"
    )
    r = n / m
    # pack and decrypt grow with the histogram nodes times the filled bins (all 255
    # already filled at m rows); everything else with the rows (bin sums with the
    # node rows: the same shares of the rows at every depth)
    by_bins = s["pack"] + s["decrypt"]
    by_rows = t.wall - by_bins
    extrapolated = r * by_rows + by_bins
    cpu_scaled = t.cpu * (extrapolated / t.wall)
    print(
        f"extrapolated to {n:,} rows: T = {r:g} x (tree - pack - decrypt) + pack + decrypt "
        f"= {r:g} x {by_rows:.1f} + {by_bins:.1f} = {extrapolated:.0f} s per tree "
        f"(~{cpu_scaled:.0f} CPU-s at this run's CPU/wall ratio)",
        flush=True,
    )


def dask_check(args) -> None:
    """The encrypted fit with joblib's Dask backend on a local cluster."""
    import distributed

    print(f"\n## Dask ({load()})", flush=True)
    bank, shop = ftl.datasets.load_default_credit()
    X, y = ftl.align(bank, shop, order="id")
    X, y = X[: args.dask_rows], y[: args.dask_rows]
    params = dict(
        FATE, max_iter=2, key_size=1024, insecure_for_tests=True, n_jobs=-1, random_state=0
    )
    cluster = distributed.LocalCluster(
        n_workers=2, threads_per_worker=1, processes=True, dashboard_address="127.0.0.1:0"
    )
    with cluster, distributed.Client(cluster) as client:
        start = time.perf_counter()
        with joblib.parallel_config(backend="dask"):
            with distributed.get_task_stream(client) as stream:
                remote = FederatedGradientBoostingClassifier(**params).fit(X, y)
        seconds = time.perf_counter() - start
        tasks = stream.data
    ran = sorted({str(t["key"]).split("batch_of_")[-1].rsplit("_", 2)[0] for t in tasks})
    workers = {t["worker"] for t in tasks}
    start = time.perf_counter()
    local = FederatedGradientBoostingClassifier(**params).fit(X, y)
    local_seconds = time.perf_counter() - start
    diff = np.abs(remote.decision_function(X) - local.decision_function(X)).max()
    print(
        f"{len(X)} rows, 2 trees, 1024-bit keys: on the cluster {seconds:.1f} s, "
        f"{len(tasks)} tasks on {len(workers)} workers: {', '.join(ran)}; "
        f"locally (loky) {local_seconds:.1f} s; max |raw difference| {diff:.1e}"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--quick",
        action="store_true",
        help="smoke run: 3 000 credit rows, 3 trees, small scale runs (ratios to FATE void)",
    )
    parser.add_argument("--sections", nargs="+", default=["credit", "scale", "dask"])
    parser.add_argument("--rows", type=int, default=None, help="first aligned credit rows")
    parser.add_argument("--trees", type=int, nargs="+", default=[3, 30])
    parser.add_argument("--key-sizes", type=int, nargs="*", default=[2048, 1024])
    parser.add_argument("--n-jobs", type=int, default=-1)
    parser.add_argument("--scale-rows", type=int, default=1_000_000)
    parser.add_argument("--scale-features", type=int, default=50)
    parser.add_argument("--encrypted-rows", type=int, default=100_000)
    parser.add_argument("--dask-rows", type=int, default=5_000)
    args = parser.parse_args()
    if args.quick:
        args.rows, args.trees = 3_000, [3]
        args.scale_rows, args.scale_features, args.encrypted_rows = 20_000, 10, 4_000
    print(f"{time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}; {load()}")
    sections = {"credit": credit, "scale": scale, "dask": dask_check}
    for name in args.sections:
        sections[name](args)


if __name__ == "__main__":
    main()
