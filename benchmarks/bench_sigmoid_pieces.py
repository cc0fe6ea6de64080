"""Fewer polynomial pieces? The default LR's accuracy, passes and cost per pass
against the number ``K`` of host basis functions and the radius ``R`` (issue 14).

``accuracy`` (plaintext mode: the same protocol and the same passes as encrypted)
fits ``FederatedLogisticRegression(sigmoid_degree=K, sigmoid_radius=R)`` on every
bundled binary set and on vehicle (one-vs-rest) with the method of
``bench_accuracy.py --passes``: three stratified 70/30 splits, ``--starts`` fixed
secret starts each. It prints, per ``(K, R)``, the largest residual error of the
approximation (``|p(s) - sigmoid(u_G + R s)|`` over ``u_G`` in ``[-10, 10]`` and
``|u_H| <= R``), the worst gap to pooled scikit-learn (test AUC; accuracy for
vehicle) and the mean passes per binary model.

``cost`` times one warm encrypted pass on the first ``--pass-rows`` training rows
of default credit for ``K`` in ``--degrees`` and for a Taylor-1 epoch, in one run
(``bench_lr.py``'s section 4): the ratios to Taylor-1, which a shared machine keeps
where it does not keep the seconds; ``--cpu`` counts CPU seconds instead, on one
core (``n_jobs=1``: the whole simulated federation runs in this process).

Usage: python benchmarks/bench_sigmoid_pieces.py accuracy [--starts S] [--pairs K,R ...]
       python benchmarks/bench_sigmoid_pieces.py cost [--degrees K ...] [--pass-rows M]
       [--key-size B] [--n-jobs J] [--rounds N] [--cpu]
"""

from __future__ import annotations

import argparse
import hashlib
import time
from types import SimpleNamespace

import numpy as np
from bench_accuracy import aligned, pooled
from bench_lr import TAYLOR, compare_passes
from scipy.special import expit
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import roc_auc_score
from sklearn.model_selection import train_test_split
from sklearn.multiclass import OneVsRestClassifier

import ftl
from ftl.linear_model import guest as guest_module
from ftl.linear_model._sigmoid import LocalPolynomial

DATASETS = [
    ("default credit", ftl.datasets.load_default_credit),
    ("breast", ftl.datasets.load_breast_cancer),
    ("ionosphere", ftl.datasets.load_ionosphere),
    ("vehicle (accuracy)", ftl.datasets.load_vehicle),
]
PAIRS = [(k, r) for k in (2, 3, 4) for r in (3.0, 4.0, 5.0)]


def residual_error(degree: int, radius: float) -> float:
    """Largest ``|p_i(s) - sigmoid(u_G + R s)|`` of the kernel basis's per-row fit
    over guest margins in ``[-10, 10]`` and ``s`` in ``[-1, 1]`` (fine grids)."""
    poly = LocalPolynomial(degree, radius, "kernel")
    u = np.linspace(-10.0, 10.0, 801)
    s = np.linspace(-1.0, 1.0, 801)
    fitted = poly.coefficients(u) @ poly.functions(s).T
    return float(np.abs(fitted - expit(u[:, None] + radius * s[None, :])).max())


def splits(loader):
    """The three splits and scikit-learn's pooled test score on each."""
    X, y = aligned(loader)
    for seed in range(3):
        X_tr, X_te, y_tr, y_te = train_test_split(
            X, y, test_size=0.3, stratify=y, random_state=seed
        )
        if len(np.unique(y)) > 2:
            sk = OneVsRestClassifier(LogisticRegression(max_iter=5000)).fit(pooled(X_tr), y_tr)
            yield X_tr, X_te, y_tr, y_te, sk.score(pooled(X_te), y_te)
        else:
            sk = LogisticRegression(max_iter=5000).fit(pooled(X_tr), y_tr)
            yield X_tr, X_te, y_tr, y_te, roc_auc_score(y_te, sk.decision_function(pooled(X_te)))


def score(fed, X_te, y_te) -> float:
    if len(fed.classes_) > 2:
        return fed.score(X_te, y_te)
    return roc_auc_score(y_te, fed.decision_function(X_te))


def accuracy(pairs, starts: int) -> None:
    """Worst and mean gap to pooled scikit-learn and mean passes, per (K, R) and set."""
    results = {}  # (pair, set) -> (gaps, passes)
    for name, loader in DATASETS:
        for X_tr, X_te, y_tr, y_te, baseline in splits(loader):
            for start in range(starts):
                # a fixed secret start per run, as bench_accuracy.py --passes sets it
                secret = hashlib.sha256(f"start {start}".encode()).digest()
                for degree, radius in pairs:
                    X_tr.alignment.guest._secret = secret
                    fed = ftl.FederatedLogisticRegression(
                        encryption=None, sigmoid_degree=degree, sigmoid_radius=radius
                    ).fit(X_tr, y_tr)
                    gaps, counts = results.setdefault(((degree, radius), name), ([], []))
                    gaps.append(score(fed, X_te, y_te) - baseline)
                    counts += [run[-1]["passes"] for run in fed.history_]
        print(f"done: {name}", flush=True)
    names = [name for name, _ in DATASETS]
    print(f"\n{3 * starts} runs per set; cells: worst gap (mean gap), mean passes per model\n")
    print("| (K, R) | residual error | " + " | ".join(names) + " |")
    print("|---" * (len(names) + 2) + "|")
    for pair in pairs:
        cells = []
        for name in names:
            gaps, counts = results[pair, name]
            cells.append(f"{min(gaps):+.4f} ({np.mean(gaps):+.4f}), {np.mean(counts):.1f}")
        cells = " | ".join(cells)
        print(f"| {pair[0]}, {pair[1]:g} | {residual_error(*pair):.4f} | {cells} |")


def cost(args) -> None:
    """Seconds of one warm encrypted pass per K (at R = 4) and a Taylor-1 epoch:
    the fastest of ``--rounds`` rounds, each timing every approximation in turn (so
    that a burst of load from other processes falls on one round, not one K)."""
    if args.cpu:
        # the guest times its passes with this clock: CPU seconds of the whole
        # simulated federation (one process, n_jobs=1), blind to other processes' load
        guest_module.time = SimpleNamespace(perf_counter=time.process_time)
        args.n_jobs = 1
    X, y = ftl.align(*ftl.datasets.load_default_credit())
    X_tr, _, y_tr, _ = train_test_split(X, y, test_size=0.3, stratify=y, random_state=0)
    configs = [("Taylor-1, Adam (one epoch)", TAYLOR)]
    configs += [(f"K = {k} on R = 4", {"sigmoid_degree": k}) for k in args.degrees]
    rounds = [compare_passes(X_tr, y_tr, args, configs) for _ in range(args.rounds)]
    base = min(r[configs[0][0]] for r in rounds)
    clock = "CPU seconds, n_jobs=1" if args.cpu else f"wall seconds, n_jobs={args.n_jobs}"
    print(f"\nfastest of {args.rounds} rounds, {args.pass_rows} rows, {args.key_size}-bit keys")
    print(f"({clock})\n")
    print("| one pass | seconds | x Taylor-1 epoch |\n|---|---|---|")
    for label, _ in configs:
        fastest = min(r[label] for r in rounds)
        print(f"| {label} | {fastest:.1f} | {fastest / base:.2f} |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("what", choices=["accuracy", "cost"])
    parser.add_argument("--starts", type=int, default=3)
    parser.add_argument("--pairs", nargs="+", default=None, metavar="K,R")
    parser.add_argument("--degrees", nargs="+", type=int, default=[2, 3, 4])
    parser.add_argument("--pass-rows", type=int, default=3000)
    parser.add_argument("--key-size", type=int, default=2048)
    parser.add_argument("--n-jobs", type=int, default=-1)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--cpu", action="store_true", help="CPU seconds, one core")
    args = parser.parse_args()
    if args.what == "cost":
        cost(args)
        return
    pairs = PAIRS
    if args.pairs:
        pairs = [(int(k), float(r)) for k, r in (p.split(",") for p in args.pairs)]
    accuracy(pairs, args.starts)


if __name__ == "__main__":
    main()
