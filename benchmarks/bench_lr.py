"""Federated LR on the bundled default credit data: the default next to the Taylor path.

Prints, from one process:

1. our encryption throughput against python-paillier's ``PaillierPublicKey.encrypt``;
2. PSI time;
3. for the library's default (per-row polynomial, L-BFGS) and for the fast path
   ``ftl demo`` offered before it (FATE's Taylor-1 with mini-batch Adam): the fit with
   ``encryption=None`` (the same protocol on plaintext values) and with 2048-bit
   Paillier -- time, passes over the data, seconds per pass, test AUC against
   scikit-learn on the pooled columns -- and the ratio default / Taylor;
4. seconds per pass on the first ``--pass-rows`` training rows for each approximation,
   the previous default's five host columns included, from the fit's own history (no
   key set-up), and the ratios to Taylor-1's pass.

``--rows N`` keeps the first N aligned rows (quick runs); ``--passes-only`` skips
section 3 (its encrypted fits take minutes on the full data), ``--pass-rows 0``
section 4.

Usage: python benchmarks/bench_lr.py [--rows N] [--n-jobs J] [--key-size K]
       [--pass-rows M] [--passes-only]
"""

from __future__ import annotations

import argparse
import os
import time

import numpy as np
import phe
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import roc_auc_score
from sklearn.model_selection import train_test_split

import ftl
from ftl.crypto.scheme import make_own_key

#: The fast path ``ftl demo`` offered before the default was fast: FATE's Taylor-1
#: with mini-batch Adam, decayed every epoch.
TAYLOR = dict(sigmoid="taylor", optimizer="adam", learning_rate_schedule="epoch")
#: The library's default (``sigmoid="auto"`` -> the per-row polynomial, L-BFGS).
DEFAULT: dict = {}
#: The default before issue 14 encrypted five host columns per row (powers of the
#: margin on R = 5); a pass costs the same in either basis, so K = 5 measures it.
PREVIOUS = dict(sigmoid_degree=5, sigmoid_radius=5.0)


def encryption_ratio(key_size: int, count: int = 200) -> tuple[float, float]:
    pk, _ = phe.generate_paillier_keypair(n_length=key_size)
    t = time.perf_counter()
    for i in range(count // 4):
        pk.encrypt(i)
    phe_rate = (count // 4) / (time.perf_counter() - t)
    own = make_own_key("paillier", key_size)
    own.encrypt(np.zeros(4))  # build the fixed-base tables once, as a session does
    t = time.perf_counter()
    own.encrypt(np.arange(count, dtype=float))
    ours = count / (time.perf_counter() - t)
    return ours, phe_rate


def pooled(X) -> np.ndarray:
    return np.hstack(
        [p.local_features(p.aligned_rows(X.alignment.id, X.positions)) for p in X.parties]
    )


def passes(clf) -> int:
    """Passes over the training rows: the last history entry's count."""
    return int(clf.history_[0][-1]["passes"])


def fit(params: dict, X_tr, y_tr, args, **kw):
    """A fitted estimator and its wall time."""
    clf = ftl.FederatedLogisticRegression(
        key_size=args.key_size, n_jobs=args.n_jobs, random_state=0, **params, **kw
    )
    started = time.perf_counter()
    clf.fit(X_tr, y_tr)
    return clf, time.perf_counter() - started


def compare_fits(X_tr, X_te, y_tr, y_te, args, cores: int) -> None:
    """Section 3: default and Taylor path, plaintext and encrypted, same split."""
    sk = LogisticRegression(max_iter=5000).fit(pooled(X_tr), y_tr)
    auc_sk = roc_auc_score(y_te, sk.decision_function(pooled(X_te)))
    print(f"scikit-learn on the pooled columns: test AUC {auc_sk:.4f}")
    seconds = {}
    for label, params in (("default (poly, L-BFGS)", DEFAULT), ("Taylor-1, Adam", TAYLOR)):
        for mode in (None, "paillier"):
            clf, fit_s = fit(params, X_tr, y_tr, args, encryption=mode)
            auc = roc_auc_score(y_te, clf.decision_function(X_te))
            n_pass = passes(clf)
            per = fit_s * 1e3 * cores / (len(X_tr) * n_pass)
            print(
                f"{label:24s} {mode or 'plaintext':9s} fit {fit_s:7.1f} s, "
                f"{clf.n_iter_[0]} iterations/epochs in {n_pass} passes, "
                f"{fit_s / n_pass:5.1f} s per pass ({per:.2f} core-ms/sample/pass), "
                f"test AUC {auc:.4f} (gap {auc - auc_sk:+.4f}), "
                f"{clf.transcript_.total_bytes / 1e6:.0f} MB",
                flush=True,
            )
            seconds[label, mode] = fit_s
    ratio = seconds["default (poly, L-BFGS)", "paillier"] / seconds["Taylor-1, Adam", "paillier"]
    print(f"encrypted fit, default / Taylor-1 path: {ratio:.2f}x")


#: Section 4's approximations: Taylor-1 (the base of the ratios) first.
PASS_CONFIGS = (
    ("Taylor-1, Adam (one epoch)", TAYLOR),
    ("default, K = 4 on R = 4", DEFAULT),
    ("previous default's cost, K = 5", PREVIOUS),
)


def compare_passes(X_tr, y_tr, args, configs=PASS_CONFIGS) -> dict:
    """Section 4: seconds per encrypted pass over the same rows, from the history,
    for each ``(label, params)`` of ``configs`` (the first is the base of the ratios)."""
    sub_X, sub_y = X_tr[: args.pass_rows], y_tr[: args.pass_rows]
    per_pass = {}
    for label, params in configs:
        # the second epoch of a full-batch Adam run is one warm pass (keys and
        # tables built, randomness pool running); Taylor-1 keeps its mini-batches
        kw = {} if params is TAYLOR else dict(optimizer="adam", batch_size=None)
        clf, _ = fit({**params, **kw}, sub_X, sub_y, args, max_iter=2, tol=0)
        per_pass[label] = clf.history_[0][1]["seconds"]
    base = per_pass[configs[0][0]]
    for label, s in per_pass.items():
        print(f"one encrypted pass, {label}, {len(sub_X)} rows: {s:.1f} s ({s / base:.2f}x Taylor)")
    return per_pass


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rows", type=int, default=None)
    parser.add_argument("--n-jobs", type=int, default=-1)
    parser.add_argument("--key-size", type=int, default=2048)
    parser.add_argument("--pass-rows", type=int, default=3000)
    parser.add_argument("--passes-only", action="store_true")
    args = parser.parse_args()
    cores = os.cpu_count()

    ours, base = encryption_ratio(args.key_size)
    print(f"encryption, 1 core: ftl {ours:.0f}/s vs phe {base:.0f}/s  -> {ours / base:.1f}x")

    bank, shop = ftl.datasets.load_default_credit()
    t = time.perf_counter()
    # order="id": the same split in every run (the blinded order, and with it the
    # split, changes between runs; the default's passes range 6-9 over splits)
    X, y = ftl.align(bank, shop, order="id")
    print(f"PSI {len(X)} x {len(X)}: {time.perf_counter() - t:.1f} s")
    if args.rows:
        X, y = X[: args.rows], y[: args.rows]
    X_tr, X_te, y_tr, y_te = train_test_split(X, y, test_size=0.3, stratify=y, random_state=0)
    if not args.passes_only:
        compare_fits(X_tr, X_te, y_tr, y_te, args, cores)
    if args.pass_rows > 0:  # --pass-rows 0 skips section 4
        compare_passes(X_tr, y_tr, args)


if __name__ == "__main__":
    main()
