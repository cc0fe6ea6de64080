"""Per-party preprocessing: statistics stay at their party, pipelines compose, and only
public metadata crosses (the transformer as an allowlisted JSON spec)."""

from __future__ import annotations

import pickle

import numpy as np
import pandas as pd
import pytest
from sklearn.compose import ColumnTransformer
from sklearn.impute import SimpleImputer
from sklearn.metrics import roc_auc_score
from sklearn.model_selection import GridSearchCV, cross_val_score, train_test_split
from sklearn.pipeline import Pipeline, make_pipeline
from sklearn.preprocessing import (
    FunctionTransformer,
    MinMaxScaler,
    OneHotEncoder,
    QuantileTransformer,
    StandardScaler,
)

import ftl
from ftl.data.handles import Alignment, VerticalData
from ftl.federation.channel import Channel
from ftl.federation.messages import Message
from ftl.preprocessing import FederatedSimpleImputer, FederatedStandardScaler, PerParty
from ftl.preprocessing._spec import build_transformer, decode_param, encode_param
from tests.conftest import SMALL_KEY, fit_transfer_pipeline

LR = dict(encryption=None, random_state=0)


def _split(X, y, seed=0):
    return train_test_split(X, y, test_size=0.3, stratify=y, random_state=seed)


def _rows(party, X):
    return party.aligned_rows(X.alignment.id, X.positions)


def _features(X, raw=False):
    """Each party's features of the handle's rows (possible only in a simulation)."""
    return {p.name: (p.raw_features if raw else p.local_features)(_rows(p, X)) for p in X.parties}


def _assert_public_only(transcript):
    assert len(transcript) > 0
    for record in transcript:
        assert record.type.startswith("prep.") or record.type == "ack", record.type
        for f in record.fields:
            assert f.kind == "public" and not f.per_sample, (record.type, f)


# --------------------------------------------------------------------------- scaler
def test_scaler_statistics_stay_at_parties_and_equal_sklearn(breast):
    X, y = breast
    X_train, X_test, _, _ = _split(X, y)
    scaler = FederatedStandardScaler().fit(X_train)

    train, test = _features(X_train), _features(X_test)
    Xt = scaler.transform(X_test)
    assert isinstance(Xt, VerticalData) and Xt.shape == X_test.shape
    assert np.array_equal(Xt.positions, X_test.positions)
    assert Xt.alignment.id == X.alignment.id
    transformed = _features(Xt)
    for party in X.parties:
        local = StandardScaler().fit(train[party.name])
        fitted = party.load_transformer(scaler.transformer_id_).transformer
        np.testing.assert_allclose(fitted.mean_, local.mean_)
        np.testing.assert_allclose(fitted.var_, local.var_)
        assert fitted.n_samples_seen_ == len(X_train)
        np.testing.assert_allclose(transformed[party.name], local.transform(test[party.name]))

    # the driver's object holds ids and public metadata, no statistic of any party
    for name, value in vars(scaler).items():
        if isinstance(value, np.ndarray):
            assert value.dtype == object, name  # feature_names_in_ only
        assert not isinstance(value, (float, np.floating)), name
    assert not hasattr(scaler, "mean_") and not hasattr(scaler, "transformer_")
    assert scaler.transformed_parties_ == ["hospital", "lab"]
    assert list(scaler.get_feature_names_out()) == list(X.feature_names)
    _assert_public_only(scaler.transcript_)


def test_derived_parties_are_parties_that_pickle(breast):
    X, y = breast
    scaler = FederatedStandardScaler().fit(X)
    Xt = scaler.transform(X)
    for old, new in zip(X.parties, Xt.parties, strict=True):
        assert isinstance(new, ftl.Party) and new is not old and new.base is old
        assert new.name == old.name and new.n_rows == old.n_rows
        assert np.array_equal(new.local_ids(), old.local_ids())
        assert new.has_labels == old.has_labels
        assert new is old.derived(scaler.transformer_id_)  # one derived party per fit
    assert scaler.transform(X[:5]).parties == Xt.parties  # so model shards are found again
    clone = pickle.loads(pickle.dumps(Xt))
    np.testing.assert_array_equal(pooled_features(clone), pooled_features(Xt))
    assert clone.parties[1].endpoint is not Xt.parties[1].endpoint


def pooled_features(X):
    return np.hstack(list(_features(X).values()))


def test_pipeline_equals_scaling_by_hand_then_fitting(breast):
    X, y = breast
    X_train, X_test, y_train, _ = _split(X, y)
    pipe = Pipeline(
        [("scale", FederatedStandardScaler()), ("clf", ftl.FederatedLogisticRegression(**LR))]
    )
    proba = pipe.fit(X_train, y_train).predict_proba(X_test)

    # by hand: sklearn's scaler per party on the same training rows, new parties with
    # the scaled data, the same alignment, the same seed
    alignment = X.alignment
    every = np.arange(alignment.n_rows)
    parties = []
    for party in X.parties:
        local = StandardScaler().fit(party.local_features(_rows(party, X_train)))
        all_rows = np.arange(party.n_rows)
        scaled = ftl.Party(
            party.name,
            local.transform(party.local_features(all_rows)),
            ids=party.local_ids(),
            labels=party.local_labels(all_rows) if party.has_labels else None,
        )
        scaled._secret = party._secret  # the same guest secret, so the same random start
        scaled.remember_alignment(alignment.id, party.aligned_rows(alignment.id, every))
        parties.append(scaled)
    by_hand = Alignment(
        id=alignment.id,
        guest=parties[0],
        hosts=tuple(parties[1:]),
        ids=alignment.ids,
        n_features=alignment.n_features,
        feature_names=alignment.feature_names,
    )
    clf = ftl.FederatedLogisticRegression(**LR).fit(
        VerticalData(by_hand, X_train.positions), y_train
    )
    expected = clf.predict_proba(VerticalData(by_hand, X_test.positions))
    np.testing.assert_allclose(proba, expected, rtol=1e-9, atol=1e-12)


def test_cross_val_score_and_grid_search_over_handles(breast):
    X, y = breast
    pipe = Pipeline(
        [("scale", FederatedStandardScaler()), ("clf", ftl.FederatedLogisticRegression(**LR))]
    )
    scores = cross_val_score(pipe, X, y, cv=3)
    assert scores.min() > 0.9
    np.testing.assert_allclose(cross_val_score(pipe, X, y, cv=3, n_jobs=2), scores)
    search = GridSearchCV(pipe, {"clf__C": [0.1, 1.0], "scale__with_mean": [True, False]}, cv=3)
    search.fit(X, y)
    assert search.best_score_ > 0.9
    assert set(search.best_params_) == {"clf__C", "scale__with_mean"}
    assert search.predict(X[:10]).shape == (10,)


def test_pipeline_with_small_keys(breast):
    X, y = breast
    X_train, X_test, y_train, y_test = _split(X, y)
    clf = ftl.FederatedLogisticRegression(random_state=0, max_iter=3, **SMALL_KEY)
    pipe = make_pipeline(FederatedStandardScaler(), clf).fit(X_train, y_train)
    assert roc_auc_score(y_test, pipe.predict_proba(X_test)[:, 1]) > 0.95
    assert "ciphertext" in clf.transcript_.messages_by_kind()
    _assert_public_only(pipe[0].transcript_)


# --------------------------------------------------------------------------- missing values
@pytest.fixture
def frames_with_gaps():
    rng = np.random.default_rng(1)
    n = 120
    ids = np.arange(n)
    a0, a1, b0 = rng.normal(size=(3, n))
    y = (a0 + b0 + rng.normal(scale=0.5, size=n) > 0).astype(int)
    a1[rng.choice(n, 15, replace=False)] = np.nan
    b0_seen = b0.copy()
    b0_seen[rng.choice(n, 20, replace=False)] = np.nan
    bank = pd.DataFrame({"id": ids, "a0": a0, "a1": a1, "y": y})
    shop = pd.DataFrame({"id": ids[::-1], "b0": b0_seen[::-1], "b1": rng.normal(size=n)})
    return bank, shop


def _gappy_parties(frames):
    bank, shop = frames
    return (
        ftl.Party("bank", bank, id_column="id", label_column="y", allow_missing=True),
        ftl.Party("shop", shop, id_column="id", allow_missing=True),
    )


def test_missing_values_are_accepted_only_when_allowed(frames_with_gaps):
    bank, _ = frames_with_gaps
    with pytest.raises(ValueError, match="NaN or infinite"):
        ftl.Party("bank", bank, id_column="id", label_column="y")
    inf = bank.assign(a0=np.where(bank.index == 3, np.inf, bank["a0"]))
    with pytest.raises(ValueError, match=r"infinite values in feature column\(s\) a0"):
        ftl.Party("bank", inf, id_column="id", label_column="y", allow_missing=True)


def test_estimators_refuse_missing_values_with_a_clear_error(frames_with_gaps):
    X, y = ftl.align(*_gappy_parties(frames_with_gaps))
    msg = r"party 'bank' has missing values in the rows used; impute them first.*Imputer"
    with pytest.raises(ValueError, match=msg):
        ftl.FederatedLogisticRegression(**LR).fit(X, y)


def test_imputer_fills_gaps_at_each_party_then_lr_fits(frames_with_gaps):
    # rows in id order: the 36-row test split (and its accuracy) is the same every run
    X, y = ftl.align(*_gappy_parties(frames_with_gaps), order="id")
    X_train, X_test, y_train, y_test = _split(X, y)
    imputer = FederatedSimpleImputer(strategy="median").fit(X_train)
    train, test = _features(X_train, raw=True), _features(X_test, raw=True)
    for party in X.parties:
        assert np.isnan(party.raw_features(_rows(party, X))).any()
    transformed = _features(imputer.transform(X_test))  # local_features: no NaN left
    for name, x in test.items():
        expected = SimpleImputer(strategy="median").fit(train[name]).transform(x)
        np.testing.assert_allclose(transformed[name], expected)
    _assert_public_only(imputer.transcript_)

    pipe = make_pipeline(
        FederatedStandardScaler(),  # scales around the gaps, as sklearn's scaler does
        FederatedSimpleImputer(),
        ftl.FederatedLogisticRegression(**LR),
    ).fit(X_train, y_train)
    assert pipe.score(X_test, y_test) > 0.75


# --------------------------------------------------------------------------- PerParty
@pytest.fixture
def shop_with_education():
    rng = np.random.default_rng(2)
    n = 150
    ids = np.arange(n)
    education = rng.integers(1, 5, size=n)
    income = rng.normal(size=n)
    x = rng.normal(size=n)
    y = ((education >= 3) + x + rng.normal(scale=0.5, size=n) > 1).astype(int)
    bank = ftl.Party(
        "bank", pd.DataFrame({"id": ids, "x": x, "y": y}), id_column="id", label_column="y"
    )
    shop = ftl.Party(
        "shop",
        pd.DataFrame({"id": ids, "income": income, "education": education}),
        id_column="id",
    )
    return bank, shop


def _one_hot(**kw):
    return PerParty(
        OneHotEncoder(sparse_output=False, handle_unknown="ignore"),
        party="shop",
        columns=["education"],
        **kw,
    )


def test_per_party_one_hot_encodes_one_column_of_one_party(shop_with_education):
    bank, shop = shop_with_education
    X, y = ftl.align(bank, shop)
    encoder = _one_hot().fit(X)
    Xt = encoder.transform(X)
    assert Xt.parties[0] is bank  # the other party is untouched
    assert encoder.transformed_parties_ == ["shop"]
    # positional names: the categories the shop found stay at the shop
    assert list(encoder.get_feature_names_out()) == [
        "bank__x",
        "shop__education_0",
        "shop__education_1",
        "shop__education_2",
        "shop__education_3",
        "shop__income",
    ]
    assert Xt.shape == (len(X), 6) and list(Xt.feature_names) == list(
        encoder.get_feature_names_out()
    )
    rows = _rows(shop, X)
    education = shop.local_features(rows)[:, 1]
    encoded = Xt.parties[1].local_features(rows)
    np.testing.assert_array_equal(encoded[:, :4], education[:, None] == np.arange(1, 5))
    np.testing.assert_array_equal(encoded[:, 4], shop.local_features(rows)[:, 0])
    _assert_public_only(encoder.transcript_)

    pipe = make_pipeline(_one_hot(), ftl.FederatedLogisticRegression(**LR))
    assert cross_val_score(pipe, X, y, cv=3).mean() > 0.7


def test_per_party_runs_at_every_party_and_on_own_rows(shop_with_education):
    bank, shop = shop_with_education
    X, _ = ftl.align(bank, shop)
    scaler = PerParty(MinMaxScaler(feature_range=(-1, 1))).fit(X)  # a tuple crosses as JSON
    for values in _features(scaler.transform(X)).values():
        np.testing.assert_allclose(values.min(0), -1)
        np.testing.assert_allclose(values.max(0), 1)
    own = PerParty(StandardScaler()).fit(shop.select())  # one party's own rows
    assert own.party_names_ == ["shop"]
    rows = own.transform(shop.select([3, 1]))
    assert rows.party is shop.derived(own.transformer_id_) and list(rows.ids) == [3, 1]
    expected = StandardScaler().fit(shop.raw_features(np.arange(shop.n_rows)))
    np.testing.assert_allclose(
        rows.party.local_features(rows.rows), expected.transform(shop.raw_features(rows.rows))
    )


def test_only_allowlisted_transformers_reach_a_party(shop_with_education):
    bank, shop = shop_with_education
    X, _ = ftl.align(bank, shop)
    with pytest.raises(ValueError, match="only allowlisted scikit-learn transformers.*Function"):
        PerParty(FunctionTransformer(np.log1p)).fit(X)

    # the party refuses on its own, whatever a driver sends
    channel = Channel("bank")
    channel.call(shop.endpoint, "prep.party.open", Message("prep.open", {"transformer_id": "t"}))
    for name in ("sklearn.preprocessing.FunctionTransformer", "os.system", "builtins.eval"):
        spec = {"class": name, "params": {}, "columns": None}
        request = Message(
            "prep.fit",
            {"spec": spec, "alignment": X.alignment.id, "positions": X.positions},
        )
        with pytest.raises(ValueError, match="only allowlisted"):
            channel.call(shop.endpoint, "prep.party.fit", request)
    channel.call(shop.endpoint, "prep.party.close", Message("ack", {}))
    with pytest.raises(ValueError, match="holds no fitted transformer 't'"):
        shop.load_transformer("t")


def test_parameters_must_be_json(shop_with_education):
    bank, shop = shop_with_education
    X, _ = ftl.align(bank, shop)
    with pytest.raises(ValueError, match="'random_state' of QuantileTransformer is a Rand"):
        PerParty(QuantileTransformer(random_state=np.random.RandomState(0))).fit(X)
    with pytest.raises(ValueError, match="cannot cross to a party"):
        PerParty(OneHotEncoder(feature_name_combiner=lambda f, c: f"{f}={c}")).fit(X)
    for bad in (
        {"class": "sklearn.preprocessing.StandardScaler", "params": {"nope": 1}, "columns": None},
        {"class": "sklearn.preprocessing.StandardScaler", "params": {}},
        {
            "class": "sklearn.impute.SimpleImputer",
            "params": {"missing_values": {"__float__": "1e999"}},
            "columns": None,
        },
    ):
        with pytest.raises(ValueError):
            build_transformer(bad)
    for value in [(0, 1), float("nan"), -np.inf, np.float64, [1, (2, 3)], {"a": None}]:
        decoded = decode_param(encode_param(value, "p"), "p")
        assert repr(decoded) == repr(value)


def test_clear_errors_for_mismatched_inputs(shop_with_education, breast):
    bank, shop = shop_with_education
    X, y = ftl.align(bank, shop)
    with pytest.raises(ValueError, match="party 'nobody' is not one of"):
        PerParty(StandardScaler(), party="nobody").fit(X)
    with pytest.raises(ValueError, match=r"party 'shop' has no feature column\(s\) \['age'\]"):
        PerParty(StandardScaler(), party="shop", columns=["age"]).fit(X)
    scaler = FederatedStandardScaler().fit(X)
    with pytest.raises(ValueError, match="fitted over"):
        scaler.transform(breast[0])
    with pytest.raises(ValueError, match="fitted on a data handle"):
        scaler.transform(np.zeros((2, 3)))
    local = FederatedStandardScaler().fit(np.ones((4, 3)))
    with pytest.raises(ValueError, match="fitted on a plain array"):
        local.transform(X)


# --------------------------------------------------------------------------- plain arrays
def test_plain_arrays_behave_like_sklearn():
    rng = np.random.default_rng(0)
    X = rng.normal(size=(30, 4))
    X[rng.random(X.shape) < 0.1] = np.nan
    np.testing.assert_allclose(
        FederatedStandardScaler().fit_transform(X), StandardScaler().fit_transform(X)
    )
    np.testing.assert_allclose(
        FederatedSimpleImputer(strategy="median").fit_transform(X),
        SimpleImputer(strategy="median").fit_transform(X),
    )
    codes = np.column_stack([rng.integers(0, 3, 30), rng.normal(size=30)])
    encoder = PerParty(OneHotEncoder(sparse_output=False), party="ignored", columns=[0])
    reference = ColumnTransformer(
        [("t", OneHotEncoder(sparse_output=False), [0])],
        remainder="passthrough",
        verbose_feature_names_out=False,
    )
    np.testing.assert_allclose(encoder.fit_transform(codes), reference.fit_transform(codes))
    assert list(encoder.get_feature_names_out()) == ["x0_0.0", "x0_1.0", "x0_2.0", "x1"]
    # on local data any transformer may run: there is no party boundary to protect
    PerParty(FunctionTransformer(np.abs)).fit_transform(codes)


# --------------------------------------------------------------------------- transfer
def test_transfer_pipeline_scores_target_rows():
    pipe, data, X = fit_transfer_pipeline(
        n_components=8, hidden_layer_sizes=(8,), pretrain_epochs=5
    )
    scaler = pipe[0]
    # the target fitted on the rows it shares with the source only
    shared = int(np.asarray(X.alignment.overlap).sum())
    assert (
        data.target.load_transformer(scaler.transformer_id_).transformer.n_samples_seen_ == shared
    )
    assert data.source.load_transformer(scaler.transformer_id_).transformer.n_samples_seen_ == len(
        X
    )
    Xt = data.target.select(data.target_only_ids)
    assert scaler.transform(Xt).party is data.target.derived(scaler.transformer_id_)
    proba = pipe.predict_proba(Xt)
    assert proba.shape == (len(data.target_only_ids), 2)
    labels = data.target_labels.loc[data.target_only_ids].to_numpy()
    assert roc_auc_score(labels, proba[:, 1]) > 0.9
    _assert_public_only(scaler.transcript_)


# --------------------------------------------------------------------------- lifetime
def test_expiry_drops_only_transformers_no_model_or_session_needs(shop_with_education):
    """What ``ftl serve`` calls on each peer's view once its session time-out passes."""
    import time

    bank, shop = shop_with_education
    X, y = ftl.align(bank, shop)
    idle = FederatedStandardScaler().fit(X)  # fitted, never used by a model
    pipe = make_pipeline(
        FederatedStandardScaler(), _one_hot(), ftl.FederatedLogisticRegression(**LR)
    ).fit(X, y)  # a chain of two transformers, the model at its end
    first, second = pipe[0].transformer_id_, pipe[1].transformer_id_
    busy = FederatedStandardScaler().fit(X)
    derived = shop.derive(busy.transformer_id_)
    channel = Channel("bank")
    channel.call(derived.endpoint, "prep.party.open", Message("prep.open", {"transformer_id": "b"}))

    assert shop.expire_transformers(ttl=3600.0) == []  # all of them used just now
    later = time.monotonic() + 7200.0
    assert shop.expire_transformers(ttl=3600.0, now=later) == [idle.transformer_id_]
    assert set(shop.transformer_ids()) == {first, busy.transformer_id_}
    assert shop.derived(first).transformer_ids() == [second]  # the model's chain stays
    with pytest.raises(ValueError, match="holds no fitted transformer"):
        idle.transform(X)
    assert pipe.predict(X[:5]).shape == (5,)

    channel.call(derived.endpoint, "prep.party.close", Message("ack", {}))
    much_later = later + 7200.0
    assert shop.expire_transformers(ttl=3600.0, now=much_later) == [busy.transformer_id_]
    assert shop.transformer_ids() == [first]
