"""Saving fitted pipelines with per-party preprocessing: one file per party, no pickle.

The fitted transformers stay with the parties that fitted them and are saved by
them (a JSON codec over an allowlist); the guest's pipeline file holds only ids,
parameters and names. After every party reloads its own file, predictions are
those of the saved pipeline.
"""

from __future__ import annotations

import json
import os
import stat
import sys

import numpy as np
import pandas as pd
import pytest
from sklearn.impute import SimpleImputer
from sklearn.pipeline import Pipeline, make_pipeline
from sklearn.preprocessing import MinMaxScaler, OneHotEncoder, StandardScaler

import ftl
from ftl.persistence import (
    PARTY_VERSION,
    PIPELINE_VERSION,
    TRANSFORMER_VERSION,
    export_party,
    import_party,
)
from ftl.preprocessing import FederatedSimpleImputer, FederatedStandardScaler, PerParty
from ftl.preprocessing._spec import build_transformer, transformer_spec
from ftl.preprocessing.party import FittedTransform
from tests.conftest import SMALL_KEY, fit_transfer_pipeline
from tests.persistence._round_trip import assert_same_scores, rewrite

LR = dict(encryption=None, max_iter=5, random_state=0)


# --------------------------------------------------------------------------- data
@pytest.fixture
def education_frames():
    """A bank (labels, one feature) and a shop with a categorical and a gappy column."""
    rng = np.random.default_rng(2)
    n = 150
    ids = np.arange(n)
    education = rng.integers(1, 5, size=n).astype(float)
    income = rng.normal(size=n)
    x = rng.normal(size=n)
    y = ((education >= 3) + x + rng.normal(scale=0.5, size=n) > 1).astype(int)
    income[rng.choice(n, 12, replace=False)] = np.nan
    bank = pd.DataFrame({"id": ids, "x": x, "y": y})
    shop = pd.DataFrame({"id": ids[::-1], "income": income[::-1], "education": education[::-1]})
    return bank, shop


def _parties(frames):
    """Fresh Party objects from the same frames: a new process, as far as ftl can tell."""
    bank, shop = frames
    return (
        ftl.Party("bank", bank, id_column="id", label_column="y"),
        ftl.Party("shop", shop, id_column="id", allow_missing=True),
    )


def _save_everything(pipe, parties, folder):
    guest_file = ftl.save_model(pipe, folder / "pipeline.json")
    files = {p.name: export_party(p, pipe, folder / f"{p.name}.json") for p in parties}
    return guest_file, files


def _reload_everything(guest_file, files, parties):
    imported = {p.name: import_party(p, files[p.name]) for p in parties}
    return ftl.load_model(guest_file), imported


def _breast_pipeline(*transformers, params=LR, n_rows=None):
    """``transformers`` then a logistic regression, fitted on the first ``n_rows``
    (by id) of freshly loaded breast-cancer parties; the pipeline, the parties, X."""
    guest, host = ftl.datasets.load_breast_cancer()
    X, y = ftl.align(guest, host, order="id")
    pipe = make_pipeline(*transformers, ftl.FederatedLogisticRegression(**params))
    pipe.fit(X[:n_rows], y[:n_rows])
    return pipe, (guest, host), X


# --------------------------------------------------------------------------- end to end
@pytest.mark.parametrize(
    "params", [dict(LR), dict(max_iter=3, random_state=0, **SMALL_KEY)], ids=["plain", "paillier"]
)
def test_scaled_pipeline_round_trip(tmp_path, params):
    pipe, parties, X = _breast_pipeline(FederatedStandardScaler(), params=params, n_rows=300)
    expected = pipe.decision_function(X)
    guest_file, files = _save_everything(pipe, parties, tmp_path)

    guest2, host2 = ftl.datasets.load_breast_cancer()
    pipe2, imported = _reload_everything(guest_file, files, (guest2, host2))
    scaler_id = pipe[0].transformer_id_
    assert imported["hospital"] == {"transformer_ids": [scaler_id], "model_ids": []}
    assert imported["lab"] == {
        "transformer_ids": [scaler_id],
        "model_ids": [pipe[-1].models_[0]["model_id"]],
    }
    assert isinstance(pipe2, Pipeline) and [n for n, _ in pipe2.steps] == [n for n, _ in pipe.steps]
    assert pipe2.get_params(deep=False).keys() == pipe.get_params(deep=False).keys()
    assert pipe2[0].get_params() == pipe[0].get_params()

    X2, _ = ftl.align(guest2, host2, order="id")
    np.testing.assert_array_equal(X2.ids, X.ids)
    assert_same_scores(pipe2.decision_function(X2), expected, params, atol=1e-6)
    np.testing.assert_array_equal(pipe2.predict(X2), pipe.predict(X))
    # the reloaded guest file kept only public metadata of the scaler
    assert pipe2[0].party_feature_names_out_ == pipe[0].party_feature_names_out_
    assert list(pipe2[0].get_feature_names_out()) == list(pipe[0].get_feature_names_out())
    assert len(pipe2[0].transcript_) > 0  # it ran the protocol again, at the parties


def test_guest_pipeline_file_holds_no_statistic_of_any_party(tmp_path):
    pipe, (guest, host), _ = _breast_pipeline(FederatedStandardScaler())
    guest_file, files = _save_everything(pipe, (guest, host), tmp_path)
    doc = json.loads(guest_file.read_text())
    assert (doc["format"], doc["version"]) == ("ftl-pipeline", PIPELINE_VERSION)
    assert doc["estimator"]["model"]["format"] == "ftl-model"
    text = guest_file.read_text()
    for party in (guest, host):
        scaler = party.load_transformer(pipe[0].transformer_id_).transformer
        for value in (*scaler.mean_, *scaler.scale_):
            assert repr(float(value)) not in text

    # each party's file holds its own statistics and nothing of the other party's
    host_doc = json.loads(files["lab"].read_text())
    assert (host_doc["format"], host_doc["version"]) == ("ftl-party", PARTY_VERSION)
    (transformer,) = host_doc["transformers"]
    assert (transformer["format"], transformer["version"]) == (
        "ftl-transformer",
        TRANSFORMER_VERSION,
    )
    assert transformer["party"] == "lab" and transformer["input_names"] == host.feature_names
    host_text = files["lab"].read_text()
    guest_scaler = guest.load_transformer(pipe[0].transformer_id_).transformer
    assert repr(float(guest_scaler.mean_[0])) not in host_text
    assert repr(float(pipe[-1].coef_[0, 0])) not in host_text
    guest_text = files["hospital"].read_text()
    assert json.loads(guest_text)["models"] == []  # the guest's weights are in its model file
    host_scaler = host.load_transformer(pipe[0].transformer_id_).transformer
    assert repr(float(host_scaler.mean_[0])) not in guest_text
    for text in (host_text, guest_text, guest_file.read_text()):
        assert "pickle" not in text and "__reduce__" not in text


@pytest.mark.skipif(sys.platform == "win32", reason="POSIX file modes")
def test_party_and_transformer_files_are_owner_only(tmp_path):
    pipe, (guest, host), _ = _breast_pipeline(FederatedStandardScaler())
    guest_file, files = _save_everything(pipe, (guest, host), tmp_path)
    single = host.export_transformer(pipe[0].transformer_id_, tmp_path / "t.json")
    for path in (guest_file, single, *files.values()):
        assert stat.S_IMODE(os.stat(path).st_mode) == 0o600


def test_one_hot_imputer_and_scaler_chain_round_trip(tmp_path, education_frames):
    bank, shop = _parties(education_frames)
    X, y = ftl.align(bank, shop, order="id")
    pipe = Pipeline(
        [
            ("impute", FederatedSimpleImputer(strategy="median")),
            (
                "encode",
                PerParty(
                    OneHotEncoder(sparse_output=False, handle_unknown="ignore"),
                    party="shop",
                    columns=["education"],
                ),
            ),
            ("skip", "passthrough"),
            ("scale", FederatedStandardScaler()),
            ("clf", ftl.FederatedLogisticRegression(**LR)),
        ]
    ).fit(X[:100], y[:100])
    expected = pipe.decision_function(X)
    guest_file, files = _save_everything(pipe, (bank, shop), tmp_path)
    # bank: imputer and scaler (the encoder ran at the shop only); shop: all three
    chains = {name: json.loads(f.read_text())["transformers"] for name, f in files.items()}
    assert [t["transformer_id"] for t in chains["bank"]] == [
        pipe["impute"].transformer_id_,
        pipe["scale"].transformer_id_,
    ]
    assert [t["transformer_id"] for t in chains["shop"]] == [
        pipe[name].transformer_id_ for name in ("impute", "encode", "scale")
    ]
    assert chains["shop"][1]["input_names"] == ["income", "education"]

    bank2, shop2 = _parties(education_frames)
    pipe2, _ = _reload_everything(guest_file, files, (bank2, shop2))
    assert pipe2["skip"] == "passthrough"
    assert pipe2["encode"].get_params()["transformer"].get_params() == (
        pipe["encode"].transformer.get_params()
    )
    X2, _ = ftl.align(bank2, shop2, order="id")
    np.testing.assert_array_equal(pipe2.decision_function(X2), expected)
    # the chain at the shop is rebuilt: party.derive(t1).derive(t2).derive(t3)
    ids = [pipe[name].transformer_id_ for name in ("impute", "encode", "scale")]
    derived = shop2.derive(ids[0]).derive(ids[1]).derive(ids[2])
    assert derived.model_ids() == [pipe[-1].models_[0]["model_id"]]
    assert list(pipe2[:-1].get_feature_names_out()) == list(pipe[:-1].get_feature_names_out())


def test_transfer_pipeline_round_trip(tmp_path):
    pipe, data, _ = fit_transfer_pipeline(n_components=4, hidden_layer_sizes=(4,), max_iter=3)
    ids = data.target_only_ids
    expected = pipe.predict_proba(data.target.select(ids))
    guest_file, files = _save_everything(pipe, (data.source, data.target), tmp_path)
    (shard,) = json.loads(files[data.target.name].read_text())["models"]
    assert shard["kind"] == "ftl.target"

    data2 = ftl.datasets.load_breast_transfer()
    pipe2, _ = _reload_everything(guest_file, files, (data2.source, data2.target))
    got = pipe2.predict_proba(data2.target.select(ids))
    np.testing.assert_array_equal(got, expected)


# --------------------------------------------------------------------------- one transformer
def test_export_and_import_one_transformer_then_a_shard(tmp_path, education_frames):
    bank, shop = _parties(education_frames)
    X, y = ftl.align(bank, shop, order="id")
    pipe = make_pipeline(FederatedSimpleImputer(), ftl.FederatedLogisticRegression(**LR)).fit(X, y)
    expected = pipe.decision_function(X)
    tid = pipe[0].transformer_id_
    model_id = pipe[-1].models_[0]["model_id"]
    assert shop.transformer_ids() == [tid]
    files = {p.name: p.export_transformer(tid, tmp_path / f"{p.name}-t.json") for p in (bank, shop)}
    shard = shop.derive(tid).export_model(model_id, tmp_path / "shop-model.json")
    ftl.save_model(pipe, tmp_path / "pipe.json")

    bank2, shop2 = _parties(education_frames)
    assert bank2.import_transformer(files["bank"]) == tid
    assert shop2.import_transformer(files["shop"]) == tid
    with pytest.raises(ValueError, match="holds no model"):
        shop2.load_model(model_id)  # the shard belongs to the derived party
    assert shop2.derive(tid).import_model(shard) == model_id
    rows = np.arange(shop.n_rows)
    np.testing.assert_array_equal(
        shop2.derive(tid).local_features(rows), shop.derive(tid).local_features(rows)
    )
    X2, _ = ftl.align(bank2, shop2, order="id")
    pipe2 = ftl.load_model(tmp_path / "pipe.json")
    np.testing.assert_array_equal(pipe2.decision_function(X2), expected)

    with pytest.raises(ValueError, match="already holds transformer"):
        shop2.import_transformer(files["shop"])
    with pytest.raises(ValueError, match="holds a transformer of party 'shop'"):
        _parties(education_frames)[0].import_transformer(files["shop"])
    with pytest.raises(ValueError, match="holds no fitted transformer"):
        shop2.export_transformer("nope", tmp_path / "x.json")
    rewrite(files["bank"], lambda d: d.update(version=TRANSFORMER_VERSION + 1))
    with pytest.raises(ValueError, match="ftl-transformer version 2, but .* reads only version 1"):
        _parties(education_frames)[0].import_transformer(files["bank"])


def test_transformer_of_other_columns_is_refused(tmp_path, education_frames):
    bank, shop = _parties(education_frames)
    X, _ = ftl.align(bank, shop)
    scaler = FederatedStandardScaler().fit(X)
    path = shop.export_transformer(scaler.transformer_id_, tmp_path / "shop.json")
    frame = education_frames[1].rename(columns={"education": "degree"})
    renamed = ftl.Party("shop", frame, id_column="id", allow_missing=True)
    with pytest.raises(ValueError, match="takes the features .* has the columns"):
        renamed.import_transformer(path)
    reordered = ftl.Party(
        "shop",
        education_frames[1][["id", "education", "income"]],
        id_column="id",
        allow_missing=True,
    )
    with pytest.raises(ValueError, match="takes the features"):
        reordered.import_transformer(path)


def _legacy_fit(transformer, columns, features, names):
    """A transformer as ftl before positional names fitted it: on the real column names,
    publishing scikit-learn's names (an encoder's categories in them)."""
    built = build_transformer(transformer_spec(transformer, columns))
    built.fit(pd.DataFrame(features, columns=names))
    raw = [str(c) for c in built.get_feature_names_out()]
    return FittedTransform(built, names, raw)


def test_transformer_files_of_the_previous_version_still_load(tmp_path, education_frames):
    """Files written before positional names (same format version) load, transform as
    before, and publish positional names; a transformer chained after one of them,
    fitted on its old names, loads too."""
    _, shop = _parties(education_frames)
    rows = np.arange(shop.n_rows)
    encode = OneHotEncoder(sparse_output=False, handle_unknown="ignore")
    first = _legacy_fit(encode, ["education"], shop.raw_features(rows), shop.feature_names)
    assert "education_1.0" in first.feature_names_out  # what the old names said
    shop.store_transformer("old1", first)
    derived = shop.derive("old1")
    second = _legacy_fit(
        SimpleImputer(), None, derived.raw_features(rows), list(first.feature_names_out)
    )
    derived.store_transformer("old2", second)
    paths = [
        shop.export_transformer("old1", tmp_path / "t1.json"),
        derived.export_transformer("old2", tmp_path / "t2.json"),
    ]
    text = paths[0].read_text()
    assert '"education_1.0"' in text  # a file as the old version wrote it

    _, fresh = _parties(education_frames)
    assert fresh.import_transformer(paths[0]) == "old1"
    view = fresh.derive("old1")
    assert view.feature_names == [f"education_{k}" for k in range(4)] + ["income"]
    assert view.import_transformer(paths[1]) == "old2"
    chained = view.derive("old2")
    assert chained.feature_names == view.feature_names
    np.testing.assert_array_equal(
        chained.raw_features(rows), shop.derive("old1").derive("old2").raw_features(rows)
    )
    # written again, the file carries the positional names and loads once more
    again = view.export_transformer("old2", tmp_path / "t2-again.json")
    assert "education_1.0" not in json.loads(again.read_text())["feature_names_out"]
    _, fresh2 = _parties(education_frames)
    fresh2.import_transformer(paths[0])
    assert fresh2.derive("old1").import_transformer(again) == "old2"


# --------------------------------------------------------------------------- refusals
@pytest.fixture
def saved(tmp_path):
    pipe, parties, _ = _breast_pipeline(FederatedStandardScaler(), PerParty(MinMaxScaler()))
    guest_file, files = _save_everything(pipe, parties, tmp_path)
    return pipe, guest_file, files


def test_version_mismatch_is_refused(saved, tmp_path):
    _, guest_file, files = saved
    rewrite(files["lab"], lambda d: d.update(version=PARTY_VERSION + 1))
    _, host = ftl.datasets.load_breast_cancer()
    with pytest.raises(ValueError, match=r"ftl-party version 2, but .* reads only version 1"):
        import_party(host, files["lab"])
    rewrite(files["hospital"], lambda d: d["transformers"][0].update(version=99))
    guest, _ = ftl.datasets.load_breast_cancer()
    with pytest.raises(ValueError, match=r"transformer 0\) is ftl-transformer version 99"):
        import_party(guest, files["hospital"])
    assert guest.transformer_ids() == []
    rewrite(guest_file, lambda d: d.update(version=PIPELINE_VERSION + 1))
    with pytest.raises(ValueError, match="ftl-pipeline version 2"):
        ftl.load_model(guest_file)


def test_format_mix_ups_are_named(saved):
    pipe, guest_file, files = saved
    guest, host = ftl.datasets.load_breast_cancer()
    with pytest.raises(ValueError, match="format 'ftl-party'.*import_party"):
        host.import_model(files["lab"])
    with pytest.raises(ValueError, match="format 'ftl-party'.*import_party"):
        ftl.load_model(files["lab"])
    with pytest.raises(ValueError, match="format 'ftl-pipeline'.*load_model"):
        import_party(host, guest_file)
    with pytest.raises(ValueError, match="format 'ftl-party'.*import_transformer|expected"):
        host.import_transformer(files["lab"])
    with pytest.raises(ValueError, match="holds a pipeline, expected a FederatedLogistic"):
        ftl.load_model(guest_file, estimator=ftl.FederatedLogisticRegression)
    assert isinstance(ftl.load_model(guest_file, estimator=Pipeline), Pipeline)


def test_file_of_another_party_is_refused(saved):
    _, _, files = saved
    guest, host = ftl.datasets.load_breast_cancer()
    with pytest.raises(ValueError, match="file of party 'hospital'.*into party 'lab'"):
        import_party(host, files["hospital"])
    rewrite(files["lab"], lambda d: d.update(party="hospital"))
    with pytest.raises(ValueError, match=r"transformer 0\) holds a transformer of party 'lab'"):
        import_party(guest, files["lab"])
    assert guest.transformer_ids() == []


def test_tampered_class_name_is_refused_and_nothing_is_kept(saved):
    _, guest_file, files = saved

    def tamper(doc):  # the second transformer: PerParty(MinMaxScaler) at the lab
        doc["transformers"][1]["transformer"]["spec"]["class"] = "sklearn.pipeline.Pipeline"

    rewrite(files["lab"], tamper)
    _, host = ftl.datasets.load_breast_cancer()
    with pytest.raises(ValueError, match="only allowlisted"):
        import_party(host, files["lab"])
    assert host.transformer_ids() == [] and host.model_ids() == []  # all or nothing

    def tamper_step(doc):
        step = doc["steps"][1]["params"]["transformer"]
        step["class"] = "sklearn.preprocessing.FunctionTransformer"

    rewrite(guest_file, tamper_step)
    with pytest.raises(ValueError, match="only allowlisted"):
        ftl.load_model(guest_file)
    rewrite(guest_file, lambda d: d["steps"][0].update({"class": "os.system"}))
    with pytest.raises(ValueError, match="unknown step class 'os.system'"):
        ftl.load_model(guest_file)


def test_corrupted_files_are_refused(saved):
    pipe, guest_file, files = saved
    _, host = ftl.datasets.load_breast_cancer()
    rewrite(files["lab"], lambda d: d["transformers"][0]["transformer"]["state"].pop("mean_"))
    with pytest.raises(ValueError, match="corrupted or invalid"):
        import_party(host, files["lab"])
    assert host.transformer_ids() == []

    def drop_feature(doc):
        doc["steps"][1]["attributes"]["feature_names_in_"].pop()
        doc["steps"][1]["attributes"]["n_features_in_"] -= 1

    rewrite(guest_file, drop_feature)
    with pytest.raises(ValueError, match="takes other features than it is given"):
        ftl.load_model(guest_file)
    guest_file.write_text("{not json")
    with pytest.raises(ValueError, match="corrupted JSON"):
        ftl.load_model(guest_file)


def test_unsaveable_pipelines_are_refused(tmp_path, education_frames):
    bank, shop = _parties(education_frames)
    X, y = ftl.align(bank, shop)
    local = make_pipeline(StandardScaler(), ftl.FederatedLogisticRegression(**LR))
    local.fit(np.random.default_rng(0).normal(size=(40, 4)), np.arange(40) % 2)
    with pytest.raises(TypeError, match="cannot save pipeline step 'standardscaler'"):
        ftl.save_model(local, tmp_path / "x.json")
    simulated = make_pipeline(FederatedStandardScaler(), ftl.FederatedLogisticRegression(**LR))
    simulated.fit(np.random.default_rng(0).normal(size=(40, 4)), np.arange(40) % 2)
    with pytest.raises(ValueError, match="simulated federation"):
        ftl.save_model(simulated, tmp_path / "x.json")
    with pytest.raises(ValueError, match="simulated federation"):
        export_party(bank, simulated, tmp_path / "x.json")

    pipe = make_pipeline(FederatedSimpleImputer(), ftl.FederatedLogisticRegression(**LR)).fit(X, y)
    stranger = ftl.Party("stranger", education_frames[1], id_column="id", allow_missing=True)
    with pytest.raises(ValueError, match="'stranger' is not one of the model's parties"):
        export_party(stranger, pipe, tmp_path / "x.json")
    fresh_shop = _parties(education_frames)[1]  # never fitted anything
    with pytest.raises(ValueError, match="holds no fitted transformer"):
        export_party(fresh_shop, pipe, tmp_path / "x.json")
