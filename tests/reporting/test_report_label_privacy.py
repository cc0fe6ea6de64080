"""The report says whether logistic regression and the regressors trained with label
privacy, with its epsilon and noise (docs/protocols.md §3.12, §5.2).

Whether the guest used it is its own knowledge: nothing in the messages shows it,
so the report of a fitted or reloaded estimator states it in its summary and the
report of a bare transcript says that it cannot.
"""

from __future__ import annotations

import numpy as np
import pytest

import ftl
from ftl.cli import main
from ftl.linear_model import FederatedLinearRegression, FederatedPoissonRegressor
from tests.persistence._round_trip import rewrite

FAST = dict(encryption=None, max_iter=2)


def _summary_row(text: str, item: str) -> str:
    """The value of a summary row of a Markdown report."""
    (row,) = [line for line in text.splitlines() if line.startswith(f"| {item} |")]
    return row.split(" | ", 1)[1].removesuffix(" |")


@pytest.fixture(scope="module")
def student():
    return ftl.align(*ftl.datasets.load_student(), order="id")


@pytest.mark.parametrize(
    "epsilon, said",
    [
        (None, "off"),
        (1.0, "on, ε = 1: randomized response (true class kept with probability 0.731)"),
        (0.5, "on, ε = 0.5: randomized response (true class kept with probability 0.622)"),
    ],
)
def test_logistic_regression_report_says_its_label_privacy(breast, epsilon, said):
    X, y = breast
    clf = ftl.FederatedLogisticRegression(**FAST, label_privacy=epsilon).fit(X[:200], y[:200])
    assert _summary_row(ftl.report(clf), "Label privacy") == said
    assert f"<tr><td>Label privacy</td><td>{said}</td></tr>" in ftl.report(clf, format="html")


def test_four_classes_keep_the_true_class_less_often(vehicle):
    X, y = vehicle
    clf = ftl.FederatedLogisticRegression(**FAST, label_privacy=1.0).fit(X, y)
    e = np.exp(1.0)
    assert f"probability {e / (e + 3):.3f})" in _summary_row(ftl.report(clf), "Label privacy")


def test_regressor_report_says_epsilon_range_and_noise(student):
    X, y = student
    given = FederatedLinearRegression(**FAST, label_privacy=2.0, label_range=(0, 20)).fit(X, y)
    assert _summary_row(ftl.report(given), "Label privacy") == (
        "on, ε = 2: Laplace noise of scale 10 on the targets clipped to [0, 20]"
    )
    taken = FederatedLinearRegression(**FAST, label_privacy=2.0).fit(X, y)
    low, high = y.min(), y.max()
    assert _summary_row(ftl.report(taken), "Label privacy") == (
        f"on, ε = 2: Laplace noise of scale {(high - low) / 2:.4g} on the targets clipped to "
        f"[{low:.4g}, {high:.4g}] (the training targets' minimum and maximum, treated as public)"
    )
    off = FederatedLinearRegression(**FAST).fit(X, y)
    assert _summary_row(ftl.report(off), "Label privacy") == "off"


def test_poisson_report_names_link_and_label_privacy():
    X, y = ftl.align(*ftl.datasets.load_dvisits(), order="id")
    # a small scale: at a larger one the noisy counts of dvisits may sum to below 0
    reg = FederatedPoissonRegressor(**FAST, label_privacy=8.0, label_range=(0, 9)).fit(X, y)
    text = ftl.report(reg)
    assert _summary_row(text, "Link").startswith("log: Poisson regression")
    assert _summary_row(text, "Label privacy") == (
        "on, ε = 8: Laplace noise of scale 1.125 on the targets clipped to [0, 9]"
    )


def test_reloaded_models_report_it_too(tmp_path, student):
    X, y = student
    reg = FederatedLinearRegression(**FAST, label_privacy=2.0).fit(X, y)
    path = ftl.save_model(reg, tmp_path / "guest.json")
    said = _summary_row(ftl.report(reg), "Label privacy")
    assert _summary_row(ftl.report(ftl.load_model(path)), "Label privacy") == said
    # a file of the previous version kept no range taken from the targets
    rewrite(path, lambda doc: doc["attributes"].pop("label_privacy_"))
    assert _summary_row(ftl.report(ftl.load_model(path)), "Label privacy") == (
        "on, ε = 2: Laplace noise on the clipped targets (range not recorded)"
    )


def test_a_transcript_does_not_tell(tmp_path, capsys, breast):
    """``ftl report <transcript>``: no summary row, and the label leakage says where
    label privacy is shown instead."""
    X, y = breast
    clf = ftl.FederatedLogisticRegression(**FAST, label_privacy=1.0).fit(X[:200], y[:200])
    path = clf.transcript_.to_jsonl(tmp_path / "t.jsonl")
    assert main(["report", str(path)]) == 0
    text = capsys.readouterr().out
    assert "| Label privacy |" not in text
    (labels,) = [line for line in text.splitlines() if "| Labels to every host" in line]
    assert "Only `label_privacy=ε` bounds what a host learns of each label" in labels
    assert "a transcript does not record it" in labels
