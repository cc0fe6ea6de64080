"""FederatedLinearRegression and FederatedPoissonRegressor against scikit-learn on
the pooled columns of the bundled regression data (issue 18): exact links, so the
federated model is scikit-learn's model."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.linear_model import PoissonRegressor, Ridge
from sklearn.metrics import mean_poisson_deviance
from sklearn.model_selection import cross_val_score
from sklearn.pipeline import Pipeline

import ftl
from ftl.linear_model import FederatedLinearRegression, FederatedPoissonRegressor
from tests.conftest import SMALL_KEY, pooled


def _full_coef(reg, X) -> np.ndarray:
    """All parties' weights (a simulation's driver can read the hosts' shards)."""
    model_id = reg.models_[0]["model_id"]
    return np.concatenate([reg.coef_, *[h.load_model(model_id)["coef"] for h in X.alignment.hosts]])


@pytest.mark.parametrize(
    "load", [ftl.datasets.load_motor, lambda: ftl.datasets.load_motor(2), ftl.datasets.load_student]
)
def test_linear_regression_equals_ridge_on_pooled_columns(load):
    X, y = ftl.align(*load(), order="id")
    reg = FederatedLinearRegression(alpha=1.0, encryption=None).fit(X, y)
    ridge = Ridge(alpha=1.0).fit(pooled(X), y)
    coef = _full_coef(reg, X)
    assert np.linalg.norm(coef - ridge.coef_) <= 1e-6 * np.linalg.norm(ridge.coef_)
    assert reg.intercept_ == pytest.approx(ridge.intercept_, abs=1e-6 * max(1, abs(y).max()))
    assert reg.score(X, y) == pytest.approx(ridge.score(pooled(X), y), abs=1e-8)


def test_poisson_regression_reaches_pooled_deviance_on_dvisits():
    X, y = ftl.align(*ftl.datasets.load_dvisits(), order="id")
    reg = FederatedPoissonRegressor(alpha=1.0, encryption=None).fit(X, y)
    sk = PoissonRegressor(alpha=1.0, max_iter=1000).fit(pooled(X), y)
    ours = mean_poisson_deviance(y, reg.predict(X))
    theirs = mean_poisson_deviance(y, sk.predict(pooled(X)))
    assert ours <= theirs * 1.005  # the bound; in fact equal to ~1e-5
    assert ours == pytest.approx(theirs, rel=1e-4)
    assert reg.score(X, y) == pytest.approx(sk.score(pooled(X), y), abs=1e-4)


def test_encrypted_fits_equal_plaintext_to_fixed_point_precision():
    X, y = ftl.align(*ftl.datasets.load_motor(), order="id")
    X, y = X[:300], y[:300]
    plain = FederatedLinearRegression(encryption=None, max_iter=8).fit(X, y)
    enc = FederatedLinearRegression(max_iter=8, **SMALL_KEY).fit(X, y)
    np.testing.assert_allclose(enc.predict(X), plain.predict(X), atol=1e-5)
    counts = np.minimum(np.round(np.exp(0.5 * pooled(X)[:, 0])), 9)
    plain = FederatedPoissonRegressor(encryption=None, max_iter=6).fit(X, counts)
    enc = FederatedPoissonRegressor(max_iter=6, **SMALL_KEY).fit(X, counts)
    np.testing.assert_allclose(enc.predict(X), plain.predict(X), rtol=1e-5)
    # what crossed: the hosts' exp(u_H) and the guest's columns, encrypted
    kinds = enc.transcript_.messages_by_kind()
    assert "plaintext" not in kinds and kinds.get("ciphertext", 0) > 0


@pytest.mark.slow
def test_linear_regression_on_the_default_key_size():
    X, y = ftl.align(*ftl.datasets.load_student(), order="id")
    plain = FederatedLinearRegression(encryption=None, max_iter=5).fit(X, y)
    enc = FederatedLinearRegression(max_iter=5, n_jobs=2).fit(X, y)
    np.testing.assert_allclose(enc.predict(X), plain.predict(X), atol=1e-5)


def test_poisson_needs_one_host_and_counts():
    X, y = ftl.align(*ftl.datasets.load_motor(2), order="id")
    with pytest.raises(ValueError, match="exactly one host"):
        FederatedPoissonRegressor(encryption=None).fit(X, np.abs(y))
    X, y = ftl.align(*ftl.datasets.load_motor(), order="id")
    with pytest.raises(ValueError, match="negative"):
        FederatedPoissonRegressor(encryption=None).fit(X, y)


def test_regressors_in_pipelines_and_cross_validation():
    X, y = ftl.align(*ftl.datasets.load_student(), order="id")
    pipe = Pipeline(
        [
            ("scale", ftl.preprocessing.FederatedStandardScaler()),
            ("reg", FederatedLinearRegression(encryption=None)),
        ]
    )
    scores = cross_val_score(pipe, X, y, cv=3)
    assert scores.shape == (3,) and np.isfinite(scores).all()
    scores = cross_val_score(FederatedPoissonRegressor(encryption=None), X, y, cv=3)
    assert np.isfinite(scores).all()


def test_regressors_persist_per_party(tmp_path):
    guest, host = ftl.datasets.load_dvisits()
    X, y = ftl.align(guest, host, order="id")
    reg = FederatedPoissonRegressor(encryption=None).fit(X, y)
    ftl.save_model(reg, tmp_path / "guest.json")
    host.export_model(reg.models_[0]["model_id"], tmp_path / "host.json")
    loaded = ftl.load_model(tmp_path / "guest.json")
    assert type(loaded) is FederatedPoissonRegressor
    np.testing.assert_allclose(loaded.predict(X), reg.predict(X))


def test_report_names_the_link():
    X, y = ftl.align(*ftl.datasets.load_motor(), order="id")
    reg = FederatedLinearRegression(encryption=None, max_iter=3).fit(X, y)
    text = ftl.report(reg)
    assert "identity: linear (ridge) regression, exact" in text
    assert "lr.contribution" in text


def test_classifiers_refuse_continuous_labels_and_warn_on_many_classes():
    X, y = ftl.align(*ftl.datasets.load_motor(), order="id")
    for clf in (
        ftl.FederatedLogisticRegression(encryption=None),
        ftl.FederatedTransferClassifier(encryption=None),
    ):
        with pytest.raises(ValueError, match="Unknown label type: continuous.*FederatedLinear"):
            clf.fit(X, y)
    X, y = ftl.align(*ftl.datasets.load_student(), order="id")
    grades = np.unique(y)
    assert len(grades) > 10
    with pytest.warns(UserWarning, match=rf"{len(grades)} classes .*{len(grades)} binary models"):
        ftl.FederatedLogisticRegression(encryption=None, max_iter=1).fit(X, y)
