"""What label differential privacy costs: FederatedLogisticRegression(label_privacy=eps).

For each bundled classification set and three stratified 70/30 splits (rows ordered by
id, as in ``bench_accuracy.py``), prints test AUC (accuracy for the 4-class vehicle
data) of scikit-learn's ``LogisticRegression`` on the pooled columns, of the
non-private federated model (default parameters) and of the federated model with
``label_privacy=eps`` for each ``eps``, in plaintext mode (the identical protocol).

The randomized responses are a fixed function of the guest party's secret, so every
draw re-creates the parties (a new secret, new noise); each private cell is the mean
over ``--draws`` draws, and the last row of each data set the mean over its splits
and draws, with the standard deviation over those fits. The iterations column gives
the L-BFGS iterations of the private fits (mean and largest, over the models of a
fit the largest), against the non-private fit's.

Usage: python benchmarks/bench_label_privacy.py [--draws 3] [--eps 0.5 1 2 4 8]
"""

from __future__ import annotations

import argparse

import numpy as np
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import roc_auc_score
from sklearn.model_selection import train_test_split
from sklearn.multiclass import OneVsRestClassifier

import ftl

DATASETS = [
    ("default credit", ftl.datasets.load_default_credit),
    ("breast", ftl.datasets.load_breast_cancer),
    ("ionosphere", ftl.datasets.load_ionosphere),
    ("vehicle (accuracy)", ftl.datasets.load_vehicle),
]


def aligned(loader):
    """Fresh parties (a fresh guest secret), aligned and ordered by id."""
    X, y = ftl.align(*loader())
    order = np.argsort(X.ids)
    return X[order], y[order]


def pooled(X) -> np.ndarray:
    return np.hstack(
        [p.local_features(p.aligned_rows(X.alignment.id, X.positions)) for p in X.parties]
    )


def score(model, X, y, multiclass: bool) -> float:
    if multiclass:
        return model.score(X, y)
    return roc_auc_score(y, model.decision_function(X))


def split(X, y, seed: int):
    return train_test_split(X, y, test_size=0.3, stratify=y, random_state=seed)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--draws", type=int, default=3, help="noise draws per split")
    parser.add_argument("--eps", type=float, nargs="+", default=[0.5, 1.0, 2.0, 4.0, 8.0])
    args = parser.parse_args()
    eps_cells = " | ".join(f"eps={e:g}" for e in args.eps)
    print(f"| data | split | sklearn pooled | ftl (no label privacy) | {eps_cells} | iterations |")
    print("|---|---|---|---|" + "---|" * len(args.eps) + "---|")
    for name, loader in DATASETS:
        X, y = aligned(loader)
        multiclass = len(np.unique(y)) > 2
        rows, fits = [], [[] for _ in args.eps]
        for seed in range(3):
            X_tr, X_te, y_tr, y_te = split(X, y, seed)
            sk = LogisticRegression(max_iter=5000)
            if multiclass:
                sk = OneVsRestClassifier(sk)
            sk.fit(pooled(X_tr), y_tr)
            a = score(sk, pooled(X_te), y_te, multiclass)
            fed = ftl.FederatedLogisticRegression(encryption=None, random_state=0)
            b = score(fed.fit(X_tr, y_tr), X_te, y_te, multiclass)
            private, iters = [], []
            for j, eps in enumerate(args.eps):
                draws = []
                for _ in range(args.draws):
                    Xd, yd = aligned(loader)  # new parties: a new secret, new responses
                    Xd_tr, Xd_te, yd_tr, yd_te = split(Xd, yd, seed)
                    clf = ftl.FederatedLogisticRegression(
                        encryption=None, random_state=0, label_privacy=eps
                    ).fit(Xd_tr, yd_tr)
                    draws.append(score(clf, Xd_te, yd_te, multiclass))
                    iters.append(np.max(clf.n_iter_))
                fits[j].extend(draws)
                private.append(np.mean(draws))
            rows.append([a, b, *private])
            cells = " | ".join(f"{v:.4f}" for v in private)
            print(
                f"| {name} | {seed} | {a:.4f} | {b:.4f} | {cells} "
                f"| {np.mean(iters):.0f}, at most {np.max(iters):.0f} "
                f"(no label privacy: {np.max(fed.n_iter_)}) |",
                flush=True,
            )
        mean = np.mean(rows, axis=0)
        cells = " | ".join(f"**{np.mean(f):.4f}** ± {np.std(f):.3f}" for f in fits)
        print(f"| {name} | mean | {mean[0]:.4f} | {mean[1]:.4f} | {cells} | |", flush=True)


if __name__ == "__main__":
    main()
