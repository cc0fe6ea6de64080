"""Federated LR on the bundled default credit data: encrypted vs plaintext mode.

Prints, from one process: PSI time, fit time with ``encryption=None`` (the same
protocol on plaintext values) and with 2048-bit Paillier, their ratio, core-ms
per sample per epoch, and the held-out AUC of both (they must agree) -- for the
configuration ``ftl demo`` uses (``sigmoid="taylor"``, one decay per epoch); then
the time of one encrypted epoch with each sigmoid approximation.
Also measures our encryption throughput against python-paillier's
``PaillierPublicKey.encrypt`` in the same process.

Usage: python benchmarks/bench_lr.py [--rows N] [--n-jobs J] [--key-size K]
"""

from __future__ import annotations

import argparse
import os
import time

import numpy as np
import phe
from sklearn.metrics import roc_auc_score
from sklearn.model_selection import train_test_split

import ftl
from ftl.crypto.scheme import make_own_key


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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rows", type=int, default=None)
    parser.add_argument("--n-jobs", type=int, default=-1)
    parser.add_argument("--key-size", type=int, default=2048)
    parser.add_argument("--epoch-rows", type=int, default=3000)
    args = parser.parse_args()
    cores = os.cpu_count()

    ours, base = encryption_ratio(args.key_size)
    print(f"encryption, 1 core: ftl {ours:.0f}/s vs phe {base:.0f}/s  -> {ours / base:.1f}x")

    bank, shop = ftl.datasets.load_default_credit()
    t = time.perf_counter()
    X, y = ftl.align(bank, shop)
    print(f"PSI {len(X)} x {len(X)}: {time.perf_counter() - t:.1f} s")
    if args.rows:
        X, y = X[: args.rows], y[: args.rows]
    X_tr, X_te, y_tr, y_te = train_test_split(X, y, test_size=0.3, stratify=y, random_state=0)
    results = {}
    # the configuration `ftl demo` uses: FATE's Taylor-1, one decay per epoch
    # `ftl demo`'s fast path: FATE's Taylor-1 with mini-batch Adam, decayed every epoch
    fast = dict(sigmoid="taylor", optimizer="adam", learning_rate_schedule="epoch")
    for mode in (None, "paillier"):
        clf = ftl.FederatedLogisticRegression(
            encryption=mode, key_size=args.key_size, n_jobs=args.n_jobs, random_state=0, **fast
        )
        t = time.perf_counter()
        clf.fit(X_tr, y_tr)
        fit_s = time.perf_counter() - t
        t = time.perf_counter()
        auc = roc_auc_score(y_te, clf.decision_function(X_te))
        pred_s = time.perf_counter() - t
        epochs = int(clf.n_iter_[0])
        results[mode] = fit_s
        per = fit_s * 1e3 * cores / (len(X_tr) * epochs)
        print(
            f"{mode or 'plaintext':9s} fit {fit_s:7.1f} s, {epochs} epochs, "
            f"{per:.3f} core-ms/sample/epoch ({cores} cores), predict {len(X_te)} rows "
            f"{pred_s:.1f} s, test AUC {auc:.4f}, {clf.transcript_.total_bytes / 1e6:.0f} MB"
        )
    print(f"encrypted / plaintext fit time: {results['paillier'] / results[None]:.0f}x")

    # cost of one encrypted epoch per sigmoid approximation, on the first rows
    sub_X, sub_y = X_tr[: args.epoch_rows], y_tr[: args.epoch_rows]
    per_epoch = {}
    for sigmoid in ("taylor", "poly"):
        clf = ftl.FederatedLogisticRegression(
            key_size=args.key_size,
            n_jobs=args.n_jobs,
            random_state=0,
            max_iter=1,
            sigmoid=sigmoid,
            optimizer="adam",  # exactly one pass over the rows (an L-BFGS pass costs the same)
        )
        t = time.perf_counter()
        clf.fit(sub_X, sub_y)
        per_epoch[sigmoid] = time.perf_counter() - t
        print(
            f"one encrypted epoch, sigmoid={sigmoid!r}, {len(sub_X)} rows: "
            f"{per_epoch[sigmoid]:.1f} s ({per_epoch[sigmoid] * 1e3 * cores / len(sub_X):.2f} "
            "core-ms/sample, incl. key set-up)"
        )
    print(f"poly / taylor time per epoch: {per_epoch['poly'] / per_epoch['taylor']:.1f}x")


if __name__ == "__main__":
    main()
