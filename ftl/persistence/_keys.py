"""A party's own encryption key pair as JSON, checked when read back.

Public ``n`` and DJN base ``hs``, private primes ``p`` and ``q``, as decimal
strings: only ever in the owner's own shard file.
"""

from __future__ import annotations

import phe
from gmpy2 import gcd, is_prime

from ftl.crypto.keys import MIN_SECURE_KEY_SIZE, key_id
from ftl.crypto.scheme import OwnKey, PaillierOwnKey, PlainOwnKey


def _key_to_json(own: OwnKey) -> dict:
    if isinstance(own, PlainOwnKey):
        return {"scheme": "plain"}
    if isinstance(own, PaillierOwnKey):
        return {
            "scheme": "paillier",
            "key_id": own.key_id,
            "n": str(int(own.n)),
            "hs": str(int(own.hs)),
            "p": str(int(own.private_key.p)),
            "q": str(int(own.private_key.q)),
        }
    raise TypeError(f"cannot save a key of type {type(own).__name__}")


def _int_field(obj: dict, key: str) -> int:
    value = obj[key]
    if not isinstance(value, str) or not value.isdigit():
        raise ValueError(f"{key} must be a decimal string")
    return int(value)


def _key_from_json(obj: dict, insecure: bool, n_jobs: int | None) -> OwnKey:
    """Rebuild an own key pair, checking that its parts belong together."""
    scheme = obj["scheme"]
    if scheme == "plain":
        return PlainOwnKey()
    if scheme != "paillier":
        raise ValueError(f"unknown encryption scheme {scheme!r}")
    n, hs, p, q = (_int_field(obj, k) for k in ("n", "hs", "p", "q"))
    if n.bit_length() < MIN_SECURE_KEY_SIZE and not insecure:
        raise ValueError(
            f"key of {n.bit_length()} bits is below {MIN_SECURE_KEY_SIZE} and the shard "
            "was not marked insecure_for_tests"
        )
    public_key = phe.PaillierPublicKey(n)
    private_key = phe.PaillierPrivateKey(public_key, p, q)  # checks p * q == n, p != q
    if not (is_prime(p) and is_prime(q)):
        raise ValueError("the key's factors p and q are not prime")
    if not 1 < hs < n * n or gcd(hs, n) != 1:
        raise ValueError("the DJN base hs is not a unit mod n^2")
    kid = key_id(public_key)
    if obj.get("key_id") != kid:
        raise ValueError(f"key id {obj.get('key_id')!r} does not match the key ({kid!r})")
    # the attributes PaillierOwnKey.__init__ sets, without generating a new key
    own = object.__new__(PaillierOwnKey)
    own.public_key = public_key
    own.private_key = private_key
    own.n = public_key.n
    own.hs = hs
    own.key_id = kid
    own.width = (2 * n.bit_length() + 7) // 8
    own.n_jobs = n_jobs
    own._encryptor = None
    return own
