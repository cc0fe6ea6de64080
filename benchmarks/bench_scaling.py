"""Scaling: PSI and one encrypted LR epoch at four sizes each; time per row should be flat.

PSI: ``ftl.align`` between two parties of ``n`` int ids each, half shared, at four
``n``. LR: one encrypted epoch (``max_iter=1``, ``tol=0``, ``sigmoid="taylor"`` and
the default polynomial), 2048-bit keys, ``n_jobs=-1``, on the first ``n`` aligned
rows (by id) of the bundled default credit data (13 + 10 features), at four ``n``:
the wall time of the second epoch of a two-epoch fit (``history_[0][1]["seconds"]``),
so key generation and table set-up are not counted, with a fixed batch size (1 000
rows) so that the number of batches grows with ``n`` (with ``batch_size="auto"`` small
data sets get 16 small batches, each with a fixed cost). Prints time, time per row and
the ratio of time per row to the smallest size's (1.0 means linear growth).

Usage: python benchmarks/bench_scaling.py [--psi-sizes ...] [--lr-sizes ...]
"""

from __future__ import annotations

import argparse
import time

import numpy as np

import ftl
from ftl.data.party import Party


def psi_parties(n: int) -> tuple[Party, Party]:
    rng = np.random.default_rng(n)
    ids_a = np.arange(n)
    ids_b = np.arange(n // 2, n // 2 + n)  # half shared
    a = Party("a", rng.normal(size=(n, 1)), ids=ids_a, labels=rng.integers(0, 2, n))
    b = Party("b", rng.normal(size=(n, 1)), ids=ids_b)
    return a, b


def table(title: str, rows: list[tuple[int, float]]) -> None:
    print(f"\n{title}")
    print("| rows | seconds | µs per row | per-row time / smallest size's |")
    print("|---:|---:|---:|---:|")
    base = rows[0][1] / rows[0][0]
    for n, seconds in rows:
        print(f"| {n:,} | {seconds:.2f} | {seconds / n * 1e6:.1f} | {seconds / n / base:.2f} |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--psi-sizes", type=int, nargs="+", default=[10_000, 30_000, 100_000, 300_000]
    )
    parser.add_argument("--lr-sizes", type=int, nargs="+", default=[3_000, 6_000, 12_000, 24_000])
    parser.add_argument("--batch-size", type=int, default=1_000)
    parser.add_argument("--n-jobs", type=int, default=-1)
    args = parser.parse_args()

    rows = []
    for n in args.psi_sizes:
        a, b = psi_parties(n)
        t = time.perf_counter()
        X, _ = ftl.align(a, b)
        rows.append((2 * n, time.perf_counter() - t))
        assert len(X) == n // 2
    table("PSI (rows = ids of both parties)", rows)

    bank, shop = ftl.datasets.load_default_credit()
    X, y = ftl.align(bank, shop, order="id")
    for sigmoid in ("taylor", "poly"):
        rows = []
        for n in args.lr_sizes:
            params = dict(
                sigmoid=sigmoid,
                optimizer="adam",  # mini-batches of a fixed size, see the docstring
                batch_size=args.batch_size,
                max_iter=2,
                tol=0.0,
                random_state=0,
                n_jobs=args.n_jobs,
            )
            clf = ftl.FederatedLogisticRegression(**params).fit(X[:n], y[:n])
            rows.append((n, clf.history_[0][1]["seconds"]))
        table(f"one encrypted LR epoch (the second), sigmoid={sigmoid!r}", rows)


if __name__ == "__main__":
    main()
