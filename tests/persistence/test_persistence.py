"""Saving and loading fitted federated models: one file per party, no pickle."""

from __future__ import annotations

import json
import os
import stat
import sys

import numpy as np
import pytest

import ftl
from ftl.crypto.scheme import PaillierOwnKey, PlainOwnKey
from ftl.federation.json_forms import key_from_json as _key_from_json
from ftl.federation.json_forms import key_to_json as _key_to_json
from ftl.persistence import MODEL_VERSION, SHARD_VERSION
from tests.conftest import SMALL_KEY, aligned_by_id
from tests.persistence._round_trip import (
    assert_each_change_refused,
    assert_same_scores,
    rewrite,
)

FAST = dict(max_iter=3, random_state=0)


def _fit(params, labels=None, n_rows=200):
    """Fit on the first rows (by id) of freshly loaded breast-cancer parties."""
    guest, host = ftl.datasets.load_breast_cancer()
    X, y = aligned_by_id(guest, host)
    y = y if labels is None else labels[y]
    clf = ftl.FederatedLogisticRegression(**params).fit(X[:n_rows], y[:n_rows])
    return clf, X, host


def _save_all(clf, host, tmp_path):
    """The guest saves its file; the host exports each of its shards."""
    guest_file = ftl.save_model(clf, tmp_path / "guest.json")
    shard_files = [
        host.export_model(m["model_id"], tmp_path / f"lab-{k}.json")
        for k, m in enumerate(clf.models_)
    ]
    return guest_file, shard_files


def _restart(guest_file, shard_files):
    """New parties from the same data, re-aligned; each reloads only its own file."""
    guest, host = ftl.datasets.load_breast_cancer()
    imported = [host.import_model(f) for f in shard_files]
    clf = ftl.load_model(guest_file)
    X, _ = aligned_by_id(guest, host)
    return clf, X, host, imported


@pytest.mark.parametrize(
    "params",
    [dict(encryption=None, **FAST), dict(**SMALL_KEY, **FAST)],
    ids=["plaintext", "paillier-512"],
)
def test_round_trip_identical_predictions(tmp_path, params):
    clf, X, host = _fit(params)
    expected = clf.predict_proba(X)
    guest_file, shard_files = _save_all(clf, host, tmp_path)

    clf2, X2, host2, imported = _restart(guest_file, shard_files)
    assert imported == [m["model_id"] for m in clf.models_]
    assert host2.model_ids() == imported
    np.testing.assert_array_equal(X2.ids, X.ids)
    assert_same_scores(clf2.predict_proba(X2), expected, params, atol=1e-9)
    np.testing.assert_array_equal(clf2.predict(X2), clf.predict(X))

    # the fitted attributes and parameters came back exactly
    np.testing.assert_array_equal(clf2.coef_, clf.coef_)
    np.testing.assert_array_equal(clf2.intercept_, clf.intercept_)
    np.testing.assert_array_equal(clf2.classes_, clf.classes_)
    assert clf2.classes_.dtype == clf.classes_.dtype
    np.testing.assert_array_equal(clf2.n_iter_, clf.n_iter_)
    np.testing.assert_array_equal(clf2.feature_names_in_, clf.feature_names_in_)
    assert clf2.n_features_in_ == clf.n_features_in_
    assert clf2.party_names_ == clf.party_names_
    assert clf2.history_ == clf.history_
    assert clf2.get_params() == clf.get_params()
    # prediction messages of the reloaded model are recorded in a fresh transcript
    assert len(clf2.transcript_) > 0

    # the host's shard, key pair included, is the one it trained with
    for model in clf.models_:
        old, new = host.load_model(model["model_id"]), host2.load_model(model["model_id"])
        np.testing.assert_array_equal(new["coef"], old["coef"])
        assert type(new["own_key"]) is type(old["own_key"])
        assert new["own_key"].public() == old["own_key"].public()


def test_guest_file_holds_no_host_secret(tmp_path):
    clf, _, host = _fit(dict(**SMALL_KEY, **FAST))
    guest_file, (shard_file,) = _save_all(clf, host, tmp_path)
    text = guest_file.read_text()
    shard = host.load_model(clf.models_[0]["model_id"])
    key = shard["own_key"]

    doc = json.loads(text)
    assert (doc["format"], doc["version"]) == ("ftl-model", MODEL_VERSION)
    assert doc["estimator"] == "FederatedLogisticRegression"
    assert str(key.n) in text  # the host's public key is there ...
    assert str(key.private_key.p) not in text  # ... its private key is not
    assert str(key.private_key.q) not in text
    for w in shard["coef"]:
        assert repr(float(w)) not in text  # nor its weights
    # the guest's own block is there (shortest round-trip repr, so exact)
    assert repr(float(clf.coef_[0, 0])) in text
    assert "own_key" not in text and '"p"' not in text and '"q"' not in text

    # the host's file holds its own key pair and weights, and nothing of the guest's
    shard_text = shard_file.read_text()
    shard_doc = json.loads(shard_text)
    assert (shard_doc["format"], shard_doc["version"]) == ("ftl-model-shard", SHARD_VERSION)
    assert shard_doc["own_key"]["p"] == str(key.private_key.p)
    assert repr(float(clf.coef_[0, 0])) not in shard_text
    assert repr(float(clf.intercept_[0])) not in shard_text


@pytest.mark.skipif(sys.platform == "win32", reason="POSIX file modes")
def test_files_are_owner_only(tmp_path):
    clf, _, host = _fit(dict(encryption=None, **FAST))
    existing = tmp_path / "lab-0.json"
    existing.write_text("old")
    existing.chmod(0o644)  # an existing, world-readable file is replaced, not reused
    guest_file, (shard_file,) = _save_all(clf, host, tmp_path)
    assert shard_file == existing
    for path in (guest_file, shard_file):
        assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    assert sorted(p.name for p in tmp_path.iterdir()) == ["guest.json", "lab-0.json"]


def test_multiclass_and_string_labels_round_trip(tmp_path):
    # strings as labels
    labels = np.array(["malignant", "benign"])
    clf, X, host = _fit(dict(encryption=None, **FAST), labels=labels)
    assert clf.classes_.dtype.kind == "U"
    expected = clf.predict(X)
    guest_file, shard_files = _save_all(clf, host, tmp_path)
    clf2, X2, _, _ = _restart(guest_file, shard_files)
    assert clf2.classes_.dtype == clf.classes_.dtype
    np.testing.assert_array_equal(clf2.predict(X2), expected)

    guest, host = ftl.datasets.load_breast_cancer()
    X, y = aligned_by_id(guest, host)
    y3 = np.where(y == 1, 2, 0)
    y3[::5] = 1  # three classes: one binary model, and one shard per host, each
    clf = ftl.FederatedLogisticRegression(encryption=None, **FAST).fit(X, y3)
    assert len(clf.models_) == 3
    expected = clf.predict_proba(X)
    guest_file, shard_files = _save_all(clf, host, tmp_path)
    clf2, X2, _, imported = _restart(guest_file, shard_files)
    assert len(set(imported)) == 3
    np.testing.assert_array_equal(clf2.predict_proba(X2), expected)


def _assert_other_versions_and_formats_refused(save_driver_file, export_shard, party):
    """A driver's file and a shard file (each written afresh by the given function) of
    another version are refused, naming both versions, and so is each given to the
    other's reader, naming both formats; ``party`` imports the shards."""
    with pytest.raises(ValueError, match=r"version 99.*reads only version 1"):
        ftl.load_model(rewrite(save_driver_file(), lambda d: d.update(version=99)))
    with pytest.raises(ValueError, match=r"version 0.*reads only version 1"):
        party.import_model(rewrite(export_shard(), lambda d: d.update(version=0)))
    with pytest.raises(ValueError, match=r"'ftl-model-shard', expected 'ftl-model'"):
        ftl.load_model(export_shard())
    with pytest.raises(ValueError, match=r"'ftl-model', expected 'ftl-model-shard'"):
        party.import_model(save_driver_file())


def test_version_and_format_mismatch(tmp_path):
    clf, _, host = _fit(dict(encryption=None, **FAST))
    _, fresh_host = ftl.datasets.load_breast_cancer()
    _assert_other_versions_and_formats_refused(
        lambda: ftl.save_model(clf, tmp_path / "guest.json"),
        lambda: host.export_model(clf.models_[0]["model_id"], tmp_path / "lab-0.json"),
        fresh_host,
    )


def test_corrupted_files(tmp_path):
    clf, _, host = _fit(dict(encryption=None, **FAST))
    guest_file, (shard_file,) = _save_all(clf, host, tmp_path)
    text = guest_file.read_text()

    guest_file.write_text(text[: len(text) // 2])
    with pytest.raises(ValueError, match="corrupted JSON"):
        ftl.load_model(guest_file)
    guest_file.write_bytes(b"\xff\xfe\x00garbage")
    with pytest.raises(ValueError, match="not a valid ftl-model file"):
        ftl.load_model(guest_file)
    guest_file.write_text("[1, 2]")
    with pytest.raises(ValueError, match="expected a JSON object"):
        ftl.load_model(guest_file)

    guest_file.write_text(text)
    assert_each_change_refused(
        guest_file,
        ftl.load_model,
        [
            (lambda d: d["attributes"]["coef_"]["data"].pop(), "coef_"),
            (lambda d: d["attributes"].pop("models_"), "corrupted"),
            (lambda d: d.update(estimator="os.system"), "unknown estimator"),
            (lambda d: d["params"].update(C=-1), "invalid parameters"),
        ],
    )

    _, fresh_host = ftl.datasets.load_breast_cancer()
    shard_text = shard_file.read_text()
    shard_file.write_text(shard_text[:-10])
    with pytest.raises(ValueError, match="corrupted JSON"):
        fresh_host.import_model(shard_file)
    shard_file.write_text(shard_text)
    assert_each_change_refused(
        shard_file,
        fresh_host.import_model,
        [(lambda d: d["coef"]["data"].__setitem__(0, "not a number"), "coef")],
    )
    assert fresh_host.model_ids() == []


def test_missing_or_wrong_shard_fails_at_predict(tmp_path):
    clf, _, host = _fit(dict(encryption=None, **FAST))
    other, _, other_host = _fit(dict(encryption=None, max_iter=1, random_state=1))
    guest_file = ftl.save_model(clf, tmp_path / "guest.json")
    other_shard = other_host.export_model(other.models_[0]["model_id"], tmp_path / "other.json")
    loaded = ftl.load_model(guest_file)
    model_id = clf.models_[0]["model_id"]

    # the host restarted without importing its shard
    guest, fresh_host = ftl.datasets.load_breast_cancer()
    X, _ = aligned_by_id(guest, fresh_host)
    with pytest.raises(ValueError, match=f"party 'lab' holds no model '{model_id}'"):
        loaded.predict(X)

    # it imported the shard of another model
    assert fresh_host.import_model(other_shard) == other.models_[0]["model_id"]
    with pytest.raises(ValueError, match=f"holds no model '{model_id}'"):
        loaded.predict(X)

    # exporting an unknown model id fails at once
    with pytest.raises(ValueError, match="holds no model 'nope'"):
        fresh_host.export_model("nope", tmp_path / "nope.json")


def test_shard_of_another_party_is_refused(tmp_path):
    clf, _, host = _fit(dict(encryption=None, **FAST))
    shard_file = host.export_model(clf.models_[0]["model_id"], tmp_path / "lab.json")
    impostor = ftl.Party("shop", np.zeros((3, 20)), ids=[1, 2, 3])
    with pytest.raises(ValueError, match="shard of party 'lab'.*into party 'shop'"):
        impostor.import_model(shard_file)
    narrow = ftl.Party("lab", np.zeros((3, 2)), ids=[1, 2, 3])
    with pytest.raises(ValueError, match="2 features"):
        narrow.import_model(shard_file)


def test_simulated_federation_is_refused(tmp_path):
    rng = np.random.default_rng(0)
    X = rng.normal(size=(80, 4))
    y = (X[:, 0] + X[:, 3] > 0).astype(int)
    clf = ftl.FederatedLogisticRegression(encryption=None, max_iter=2).fit(X, y)
    with pytest.raises(ValueError, match="simulated federation"):
        ftl.save_model(clf, tmp_path / "m.json")
    assert not (tmp_path / "m.json").exists()


def test_unfitted_and_unsupported_are_refused(tmp_path):
    from sklearn.exceptions import NotFittedError
    from sklearn.linear_model import LogisticRegression

    with pytest.raises(NotFittedError):
        ftl.save_model(ftl.FederatedLogisticRegression(), tmp_path / "m.json")
    with pytest.raises(TypeError, match="cannot save a LogisticRegression"):
        ftl.save_model(LogisticRegression(), tmp_path / "m.json")


def test_non_json_params_are_listed_not_saved(tmp_path):
    guest, host = ftl.datasets.load_breast_cancer()
    X, y = aligned_by_id(guest, host)
    clf = ftl.FederatedLogisticRegression(
        encryption=None, max_iter=2, random_state=np.random.RandomState(0)
    ).fit(X[:100], y[:100])
    path = ftl.save_model(clf, tmp_path / "m.json")
    assert json.loads(path.read_text())["unsaved_params"] == ["random_state"]
    assert ftl.load_model(path).random_state is None


def test_plain_key_round_trip():
    key = _key_from_json(_key_to_json(PlainOwnKey()), insecure=False, n_jobs=None)
    assert isinstance(key, PlainOwnKey)


def test_default_size_key_round_trip():
    """The one test on a real (2048-bit) key: the rebuilt pair encrypts and decrypts."""
    key = PaillierOwnKey(2048)
    saved = _key_to_json(key)
    assert json.loads(json.dumps(saved)) == saved
    rebuilt = _key_from_json(saved, insecure=False, n_jobs=None)
    assert rebuilt.public() == key.public()
    assert rebuilt.width == key.width
    values = np.array([0.25, -3.5, 1e-6])
    np.testing.assert_allclose(key.decrypt_values(rebuilt.encrypt(values), 32), values, atol=1e-9)
    np.testing.assert_allclose(rebuilt.decrypt_values(key.encrypt(values), 32), values, atol=1e-9)

    # parts that do not belong together are refused
    bad = dict(saved, q=str(int(saved["q"]) + 2))
    with pytest.raises(ValueError, match="does not match"):
        _key_from_json(bad, insecure=False, n_jobs=None)
    with pytest.raises(ValueError, match="key id"):
        _key_from_json(dict(saved, key_id="0" * 16), insecure=False, n_jobs=None)
    small = _key_to_json(PaillierOwnKey(512, insecure_for_tests=True))
    with pytest.raises(ValueError, match="below 2048"):
        _key_from_json(small, insecure=False, n_jobs=None)


# ---------------------------------------------------------------- transfer learning
TRANSFER = dict(max_iter=2, n_components=4, hidden_layer_sizes=(4,), random_state=0)


def _fit_transfer(**params):
    """Fit on freshly loaded transfer parties; returns the model, the target, the data."""
    data = ftl.datasets.load_breast_transfer()
    X, y = ftl.align(data.source, data.target, how="left")
    clf = ftl.FederatedTransferClassifier(**{**TRANSFER, **params}).fit(X, y)
    return clf, data.target, data


def _save_transfer(clf, target, tmp_path):
    """The source saves its file, the target exports its shard."""
    source_file = ftl.save_model(clf, tmp_path / "source.json")
    shard_file = target.export_model(clf.model_id_, tmp_path / "target.json")
    return source_file, shard_file


@pytest.mark.parametrize(
    "params",
    [dict(encryption=None), dict(**SMALL_KEY), dict(encryption=None, hidden_layer_sizes=())],
    ids=["plaintext", "paillier-512", "no-hidden"],
)
def test_transfer_round_trip_identical_predictions(tmp_path, params):
    clf, target, data = _fit_transfer(**params)
    ids = data.target_only_ids
    expected = clf.predict_proba(target.select(ids))
    X, _ = ftl.align(data.source, data.target, how="left")
    expected_aligned = clf.predict_proba(X)
    source_file, shard_file = _save_transfer(clf, target, tmp_path)

    # new processes: fresh parties from the same data, each reloads only its own file
    fresh = ftl.datasets.load_breast_transfer()
    assert fresh.target.import_model(shard_file) == clf.model_id_
    assert fresh.target.model_ids() == [clf.model_id_]
    clf2 = ftl.load_model(source_file, estimator=ftl.FederatedTransferClassifier)
    assert type(clf2) is ftl.FederatedTransferClassifier
    assert_same_scores(clf2.predict_proba(fresh.target.select(ids)), expected, params, atol=1e-9)
    np.testing.assert_array_equal(
        clf2.predict(fresh.target.select(ids)), clf.predict(target.select(ids))
    )
    # re-aligned (PSI's order is fresh each run): same rows by id, same scores
    X2, _ = ftl.align(fresh.source, fresh.target, how="left")
    position = {i: k for k, i in enumerate(X2.ids)}
    X2 = X2[np.array([position[i] for i in X.ids])]
    np.testing.assert_allclose(clf2.predict_proba(X2), expected_aligned, rtol=0, atol=1e-9)
    assert len(clf2.transcript_) > 0  # prediction messages, in a fresh transcript

    # the fitted attributes and parameters came back exactly
    np.testing.assert_array_equal(clf2.classes_, clf.classes_)
    np.testing.assert_array_equal(clf2.prototypes_, clf.prototypes_)
    np.testing.assert_array_equal(clf2._source_model["output"], clf._source_model["output"])
    assert clf2._source_model["hidden"] == clf._source_model["hidden"]
    assert clf2.model_id_ == clf.model_id_
    assert clf2.n_iter_ == clf.n_iter_ and isinstance(clf2.n_iter_, int)
    assert clf2.history_ == clf.history_
    assert clf2.party_names_ == clf.party_names_
    assert clf2.n_features_in_ == clf.n_features_in_
    np.testing.assert_array_equal(clf2.feature_names_in_, clf.feature_names_in_)
    assert clf2.get_params() == clf.get_params()
    assert isinstance(clf2.hidden_layer_sizes, tuple)
    assert clf2._simulated is None
    # the target's shard is the one it trained with
    assert fresh.target.load_model(clf.model_id_) == target.load_model(clf.model_id_)


def test_transfer_files_hold_only_their_own_party(tmp_path):
    clf, target, _ = _fit_transfer(**SMALL_KEY)
    source_file, shard_file = _save_transfer(clf, target, tmp_path)
    shard = target.load_model(clf.model_id_)

    text = source_file.read_text()
    doc = json.loads(text)
    assert (doc["format"], doc["version"]) == ("ftl-model", MODEL_VERSION)
    assert (doc["estimator"], doc["role"]) == ("FederatedTransferClassifier", "source")
    for row in shard["output"]:
        for w in row:
            assert repr(float(w)) not in text  # no weight of the target's
    assert repr(float(clf._source_model["output"][0][0])) in text  # the source's own
    assert repr(float(clf.prototypes_[0, 0])) in text

    shard_text = shard_file.read_text()
    shard_doc = json.loads(shard_text)
    assert (shard_doc["format"], shard_doc["version"]) == ("ftl-model-shard", SHARD_VERSION)
    assert (shard_doc["kind"], shard_doc["role"], shard_doc["party"]) == (
        "ftl.target",
        "target",
        "lab",
    )
    assert "own_key" not in shard_doc and '"p"' not in shard_text  # the shard has no key
    assert repr(float(clf._source_model["output"][0][0])) not in shard_text
    assert repr(float(clf.prototypes_[0, 0])) not in shard_text
    if sys.platform != "win32":
        for path in (source_file, shard_file):
            assert stat.S_IMODE(os.stat(path).st_mode) == 0o600


def test_transfer_version_and_estimator_mismatch(tmp_path):
    clf, target, _ = _fit_transfer(encryption=None)
    source_file, shard_file = _save_transfer(clf, target, tmp_path)
    lr, _, host = _fit(dict(encryption=None, **FAST))
    lr_file = ftl.save_model(lr, tmp_path / "guest.json")

    # a file of the other estimator, where a specific one is expected
    with pytest.raises(ValueError, match="holds a FederatedTransferClassifier model, expected"):
        ftl.load_model(source_file, estimator=ftl.FederatedLogisticRegression)
    with pytest.raises(ValueError, match="holds a FederatedLogisticRegression model, expected"):
        ftl.load_model(lr_file, estimator=ftl.FederatedTransferClassifier)
    assert isinstance(ftl.load_model(lr_file), ftl.FederatedLogisticRegression)
    # a transfer file relabelled as the other estimator (and vice versa)
    doc = json.loads(source_file.read_text())
    doc["estimator"] = "FederatedLogisticRegression"
    source_file.write_text(json.dumps(doc))
    with pytest.raises(ValueError, match="role 'source' in a FederatedLogisticRegression file"):
        ftl.load_model(source_file)
    doc["role"] = "guest"
    source_file.write_text(json.dumps(doc))
    with pytest.raises(ValueError, match=r"unknown parameters \[.*\] for FederatedLogistic"):
        ftl.load_model(source_file)
    doc = json.loads(lr_file.read_text())
    doc.update(estimator="FederatedTransferClassifier", role="source")
    lr_file.write_text(json.dumps(doc))
    with pytest.raises(ValueError, match=r"unknown parameters \[.*\] for FederatedTransfer"):
        ftl.load_model(lr_file)
    for key in list(doc["params"]):  # keep the parameter names both estimators have
        if key not in ftl.FederatedTransferClassifier().get_params():
            del doc["params"][key]
    lr_file.write_text(json.dumps(doc))
    with pytest.raises(ValueError, match="The 'optimizer' parameter of FederatedTransfer"):
        ftl.load_model(lr_file)  # "lbfgs" (the LR default) is no transfer optimiser
    doc["params"].update(optimizer="adam", tol=1e-2)  # values valid for both
    lr_file.write_text(json.dumps(doc))
    with pytest.raises(ValueError, match="logistic-regression attributes in a transfer file"):
        ftl.load_model(lr_file)

    fresh = ftl.datasets.load_breast_transfer()
    _assert_other_versions_and_formats_refused(
        lambda: ftl.save_model(clf, tmp_path / "source.json"),
        lambda: target.export_model(clf.model_id_, tmp_path / "target.json"),
        fresh.target,
    )
    # a transfer shard that claims to be a logistic-regression host's
    rewrite(shard_file, lambda d: d.update(role="host"))
    with pytest.raises(ValueError, match="role 'host' in a shard of kind 'ftl.target'"):
        fresh.target.import_model(shard_file)
    assert fresh.target.model_ids() == []


def test_transfer_corrupted_or_mismatched_files(tmp_path):
    clf, target, _ = _fit_transfer(encryption=None)
    source_file, shard_file = _save_transfer(clf, target, tmp_path)
    shard_text = shard_file.read_text()

    def three_prototype_values(doc):
        prototypes = doc["attributes"]["prototypes_"]
        prototypes.update(shape=[1, 3], data=prototypes["data"][:3])

    assert_each_change_refused(
        source_file,
        ftl.load_model,
        [
            (three_prototype_values, "do not fit together"),
            (lambda d: d["params"].update(hidden_layer_sizes=[5]), "do not fit together"),
            (lambda d: d["attributes"].update(n_iter_=[2]), "n_iter_"),
            (lambda d: d["attributes"].pop("source_model"), "corrupted"),
        ],
    )

    fresh = ftl.datasets.load_breast_transfer()
    assert_each_change_refused(
        shard_file,
        fresh.target.import_model,
        [
            # 20 values, but not (n_components, hidden + 1)
            (lambda d: d["output"].update(shape=[5, 4]), "output layer has shape"),
            (lambda d: d["hidden"].update(activation="os.system"), "activation"),
            (
                lambda d: d.update(own_key={"scheme": "plain"}),
                "exactly hidden, output, has_hidden",
            ),
        ],
    )
    assert fresh.target.model_ids() == []
    # a shard of the right party name but other features
    shard_file.write_text(shard_text)
    narrow = ftl.Party("lab", np.zeros((3, 2)), ids=[1, 2, 3])
    with pytest.raises(ValueError, match="layer 0 has shape"):
        narrow.import_model(shard_file)

    # a shard that holds something the file format does not know is not silently cut
    target.store_model("extra", {**target.load_model(clf.model_id_), "scaler": [1.0]})
    with pytest.raises(ValueError, match=r"cannot save transfer shard field\(s\) \['scaler'\]"):
        target.export_model("extra", tmp_path / "extra.json")


@pytest.mark.filterwarnings("ignore::sklearn.exceptions.ConvergenceWarning")
def test_transfer_missing_shard_and_simulated_fit(tmp_path):
    clf, target, data = _fit_transfer(encryption=None)
    loaded = ftl.load_model(ftl.save_model(clf, tmp_path / "source.json"))
    fresh = ftl.datasets.load_breast_transfer()  # the target did not import its shard
    with pytest.raises(ValueError, match=f"party 'lab' holds no model '{clf.model_id_}'"):
        loaded.predict(fresh.target.select(data.target_only_ids[:5]))

    rng = np.random.default_rng(0)
    X = rng.normal(size=(60, 4))
    y = (X[:, 0] + X[:, 3] > 0).astype(int)
    sim = ftl.FederatedTransferClassifier(**{**TRANSFER, "encryption": None}).fit(X, y)
    with pytest.raises(ValueError, match="simulated federation"):
        ftl.save_model(sim, tmp_path / "sim.json")
    assert not (tmp_path / "sim.json").exists()


def test_saved_history_keeps_the_secure_epoch_loss(tmp_path):
    guest, host = ftl.datasets.load_breast_cancer()
    X, y = ftl.align(guest, host, order="id")
    clf = ftl.FederatedLogisticRegression(encryption=None, max_iter=2, verbose=True).fit(X, y)
    ftl.save_model(clf, tmp_path / "guest.json")
    assert ftl.load_model(tmp_path / "guest.json").history_ == clf.history_
    assert "loss" in clf.history_[0][0]
