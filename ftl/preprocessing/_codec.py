"""Fitted transformers as JSON: what a party writes to disk instead of a pickle.

A fitted transformer is saved as the JSON spec it was built from (its class --
one of :data:`~ftl.preprocessing.ALLOWED_TRANSFORMERS` -- its parameters and the
columns it applies to, exactly as :mod:`ftl.preprocessing._spec` sends it to a
party) plus its *fitted state* in tagged JSON
(:mod:`ftl.preprocessing._state_json`: closed forms, allowlisted classes only,
nothing ever unpickled).

A document also carries a SHA-256 of its spec and state (detects corruption)
and a *probe*: the transformer's output on three synthetic rows (fixed values,
or for an encoder's columns categories it already holds), computed at save
time and compared bit for bit after loading.
"""

from __future__ import annotations

import hashlib
import json
import warnings
from typing import Any

import numpy as np
import pandas as pd
from scipy import sparse
from sklearn import config_context
from sklearn.compose import ColumnTransformer
from sklearn.preprocessing import OneHotEncoder, OrdinalEncoder

from ftl.preprocessing._spec import build_transformer, local_transformer, transformer_spec
from ftl.preprocessing._state_json import decode_value, encode_state, encode_value, set_state

__all__ = ["decode_transformer", "encode_transformer"]

_DOC_KEYS = frozenset({"spec", "state", "sha256", "probe"})
#: Values of the synthetic probe rows for columns that are not categorical
#: (positive, so a Box-Cox PowerTransformer accepts them).
_PROBE_VALUES = (0.5, 1.0, 2.0)


# ------------------------------------------------------------------ spec
def _spec_of(transformer: Any) -> dict:
    """The spec the transformer was built from by :func:`build_transformer`."""
    if type(transformer) is not ColumnTransformer:
        return transformer_spec(transformer)
    steps = transformer.transformers
    if len(steps) == 1 and len(steps[0]) == 3 and steps[0][0] == "transform":
        _, inner, columns = steps[0]
        spec = transformer_spec(inner, columns)
        expected = local_transformer(inner, spec["columns"]).get_params(deep=False)
        actual = transformer.get_params(deep=False)
        if all(actual[k] == expected[k] for k in expected if k != "transformers"):
            return spec
    raise ValueError(
        "only a ColumnTransformer built by ftl.preprocessing (one allowlisted transformer "
        "on some columns, the others passed through) can be saved"
    )


def _digest(spec: Any, state: Any) -> str:
    text = json.dumps(
        {"spec": spec, "state": state},
        sort_keys=True,
        separators=(",", ":"),
        ensure_ascii=True,
        allow_nan=False,
    )
    return hashlib.sha256(text.encode("ascii")).hexdigest()


# ------------------------------------------------------------------ probe
def _categories(transformer: Any) -> dict[int, np.ndarray]:
    """Categories an encoder knows, by input column position (for valid probe rows)."""
    if isinstance(transformer, (OneHotEncoder, OrdinalEncoder)):
        return {j: np.asarray(c) for j, c in enumerate(transformer.categories_)}
    if type(transformer) is ColumnTransformer:
        _, inner, columns = transformer.transformers_[0]
        names = [str(c) for c in getattr(transformer, "feature_names_in_", [])]
        positions = [names.index(c) if isinstance(c, str) else int(c) for c in columns]
        return {positions[j]: cats for j, cats in _categories(inner).items()}
    return {}


def _probe_input(transformer: Any) -> np.ndarray:
    n = int(transformer.n_features_in_)
    rows = np.tile(np.asarray(_PROBE_VALUES, dtype=np.float64)[:, None], (1, n))
    for j, cats in _categories(transformer).items():
        if len(cats):
            rows[:, j] = np.asarray(cats[[0, len(cats) // 2, -1]], dtype=np.float64)
    return rows


def _transform(transformer: Any, rows: np.ndarray) -> np.ndarray:
    """Output on ``rows`` as a dense float array (named columns if fitted with names)."""
    names = getattr(transformer, "feature_names_in_", None)
    X = rows if names is None else pd.DataFrame(rows, columns=[str(c) for c in names])
    with config_context(transform_output="default"), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        out = transformer.transform(X)
    if sparse.issparse(out):
        out = out.toarray()
    return np.asarray(out, dtype=np.float64)


def _probe(transformer: Any) -> dict | None:
    try:
        rows = _probe_input(transformer)
        output = _transform(transformer, rows)
    except (TypeError, ValueError, IndexError, AttributeError):
        return None  # e.g. categories that are not numbers: the digest still guards
    return {
        "input": encode_value(rows, "probe input"),
        "output": encode_value(output, "probe output"),
    }


def _same(a: np.ndarray, b: np.ndarray) -> bool:
    return a.shape == b.shape and np.array_equal(a, b, equal_nan=True)


# ------------------------------------------------------------------ public
def encode_transformer(transformer: Any) -> dict:
    """A fitted allowlisted transformer as a JSON document (no pickle).

    Parameters
    ----------
    transformer : transformer
        A fitted instance of a class in
        :data:`ftl.preprocessing.ALLOWED_TRANSFORMERS`, or a
        :class:`~sklearn.compose.ColumnTransformer` as ftl.preprocessing builds
        it (one such transformer on some columns, ``remainder="passthrough"``).

    Returns
    -------
    dict
        ``{"spec", "state", "sha256", "probe"}``: the JSON spec (class name,
        parameters, columns), the fitted state in tagged JSON, a SHA-256 of
        both, and the transformer's output on three synthetic rows (or None
        when no valid synthetic rows can be built). ``json.dumps`` accepts it
        with ``allow_nan=False``.

    Raises
    ------
    ValueError
        If the class is not allowlisted, a parameter is not JSON, or the
        fitted state holds a value the codec does not know (an estimator of
        another class, a function, ...).
    sklearn.exceptions.NotFittedError
        If the transformer is not fitted.

    See Also
    --------
    decode_transformer : the inverse.
    """
    from sklearn.utils.validation import check_is_fitted

    check_is_fitted(transformer)
    spec = _spec_of(transformer)
    state = encode_state(transformer, type(transformer).__name__, 0)
    return {
        "spec": spec,
        "state": state,
        "sha256": _digest(spec, state),
        "probe": _probe(transformer),
    }


def decode_transformer(doc: Any) -> Any:
    """Rebuild a fitted transformer from :func:`encode_transformer`'s document.

    The transformer is constructed only through the allowlist
    (:func:`~ftl.preprocessing._spec.build_transformer`), its fitted state is
    set attribute by attribute, and the result is checked: the SHA-256 of the
    spec and state must match, and the transformer must reproduce the saved
    probe output bit for bit.

    Parameters
    ----------
    doc : dict
        A document returned by :func:`encode_transformer` (parsed JSON).

    Returns
    -------
    transformer
        The fitted transformer; its ``transform`` equals the saved one's.

    Raises
    ------
    ValueError
        If the document is malformed, names a class that is not allowlisted
        (also for a nested estimator), does not match its digest, or the
        rebuilt transformer does not reproduce the saved probe.
    """
    if not isinstance(doc, dict) or set(doc) != _DOC_KEYS:
        raise ValueError(f"a saved transformer has exactly the keys {sorted(_DOC_KEYS)}")
    spec, state = doc["spec"], doc["state"]
    transformer = build_transformer(spec)  # the allowlist decides, before anything else
    name = spec["class"].rsplit(".", 1)[-1]
    set_state(transformer, state, name, 0)
    if doc["sha256"] != _digest(spec, state):
        raise ValueError(f"the saved {name} is corrupted: its SHA-256 does not match")
    probe = doc["probe"]
    if probe is not None:
        if not isinstance(probe, dict) or set(probe) != {"input", "output"}:
            raise ValueError(f"the saved {name} has a malformed probe")
        inputs = decode_value(probe["input"], "probe input")
        expected = decode_value(probe["output"], "probe output")
        if not (
            isinstance(inputs, np.ndarray)
            and isinstance(expected, np.ndarray)
            and inputs.dtype == np.float64
            and inputs.ndim == 2
        ):
            raise ValueError(f"the saved {name} has a malformed probe")
        try:
            got = _transform(transformer, inputs)
        except Exception as exc:  # noqa: BLE001 - any failure means an unusable state
            raise ValueError(f"the saved {name} cannot transform after loading: {exc}") from None
        if not _same(got, expected):
            raise ValueError(f"the saved {name} does not reproduce its saved output after loading")
    return transformer
