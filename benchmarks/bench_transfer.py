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

averaged over ``--seeds`` splits for (b)-(d) (the first seed for (a)); before that,
the time of one encrypted epoch on 1000 shared rows with d = 32, against the
plaintext-mode epoch in the same process; after it, what the Taylor approximation
costs: the same model trained on pooled values with the Taylor loss and with the
exact logistic loss. Writes ``docs/img/transfer_overlap.png``.

Usage: python benchmarks/bench_transfer.py [--overlaps 250 500 ...] [--encrypted 250 1000]
       [--seeds 3] [--n-jobs 2] [--plot PATH] [--skip-epoch] [--taylor-only]
"""

from __future__ import annotations

import argparse
import time

import numpy as np
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import roc_auc_score
from sklearn.model_selection import StratifiedKFold, cross_val_predict

import ftl
from ftl.transfer._network import (
    Adam,
    HiddenStack,
    glorot,
    pretrain_autoencoder,
    pretrain_classifier,
    with_bias,
)
from ftl.transfer._objective import label_coding, reference_gradients
from ftl.transfer.source import current_gamma


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


def pooled_fit_auc(data, X, y, test, y_test, loss: str, seed: int = 0) -> float:
    """The estimator's model and optimiser on *pooled* values (no protocol), with the
    Taylor loss or the exact loss it approximates: isolates the approximation's cost."""
    p = ftl.FederatedTransferClassifier()._params()
    rng = np.random.default_rng(seed)
    aid, pos = X.alignment.id, X.positions
    overlap = np.asarray(X.alignment.overlap, dtype=bool)[pos]
    codes = np.unique(y, return_inverse=True)[1]
    src, tgt = data.source, data.target
    x_s = src.local_features(src.aligned_rows(aid, pos))
    stack_s = HiddenStack(x_s.shape[1], p["hidden_layer_sizes"], p["activation"], rng)
    pretrain_classifier(stack_s, x_s, codes, rng, epochs=p["pretrain_epochs"])
    stack_t = HiddenStack(tgt.n_features, p["hidden_layer_sizes"], p["activation"], rng)
    pretrain_autoencoder(
        stack_t, tgt.local_features(np.arange(tgt.n_rows)), rng, epochs=p["pretrain_epochs"]
    )
    h_s = with_bias(stack_s.forward(x_s))
    shared = np.flatnonzero(overlap)
    h_t = with_bias(stack_t.forward(tgt.local_features(tgt.aligned_rows(aid, pos[shared]))))
    d = p["n_components"]
    w_s, w_t = glorot(rng, h_s.shape[1] - 1, d), glorot(rng, h_t.shape[1] - 1, d)
    opt = Adam([w_s, w_t], p["learning_rate"])
    coding = label_coding(codes, 2)
    n_batches = max(1, len(shared) // min(1024, len(shared)))
    for epoch in range(ftl.FederatedTransferClassifier().max_iter):
        gamma = current_gamma(p, epoch)
        for batch in np.array_split(rng.permutation(len(shared)), n_batches):
            rows = shared[batch]
            _, g_s, g_t = reference_gradients(
                w_s,
                w_t,
                h_s,
                h_s[rows],
                h_t[batch],
                coding,
                coding.beta[rows],
                gamma,
                p["alpha"],
                loss=loss,
            )
            opt.step([g_s, g_t])
    prototypes = coding.R.T @ (h_s @ w_s.T)
    u_test = with_bias(stack_t.forward(tgt.local_features(test.rows))) @ w_t.T
    return roc_auc_score(y_test, (u_test @ prototypes.T)[:, 0])


def taylor_effect(overlaps, seeds: int) -> None:
    print("\nTaylor approximation, pooled values (no protocol), AUC on target-only rows:")
    print("| overlap | Taylor loss (the protocol's) | exact logistic loss | exact - Taylor |")
    print("|---|---|---|---|")
    for overlap in overlaps:
        t, e = [], []
        for seed in range(seeds):
            data, X, y, test, y_test = _split(overlap, seed)
            t.append(pooled_fit_auc(data, X, y, test, y_test, "taylor"))
            e.append(pooled_fit_auc(data, X, y, test, y_test, "exact"))
        print(
            f"| {overlap} | {np.mean(t):.4f} ± {np.std(t):.4f} | {np.mean(e):.4f} ± "
            f"{np.std(e):.4f} | {np.mean(np.array(e) - np.array(t)):+.4f} |",
            flush=True,
        )


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
    parser.add_argument("--taylor-only", action="store_true", help="only the Taylor table")
    args = parser.parse_args()

    if args.taylor_only:
        taylor_effect(args.overlaps, args.seeds)
        return
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
    taylor_effect(args.overlaps, args.seeds)


if __name__ == "__main__":
    main()
