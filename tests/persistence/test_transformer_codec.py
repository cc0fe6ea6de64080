"""The transformer codec: a party's fitted scikit-learn transformer as strict JSON
(an allowlisted class, its parameters and fitted state, a digest and a probe of its
output), read back bit for bit, and nothing else read back at all."""

from __future__ import annotations

import json
import warnings

import numpy as np
import pandas as pd
import pytest
from sklearn.compose import ColumnTransformer
from sklearn.impute import SimpleImputer
from sklearn.preprocessing import (
    Binarizer,
    FunctionTransformer,
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

from ftl.persistence import decode_transformer, encode_transformer
from ftl.preprocessing import ALLOWED_TRANSFORMERS
from ftl.preprocessing._spec import build_transformer, transformer_spec
from ftl.preprocessing.party import FittedTransform


def _frame(n: int, seed: int, unseen: bool = False) -> pd.DataFrame:
    """Two numeric columns (one strictly positive) and a categorical one (codes 1-4)."""
    rng = np.random.default_rng(seed)
    codes = rng.integers(1, 5, size=n).astype(float)
    if unseen:
        codes[:3] = 7.0  # a category never seen in fit
    return pd.DataFrame({"a": rng.normal(size=n), "b": rng.gamma(2.0, size=n) + 0.1, "c": codes})


#: (transformer, columns, gaps): one case per allowlisted class, with parameters that
#: exercise its private fitted helpers, plus the forms a party builds with ``columns``
CASES = {
    "SimpleImputer": (SimpleImputer(strategy="median", add_indicator=True), None, True),
    "Binarizer": (Binarizer(threshold=0.2), None, False),
    "KBinsDiscretizer": (KBinsDiscretizer(n_bins=4, encode="onehot"), ["a", "b"], False),
    "MaxAbsScaler": (MaxAbsScaler(), None, False),
    "MinMaxScaler": (MinMaxScaler(feature_range=(-1, 1), clip=True), None, False),
    "Normalizer": (Normalizer(norm="l1"), None, False),
    "OneHotEncoder": (
        OneHotEncoder(handle_unknown="infrequent_if_exist", min_frequency=30, drop="first"),
        ["c"],
        False,
    ),
    "OrdinalEncoder": (
        OrdinalEncoder(handle_unknown="use_encoded_value", unknown_value=-1),
        ["c"],
        False,
    ),
    "PolynomialFeatures": (PolynomialFeatures(degree=2, interaction_only=True), None, False),
    "PowerTransformer": (PowerTransformer(method="box-cox"), ["b"], False),
    "QuantileTransformer": (
        QuantileTransformer(n_quantiles=50, output_distribution="normal"),
        None,
        False,
    ),
    "RobustScaler": (RobustScaler(quantile_range=(10.0, 90.0)), None, False),
    "StandardScaler": (StandardScaler(), None, False),
    # the same classes as a party holds them on all columns / with other options
    "OneHotEncoder-dense-ignore": (
        OneHotEncoder(sparse_output=False, handle_unknown="ignore"),
        ["c"],
        False,
    ),
    "KBinsDiscretizer-ordinal": (KBinsDiscretizer(n_bins=3, encode="ordinal"), None, False),
    "PowerTransformer-yeo-johnson": (PowerTransformer(), None, False),
    "SimpleImputer-constant": (SimpleImputer(strategy="constant", fill_value=-1.0), ["a"], True),
}


def test_cases_cover_the_allowlist():
    covered = {type(t) for t, _, _ in CASES.values()}
    assert covered == set(ALLOWED_TRANSFORMERS.values())


def _fit_like_a_party(transformer, columns, gaps):
    """Build from the JSON spec and fit on a DataFrame, as a party does (which names
    the columns by position: the transformer sees placeholder column names)."""
    data = _frame(200, 0)
    if gaps:
        data.loc[::9, "a"] = np.nan
    if columns is not None:
        columns = [list(data.columns).index(c) for c in columns]
    built = build_transformer(transformer_spec(transformer, columns))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        return FittedTransform.fit(built, data.to_numpy(), list(data.columns))


@pytest.mark.filterwarnings("ignore:Found unknown categories:UserWarning")
@pytest.mark.parametrize("case", sorted(CASES))
def test_codec_round_trip_is_bit_exact(case):
    transformer, columns, gaps = CASES[case]
    fitted = _fit_like_a_party(transformer, columns, gaps)

    doc = encode_transformer(fitted.transformer)
    text = json.dumps(doc, allow_nan=False)  # strict JSON: no NaN literals, no objects
    for marker in ("pickle", "__reduce__", "py/object", "builtins"):
        assert marker not in text
    assert doc["probe"] is not None  # a check of the loaded copy is stored
    back = decode_transformer(json.loads(text))

    assert type(back) is type(fitted.transformer)
    assert set(vars(back)) == set(vars(fitted.transformer))
    assert list(back.get_feature_names_out()) == list(fitted.transformer.get_feature_names_out())
    new = _frame(60, 1, unseen=case.startswith(("OneHot", "Ordinal")))
    if gaps:
        new.loc[::4, "a"] = np.nan
    copy = FittedTransform(back, fitted.input_names, fitted.feature_names_out)
    expected, got = fitted(new.to_numpy()), copy(new.to_numpy())
    assert got.dtype == expected.dtype and got.tobytes() == expected.tobytes()


def test_codec_keeps_numpy_types_and_nested_helpers():
    fitted = _fit_like_a_party(PowerTransformer(), None, False).transformer
    back = decode_transformer(json.loads(json.dumps(encode_transformer(fitted))))
    assert type(back._scaler) is StandardScaler  # a nested allowlisted estimator
    np.testing.assert_array_equal(back._scaler.mean_, fitted._scaler.mean_)
    assert type(back._scaler.n_samples_seen_) is type(fitted._scaler.n_samples_seen_)
    encoder = _fit_like_a_party(*CASES["OneHotEncoder"]).transformer
    back = decode_transformer(json.loads(json.dumps(encode_transformer(encoder))))
    assert isinstance(back, ColumnTransformer)
    inner, original = back.transformers_[0][1], encoder.transformers_[0][1]
    assert inner.drop_idx_.dtype == original.drop_idx_.dtype == object
    assert inner._infrequent_enabled is True
    assert back.output_indices_ == encoder.output_indices_  # slices round-trip


def _doc(case="PowerTransformer"):
    fitted = _fit_like_a_party(*CASES[case])
    return json.loads(json.dumps(encode_transformer(fitted.transformer)))


def test_codec_refuses_classes_outside_the_allowlist():
    with pytest.raises(ValueError, match="only allowlisted"):
        encode_transformer(FunctionTransformer(np.log1p).fit(np.ones((3, 2))))
    two = ColumnTransformer([("a", StandardScaler(), [0]), ("b", MinMaxScaler(), [1])])
    with pytest.raises(ValueError, match="only a ColumnTransformer built by ftl"):
        encode_transformer(two.fit(np.random.default_rng(0).normal(size=(5, 2))))

    doc = _doc()  # a PowerTransformer on one column: a ColumnTransformer at the party
    for name in ("sklearn.preprocessing.FunctionTransformer", "os.system", "builtins.eval"):
        bad = json.loads(json.dumps(doc))
        bad["spec"]["class"] = name
        with pytest.raises(ValueError, match="only allowlisted"):
            decode_transformer(bad)
        bad = json.loads(json.dumps(doc))
        fitted_inner = bad["state"]["transformers_"][0]["__tuple__"][1]
        fitted_inner["__estimator__"]["class"] = name
        with pytest.raises(ValueError, match="not an allowlisted transformer class"):
            decode_transformer(bad)

    # a nested estimator: the PowerTransformer's scaler, inside the ColumnTransformer
    whole = _doc("PowerTransformer-yeo-johnson")
    scaler = whole["state"]["_scaler"]["__estimator__"]
    for name in ("sklearn.preprocessing.FunctionTransformer", "subprocess.Popen"):
        scaler["class"] = name
        with pytest.raises(ValueError, match="not an allowlisted transformer class"):
            decode_transformer(whole)


def test_codec_refuses_tampered_or_malformed_state():
    doc = _doc("StandardScaler")
    bad = json.loads(json.dumps(doc))
    bad["state"]["mean_"]["__ndarray__"]["data"][0] += 1.0
    with pytest.raises(ValueError, match="SHA-256 does not match"):
        decode_transformer(bad)
    bad = json.loads(json.dumps(doc))
    bad["probe"]["output"]["__ndarray__"]["data"][0] += 1.0
    with pytest.raises(ValueError, match="does not reproduce its saved output"):
        decode_transformer(bad)
    for key, value in [
        ("transform", None),  # would shadow a method
        ("__class__", None),
        ("with_mean", False),  # a parameter
        ("scale_", {"__call__": "os.system"}),  # not a tag
        ("scale_", {"__ndarray__": {"dtype": "|V8", "shape": [1], "data": [0]}}),
        ("scale_", {"__ndarray__": {"dtype": "<f8", "shape": [5], "data": [0.0]}}),
        ("scale_", {"__dtype_type__": "|O"}),
    ]:
        bad = json.loads(json.dumps(doc))
        bad["state"][key] = value
        with pytest.raises(ValueError):
            decode_transformer(bad)
    with pytest.raises(ValueError, match="exactly the keys"):
        decode_transformer({"spec": doc["spec"], "state": doc["state"]})
