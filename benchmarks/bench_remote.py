"""Federated LR on default credit: the host over loopback gRPC (``ftl serve``) vs in-process.

Starts ``ftl serve`` for the host ("shop") as a subprocess on 127.0.0.1 with
throwaway certificates and a production-like policy (2048-bit keys, no plaintext),
then, in this process, aligns and fits the same model twice -- once against the
remote host, once against an in-process copy of it -- with the same seed and
``order="id"``, so both runs do identical work. Prints the times of PSI, fit and
prediction, their ratio (remote / in-process), the bytes that crossed, and checks
that both models agree.

Usage: python benchmarks/bench_remote.py [--rows N] [--epochs E] [--sigmoid taylor|auto]
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path

import numpy as np
from sklearn.metrics import roc_auc_score

import ftl
from ftl.federation.certs import make_certificates

DATA = Path(ftl.__file__).parent / "datasets" / "data"


def start_host(tmp: Path) -> tuple[subprocess.Popen, str]:
    config = tmp / "shop.toml"
    config.write_text(
        textwrap.dedent(
            f"""
            [party]
            name = "shop"
            data = "{DATA / "default_credit_hetero_host.csv"}"
            id_column = "id"

            [server]
            listen = "127.0.0.1:0"
            audit_log = "shop-audit.jsonl"

            [tls]
            cert = "certs/shop.crt"
            key = "certs/shop.key"
            ca = "certs/ca.crt"

            [policy]
            min_key_size = 2048
            min_intersection = 100
            n_jobs = -1  # the host's own parallelism (it ignores the driver's)

            [[policy.peers]]
            identity = "bank"
            """
        )
    )
    proc = subprocess.Popen(
        [sys.executable, "-m", "ftl", "serve", "--config", str(config)],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    line = proc.stdout.readline()
    if "listening on" not in line:
        proc.kill()
        raise RuntimeError(f"ftl serve did not start: {line!r}")
    return proc, line.strip().rpartition(" ")[2]


def run(bank, shop, rows, params, X_test_rows) -> dict:
    t = time.perf_counter()
    X, y = ftl.align(bank, shop, order="id")
    psi = time.perf_counter() - t
    X_train, y_train = X[:rows], y[:rows]
    X_test, y_test = X[X_test_rows], y[X_test_rows]
    t = time.perf_counter()
    clf = ftl.FederatedLogisticRegression(**params).fit(X_train, y_train)
    fit = time.perf_counter() - t
    t = time.perf_counter()
    margin = clf.decision_function(X_test)
    predict = time.perf_counter() - t
    return {
        "psi": psi,
        "fit": fit,
        "predict": predict,
        "auc": roc_auc_score(y_test, margin),
        "coef": clf.coef_.copy(),
        "bytes": clf.transcript_.total_bytes,
        "epochs": int(clf.n_iter_[0]),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rows", type=int, default=20_000, help="training rows")
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--sigmoid", default="taylor")
    parser.add_argument("--n-jobs", type=int, default=-1)
    args = parser.parse_args()
    params = dict(
        sigmoid=args.sigmoid,
        optimizer="adam",  # fixed epochs of mini-batches, as recorded in RESULTS.md
        max_iter=args.epochs,
        tol=0.0,
        random_state=0,
        n_jobs=args.n_jobs,
        learning_rate_schedule="epoch" if args.sigmoid == "taylor" else "adaptive",
    )
    bank, local_shop = ftl.datasets.load_default_credit()
    test_rows = np.arange(args.rows, args.rows + 5_000)
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        make_certificates(tmp / "certs", ["bank", "shop"])
        proc, address = start_host(tmp)
        try:
            tls = ftl.TLSConfig(
                ca=tmp / "certs" / "ca.crt",
                cert=tmp / "certs" / "bank.crt",
                key=tmp / "certs" / "bank.key",
            )
            remote_shop = ftl.RemoteParty("shop", address, tls=tls)
            remote = run(bank, remote_shop, args.rows, params, test_rows)
        finally:
            proc.terminate()
            proc.wait(10)
    local = run(bank, local_shop, args.rows, params, test_rows)
    print(
        f"default credit, {args.rows} training rows, {args.epochs} epochs, "
        f"sigmoid={args.sigmoid!r}, 2048-bit keys, {os.cpu_count()} cores, n_jobs={args.n_jobs}"
    )
    print(f"{'step':<12}{'in-process':>12}{'gRPC+mTLS':>12}{'ratio':>8}")
    for step in ("psi", "fit", "predict"):
        print(
            f"{step:<12}{local[step]:>11.1f}s{remote[step]:>11.1f}s"
            f"{remote[step] / local[step]:>8.2f}"
        )
    print(f"bytes (fit + predict): {remote['bytes'] / 1e6:.1f} MB (both runs: same protocol)")
    print(f"test AUC: in-process {local['auc']:.4f}, remote {remote['auc']:.4f}")
    print(f"max |coef difference|: {np.abs(local['coef'] - remote['coef']).max():.2e}")


if __name__ == "__main__":
    main()
