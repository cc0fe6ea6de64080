"""Packed pieces (``ftl.crypto.diagonal``) against one ciphertext per piece (issue 14).

The default logistic regression spends about two thirds of a pass encrypting: the
host encrypts ``K = 4`` pieces of its margin per row, the guest ``K + 1``
coefficients per row (RESULTS.md, "The default LR's passes and per-pass cost").
This measures the crypto of one full-batch pass both ways, in one process and
run, on the rows and feature split of default credit:

* **separate** (today's protocol): ``own.encrypt`` of ``K`` columns, the partner's
  ``masked_cross_term`` over the ``K`` pieces, the owner's ``decrypt_packed``;
* **packed**: :func:`~ftl.crypto.diagonal.encrypt_pieces` (one ciphertext a row),
  :func:`~ftl.crypto.diagonal.masked_diagonal`,
  :func:`~ftl.crypto.diagonal.decrypt_diagonal`;

for both directions (host pieces x guest features, guest coefficients x host
features), checks that both give the same cross terms, and prints the time of each
step (the fastest of ``--repeat`` rounds: the first also builds the workers' comb
tables) and the ratio. Both parties' keys use ``n_jobs`` workers and no
precomputed randomness.

Usage: python benchmarks/bench_lr_diagonal.py [--rows 3000] [--key-size 2048]
"""

from __future__ import annotations

import argparse
import time

import numpy as np

from ftl.crypto import diagonal
from ftl.crypto.masking import expected_slot_bits
from ftl.crypto.scheme import column, make_own_key, peer_key_from_public


def _timed(fn):
    start = time.perf_counter()
    out = fn()
    return out, time.perf_counter() - start


def separate(own, peer, values, features):
    """Today: one ciphertext per piece; pieces summed before masking."""
    ct, t_enc = _timed(lambda: own.encrypt(values))
    k = values.shape[1]
    (masked, state), t_cross = _timed(
        lambda: peer.masked_cross_term(features, [column(ct, i) for i in range(k)])
    )
    slot_bits = expected_slot_bits(len(values), k)
    plain, t_dec = _timed(lambda: own.decrypt_packed(masked, slot_bits, len(state.masks)))
    return peer.unmask(plain, state), (t_enc, t_cross, t_dec)


def packed(own, peer, values, features):
    """Packed pieces, one masked diagonal per feature."""
    ct, t_enc = _timed(lambda: diagonal.encrypt_pieces(own, values))
    (masked, state), t_cross = _timed(lambda: diagonal.masked_diagonal(peer, features, ct))
    n_rows, k = values.shape
    plain, t_dec = _timed(
        lambda: diagonal.decrypt_diagonal(own, masked, state.slot_bits, n_rows, k, len(state.masks))
    )
    return peer.unmask(plain, state), (t_enc, t_cross, t_dec)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--rows", type=int, default=3000)
    ap.add_argument("--key-size", type=int, default=2048)
    ap.add_argument("--guest-features", type=int, default=13)
    ap.add_argument("--host-features", type=int, default=10)
    ap.add_argument("--pieces", type=int, default=4, help="host pieces K (guest: K + 1)")
    ap.add_argument("--n-jobs", type=int, default=2)
    ap.add_argument("--repeat", type=int, default=2, help="rounds; each step's fastest")
    args = ap.parse_args()

    rng = np.random.default_rng(0)
    keys = {}
    for name in ("guest", "host"):
        own = make_own_key("paillier", args.key_size, n_jobs=args.n_jobs, pool_capacity=0)
        keys[name] = (own, peer_key_from_public(own.public(), "paillier", n_jobs=args.n_jobs))
    n, k = args.rows, args.pieces
    x_guest = rng.normal(size=(n, args.guest_features))
    x_host = rng.normal(size=(n, args.host_features))
    directions = {
        # host pieces of its margin, combined by the guest's features and weights
        "host pieces x guest features": (keys["host"], rng.normal(size=(n, k)), x_guest, k),
        # the guest's K + 1 coefficients, combined by the host's features and powers
        "guest coefficients x host features": (
            keys["guest"],
            rng.normal(size=(n, k + 1)),
            x_host,
            k + 1,
        ),
    }
    print(f"{n} rows, {args.key_size}-bit keys, n_jobs={args.n_jobs}")
    print(
        f"{'direction':38s} {'way':9s} {'encrypt':>8s} {'cross':>8s} {'decrypt':>8s} {'total':>8s}"
    )
    totals = {"separate": 0.0, "packed": 0.0}
    for label, ((own, _), values, x, width) in directions.items():
        peer = peer_key_from_public(own.public(), "paillier", n_jobs=args.n_jobs)
        weights = rng.normal(size=(n, width))
        features = [x * weights[:, i : i + 1] for i in range(width)]
        results = {}
        for way, run in (("separate", separate), ("packed", packed)):
            # the first round also builds each worker's comb tables: keep the fastest
            rounds = [run(own, peer, values, features) for _ in range(args.repeat)]
            got = rounds[0][0]
            times = tuple(min(r[1][i] for r in rounds) for i in range(3))
            results[way] = got
            totals[way] += sum(times)
            print(f"{label:38s} {way:9s} " + " ".join(f"{t:8.2f}" for t in (*times, sum(times))))
        np.testing.assert_allclose(results["packed"], results["separate"], rtol=1e-9, atol=1e-6)
    ratio = totals["separate"] / totals["packed"]
    print(
        f"pass crypto: separate {totals['separate']:.2f} s, packed {totals['packed']:.2f} s "
        f"({ratio:.2f}x faster); cross terms agree"
    )


if __name__ == "__main__":
    main()
