"""JSON forms of the values that model files and model-shard codecs hold.

Strict JSON (RFC 8259, no ``NaN`` literal): non-finite floats as the strings
``"nan"``, ``"inf"``, ``"-inf"``; ndarrays as ``{"dtype", "shape", "data"}``;
per-epoch training histories; a party's own encryption key pair. Floats keep
Python's shortest round-trip form, so reloaded weights are bit-identical.

The file envelopes (format, version, atomic private writes) are
:mod:`ftl.persistence`'s; the protocols' codecs
(:class:`~ftl.federation.protocols.EstimatorSpec`,
:class:`~ftl.federation.protocols.ShardCodec`) build their fields from these
forms. Every reader raises ``ValueError`` on a malformed value.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import phe
from gmpy2 import gcd, is_prime

from ftl.crypto.keys import MIN_SECURE_KEY_SIZE, key_id
from ftl.crypto.scheme import OwnKey, PaillierOwnKey, PlainOwnKey

__all__ = [
    "decode_array",
    "encode_array",
    "float_from_json",
    "float_to_json",
    "history_from_json",
    "history_to_json",
    "key_from_json",
    "key_to_json",
    "names_from_json",
    "names_to_json",
]


def float_to_json(x: float) -> float | str:
    """A float as strict JSON (a non-finite one as ``"nan"``, ``"inf"``, ``"-inf"``)."""
    x = float(x)
    if math.isfinite(x):
        return x
    return "nan" if math.isnan(x) else ("inf" if x > 0 else "-inf")


def float_from_json(x: Any) -> float:
    """The inverse of :func:`float_to_json` (an int is read as a float)."""
    if isinstance(x, str):
        if x not in ("nan", "inf", "-inf"):
            raise ValueError(f"invalid float {x!r}")
        return float(x)
    if isinstance(x, bool) or not isinstance(x, (int, float)):
        raise ValueError(f"invalid float {x!r}")
    return float(x)


def encode_array(arr: Any) -> dict:
    """An ndarray as ``{"dtype", "shape", "data"}`` (data flattened, C order)."""
    arr = np.asarray(arr)
    kind = arr.dtype.kind
    flat = arr.reshape(-1)
    if kind == "f":
        data: list = [float_to_json(v) for v in flat.tolist()]
    elif kind in "biuU":
        data = flat.tolist()
    elif kind == "S":
        data = [v.decode("latin-1") for v in flat.tolist()]
    elif kind == "O":
        data = []
        for v in flat.tolist():
            if isinstance(v, np.generic):
                v = v.item()
            if isinstance(v, float) and not math.isfinite(v):
                raise ValueError("cannot save non-finite floats in object arrays")
            if v is not None and not isinstance(v, (str, int, float, bool)):
                raise ValueError(
                    f"cannot save values of type {type(v).__name__} (only str, int, float, "
                    "bool and None are supported in object arrays)"
                )
            data.append(v)
    else:
        raise ValueError(f"cannot save arrays of dtype {arr.dtype}")
    return {"dtype": arr.dtype.str, "shape": list(arr.shape), "data": data}


def decode_array(obj: Any, what: str) -> np.ndarray:
    """The inverse of :func:`encode_array`; ``what`` names the array in errors."""
    try:
        if not isinstance(obj["dtype"], str):
            raise ValueError("dtype must be a string")
        dtype = np.dtype(obj["dtype"])
        if dtype.itemsize > 1 << 16:
            raise ValueError(f"dtype {dtype} is too wide")
        shape = tuple(int(s) for s in obj["shape"])
        data = obj["data"]
        if not isinstance(data, list) or len(data) != math.prod(shape):
            raise ValueError("data does not match shape")
        if dtype.kind == "f":
            data = [float_from_json(v) for v in data]
        elif dtype.kind == "S":
            data = [v.encode("latin-1") for v in data]
        elif dtype.kind == "O":
            if any(v is not None and not isinstance(v, (str, int, float, bool)) for v in data):
                raise ValueError("object arrays hold only str, int, float, bool or null")
        elif dtype.kind in "biuU":
            if any(isinstance(v, (list, dict)) for v in data):
                raise ValueError("nested values in a flat array")
        else:
            raise ValueError(f"unsupported dtype {dtype}")
        arr = np.empty(len(data), dtype=dtype)
        arr[:] = data
        return arr.reshape(shape)
    except (KeyError, TypeError, ValueError, OverflowError, AttributeError) as exc:
        raise ValueError(f"invalid array {what!r} in model file: {exc}") from None


def names_to_json(clf: Any) -> dict:
    """The names every federated estimator keeps: ``n_features_in_``,
    ``feature_names_in_`` and ``party_names_`` (the driver's party first)."""
    return {
        "n_features_in_": int(clf.n_features_in_),
        "feature_names_in_": [str(f) for f in clf.feature_names_in_],
        "party_names_": [str(p) for p in clf.party_names_],
    }


def names_from_json(attrs: dict, path: Any, n_parties: int | None = None) -> dict:
    """``n_features_in_``, ``feature_names_in_`` and ``party_names_`` (by name) as
    :func:`names_to_json` wrote them, checked against each other (``path`` names
    the file in errors)."""
    party_names = [str(p) for p in attrs["party_names_"]]
    feature_names = np.asarray([str(f) for f in attrs["feature_names_in_"]], dtype=object)
    n_features = attrs["n_features_in_"]
    if (
        isinstance(n_features, bool)
        or not isinstance(n_features, int)
        or len(feature_names) != n_features
        or len(party_names) < 2
        or (n_parties is not None and len(party_names) != n_parties)
        or len(set(party_names)) != len(party_names)
    ):
        raise ValueError(f"{path} is corrupted: feature or party names do not fit the model")
    return {
        "n_features_in_": n_features,
        "feature_names_in_": feature_names,
        "party_names_": party_names,
    }


def history_to_json(history: Any) -> list[dict]:
    """Per-epoch records (``{"epoch": int, "relative_change": float, ...}``) as JSON.

    Values are ints, bools or floats (numpy scalars included); anything else is
    refused rather than dropped.
    """
    out = []
    for entry in history:
        record: dict[str, Any] = {}
        for key, value in dict(entry).items():
            if isinstance(value, np.generic):
                value = value.item()
            if isinstance(value, (bool, int)):
                record[str(key)] = value
            elif isinstance(value, float):
                record[str(key)] = float_to_json(value)
            else:
                raise ValueError(f"cannot save history_ value {key}={value!r}")
        out.append(record)
    return out


def history_from_json(history: Any) -> list[dict]:
    """The inverse of :func:`history_to_json`; every record has an int ``epoch``
    and a ``relative_change``."""
    if not isinstance(history, list):
        raise ValueError("history_ must be a list")
    out = []
    for entry in history:
        if not isinstance(entry, dict) or not {"epoch", "relative_change"} <= set(entry):
            raise ValueError("history_ entries must be objects with epoch and relative_change")
        record = {
            str(k): v if isinstance(v, (bool, int)) else float_from_json(v)
            for k, v in entry.items()
        }
        if isinstance(record["epoch"], bool) or not isinstance(record["epoch"], int):
            raise ValueError("history_ epochs must be integers")
        record["relative_change"] = float(record["relative_change"])
        out.append(record)
    return out


def key_to_json(own: OwnKey) -> dict:
    """A party's own key pair: public ``n`` and DJN base ``hs``, private primes
    ``p`` and ``q``, as decimal strings (only ever in the owner's own file)."""
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


def key_from_json(obj: dict, insecure: bool, n_jobs: int | None) -> OwnKey:
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
