"""A fitted transformer's state as tagged JSON (no pickle).

The *fitted state* of a transformer is every instance attribute that is not a
parameter (``mean_``, ``categories_``, and the private helpers ``transform``
needs, such as a :class:`~sklearn.preprocessing.PowerTransformer`'s
``_scaler`` or a :class:`~sklearn.compose.ColumnTransformer`'s ``_columns``).
It is encoded with a closed set of tagged JSON forms -- every JSON object in it
is a tag:

* ``{"__ndarray__": {"dtype", "shape", "data"}}`` -- a numpy array of booleans,
  integers, floats or strings (data flattened, C order; non-finite floats as
  ``"nan"``, ``"inf"``, ``"-inf"``), or of objects (each element encoded again,
  so arrays of arrays such as ``bin_edges_`` round-trip);
* ``{"__scalar__": {"dtype", "value"}}`` -- a numpy scalar (its type is kept);
* ``{"__float__": "nan" | "inf" | "-inf"}`` -- a non-finite Python float;
* ``{"__tuple__": [...]}``, ``{"__dict__": {str: ...}}``,
  ``{"__slice__": [start, stop, step]}``;
* ``{"__dtype__": str}`` / ``{"__dtype_type__": str}`` -- a numeric, string or
  object :class:`numpy.dtype`, or a numpy scalar type (``np.float64``);
* ``{"__estimator__": {"class", "params", "state"}}`` -- a nested fitted
  estimator, only of an allowlisted class;
* ``{"__passthrough__": {"state"}}`` -- the identity
  :class:`~sklearn.preprocessing.FunctionTransformer` a ColumnTransformer puts
  in place of ``remainder="passthrough"`` (no function: it cannot run code).

Decoding never imports a class by a name read from the document: a class name
is looked up in the allowlist or refused. State attribute names must be plain
identifiers that are neither parameters nor names the class defines (so a
document cannot replace a method). Nothing is ever unpickled.
"""

from __future__ import annotations

import math
import re
from typing import Any

import numpy as np
from sklearn.base import BaseEstimator
from sklearn.impute import MissingIndicator
from sklearn.preprocessing import FunctionTransformer

from ftl.federation.json_forms import float_from_json, float_to_json
from ftl.preprocessing._spec import ALLOWED_TRANSFORMERS

__all__ = ["decode_value", "encode_state", "encode_value", "set_state"]

#: Nesting deeper than this is refused (fitted states are a few levels deep).
_MAX_DEPTH = 32
#: Widest dtype accepted (a ``<U`` string dtype of 16384 characters).
_MAX_ITEMSIZE = 1 << 16
#: Array dtype kinds: bool, signed and unsigned int, float, str, object.
_ARRAY_KINDS = "biufUO"
_TAGS = frozenset(
    {
        "__ndarray__",
        "__scalar__",
        "__float__",
        "__tuple__",
        "__dict__",
        "__slice__",
        "__dtype__",
        "__dtype_type__",
        "__estimator__",
        "__passthrough__",
    }
)
_IDENTIFIER = re.compile(r"^_?[A-Za-z][A-Za-z0-9_]*$")
#: The identity transformer ColumnTransformer substitutes for ``"passthrough"``.
_PASSTHROUGH_PARAMS = {
    "accept_sparse": True,
    "check_inverse": False,
    "feature_names_out": "one-to-one",
    "func": None,
    "inv_kw_args": None,
    "inverse_func": None,
    "kw_args": None,
    "validate": False,
}
#: Helpers an allowlisted transformer fits inside itself (``SimpleImputer(add_indicator=
#: True).indicator_``): no parameter can carry code, but a party is never asked to
#: fit one directly, so they may appear only nested in a saved state.
_NESTED_ONLY: dict[str, type] = {"sklearn.impute.MissingIndicator": MissingIndicator}
_NESTED = {**ALLOWED_TRANSFORMERS, **_NESTED_ONLY}
_NESTED_NAME_OF = {cls: name for name, cls in _NESTED.items()}


# ------------------------------------------------------------------ values
def _float_in(x: Any, where: str) -> float:
    try:
        return float_from_json(x)
    except ValueError as exc:
        raise ValueError(f"{where}: {exc}") from None


def _check_dtype(text: Any, where: str, kinds: str = _ARRAY_KINDS) -> np.dtype:
    if not isinstance(text, str):
        raise ValueError(f"{where}: a dtype is named by a string")
    try:
        dtype = np.dtype(text)
    except TypeError as exc:
        raise ValueError(f"{where}: invalid dtype {text!r} ({exc})") from None
    if dtype.kind not in kinds or dtype.fields is not None or dtype.itemsize > _MAX_ITEMSIZE:
        raise ValueError(f"{where}: dtype {text!r} is not allowed")
    return dtype


def _encode_array(arr: np.ndarray, where: str, depth: int) -> dict:
    kind = arr.dtype.kind
    if kind not in _ARRAY_KINDS or arr.dtype.fields is not None:
        raise ValueError(f"{where}: cannot save an array of dtype {arr.dtype}")
    flat = arr.reshape(-1)
    if kind == "f":
        data: list = [float_to_json(v) for v in flat.tolist()]
    elif kind == "O":
        data = [encode_value(v, f"{where}[{i}]", depth + 1) for i, v in enumerate(flat)]
    else:
        data = flat.tolist()
    return {"dtype": arr.dtype.str, "shape": list(arr.shape), "data": data}


def _decode_array(obj: Any, where: str, depth: int) -> np.ndarray:
    if not isinstance(obj, dict) or set(obj) != {"dtype", "shape", "data"}:
        raise ValueError(f"{where}: an array has exactly the keys dtype, shape and data")
    dtype = _check_dtype(obj["dtype"], where)
    shape, data = obj["shape"], obj["data"]
    if not isinstance(shape, list) or not all(
        isinstance(s, int) and not isinstance(s, bool) and s >= 0 for s in shape
    ):
        raise ValueError(f"{where}: invalid shape {shape!r}")
    if not isinstance(data, list) or len(data) != math.prod(shape):
        raise ValueError(f"{where}: data does not match shape {shape}")
    arr = np.empty(len(data), dtype=dtype)
    if dtype.kind == "O":
        for i, v in enumerate(data):
            arr[i] = decode_value(v, f"{where}[{i}]", depth + 1)
    else:
        if dtype.kind == "f":
            data = [_float_in(v, where) for v in data]
        elif dtype.kind == "b":
            if not all(isinstance(v, bool) for v in data):
                raise ValueError(f"{where}: a bool array holds only true and false")
        elif dtype.kind in "iu":
            if not all(isinstance(v, int) and not isinstance(v, bool) for v in data):
                raise ValueError(f"{where}: an integer array holds only integers")
        elif not all(isinstance(v, str) for v in data):
            raise ValueError(f"{where}: a string array holds only strings")
        try:
            arr[:] = data
        except (OverflowError, ValueError) as exc:
            raise ValueError(f"{where}: {exc}") from None
    return arr.reshape(shape)


def _nested_refusal(where: str, name: str) -> str:
    return (
        f"{where}: {name} is not an allowlisted transformer class; a saved transformer "
        f"may hold only estimators of the classes {sorted(_NESTED)}"
    )


def _is_passthrough(value: Any) -> bool:
    return (
        type(value) is FunctionTransformer and value.get_params(deep=False) == _PASSTHROUGH_PARAMS
    )


def _encode_estimator(value: BaseEstimator, where: str, depth: int) -> dict:
    if _is_passthrough(value):
        return {"__passthrough__": {"state": encode_state(value, where, depth + 1)}}
    name = _NESTED_NAME_OF.get(type(value))
    if name is None:
        cls = type(value)
        raise ValueError(_nested_refusal(where, f"{cls.__module__}.{cls.__qualname__}"))
    params = {
        k: encode_value(v, f"{where}.{k}", depth + 1)
        for k, v in value.get_params(deep=False).items()
    }
    return {
        "__estimator__": {
            "class": name,
            "params": params,
            "state": encode_state(value, where, depth + 1),
        }
    }


def encode_value(value: Any, where: str, depth: int = 0) -> Any:
    """``value`` in the tagged JSON forms (``where`` names it in errors)."""
    """``value`` as tagged JSON; refuses anything but data and allowlisted estimators."""
    if depth > _MAX_DEPTH:
        raise ValueError(f"{where}: nested too deeply")
    if isinstance(value, np.generic):  # first: np.float64 and np.str_ subclass float, str
        if value.dtype.kind not in "biufU":
            raise ValueError(f"{where}: cannot save a numpy scalar of dtype {value.dtype}")
        item = value.item()
        return {
            "__scalar__": {
                "dtype": value.dtype.str,
                "value": float_to_json(item) if isinstance(item, float) else item,
            }
        }
    if value is None or isinstance(value, (bool, str)):
        return value
    if isinstance(value, int):
        return int(value)
    if isinstance(value, float):
        value = float(value)
        return value if math.isfinite(value) else {"__float__": float_to_json(value)}
    if isinstance(value, np.ndarray):
        return {"__ndarray__": _encode_array(value, where, depth)}
    if isinstance(value, list):
        return [encode_value(v, f"{where}[{i}]", depth + 1) for i, v in enumerate(value)]
    if isinstance(value, tuple):
        return {
            "__tuple__": [encode_value(v, f"{where}[{i}]", depth + 1) for i, v in enumerate(value)]
        }
    if isinstance(value, dict):
        if not all(isinstance(k, str) for k in value):
            raise ValueError(f"{where}: cannot save a dict with non-string keys")
        return {
            "__dict__": {k: encode_value(v, f"{where}[{k!r}]", depth + 1) for k, v in value.items()}
        }
    if isinstance(value, slice):
        parts = [value.start, value.stop, value.step]
        if not all(p is None or isinstance(p, (int, np.integer)) for p in parts):
            raise ValueError(f"{where}: cannot save a slice of non-integers")
        return {"__slice__": [None if p is None else int(p) for p in parts]}
    if isinstance(value, np.dtype):
        _check_dtype(value.str, where)
        return {"__dtype__": value.str}
    if isinstance(value, type) and issubclass(value, np.generic):
        dtype = np.dtype(value)
        _check_dtype(dtype.str, where, "biuf")
        return {"__dtype_type__": dtype.str}
    if isinstance(value, BaseEstimator):
        return _encode_estimator(value, where, depth)
    raise ValueError(
        f"{where} is a {type(value).__module__}.{type(value).__qualname__}, which the "
        "transformer codec cannot save (only arrays, numbers, strings, lists, tuples, "
        "dicts, slices, dtypes and allowlisted estimators)"
    )


def _decode_estimator(tag: str, inner: Any, where: str, depth: int) -> BaseEstimator:
    if tag == "__passthrough__":
        if not isinstance(inner, dict) or set(inner) != {"state"}:
            raise ValueError(f"{where}: malformed passthrough")
        est = FunctionTransformer(**_PASSTHROUGH_PARAMS)
    else:
        if not isinstance(inner, dict) or set(inner) != {"class", "params", "state"}:
            raise ValueError(f"{where}: a nested estimator has exactly class, params and state")
        name = inner["class"]
        cls = _NESTED.get(name) if isinstance(name, str) else None
        if cls is None:
            raise ValueError(_nested_refusal(where, repr(name)))
        params = inner["params"]
        if not isinstance(params, dict):
            raise ValueError(f"{where}: parameters must be an object")
        unknown = sorted(set(params) - set(cls().get_params(deep=False)))
        if unknown:
            raise ValueError(f"{where}: {name} has no parameter(s) {unknown}")
        decoded = {k: decode_value(v, f"{where}.{k}", depth + 1) for k, v in params.items()}
        est = cls(**decoded)
    set_state(est, inner["state"], where, depth + 1)
    return est


def decode_value(value: Any, where: str, depth: int = 0) -> Any:
    """The inverse of :func:`encode_value`; only allowlisted classes are built."""
    """Inverse of :func:`_encode`; refuses anything it would not produce."""
    if depth > _MAX_DEPTH:
        raise ValueError(f"{where}: nested too deeply")
    if value is None or isinstance(value, (bool, str, int, float)):
        return value
    if isinstance(value, list):
        return [decode_value(v, f"{where}[{i}]", depth + 1) for i, v in enumerate(value)]
    if not isinstance(value, dict) or len(value) != 1 or next(iter(value)) not in _TAGS:
        raise ValueError(f"{where}: malformed value (every JSON object must be one tag)")
    tag, inner = next(iter(value.items()))
    if tag == "__ndarray__":
        return _decode_array(inner, where, depth)
    if tag == "__scalar__":
        if not isinstance(inner, dict) or set(inner) != {"dtype", "value"}:
            raise ValueError(f"{where}: malformed numpy scalar")
        dtype = _check_dtype(inner["dtype"], where, "biufU")
        item = inner["value"]
        if dtype.kind == "f":
            item = _float_in(item, where)
        elif dtype.kind == "b" and not isinstance(item, bool):
            raise ValueError(f"{where}: malformed bool scalar")
        elif dtype.kind in "iu" and (isinstance(item, bool) or not isinstance(item, int)):
            raise ValueError(f"{where}: malformed integer scalar")
        elif dtype.kind == "U" and not isinstance(item, str):
            raise ValueError(f"{where}: malformed string scalar")
        try:
            return np.asarray(item, dtype=dtype)[()]
        except (OverflowError, ValueError) as exc:
            raise ValueError(f"{where}: {exc}") from None
    if tag == "__float__":
        if inner not in ("nan", "inf", "-inf"):
            raise ValueError(f"{where}: malformed float {inner!r}")
        return float(inner)
    if tag == "__tuple__":
        if not isinstance(inner, list):
            raise ValueError(f"{where}: malformed tuple")
        return tuple(decode_value(v, f"{where}[{i}]", depth + 1) for i, v in enumerate(inner))
    if tag == "__dict__":
        if not isinstance(inner, dict):
            raise ValueError(f"{where}: malformed dict")
        return {k: decode_value(v, f"{where}[{k!r}]", depth + 1) for k, v in inner.items()}
    if tag == "__slice__":
        if not (
            isinstance(inner, list)
            and len(inner) == 3
            and all(p is None or (isinstance(p, int) and not isinstance(p, bool)) for p in inner)
        ):
            raise ValueError(f"{where}: malformed slice")
        return slice(*inner)
    if tag == "__dtype__":
        return _check_dtype(inner, where)
    if tag == "__dtype_type__":
        return _check_dtype(inner, where, "biuf").type
    return _decode_estimator(tag, inner, where, depth)


# ------------------------------------------------------------------ fitted state
def _state_items(est: BaseEstimator) -> dict:
    params = set(est.get_params(deep=False))
    return {k: v for k, v in vars(est).items() if k not in params}


def encode_state(est: BaseEstimator, where: str, depth: int = 0) -> dict:
    """Every fitted attribute of ``est`` (its instance attributes that are not
    parameters), tagged."""
    state = {}
    for key, value in _state_items(est).items():
        _check_state_key(type(est), key, f"{where}.{key}")
        state[key] = encode_value(value, f"{where}.{key}", depth + 1)
    return state


def _check_state_key(cls: type, key: Any, where: str) -> None:
    if not isinstance(key, str) or not _IDENTIFIER.match(key) or hasattr(cls, key):
        raise ValueError(f"{where}: {key!r} is not a fitted attribute name of {cls.__name__}")


def set_state(est: BaseEstimator, state: Any, where: str, depth: int = 0) -> None:
    """Set the fitted attributes :func:`encode_state` wrote on ``est``, checked."""
    if not isinstance(state, dict):
        raise ValueError(f"{where}: the fitted state must be an object")
    params = set(est.get_params(deep=False))
    for key, value in state.items():
        _check_state_key(type(est), key, f"{where}.{key}")
        if key in params:
            raise ValueError(f"{where}: {key!r} is a parameter, not a fitted attribute")
        setattr(est, key, decode_value(value, f"{where}.{key}", depth + 1))
