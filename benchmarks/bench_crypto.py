"""Paillier fast paths against python-paillier, in one process (2048-bit keys).

1. Encryption throughput: ftl's own-key encryption (DJN fixed-base tables + CRT)
   vs ``phe.PaillierPublicKey.encrypt``.
2. ``X.T @ [[d]]`` for a 10 000 x 20 fixed-point matrix: ftl's bucket
   multi-exponentiation vs a loop of phe ``EncryptedNumber`` operations (timed on
   a sample of rows and scaled, since the full phe loop takes minutes).
3. Decryption of 20 masked values: packed (ftl) vs one phe decryption per value.
4. Encryption with the random factors precomputed by the background pool
   (``ftl.crypto.pool``, filled before the call) vs computed on demand vs phe. The
   pool does not save CPU -- filling it costs what on-demand encryption costs, in a
   background process at the lowest priority -- it moves that cost into time the
   party would otherwise spend idle (waiting for the other party's messages).

Usage: python benchmarks/bench_crypto.py [--rows 10000] [--cols 20] [--pool 2000]
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import phe

from ftl.crypto.scheme import make_own_key, peer_key_from_public


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rows", type=int, default=10_000)
    parser.add_argument("--cols", type=int, default=20)
    parser.add_argument("--sample", type=int, default=200, help="rows timed for phe")
    parser.add_argument(
        "--pool", type=int, default=2000, help="values encrypted from a pre-filled pool (0: skip)"
    )
    args = parser.parse_args()
    rng = np.random.default_rng(0)
    own = make_own_key("paillier", 2048)
    peer = peer_key_from_public(own.public(), "paillier")
    pk = own.public_key

    own.encrypt(np.zeros(4))  # fixed-base tables, built once per key
    d = rng.normal(size=args.rows)
    t = time.perf_counter()
    ct = own.encrypt(d)
    ours = args.rows / (time.perf_counter() - t)
    t = time.perf_counter()
    for v in d[: args.sample // 4]:
        pk.encrypt(float(v))
    theirs = (args.sample // 4) / (time.perf_counter() - t)
    print(f"encryption: ftl {ours:.0f}/s, phe {theirs:.0f}/s -> {ours / theirs:.1f}x")
    if args.pool:
        pooled_encryption(args.pool, ours, theirs, rng)

    X = rng.normal(size=(args.rows, args.cols))
    t = time.perf_counter()
    peer.masked_cross_term(X, ct)
    ours_t = time.perf_counter() - t
    enc = [phe.EncryptedNumber(pk, int(c), -8) for c in ct.values[: args.sample]]
    t = time.perf_counter()
    for j in range(args.cols):
        acc = enc[0] * float(X[0, j])
        for i in range(1, args.sample):
            acc = acc + enc[i] * float(X[i, j])
    theirs_t = (time.perf_counter() - t) * args.rows / args.sample
    print(
        f"X.T @ [[d]] {args.rows} x {args.cols}: ftl {ours_t:.2f} s (incl. masking, packing, "
        f"re-randomisation), phe loop {theirs_t:.1f} s (scaled from {args.sample} rows) "
        f"-> {theirs_t / ours_t:.1f}x"
    )


def pooled_encryption(count: int, on_demand: float, phe_rate: float, rng) -> None:
    """Encryption throughput when the key's pool was filled ahead of time."""
    own = make_own_key("paillier", 2048, pool_capacity=count)
    t = time.perf_counter()
    if not own.randomness_pool.wait_until_full(timeout=3600):
        raise RuntimeError("the randomness pool did not fill")
    fill_s = time.perf_counter() - t
    values = rng.normal(size=count)
    t = time.perf_counter()
    own.encrypt(values)
    pooled = count / (time.perf_counter() - t)
    own.randomness_pool.close()  # no background refill during the next measurements
    print(
        f"encryption of {count} values, factors precomputed by the pool: ftl {pooled:.0f}/s "
        f"vs on demand {on_demand:.0f}/s ({pooled / on_demand:.0f}x) vs phe {phe_rate:.0f}/s "
        f"({pooled / phe_rate:.0f}x); filling the pool took {fill_s:.1f} s in a background "
        f"process (start-up and tables included) -- about {count / on_demand:.1f} s of CPU, "
        "as on demand: latency hidden in idle time, not CPU saved"
    )


if __name__ == "__main__":
    main()
