"""Splitting a key's long loops over joblib workers, and what each worker keeps.

Encryption, decryption, re-randomisation and the products ``X.T @ [[v]]`` run in
chunks on the active joblib backend (loky locally, or a Dask or Ray cluster under
``joblib.parallel_config``). The functions sent to workers take plain integers,
never key objects, and a worker keeps the encryption tables of the last few keys
it saw (:func:`worker_encryptor`), so that a fit does not rebuild them per call.
"""

from __future__ import annotations

from collections import OrderedDict

import gmpy2
import numpy as np
from gmpy2 import mpz
from joblib import Parallel, delayed, effective_n_jobs
from joblib.parallel import BACKENDS, get_active_backend

from ftl.crypto.engine import CRTEncryptor, column_multiexp, random_unit
from ftl.crypto.lifecycle import stop_on_exit

__all__ = [
    "CHUNK",
    "WORKER_KEYS_KEPT",
    "decrypt_chunk",
    "encrypt_in_worker",
    "local_joblib_backend",
    "n_workers",
    "parallel_columns",
    "random_factors_in_worker",
    "rerandomize_chunk",
    "run_chunks",
    "split_work",
    "worker_encryptor",
]

#: Smallest chunk of values worth sending to a worker.
CHUNK = 256

_WORKER_ENCRYPTORS: OrderedDict[tuple[int, int], CRTEncryptor] = OrderedDict()
#: Keys whose tables a worker keeps, least recently used dropped first. A 2048-bit
#: key's tables take ~40 MB (~60 MB at 3072 bits); a simulated fit alternates
#: between the guest's and the hosts' keys, and every fit makes new ones. Three
#: keys' tables stay far below loky's memory-leak check, which restarts a worker
#: whose memory grew by 300 MB since its first task (the restarted worker would
#: rebuild its tables: seconds per epoch with 2048-bit keys).
WORKER_KEYS_KEPT = 3


def split_work(items: list, n_jobs: int | None, min_size: int = CHUNK) -> list[list]:
    """Split work for joblib: one chunk when serial or small, else 2 per worker."""
    if not n_jobs or n_jobs == 1 or len(items) < 2 * min_size:
        return [items]
    k = 2 * n_workers(n_jobs)
    size = max(min_size, -(-len(items) // k))
    return [items[i : i + size] for i in range(0, len(items), size)]


def n_workers(n_jobs: int) -> int:
    """Workers the active joblib backend gives ``n_jobs``: local CPUs with loky,
    the cluster's worker threads under ``parallel_config(backend="dask")``."""
    return max(1, effective_n_jobs(n_jobs))


def local_joblib_backend() -> bool:
    """Whether joblib's active backend runs on this machine (not e.g. dask)."""
    backend, _ = get_active_backend()
    local = ("loky", "threading", "multiprocessing", "sequential")
    return isinstance(backend, tuple(BACKENDS[name] for name in local if name in BACKENDS))


def rerandomize_chunk(n: int, cts: list) -> list[mpz]:
    """Multiply ciphertexts by fresh full random factors ``s**n mod n**2``."""
    n = mpz(n)
    n2 = n * n
    return [mpz(c) * gmpy2.powmod(random_unit(n), n, n2) % n2 for c in cts]


def decrypt_chunk(private_key, values: list[int]) -> list[int]:
    """Raw Paillier decryptions (Python ints mod n) of ciphertext integers."""
    return [int(private_key.raw_decrypt(c)) for c in values]


def worker_encryptor(n: int, p: int, q: int, hs: int) -> CRTEncryptor:
    """This process's encryptor for a key: tables built once, reused across calls."""
    cache_key = (int(n), int(hs))
    enc = _WORKER_ENCRYPTORS.get(cache_key)
    if enc is not None:
        _WORKER_ENCRYPTORS.move_to_end(cache_key)
        return enc
    # drop old tables before building new ones: never more than WORKER_KEYS_KEPT
    while len(_WORKER_ENCRYPTORS) >= WORKER_KEYS_KEPT:
        _WORKER_ENCRYPTORS.popitem(last=False)
    enc = _WORKER_ENCRYPTORS[cache_key] = CRTEncryptor(n, p, q, hs)
    return enc


def encrypt_in_worker(n: int, p: int, q: int, hs: int, chunk: list[int]) -> list[mpz]:
    """Encrypt a chunk of plaintext integers with the worker's tables of a key."""
    # Workers are this party's own processes (they hold p and q only in memory).
    return worker_encryptor(n, p, q, hs).encrypt_ints(chunk)


def random_factors_in_worker(n: int, p: int, q: int, hs: int, count: int) -> list[mpz]:
    """Fresh DJN factors ``hs**a`` for a key's :class:`~ftl.crypto.pool.RandomnessPool`."""
    return worker_encryptor(n, p, q, hs).random_factors(count)


def parallel_columns(cts: list[mpz], exps: np.ndarray, modulus: mpz, n_jobs: int | None) -> list:
    """``column_multiexp`` over groups of columns in joblib workers (one call if small)."""
    n_cols = exps.shape[1]
    if not n_jobs or n_jobs == 1 or n_cols < 2 or len(cts) < CHUNK:
        return column_multiexp(cts, exps, modulus)
    groups = np.array_split(np.arange(n_cols), min(n_cols, n_workers(n_jobs)))
    stop_on_exit(uses_loky=local_joblib_backend())
    parts = Parallel(n_jobs=n_jobs)(
        delayed(column_multiexp)(cts, exps[:, g], modulus) for g in groups if len(g)
    )
    return [x for part in parts for x in part]


def run_chunks(function, chunks: list[list], n_jobs: int | None, *args) -> list:
    """``function(*args, chunk)`` over ``chunks`` in joblib workers, results joined."""
    stop_on_exit(uses_loky=local_joblib_backend())
    parts = Parallel(n_jobs=n_jobs)(delayed(function)(*args, c) for c in chunks)
    return [x for part in parts for x in part]
