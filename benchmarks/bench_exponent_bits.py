"""How many fixed-point bits do the exponents of ``X.T @ [[v]]`` need? (issue 14)

The bucket multi-exponentiation costs about ``ceil((b + 1) / w)`` modular
multiplications per row and column for ``b``-bit exponents (docs/protocols.md §6.3):
two at today's ``FEATURE_FRAC_BITS = 20`` (21-bit exponents on standardised data), one
only once the exponents fit a single window (about 12 bits at 21 000 rows). This
script measures what fewer fraction bits would cost in accuracy, without any
cryptography: it runs the default ``FederatedLogisticRegression`` in plaintext mode
with every cross term's exponents rounded to ``F`` fraction bits, exactly as
``encode_features`` rounds them for Paillier, and prints, per ``F``, the widest
exponent seen, the multiplications per row and column that width costs at 21 000
rows, the mean passes and the worst gap to pooled scikit-learn (3 splits x 3 fixed
secret starts per set, the method of ``bench_accuracy.py --passes``).

Usage: PYTHONPATH=. python benchmarks/bench_exponent_bits.py [F ...]
"""

from __future__ import annotations

import hashlib
import sys

import numpy as np
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import roc_auc_score
from sklearn.model_selection import train_test_split
from sklearn.multiclass import OneVsRestClassifier

import ftl
from ftl.crypto import plain
from ftl.crypto.engine import bucket_window, digit_windows

DATASETS = [
    ("default credit", ftl.datasets.load_default_credit),
    ("breast", ftl.datasets.load_breast_cancer),
    ("ionosphere", ftl.datasets.load_ionosphere),
    ("vehicle (accuracy)", ftl.datasets.load_vehicle),
]
ROWS = 21_000
widest = [0]
_cross_total = plain.PlainPeerKey.cross_total


def rounded_cross_total(frac_bits: int):
    """``PlainPeerKey.cross_total`` with exponents rounded as ``encode_features`` does."""

    def cross_total(self, features, ct):
        feats = features if isinstance(features, list) else [features]
        rounded = []
        for x in feats:
            ints = np.rint(np.ldexp(np.asarray(x, dtype=np.float64), frac_bits))
            if ints.size:
                widest[0] = max(widest[0], int(np.abs(ints).max()).bit_length())
            rounded.append(np.ldexp(ints, -frac_bits))
        return _cross_total(self, rounded if isinstance(features, list) else rounded[0], ct)

    return cross_total


def pooled(X) -> np.ndarray:
    return np.hstack(
        [p.local_features(p.aligned_rows(X.alignment.id, X.positions)) for p in X.parties]
    )


def one_setting(frac_bits: int) -> None:
    plain.PlainPeerKey.cross_total = rounded_cross_total(frac_bits)
    widest[0] = 0
    cells = []
    for _, loader in DATASETS:
        X, y = ftl.align(*loader())
        order = np.argsort(X.ids)
        X, y = X[order], y[order]
        counts, gaps = [], []
        for seed in range(3):
            X_tr, X_te, y_tr, y_te = train_test_split(
                X, y, test_size=0.3, stratify=y, random_state=seed
            )
            multiclass = len(np.unique(y)) > 2
            if multiclass:
                sk = OneVsRestClassifier(LogisticRegression(max_iter=5000)).fit(pooled(X_tr), y_tr)
                base = sk.score(pooled(X_te), y_te)
            else:
                sk = LogisticRegression(max_iter=5000).fit(pooled(X_tr), y_tr)
                base = roc_auc_score(y_te, sk.decision_function(pooled(X_te)))
            for start in range(3):
                X_tr.alignment.guest._secret = hashlib.sha256(f"start {start}".encode()).digest()
                fed = ftl.FederatedLogisticRegression(encryption=None).fit(X_tr, y_tr)
                counts += [run[-1]["passes"] for run in fed.history_]
                score = (
                    fed.score(X_te, y_te)
                    if multiclass
                    else roc_auc_score(y_te, fed.decision_function(X_te))
                )
                gaps.append(score - base)
        cells.append(f"{min(gaps):+.4f}, {np.mean(counts):.1f}")
    bits = widest[0]
    w = bucket_window(ROWS, bits)
    per_row = digit_windows(bits, w) * (ROWS + 2**w) / ROWS
    print(f"| {frac_bits} | {bits} | {per_row:.2f} | " + " | ".join(cells) + " |", flush=True)


def main(settings: list[int]) -> None:
    names = " | ".join(name for name, _ in DATASETS)
    print(f"| F | widest exponent (bits) | mults per row and column at {ROWS} rows | {names} |")
    print("|---|---|---|" + "---|" * len(DATASETS))
    for frac_bits in settings:
        one_setting(frac_bits)
    plain.PlainPeerKey.cross_total = _cross_total


if __name__ == "__main__":
    main([int(a) for a in sys.argv[1:]] or [20, 16, 14, 12, 10, 8])
