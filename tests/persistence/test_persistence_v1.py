"""Model files written by the previous version of ftl still load and predict alike.

``tests/fixtures/persistence_v1/`` holds files written once by the code before the
protocol registry (commit c537791: estimator encoding inside ``ftl.persistence``),
with the predictions that code made (``expected.json``): a logistic regression
with Paillier (512-bit test key) and one with three classes in plaintext, a
transfer model, and a preprocessing pipeline with every party's file. Each
party reloads only its own file into parties rebuilt from the bundled data.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

import ftl
from ftl.persistence import export_party, import_party
from tests.conftest import aligned_by_id

DATA = Path(__file__).resolve().parents[1] / "fixtures" / "persistence_v1"
EXPECTED = json.loads((DATA / "expected.json").read_text())


def _first_rows(X, name):
    ids = EXPECTED[name]["ids"]
    assert [str(i) for i in X.ids[: len(ids)]] == ids  # the same rows as when saved
    return X[: len(ids)]


def test_logistic_regression_files_load(tmp_path):
    guest, host = ftl.datasets.load_breast_cancer()
    model_id = host.import_model(DATA / "lr_host.json")
    clf = ftl.load_model(DATA / "lr_guest.json", estimator=ftl.FederatedLogisticRegression)
    assert clf.models_[0]["model_id"] == model_id
    X, _ = aligned_by_id(guest, host)
    proba = clf.predict_proba(_first_rows(X, "lr"))[:, 1]
    np.testing.assert_allclose(proba, EXPECTED["lr"]["proba"], rtol=0, atol=1e-9)
    # and what this version writes reads back the same
    ftl.save_model(clf, tmp_path / "guest.json")
    again = ftl.load_model(tmp_path / "guest.json")
    np.testing.assert_array_equal(again.coef_, clf.coef_)


def test_multiclass_logistic_regression_files_load():
    guest, host = ftl.datasets.load_vehicle()
    ids = [host.import_model(DATA / f"lr3_host_{k}.json") for k in range(4)]
    clf = ftl.load_model(DATA / "lr3_guest.json")
    assert [m["model_id"] for m in clf.models_] == ids
    X, _ = aligned_by_id(guest, host)
    proba = clf.predict_proba(_first_rows(X, "lr3"))
    np.testing.assert_array_equal(proba, EXPECTED["lr3"]["proba"])


def test_logistic_regression_files_load_without_label_privacy():
    """Written before ``label_privacy_`` was saved, by fits without label privacy."""
    for name in ("lr_guest.json", "lr3_guest.json"):
        assert ftl.load_model(DATA / name).label_privacy_ is None


def test_transfer_files_load():
    data = ftl.datasets.load_breast_transfer()
    data.target.import_model(DATA / "transfer_target.json")
    clf = ftl.load_model(DATA / "transfer_source.json", estimator=ftl.FederatedTransferClassifier)
    ids = np.asarray([int(i) for i in EXPECTED["transfer"]["ids"]])
    proba = clf.predict_proba(data.target.select(ids))[:, 1]
    np.testing.assert_array_equal(proba, EXPECTED["transfer"]["proba"])


def test_pipeline_files_load(tmp_path):
    guest, host = ftl.datasets.load_breast_cancer()
    for party in (guest, host):
        import_party(party, DATA / f"pipeline_{party.name}.json")
    pipe = ftl.load_model(DATA / "pipeline.json")
    X, _ = aligned_by_id(guest, host)
    proba = pipe.predict_proba(_first_rows(X, "pipeline"))[:, 1]
    np.testing.assert_array_equal(proba, EXPECTED["pipeline"]["proba"])
    # the parties' files this version writes import again
    export_party(host, pipe, tmp_path / "lab.json")
    assert import_party(ftl.datasets.load_breast_cancer()[1], tmp_path / "lab.json")


@pytest.mark.parametrize(
    "name, reader",
    [
        ("lr_guest.json", ftl.load_model),
        ("lr_host.json", lambda path: ftl.datasets.load_breast_cancer()[1].import_model(path)),
        ("pipeline.json", ftl.load_model),
        (
            "pipeline_lab.json",
            lambda path: import_party(ftl.datasets.load_breast_cancer()[1], path),
        ),
    ],
)
def test_a_file_of_another_version_names_it(tmp_path, name, reader):
    doc = json.loads((DATA / name).read_text())
    doc["version"] = 7
    path = tmp_path / name
    path.write_text(json.dumps(doc))
    with pytest.raises(
        ValueError, match=rf"{doc['format']} version 7, but .* reads only version 1"
    ):
        reader(path)


def test_a_file_of_an_unknown_format_names_it(tmp_path):
    path = tmp_path / "model.json"
    shutil.copy(DATA / "lr_guest.json", path)
    doc = json.loads(path.read_text())
    doc["format"] = "ftl-model-v9"
    path.write_text(json.dumps(doc))
    with pytest.raises(ValueError, match="has format 'ftl-model-v9', expected 'ftl-model'"):
        ftl.load_model(path)
