"""Transformers as JSON: what crosses to a party instead of a Python object.

A party never unpickles or imports anything a peer names. The driver describes a
transformer as ``{"class": <public name>, "params": <JSON>, "columns": <names or
None>}``; the party builds it only from :data:`ALLOWED_TRANSFORMERS`, with
parameters that are plain JSON (plus three tagged forms for values scikit-learn
parameters need: tuples, non-finite floats and numeric dtypes).
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
from sklearn.base import clone
from sklearn.compose import ColumnTransformer
from sklearn.impute import SimpleImputer
from sklearn.preprocessing import (
    Binarizer,
    KBinsDiscretizer,
    MaxAbsScaler,
    MinMaxScaler,
    Normalizer,
    OneHotEncoder,
    OrdinalEncoder,
    PolynomialFeatures,
    PowerTransformer,
    QuantileTransformer,
    RobustScaler,
    StandardScaler,
)

__all__ = ["ALLOWED_TRANSFORMERS", "build_transformer", "local_transformer", "transformer_spec"]

#: The scikit-learn transformers a party agrees to fit on its data when a peer asks.
#: They have no parameter that can carry code (a FunctionTransformer's ``func``, an
#: estimator inside a Pipeline), so whoever chooses the parameters chooses numbers.
ALLOWED_TRANSFORMERS: dict[str, type] = {
    "sklearn.impute.SimpleImputer": SimpleImputer,
    "sklearn.preprocessing.Binarizer": Binarizer,
    "sklearn.preprocessing.KBinsDiscretizer": KBinsDiscretizer,
    "sklearn.preprocessing.MaxAbsScaler": MaxAbsScaler,
    "sklearn.preprocessing.MinMaxScaler": MinMaxScaler,
    "sklearn.preprocessing.Normalizer": Normalizer,
    "sklearn.preprocessing.OneHotEncoder": OneHotEncoder,
    "sklearn.preprocessing.OrdinalEncoder": OrdinalEncoder,
    "sklearn.preprocessing.PolynomialFeatures": PolynomialFeatures,
    "sklearn.preprocessing.PowerTransformer": PowerTransformer,
    "sklearn.preprocessing.QuantileTransformer": QuantileTransformer,
    "sklearn.preprocessing.RobustScaler": RobustScaler,
    "sklearn.preprocessing.StandardScaler": StandardScaler,
}
_NAME_OF = {cls: name for name, cls in ALLOWED_TRANSFORMERS.items()}
#: dtypes a parameter may name (``OneHotEncoder(dtype=np.float64)`` and the like)
_DTYPES = ("float64", "float32", "float16", "int64", "int32", "int16", "int8", "bool")
_TAGS = ("__tuple__", "__float__", "__dtype__")
_SPEC_KEYS = {"class", "params", "columns"}


def _refusal(name: str) -> str:
    allowed = ", ".join(sorted(n.rsplit(".", 1)[1] for n in ALLOWED_TRANSFORMERS))
    return (
        f"a party fits only allowlisted scikit-learn transformers ({allowed}); "
        f"{name} is not one of them (a transformer sent to a party must not be able to "
        "run code its sender chose)"
    )


# ------------------------------------------------------------------ parameters
def encode_param(value: Any, where: str) -> Any:
    """A parameter value as plain JSON (tuples, non-finite floats, dtypes tagged)."""
    if value is None or isinstance(value, (bool, str)):
        return value
    if isinstance(value, (int, np.integer)) and not isinstance(value, np.bool_):
        return int(value)
    if isinstance(value, np.bool_):
        return bool(value)
    if isinstance(value, (float, np.floating)):
        value = float(value)
        return value if math.isfinite(value) else {"__float__": repr(value)}
    if isinstance(value, tuple):
        return {"__tuple__": [encode_param(v, where) for v in value]}
    if isinstance(value, list):
        return [encode_param(v, where) for v in value]
    if isinstance(value, np.ndarray) and value.dtype.kind in "biufU":
        return [encode_param(v, where) for v in value.tolist()]
    if isinstance(value, dict):
        if not all(isinstance(k, str) and k not in _TAGS for k in value):
            raise ValueError(f"{where}: dict keys must be plain strings")
        return {k: encode_param(v, where) for k, v in value.items()}
    if isinstance(value, (type, np.dtype)):
        try:
            name = np.dtype(value).name
        except TypeError:
            name = None
        if name in _DTYPES:
            return {"__dtype__": name}
    raise ValueError(
        f"{where} is a {type(value).__name__}, which cannot cross to a party: parameters "
        "must be JSON data (numbers, strings, booleans, None, lists, tuples, dicts) or a "
        "numeric dtype"
    )


def decode_param(value: Any, where: str) -> Any:
    """Inverse of :func:`encode_param`; refuses anything it did not produce."""
    if isinstance(value, list):
        return [decode_param(v, where) for v in value]
    if not isinstance(value, dict):
        return value
    tags = [k for k in value if k in _TAGS]
    if not tags:
        return {k: decode_param(v, where) for k, v in value.items()}
    if len(value) != 1:
        raise ValueError(f"{where}: malformed tagged value")
    tag, inner = tags[0], value[tags[0]]
    if tag == "__tuple__" and isinstance(inner, list):
        return tuple(decode_param(v, where) for v in inner)
    if tag == "__float__" and inner in ("nan", "inf", "-inf"):
        return float(inner)
    if tag == "__dtype__" and inner in _DTYPES:
        return np.dtype(inner).type
    raise ValueError(f"{where}: malformed tagged value {value!r}")


# ------------------------------------------------------------------ driver side
def transformer_spec(transformer: Any, columns: Any = None) -> dict:
    """The JSON description of an allowlisted transformer (and the columns it gets).

    Raises
    ------
    ValueError
        If the transformer's class is not allowlisted or a parameter is not JSON.
    """
    cls = type(transformer)
    name = _NAME_OF.get(cls)
    if name is None:
        raise ValueError(_refusal(f"{cls.__module__}.{cls.__qualname__}"))
    params = {
        key: encode_param(value, f"parameter {key!r} of {cls.__name__}")
        for key, value in transformer.get_params(deep=False).items()
    }
    return {"class": name, "params": params, "columns": _json_columns(columns)}


def _json_columns(columns: Any) -> list | None:
    if columns is None:
        return None
    if isinstance(columns, (str, int, np.integer)):
        raise ValueError(f"columns must be a list of names or indices, got {columns!r}")
    if isinstance(columns, np.ndarray):
        columns = columns.tolist()
    out = list(columns)
    out = [int(c) if isinstance(c, np.integer) else c for c in out]
    if not out:
        raise ValueError("columns must name at least one column")
    kinds = {type(c) for c in out}
    if kinds not in ({str}, {int}):
        raise ValueError(f"columns must be all names (str) or all indices (int), got {columns!r}")
    if len(set(out)) != len(out):
        raise ValueError(f"columns must not repeat, got {columns!r}")
    return out


def local_transformer(transformer: Any, columns: Any = None) -> Any:
    """An unfitted copy of ``transformer``, restricted to ``columns`` when given.

    The other columns pass through after the transformed ones (as in
    :class:`sklearn.compose.ColumnTransformer`).
    """
    transformer = clone(transformer)
    if columns is None:
        return transformer
    return ColumnTransformer(
        [("transform", transformer, list(columns))],
        remainder="passthrough",
        verbose_feature_names_out=False,
    )


# ------------------------------------------------------------------ party side
def build_transformer(spec: Any) -> Any:
    """Construct the transformer a peer described, only from the allowlist.

    Raises
    ------
    ValueError
        If the spec is malformed, names a class not in :data:`ALLOWED_TRANSFORMERS`,
        or carries unknown or non-JSON parameters.
    """
    if not isinstance(spec, dict) or set(spec) != _SPEC_KEYS:
        raise ValueError(f"a transformer spec has exactly the keys {sorted(_SPEC_KEYS)}")
    name = spec["class"]
    if not isinstance(name, str):
        raise ValueError("a transformer spec names its class with a string")
    cls = ALLOWED_TRANSFORMERS.get(name)
    if cls is None:
        raise ValueError(_refusal(name))
    params = spec["params"]
    if not isinstance(params, dict):
        raise ValueError(f"parameters of {name} must be a JSON object")
    known = cls().get_params(deep=False)
    unknown = sorted(set(params) - set(known))
    if unknown:
        raise ValueError(f"{name} has no parameter(s) {unknown}")
    decoded = {k: decode_param(v, f"parameter {k!r} of {name}") for k, v in params.items()}
    return local_transformer(cls(**decoded), _json_columns(spec["columns"]))
