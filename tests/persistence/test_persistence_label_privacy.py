"""Whether, and how, a model was trained with label privacy is saved with it.

``label_privacy_`` (epsilon and the randomized response of logistic regression;
epsilon, the clipping range and the Laplace scale of the regressors) is part of
the guest's file, so that a reloaded model's privacy report still says it. Files
written before it was saved load with what the parameters determine of it.
"""

from __future__ import annotations

import numpy as np
import pytest

import ftl
from ftl.linear_model import FederatedLinearRegression, FederatedPoissonRegressor
from tests.persistence._round_trip import assert_each_change_refused, rewrite

FAST = dict(encryption=None, max_iter=2)

#: Each estimator with the bundled data it fits: breast (binary), vehicle (four
#: classes), student grades (ridge) and doctor visits (Poisson).
CASES = {
    "logistic": (ftl.FederatedLogisticRegression, ftl.datasets.load_breast_cancer),
    "logistic-4-classes": (ftl.FederatedLogisticRegression, ftl.datasets.load_vehicle),
    "ridge": (FederatedLinearRegression, ftl.datasets.load_student),
    "poisson": (FederatedPoissonRegressor, ftl.datasets.load_dvisits),
}


def _fit(case, **params):
    cls, load = CASES[case]
    X, y = ftl.align(*load(), order="id")
    return cls(**FAST, **params).fit(X, y)


def _drop_label_privacy(doc):
    """A file as the previous version wrote it: no ``label_privacy_``."""
    del doc["attributes"]["label_privacy_"]


@pytest.mark.parametrize("case", list(CASES))
@pytest.mark.parametrize("epsilon", [None, 4.0], ids=["off", "eps-4"])
def test_label_privacy_round_trips(tmp_path, case, epsilon):
    """epsilon = 4: at a much smaller one dvisits' noisy counts may sum to below 0,
    which no Poisson model fits."""
    est = _fit(case, label_privacy=epsilon)
    loaded = ftl.load_model(ftl.save_model(est, tmp_path / "guest.json"))
    assert loaded.label_privacy_ == est.label_privacy_
    if epsilon is None:
        assert loaded.label_privacy_ is None
    else:
        assert loaded.label_privacy_["epsilon"] == epsilon
        assert all(value is not None for value in loaded.label_privacy_.values())


def test_the_range_taken_from_the_targets_is_kept(tmp_path):
    """Without ``label_range`` the range is the training targets' minimum and
    maximum: the parameters alone cannot tell it."""
    X, y = ftl.align(*ftl.datasets.load_student(), order="id")
    reg = FederatedLinearRegression(**FAST, label_privacy=2.0).fit(X, y)
    path = ftl.save_model(reg, tmp_path / "guest.json")
    loaded = ftl.load_model(path)
    assert loaded.label_privacy_["range"] == (float(y.min()), float(y.max()))
    assert loaded.label_privacy_["scale"] == pytest.approx((y.max() - y.min()) / 2.0)
    # a file of the previous version: epsilon only
    older = ftl.load_model(rewrite(path, _drop_label_privacy))
    assert older.label_privacy_ == {"epsilon": 2.0, "range": None, "scale": None}


@pytest.mark.parametrize("case", ["logistic-4-classes", "ridge"])
def test_files_without_it_load_with_what_the_parameters_determine(tmp_path, case):
    params = {"label_privacy": 1.0}
    if case == "ridge":
        params["label_range"] = (0, 20)
    est = _fit(case, **params)
    path = rewrite(ftl.save_model(est, tmp_path / "guest.json"), _drop_label_privacy)
    loaded = ftl.load_model(path)
    if case == "ridge":
        assert (
            loaded.label_privacy_
            == est.label_privacy_
            == {
                "epsilon": 1.0,
                "range": (0.0, 20.0),
                "scale": 20.0,
            }
        )
    else:  # the keep probability follows from epsilon and the 4 classes; not what changed
        e = np.exp(1.0)
        assert loaded.label_privacy_ == {
            "epsilon": 1.0,
            "keep_probability": pytest.approx(e / (e + 3)),
            "changed": None,
        }
    # saved again, it reads back the same
    again = ftl.load_model(ftl.save_model(loaded, tmp_path / "again.json"))
    assert again.label_privacy_ == loaded.label_privacy_


def test_corrupted_label_privacy_is_refused(tmp_path):
    path = ftl.save_model(_fit("ridge", label_privacy=1.0), tmp_path / "guest.json")

    def attrs(change):
        return lambda doc: change(doc["attributes"]["label_privacy_"])

    assert_each_change_refused(
        path,
        ftl.load_model,
        [
            (attrs(lambda lp: lp.pop("scale")), "label_privacy_ must have the fields"),
            (attrs(lambda lp: lp.update(changed=0.2)), "label_privacy_ must have the fields"),
            (attrs(lambda lp: lp.update(range=[1.0])), "range must be two numbers"),
            (attrs(lambda lp: lp.update(epsilon=-1.0)), "epsilon must be positive"),
            (attrs(lambda lp: lp.update(epsilon=None)), "epsilon must be positive"),
            (attrs(lambda lp: lp.update(scale="wide")), "invalid float"),
            (
                lambda doc: doc["attributes"].update(label_privacy_=[1.0]),
                "label_privacy_ must have the fields",
            ),
        ],
    )
