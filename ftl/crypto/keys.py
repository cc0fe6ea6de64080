"""Paillier key pairs (python-paillier's types) and the key-size policy."""

from __future__ import annotations

import hashlib

import phe

from ftl.exceptions import InsecureKeyError

__all__ = [
    "DEFAULT_KEY_SIZE",
    "MIN_SECURE_KEY_SIZE",
    "InsecureKeyError",
    "check_key_size",
    "generate_keypair",
    "key_id",
]

#: Default modulus size in bits (NIST SP 800-57: ~112-bit security).
DEFAULT_KEY_SIZE = 2048
#: Anything below this is refused unless the caller says the run is a test.
MIN_SECURE_KEY_SIZE = 2048


def check_key_size(key_size: int, insecure_for_tests: bool = False) -> int:
    """Validate a Paillier modulus size and return it.

    Parameters
    ----------
    key_size : int
        Requested modulus size in bits.
    insecure_for_tests : bool, default=False
        Allow sizes below :data:`MIN_SECURE_KEY_SIZE` bits (never for real data: such keys
        can be factored).
    """
    if not isinstance(key_size, int) or isinstance(key_size, bool):
        raise TypeError(f"key_size must be an int, got {type(key_size).__name__}")
    if key_size < 256 or key_size % 64:
        raise ValueError(f"key_size must be a multiple of 64 and at least 256, got {key_size}")
    if key_size < MIN_SECURE_KEY_SIZE and not insecure_for_tests:
        raise InsecureKeyError(
            f"key_size={key_size} is too small to protect data (minimum "
            f"{MIN_SECURE_KEY_SIZE}); pass insecure_for_tests=True only in tests"
        )
    return key_size


def generate_keypair(
    key_size: int = DEFAULT_KEY_SIZE, insecure_for_tests: bool = False
) -> tuple[phe.PaillierPublicKey, phe.PaillierPrivateKey]:
    """Generate a fresh Paillier key pair with python-paillier (gmpy2 underneath)."""
    check_key_size(key_size, insecure_for_tests)
    return phe.generate_paillier_keypair(n_length=key_size)


def key_id(public_key: phe.PaillierPublicKey) -> str:
    """Short public fingerprint of a key (first 16 hex digits of SHA-256 of n)."""
    n = public_key.n
    return hashlib.sha256(n.to_bytes((n.bit_length() + 7) // 8, "big")).hexdigest()[:16]
