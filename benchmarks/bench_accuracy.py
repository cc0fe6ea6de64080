"""Federated LR vs scikit-learn on pooled data, on every bundled classification set.

For each dataset and three stratified 70/30 splits (rows ordered by id so the
splits are reproducible), prints test AUC (accuracy for the 4-class vehicle data,
against scikit-learn's one-vs-rest, and in a second table its multinomial model)
of ``sklearn.linear_model.LogisticRegression`` (same C) trained on the pooled
columns and of ``FederatedLogisticRegression`` with default parameters (and its
passes over the data), with ``optimizer="adam"`` and with ``sigmoid="taylor"``
(FATE's approximation), in plaintext mode: the identical protocol; the last line
compares an encrypted fit with 2048-bit keys with the plaintext one on breast).

Usage: python benchmarks/bench_accuracy.py [--passes STARTS]

``--passes STARTS`` prints only the default's passes per binary model and its AUC
gaps (accuracy for vehicle), over the three splits and ``STARTS`` secret starts
each (the guest party's secret is set to a fixed value per start, so the runs
repeat exactly; without it every run draws new secrets).
"""

from __future__ import annotations

import argparse
import hashlib

import numpy as np
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import roc_auc_score
from sklearn.model_selection import train_test_split
from sklearn.multiclass import OneVsRestClassifier

import ftl


def pooled(X) -> np.ndarray:
    return np.hstack(
        [p.local_features(p.aligned_rows(X.alignment.id, X.positions)) for p in X.parties]
    )


def full_coef(fed, X, k: int = 0) -> np.ndarray:
    """All parties' weights of binary model ``k`` of a federated fit, in pooled
    column order.

    Possible only in a simulation, where the driver can read the hosts' shards."""
    model_id = fed.models_[k]["model_id"]
    host_blocks = [h.load_model(model_id)["coef"] for h in X.alignment.hosts]
    return np.concatenate([fed.coef_[k], *host_blocks])


def coef_error(fed, sk, X) -> str:
    """``||w_ftl - w_sklearn|| / ||w_sklearn||`` over all features (intercepts apart),
    and the same for the training margins ``X w + b`` (well conditioned even where
    collinear features, e.g. default credit's six bill amounts, make single weights
    ill-determined). For several classes: the mean over the one-vs-rest models."""
    estimators = getattr(sk, "estimators_", [sk])
    x = pooled(X)
    coef, margin = [], []
    for k, est in enumerate(estimators):
        w = full_coef(fed, X, k)
        coef.append(np.linalg.norm(w - est.coef_[0]) / np.linalg.norm(est.coef_[0]))
        m_sk = est.decision_function(x)
        m_fed = x @ w + fed.intercept_[k]
        margin.append(np.linalg.norm(m_fed - m_sk) / np.linalg.norm(m_sk))
    return f"{np.mean(coef):.3f} ({np.mean(margin):.3f})"


def passes(fed) -> str:
    """Passes over the data of a fit (several classes: per one-vs-rest model)."""
    counts = [run[-1]["passes"] for run in fed.history_]
    return str(counts[0]) if len(counts) == 1 else "/".join(map(str, counts))


def aligned(loader):
    X, y = ftl.align(*loader())
    order = np.argsort(X.ids)
    return X[order], y[order]


def multi_host() -> None:
    """Three parties (columns split in three): sigmoid="auto" falls back to Taylor-1."""
    print(
        "\n| data (guest + 2 hosts) | split | sklearn pooled "
        "| ftl 3 parties (taylor, L-BFGS) | gap |"
    )
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


def raw_features() -> None:
    """The raw UCI credit table, unscaled (amounts up to 10**6 next to 0/1 codes),
    split into guest and host columns by a simulated federation: one split."""
    table = ftl.datasets._loaders._read("UCI_Credit_Card.csv")
    y = table.pop("default.payment.next.month").to_numpy()
    x = table.drop(columns="ID").to_numpy(dtype=float)
    tr, te = train_test_split(np.arange(len(y)), test_size=0.3, stratify=y, random_state=0)
    # Newton's method converges on unscaled columns; lbfgs needs thousands of iterations
    sk = LogisticRegression(solver="newton-cholesky", tol=1e-10, max_iter=1000)
    a = roc_auc_score(y[te], sk.fit(x[tr], y[tr]).decision_function(x[te]))
    print("\n| raw UCI credit (unscaled), split 0 | test AUC | gap | iterations or epochs |")
    print("|---|---|---|---|")
    print(f"| sklearn pooled (newton-cholesky) | {a:.4f} | | {sk.n_iter_[0]} |")
    for label, kw in (
        ("ftl default (poly, L-BFGS)", {}),
        ("ftl optimizer='adam'", {"optimizer": "adam"}),
        ("ftl sigmoid='taylor'", {"sigmoid": "taylor"}),
    ):
        fed = ftl.FederatedLogisticRegression(encryption=None, random_state=0, **kw)
        b = roc_auc_score(y[te], fed.fit(x[tr], y[tr]).decision_function(x[te]))
        print(f"| {label} | {b:.4f} | {b - a:+.4f} | {fed.n_iter_[0]} |", flush=True)


#: The bundled classification sets, with the names the tables print.
DATASETS = [
    ("default credit", ftl.datasets.load_default_credit),
    ("breast", ftl.datasets.load_breast_cancer),
    ("ionosphere", ftl.datasets.load_ionosphere),
    ("vehicle (accuracy, one-vs-rest)", ftl.datasets.load_vehicle),
]


def passes_table(starts: int) -> None:
    """Mean passes per binary model of the default and its gaps to pooled
    scikit-learn, over three splits and ``starts`` fixed secret starts each."""
    print("| data | runs | passes per binary model: mean (min–max) | gap: worst, mean |")
    print("|---|---|---|---|")
    for name, loader in DATASETS:
        X, y = aligned(loader)
        counts, gaps = [], []
        for seed in range(3):
            X_tr, X_te, y_tr, y_te = train_test_split(
                X, y, test_size=0.3, stratify=y, random_state=seed
            )
            if len(np.unique(y)) > 2:
                sk = OneVsRestClassifier(LogisticRegression(max_iter=5000)).fit(pooled(X_tr), y_tr)
                a = sk.score(pooled(X_te), y_te)
            else:
                sk = LogisticRegression(max_iter=5000).fit(pooled(X_tr), y_tr)
                a = roc_auc_score(y_te, sk.decision_function(pooled(X_te)))
            for start in range(starts):
                X_tr.alignment.guest._secret = hashlib.sha256(f"start {start}".encode()).digest()
                fed = ftl.FederatedLogisticRegression(encryption=None).fit(X_tr, y_tr)
                counts += [run[-1]["passes"] for run in fed.history_]
                if len(np.unique(y)) > 2:
                    gaps.append(fed.score(X_te, y_te) - a)
                else:
                    gaps.append(roc_auc_score(y_te, fed.decision_function(X_te)) - a)
        print(
            f"| {name} | {len(gaps)} | {np.mean(counts):.2f} ({min(counts)}–{max(counts)}) "
            f"| {min(gaps):+.4f}, {np.mean(gaps):+.4f} |",
            flush=True,
        )


def main() -> None:
    print(
        "| data | split | sklearn pooled | ftl default (poly, L-BFGS) | gap | passes "
        "| ftl optimizer='adam' | gap | ftl sigmoid='taylor' (FATE) | gap "
        "| rel. error of weights (of margins), default / taylor |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    multinomial = []
    for name, loader in DATASETS:
        X, y = aligned(loader)
        multiclass = len(np.unique(y)) > 2
        for seed in range(3):
            X_tr, X_te, y_tr, y_te = train_test_split(
                X, y, test_size=0.3, stratify=y, random_state=seed
            )
            fits = [
                ftl.FederatedLogisticRegression(encryption=None, random_state=0, **kw).fit(
                    X_tr, y_tr
                )
                for kw in ({}, {"optimizer": "adam"}, {"sigmoid": "taylor"})
            ]
            if multiclass:
                sk = OneVsRestClassifier(LogisticRegression(max_iter=5000)).fit(pooled(X_tr), y_tr)
                a = sk.score(pooled(X_te), y_te)
                scores = [fed.score(X_te, y_te) for fed in fits]
                multi = LogisticRegression(max_iter=5000).fit(pooled(X_tr), y_tr)
                multinomial.append((seed, multi.score(pooled(X_te), y_te), scores[0]))
            else:
                sk = LogisticRegression(max_iter=5000).fit(pooled(X_tr), y_tr)
                a = roc_auc_score(y_te, sk.decision_function(pooled(X_te)))
                scores = [roc_auc_score(y_te, fed.decision_function(X_te)) for fed in fits]
            err = f"{coef_error(fits[0], sk, X_tr)} / {coef_error(fits[2], sk, X_tr)}"
            cells = [f"{b:.4f} | {b - a:+.4f}" for b in scores]
            cells[0] += f" | {passes(fits[0])}"
            cells = " | ".join(cells)
            print(f"| {name} | {seed} | {a:.4f} | {cells} | {err} |", flush=True)
    print("\n| vehicle split | sklearn multinomial (accuracy) | ftl default (one-vs-rest) | gap |")
    print("|---|---|---|---|")
    for seed, a, b in multinomial:
        print(f"| {seed} | {a:.4f} | {b:.4f} | {b - a:+.4f} |")
    multi_host()
    raw_features()
    X, y = aligned(ftl.datasets.load_breast_cancer)
    X_tr, X_te, y_tr, y_te = train_test_split(X, y, test_size=0.3, stratify=y, random_state=0)
    plain = ftl.FederatedLogisticRegression(encryption=None, random_state=0).fit(X_tr, y_tr)
    enc = ftl.FederatedLogisticRegression(random_state=0, n_jobs=-1).fit(X_tr, y_tr)
    d_plain, d_enc = plain.decision_function(X_te), enc.decision_function(X_te)
    rel = np.linalg.norm(d_enc - d_plain) / np.linalg.norm(d_plain)
    auc_plain = roc_auc_score(y_te, d_plain)
    auc_enc = roc_auc_score(y_te, d_enc)
    print(
        f"\nbreast, 2048-bit Paillier vs plaintext mode (default L-BFGS, {enc.n_iter_[0]} vs "
        f"{plain.n_iter_[0]} iterations): relative difference of test margins {rel:.1e}, "
        f"test AUC {auc_enc:.4f} vs {auc_plain:.4f}"
    )


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--passes", type=int, metavar="STARTS", help="passes table only")
    args = parser.parse_args()
    if args.passes:
        passes_table(args.passes)
    else:
        main()
