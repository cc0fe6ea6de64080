"""Federated LR vs scikit-learn on pooled data, on every bundled classification set.

For each dataset and three stratified 70/30 splits (rows ordered by id so the
splits are reproducible), prints test AUC (accuracy for the 4-class vehicle data)
of ``sklearn.linear_model.LogisticRegression`` (same C) trained on the pooled
columns and of ``FederatedLogisticRegression`` with default parameters and with
``sigmoid="taylor"`` (FATE's approximation), both in plaintext mode: the identical
protocol; encrypted runs agree to fixed-point precision, which the last line checks
on breast with 2048-bit keys).

Usage: python benchmarks/bench_accuracy.py
"""

from __future__ import annotations

import numpy as np
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import roc_auc_score
from sklearn.model_selection import train_test_split

import ftl


def pooled(X) -> np.ndarray:
    return np.hstack(
        [p.local_features(p.aligned_rows(X.alignment.id, X.positions)) for p in X.parties]
    )


def full_coef(fed, X) -> np.ndarray:
    """All parties' weights of a binary federated fit, in pooled column order.

    Possible only in a simulation, where the driver can read the hosts' shards."""
    model_id = fed.models_[0]["model_id"]
    host_blocks = [h.load_model(model_id)["coef"] for h in X.alignment.hosts]
    return np.concatenate([fed.coef_[0], *host_blocks])


def coef_error(fed, sk, X) -> str:
    """``||w_ftl - w_sklearn|| / ||w_sklearn||`` over all features (intercepts apart),
    and the same for the training margins ``X w + b`` (well conditioned even where
    collinear features, e.g. default credit's six bill amounts, make single weights
    ill-determined)."""
    w = full_coef(fed, X)
    coef = np.linalg.norm(w - sk.coef_[0]) / np.linalg.norm(sk.coef_[0])
    x = pooled(X)
    m_sk = sk.decision_function(x)
    m_fed = x @ w + fed.intercept_[0]
    margin = np.linalg.norm(m_fed - m_sk) / np.linalg.norm(m_sk)
    return f"{coef:.3f} ({margin:.3f})"


def aligned(loader):
    X, y = ftl.align(*loader())
    order = np.argsort(X.ids)
    return X[order], y[order]


def multi_host() -> None:
    """Three parties (columns split in three): sigmoid="auto" falls back to Taylor-1."""
    print("\n| data (guest + 2 hosts) | split | sklearn pooled | ftl 3 parties (taylor) | gap |")
    print("|---|---|---|---|---|")
    for name, loader in [
        ("default credit", ftl.datasets.load_default_credit),
        ("breast", ftl.datasets.load_breast_cancer),
    ]:
        X, y = aligned(loader)
        columns = pooled(X)
        for seed in range(3):
            tr, te = train_test_split(
                np.arange(len(y)), test_size=0.3, stratify=y, random_state=seed
            )
            fed = ftl.FederatedLogisticRegression(
                encryption=None, random_state=0, simulated_hosts=2
            ).fit(columns[tr], y[tr])
            sk = LogisticRegression(max_iter=5000).fit(columns[tr], y[tr])
            a = roc_auc_score(y[te], sk.decision_function(columns[te]))
            b = roc_auc_score(y[te], fed.decision_function(columns[te]))
            print(f"| {name} | {seed} | {a:.4f} | {b:.4f} | {b - a:+.4f} |", flush=True)


def main() -> None:
    print(
        "| data | split | sklearn pooled | ftl default (poly) | gap "
        "| ftl sigmoid='taylor' (FATE) | gap | rel. error of weights (of margins), default "
        "/ taylor |"
    )
    print("|---|---|---|---|---|---|---|---|")
    for name, loader in [
        ("default credit", ftl.datasets.load_default_credit),
        ("breast", ftl.datasets.load_breast_cancer),
        ("ionosphere", ftl.datasets.load_ionosphere),
        ("vehicle (accuracy; ftl one-vs-rest)", ftl.datasets.load_vehicle),
    ]:
        X, y = aligned(loader)
        multiclass = len(np.unique(y)) > 2
        for seed in range(3):
            X_tr, X_te, y_tr, y_te = train_test_split(
                X, y, test_size=0.3, stratify=y, random_state=seed
            )
            fed = ftl.FederatedLogisticRegression(encryption=None, random_state=0).fit(X_tr, y_tr)
            fate = ftl.FederatedLogisticRegression(
                encryption=None, random_state=0, sigmoid="taylor"
            ).fit(X_tr, y_tr)
            if multiclass:
                sk = LogisticRegression(max_iter=5000).fit(pooled(X_tr), y_tr)
                a = sk.score(pooled(X_te), y_te)
                b, c = fed.score(X_te, y_te), fate.score(X_te, y_te)
                err = "n/a (OvR vs multinomial)"
            else:
                sk = LogisticRegression(max_iter=5000).fit(pooled(X_tr), y_tr)
                a = roc_auc_score(y_te, sk.decision_function(pooled(X_te)))
                b = roc_auc_score(y_te, fed.decision_function(X_te))
                c = roc_auc_score(y_te, fate.decision_function(X_te))
                err = f"{coef_error(fed, sk, X_tr)} / {coef_error(fate, sk, X_tr)}"
            print(
                f"| {name} | {seed} | {a:.4f} | {b:.4f} | {b - a:+.4f} | {c:.4f} | {c - a:+.4f} "
                f"| {err} |",
                flush=True,
            )
    multi_host()
    X, y = aligned(ftl.datasets.load_breast_cancer)
    X_tr, X_te, y_tr, y_te = train_test_split(X, y, test_size=0.3, stratify=y, random_state=0)
    plain = ftl.FederatedLogisticRegression(encryption=None, random_state=0).fit(X_tr, y_tr)
    enc = ftl.FederatedLogisticRegression(random_state=0, n_jobs=-1).fit(X_tr, y_tr)
    diff = np.abs(enc.decision_function(X_te) - plain.decision_function(X_te)).max()
    print(f"\nbreast, 2048-bit Paillier vs plaintext mode: max |decision difference| = {diff:.2e}")


if __name__ == "__main__":
    main()
