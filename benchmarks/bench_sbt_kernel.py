"""SecureBoost's encrypted histogram kernel (``ftl.crypto.histograms``) on one core.

Measured in one process at 2048 bits on the default-credit host's 10 columns
(21 000 rows, binned by quantiles into 32 and into 255 bins), each figure also
given in *mulmods* (one multiplication modulo ``n**2``, measured in the same run)
and against a python-paillier baseline; every time is the fastest of a few runs,
as the machine is shared:

1. encryption of a row's packed ``g|h``: ftl (CRT + DJN tables, pool off) vs
   ``phe``'s ``raw_encrypt`` of the same packed integer;
2. bin sums per (row, feature) at the root: ftl vs a loop of ``phe``
   ``EncryptedNumber`` additions (timed on a sample);
3. packing + re-randomisation per bin: ftl (fused chain) vs Horner by ``powmod``
   followed by a separate re-randomisation, and vs not packing at all (one
   re-randomised ciphertext per bin, as phe-style code sends them);
4. decryption per ciphertext, and what a bin costs the two parties packed vs
   unpacked;
5. the slot width per ``frac_bits`` (bins per ciphertext);
6. a projection for one depth-6 tree (max_leaf_nodes=31) grown by scikit-learn
   on the pooled credit data: the host's histogram nodes are the smaller child
   of every split with a splittable child; their bin sums are *measured* on random
   row sets of those sizes, the rest is counted from the per-op costs.

Usage: python benchmarks/bench_sbt_kernel.py [--rows 21000] [--bins 32 255]
"""

from __future__ import annotations

import argparse
import time
from importlib.resources import files

import gmpy2
import numpy as np
import pandas as pd
import phe
from gmpy2 import mpz
from sklearn.ensemble import HistGradientBoostingClassifier

from ftl.crypto.histograms import (
    DEFAULT_FRAC_BITS,
    compress_bins,
    decrypt_bin_sums,
    encrypt_gh,
    encrypted_bin_sums,
    gh_layout,
    pack_in_worker,
)
from ftl.crypto.keys import DEFAULT_KEY_SIZE
from ftl.crypto.scheme import make_own_key, peer_key_from_public

MAX_DEPTH = 6
MIN_SAMPLES_LEAF = 20


def credit(n_rows: int):
    """Pooled default-credit features, labels, and the host's columns."""
    data = files("ftl.datasets") / "data"
    with (data / "default_credit_hetero_guest.csv").open("rb") as fh:
        guest = pd.read_csv(fh)
    with (data / "default_credit_hetero_host.csv").open("rb") as fh:
        host = pd.read_csv(fh)
    pooled = guest.merge(host, on="id", suffixes=("", "_host")).iloc[:n_rows]
    y = pooled["y"].to_numpy()
    host_columns = pooled[[f"{c}_host" if c in guest else c for c in host if c != "id"]]
    return pooled.drop(columns=["id", "y"]).to_numpy(), y, host_columns.to_numpy()


def quantile_bins(columns: np.ndarray, n_bins: int) -> np.ndarray:
    """Bin indices by quantile thresholds (as a histogram binner would)."""
    out = np.empty(columns.shape, dtype=np.uint8 if n_bins <= 256 else np.uint16)
    for j in range(columns.shape[1]):
        cuts = np.unique(np.quantile(columns[:, j], np.linspace(0, 1, n_bins + 1)[1:-1]))
        out[:, j] = np.searchsorted(cuts, columns[:, j], side="right")
    return out


def seconds(fn, *args, repeat: int = 1):
    """``fn(*args)`` and its fastest time over ``repeat`` runs (the machine is shared:
    the fastest run is the one least disturbed)."""
    best = float("inf")
    for _ in range(repeat):
        start = time.perf_counter()
        out = fn(*args)
        best = min(best, time.perf_counter() - start)
    return out, best


def mulmod_cost(cts: list, modulus) -> float:
    """One multiplication modulo n**2 (the unit of every ratio), in seconds."""
    acc = mpz(1)
    count = 20_000
    start = time.perf_counter()
    for i in range(count):
        acc = acc * cts[i % len(cts)] % modulus
    return (time.perf_counter() - start) / count


def histogram_nodes(X, y, max_bins: int) -> list[int]:
    """Row counts of the nodes a host builds histograms for in sklearn's first tree."""
    clf = HistGradientBoostingClassifier(
        max_iter=1, max_depth=MAX_DEPTH, max_bins=max_bins, early_stopping=False
    ).fit(X, y)
    nodes = clf._predictors[0][0].nodes  # benchmark only: sklearn's private tree arrays
    sizes = [int(nodes["count"][0])]
    for node in nodes[nodes["is_leaf"] == 0]:
        left, right = nodes[node["left"]], nodes[node["right"]]
        splittable = max(left["count"], right["count"]) >= 2 * MIN_SAMPLES_LEAF
        if node["depth"] + 1 < MAX_DEPTH and splittable:
            sizes.append(int(min(left["count"], right["count"])))
    return sizes


def horner_then_rerandomise(peer, groups: list, shift: int) -> list:
    """The unfused baseline: Horner by ``powmod``, then a full re-randomisation."""
    packed = []
    for group in groups:
        acc = mpz(1)
        for c in reversed(group):
            acc = gmpy2.powmod(acc, mpz(1) << shift, peer.nsquare) * mpz(c) % peer.nsquare
        packed.append(acc)
    return peer.rerandomize(packed)


class Table:
    """The printed table: time per unit, in mulmods, and the ratio to a baseline."""

    def __init__(self, unit: float):
        self.unit = unit
        self.rows = []

    def add(self, what: str, ours: float, per: str, baseline: float | None, name: str = ""):
        ratio = f"{baseline / ours:.1f}x vs {name}" if baseline else ""
        self.rows.append((what, f"{ours * 1e3:.4f} ms/{per}", f"{ours / self.unit:.1f}", ratio))

    def print(self):
        print(f"\n{'operation':<46} {'ftl':>20} {'mulmods':>9}  baseline")
        for what, ours, mulmods, ratio in self.rows:
            print(f"{what:<46} {ours:>20} {mulmods:>9}  {ratio}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rows", type=int, default=21_000)
    parser.add_argument("--bins", type=int, nargs="+", default=[32, 255])
    parser.add_argument("--sample", type=int, default=40, help="values timed for phe")
    parser.add_argument("--key-size", type=int, default=DEFAULT_KEY_SIZE)
    args = parser.parse_args()
    rng = np.random.default_rng(0)
    X, y, host = credit(args.rows)
    n = X.shape[0]
    n_features = host.shape[1]
    # gradients of the first tree of a log-loss model (|g| <= 1, h <= 1/4)
    p = np.full(n, y.mean())
    g, h = (p - y).astype(np.float32), (p * (1 - p)).astype(np.float32)
    insecure = args.key_size < DEFAULT_KEY_SIZE  # quick runs only
    own = make_own_key("paillier", args.key_size, insecure, pool_capacity=0)
    peer = peer_key_from_public(own.public(), "paillier", insecure)
    pk = own.public_key
    layout = gh_layout(args.key_size, n, 1.0, 0.25)
    print(
        f"{args.key_size}-bit key, {n} rows x {n_features} host features; layout: "
        f"{layout.frac_bits} fraction bits, {layout.slot_bits}-bit slots, "
        f"{layout.bins_per_ciphertext} bins per ciphertext; one core (n_jobs=None)"
    )

    encrypt_gh(own, g[:2], h[:2], layout)  # fixed-base tables, built once per key
    cts, t_enc = seconds(encrypt_gh, own, g, h, layout)
    _, t = seconds(encrypt_gh, own, g[:1000], h[:1000], layout, repeat=3)
    enc_row = min(t_enc / n, t / 1000)
    packed_ints = [own.private_key.raw_decrypt(int(c)) for c in cts.values[: args.sample]]
    _, t = seconds(lambda: [pk.raw_encrypt(v) for v in packed_ints], repeat=3)
    phe_enc = t / len(packed_ints)
    values = [mpz(int(c)) for c in cts.values]
    unit = min(mulmod_cost(values, peer.nsquare) for _ in range(3))
    table = Table(unit)
    table.add("encrypt one row (packed g|h)", enc_row, "row", phe_enc, "phe raw_encrypt")
    # the random factor is most of it: with factors made ahead of time by the key's
    # pool (ftl.crypto.pool; in a deployment while the guest waits for the hosts)
    # the rest stays on the critical path
    own.pool_capacity = 512
    if not own.randomness_pool.wait_until_full(timeout=600):
        raise RuntimeError("the randomness pool did not fill")
    _, t = seconds(encrypt_gh, own, g[:512], h[:512], layout)  # once: each factor is used once
    own.randomness_pool.close()
    own.pool_capacity = 0
    pooled_row = t / 512
    table.add("  with factors made ahead (pool)", pooled_row, "row", phe_enc, "phe raw_encrypt")

    # phe-style bin sum: one EncryptedNumber addition per row and feature
    enc_numbers = [phe.EncryptedNumber(pk, int(c), 0) for c in cts.values[: 20 * args.sample]]
    _, t = seconds(lambda: sum(enc_numbers[1:], enc_numbers[0]), repeat=3)
    phe_add = t / (len(enc_numbers) - 1)

    per_bins = {}
    for n_bins in args.bins:
        binned = quantile_bins(host, n_bins)
        n_bins_max = int(binned.max()) + 1
        sums, t = seconds(encrypted_bin_sums, peer, cts, binned, np.arange(n), n_bins_max, repeat=2)
        table.add(
            f"bin sums, root, {n_bins} bins (credit)",
            t / n / n_features,
            "row-feat",
            phe_add,
            "phe additions",
        )
        two = peer_key_from_public(own.public(), "paillier", insecure, n_jobs=2)
        _, t2 = seconds(encrypted_bin_sums, two, cts, binned, np.arange(n), n_bins_max, repeat=2)
        table.add(
            f"  same, n_jobs=2 (wall: {t / t2:.2f}x faster)", t2 / n / n_features, "row-feat", None
        )
        uniform = rng.integers(0, n_bins, size=(n, n_features)).astype(binned.dtype)
        _, t = seconds(encrypted_bin_sums, peer, cts, uniform, np.arange(n), n_bins, repeat=2)
        table.add(
            f"bin sums, root, {n_bins} bins (uniform)",
            t / n / n_features,
            "row-feat",
            phe_add,
            "phe additions",
        )
        n_bins_used = binned.max(axis=0).astype(np.int64) + 1
        n_cells = int(n_bins_used.sum())
        packed, t_pack = seconds(compress_bins, peer, sums, layout, n_bins_used, repeat=2)
        pack_node_ct = t_pack / packed.shape[0]
        _, t2 = seconds(compress_bins, two, sums, layout, n_bins_used, repeat=2)
        # per full ciphertext of k bins: ftl's fused chain against Horner by powmod
        # followed by a separate full re-randomisation
        k = layout.bins_per_ciphertext
        cells = [sums.values[j, b] for j in range(n_features) for b in range(n_bins_used[j])]
        groups = [cells[i * k : (i + 1) * k] for i in range(min(4, len(cells) // k))]
        _, t = seconds(pack_in_worker, int(peer.n), layout.bin_bits, groups, repeat=3)
        pack_ct = t / len(groups)
        _, t = seconds(horner_then_rerandomise, peer, groups, layout.bin_bits, repeat=3)
        horner_ct = t / len(groups)
        table.add(
            f"pack {k} bins + re-randomise, {n_bins} bins",
            pack_ct,
            "ct",
            horner_ct,
            "Horner, then re-randomise",
        )
        table.add(
            f"  root's {packed.shape[0]} ciphertexts, n_jobs=2 (wall: {t_pack / t2:.2f}x faster)",
            t2 / packed.shape[0],
            "ct",
            None,
        )
        (sum_g, _), t_dec = seconds(
            decrypt_bin_sums, own, packed, layout, n_features, n_bins_max, n_bins_used, repeat=3
        )
        dec_ct = t_dec / packed.shape[0]
        table.add(f"decrypt + decode, {n_bins} bins", dec_ct, "ct", None)
        # not packing: every bin re-randomised, sent and decrypted on its own
        _, t_rerand = seconds(peer.rerandomize, cells[:8], repeat=3)
        unpacked_bin = t_rerand / 8 + dec_ct
        table.add(
            f"one bin sent and read, {n_bins} bins",
            (pack_ct + dec_ct) / k,
            "bin",
            unpacked_bin,
            "one ciphertext per bin",
        )
        expected = np.array(
            [
                np.bincount(binned[:, j], g.astype(np.float64), minlength=n_bins_max)
                for j in range(n_features)
            ]
        )
        assert np.allclose(sum_g, expected, rtol=0, atol=1e-9), "decoded sums differ"
        per_bins[n_bins] = (binned, n_cells, pack_node_ct, dec_ct)
    table.print()

    print("\nslot width per frac_bits at", n, "rows, |g| <= 1, h <= 1/4:")
    for frac_bits in (24, 32, 36, 40, 44, DEFAULT_FRAC_BITS, 52):
        lay = gh_layout(args.key_size, n, 1.0, 0.25, frac_bits=frac_bits)
        exact = 2.0 ** (23 - frac_bits)
        print(
            f"  frac_bits={frac_bits:2d}: {lay.slot_bits} bits/slot, "
            f"{lay.bins_per_ciphertext} bins/ciphertext; float32 values >= {exact:.1e} exact"
        )

    print(
        f"\nprojection: one depth-{MAX_DEPTH} tree (31 leaves) on {n} rows, "
        f"{n_features} host features (core-seconds)"
    )
    for n_bins, (binned, n_cells, pack_ct, dec_ct) in per_bins.items():
        sizes = histogram_nodes(X, y, n_bins)
        t_sums = 0.0
        for size in sizes:
            rows = np.sort(rng.choice(n, size, replace=False))
            _, t = seconds(encrypted_bin_sums, peer, cts, binned, rows, int(binned.max()) + 1)
            t_sums += t
        n_ct = len(sizes) * -(-n_cells // layout.bins_per_ciphertext)
        parts = {
            "encrypt g|h (guest)": n * enc_row,
            "bin sums (host)": t_sums,
            "pack+re-randomise (host)": n_ct * pack_ct,
            "decrypt (guest)": n_ct * dec_ct,
        }
        total = sum(parts.values())
        detail = ", ".join(f"{k} {v:.1f}" for k, v in parts.items())
        print(
            f"  {n_bins} bins: {len(sizes)} histogram nodes, {sum(sizes)} node rows, "
            f"{n_ct} ciphertexts: {detail}; total {total:.1f} core-s "
            f"(>= {total / 2:.1f} s on 2 cores)"
        )
        ahead = total - parts["encrypt g|h (guest)"] + n * pooled_row
        print(
            f"    with the guest's random factors made ahead of time: {ahead:.1f} core-s "
            f"(>= {ahead / 2:.1f} s on 2 cores)"
        )


if __name__ == "__main__":
    main()
