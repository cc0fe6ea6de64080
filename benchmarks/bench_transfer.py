"""Federated transfer learning on the credit transfer split: accuracy and cost.

For each overlap size, on the target's customers that the source never saw
(their labels are used only for scoring), prints the test AUC of

(a) ``FederatedTransferClassifier`` with 2048-bit Paillier (``--encrypted`` sizes),
(b) the same with ``encryption=None`` (same protocol, plaintext values),
(c) the non-private baseline a user would otherwise build: sklearn
    ``LogisticRegression`` on the target's features of the shared rows, with the
    source's labels handed over,
(d) the oracle: sklearn on the target's features trained with all target-only
    labels (5-fold cross-validated predictions),
(e) chance (0.5),

averaged over ``--seeds`` splits for (b)-(d) (the first seed for (a)). Then the
time of one encrypted epoch on 1000 shared rows with d = 32, against the
plaintext-mode epoch in the same process. Writes ``docs/img/transfer_overlap.png``.

Usage: python benchmarks/bench_transfer.py [--overlaps 250 500 ...] [--encrypted 250 1000]
       [--seeds 3] [--n-jobs 2] [--plot PATH]
"""

from __future__ import annotations

import argparse
import time

import numpy as np
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import roc_auc_score
from sklearn.model_selection import StratifiedKFold, cross_val_predict

import ftl


def _split(overlap: int, seed: int):
    data = ftl.datasets.load_credit_transfer(overlap=overlap, random_state=seed)
    X, y = ftl.align(data.source, data.target, how="left")
    test = data.target.select(data.target_only_ids)
    y_test = data.target_labels.loc[data.target_only_ids].to_numpy()
    return data, X, y, test, y_test


def _baselines(data, test, y_test, seed: int) -> tuple[float, float]:
    tgt = data.target
    shared = tgt.local_features(tgt.rows_for_ids(data.overlap_ids))
    y_shared = data.target_labels.loc[data.overlap_ids].to_numpy()
    x_test = tgt.local_features(test.rows)
    c = LogisticRegression(max_iter=1000).fit(shared, y_shared)
    auc_c = roc_auc_score(y_test, c.predict_proba(x_test)[:, 1])
    cv = StratifiedKFold(5, shuffle=True, random_state=seed)
    oracle = cross_val_predict(
        LogisticRegression(max_iter=1000), x_test, y_test, cv=cv, method="predict_proba"
    )
    return auc_c, roc_auc_score(y_test, oracle[:, 1])


def _ftl_auc(X, y, test, y_test, **kw) -> tuple[float, float, int]:
    t = time.perf_counter()
    clf = ftl.FederatedTransferClassifier(random_state=0, **kw).fit(X, y)
    auc = roc_auc_score(y_test, clf.predict_proba(test)[:, 1])
    return auc, time.perf_counter() - t, clf.n_iter_


def epoch_cost(n_jobs: int) -> None:
    data, X, y, _, _ = _split(1000, 0)
    for enc in (None, "paillier"):
        clf = ftl.FederatedTransferClassifier(
            encryption=enc, random_state=0, max_iter=3, tol=0, n_jobs=n_jobs
        ).fit(X, y)
        secs = [h["seconds"] for h in clf.history_]
        print(
            f"epoch, 1000 shared rows, d=32, hidden (32,), {enc or 'plaintext'}, n_jobs={n_jobs}: "
            f"{np.median(secs):.2f} s (epochs: {', '.join(f'{s:.2f}' for s in secs)})"
        )
        if enc is None:
            plain = np.median(secs)
    print(f"  encrypted / plaintext epoch: {np.median(secs) / plain:.0f}x")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--overlaps", type=int, nargs="+", default=[250, 500, 1000, 2000, 4000])
    parser.add_argument("--encrypted", type=int, nargs="*", default=[250, 1000])
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--n-jobs", type=int, default=2)
    parser.add_argument("--plot", default="docs/img/transfer_overlap.png")
    parser.add_argument("--skip-epoch", action="store_true")
    args = parser.parse_args()

    if not args.skip_epoch:
        epoch_cost(args.n_jobs)
    rows, encrypted = [], []
    print(
        "| overlap | (a) FTL encrypted | (b) FTL plaintext | (c) sklearn on overlap "
        "| (d) oracle | (e) chance | (b) - (c) |"
    )
    print("|---|---|---|---|---|---|---|")
    for overlap in args.overlaps:
        b, c, d = [], [], []
        for seed in range(args.seeds):
            data, X, y, test, y_test = _split(overlap, seed)
            auc_c, auc_d = _baselines(data, test, y_test, seed)
            b.append(_ftl_auc(X, y, test, y_test, encryption=None)[0])
            c.append(auc_c)
            d.append(auc_d)
        a = "--"
        if overlap in args.encrypted:
            data, X, y, test, y_test = _split(overlap, 0)
            auc_a, secs, n_iter = _ftl_auc(X, y, test, y_test, n_jobs=args.n_jobs)
            plain0 = b[0]
            a = f"{auc_a:.4f} (seed 0; plaintext {plain0:.4f}; {secs:.0f} s, {n_iter} epochs)"
            encrypted.append((overlap, auc_a))
        rows.append((overlap, np.mean(b), np.mean(c), np.mean(d)))
        print(
            f"| {overlap} | {a} | {np.mean(b):.4f} ± {np.std(b):.4f} | "
            f"{np.mean(c):.4f} ± {np.std(c):.4f} | {np.mean(d):.4f} | 0.5 | "
            f"{np.mean(np.array(b) - np.array(c)):+.4f} |",
            flush=True,
        )
    if args.plot:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        arr = np.array(rows)
        fig, ax = plt.subplots(figsize=(6, 4))
        ax.plot(arr[:, 0], arr[:, 1], "o-", label="FTL, plaintext mode (mean)")
        if encrypted:
            enc = np.array(encrypted)
            ax.plot(enc[:, 0], enc[:, 1], "rx", ms=9, label="FTL, Paillier 2048 (seed 0)")
        ax.plot(arr[:, 0], arr[:, 2], "s--", label="sklearn on shared rows, labels handed over")
        ax.plot(arr[:, 0], arr[:, 3], "k:", label="oracle: all target labels")
        ax.axhline(0.5, color="grey", lw=0.8, label="chance")
        ax.set_xscale("log")
        ax.set_xticks(arr[:, 0], [str(int(v)) for v in arr[:, 0]])
        ax.minorticks_off()
        ax.set_xlabel("shared customers (overlap)")
        ax.set_ylabel("AUC on target-only customers")
        ax.set_title(f"Credit transfer split, mean of {args.seeds} splits")
        ax.set_ylim(0.45, 0.75)
        ax.legend(fontsize=8, loc="lower right")
        fig.tight_layout()
        fig.savefig(args.plot, dpi=120)
        print(f"plot: {args.plot}")


if __name__ == "__main__":
    main()
