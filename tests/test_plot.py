"""ftl.plot: training progress, ROC and transcript-volume plots (Agg backend)."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest
from sklearn.datasets import load_iris
from sklearn.linear_model import LogisticRegression

import ftl
from ftl._report import payload_kind
from ftl.plot import plot_roc, plot_training, plot_transcript
from tests.conftest import SMALL_KEY, pooled

matplotlib = pytest.importorskip("matplotlib")

N_ROWS = 100
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


@pytest.fixture(autouse=True)
def _agg(monkeypatch):
    monkeypatch.setenv("MPLBACKEND", "Agg")


@pytest.fixture(scope="module")
def fitted(breast):
    X, y = breast
    Xs, ys = X[:N_ROWS], y[:N_ROWS]
    clf = ftl.FederatedLogisticRegression(max_iter=3, tol=1e-4, random_state=0, **SMALL_KEY)
    return clf.fit(Xs, ys), Xs, ys


@pytest.fixture(scope="module")
def multiclass():
    X, y = load_iris(return_X_y=True)
    clf = ftl.FederatedLogisticRegression(encryption=None, max_iter=2, random_state=0)
    return clf.fit(X, y)


def _saved(ax, path) -> None:
    ax.figure.savefig(path)
    assert path.read_bytes()[:8] == PNG_MAGIC


def test_import_ftl_does_not_import_matplotlib():
    code = "import sys, ftl, ftl.plot; assert 'matplotlib' not in sys.modules"
    subprocess.run([sys.executable, "-c", code], check=True)


def test_plot_training_with_default_tol_and_adam_tol_line(breast):
    """Every LR left at tol="auto" used to crash (float("auto")); a numeric tol of
    an optimiser that stops on the weight change is drawn."""
    X, y = breast
    Xs, ys = X[:N_ROWS], y[:N_ROWS]
    default = ftl.FederatedLogisticRegression(encryption=None, max_iter=3, random_state=0)
    assert default.tol == "auto"
    assert len(plot_training(default.fit(Xs, ys)).lines) == 1
    adam = ftl.FederatedLogisticRegression(
        encryption=None, optimizer="adam", tol=1e-4, max_iter=3, random_state=0
    )
    ax = plot_training(adam.fit(Xs, ys))
    assert len(ax.lines) == 2  # the model and the tol line
    assert ax.lines[1].get_ydata()[0] == 1e-4


def test_plot_training_one_line_per_model(fitted, multiclass, tmp_path):
    clf, _, _ = fitted
    ax = plot_training(clf)
    assert ax.get_yscale() == "log"
    # L-BFGS stops on the gradient norm: no tol line on the weight-change plot
    assert len(ax.lines) == 1
    xs, ys = ax.lines[0].get_data()
    assert list(xs) == list(range(1, clf.n_iter_[0] + 1))
    np.testing.assert_allclose(ys, [e["relative_change"] for e in clf.history_[0]])
    _saved(ax, tmp_path / "training.png")

    ax = plot_training(multiclass, show_tol=False)
    assert len(ax.lines) == len(multiclass.classes_) == 3
    labels = [t.get_text() for t in ax.get_legend().get_texts()]
    assert labels == [f"class {c} vs rest" for c in multiclass.classes_]
    _saved(ax, tmp_path / "training_ovr.png")


def test_plot_training_draws_the_secure_training_loss_of_a_verbose_fit(breast, fitted):
    X, y = breast
    clf = ftl.FederatedLogisticRegression(
        encryption=None, max_iter=3, random_state=0, verbose=True
    ).fit(X[:N_ROWS], y[:N_ROWS])
    ax = plot_training(clf, metric="loss")
    assert ax.get_yscale() == "linear" and len(ax.lines) == 1
    np.testing.assert_allclose(ax.lines[0].get_data()[1], [e["loss"] for e in clf.history_[0]])
    with pytest.raises(ValueError, match="verbose=True"):
        plot_training(fitted[0], metric="loss")  # fitted without verbose: no loss recorded
    with pytest.raises(ValueError, match="metric"):
        plot_training(clf, metric="auc")


def test_plot_roc_with_baseline(fitted, tmp_path):
    clf, X, y = fitted
    baseline = LogisticRegression(max_iter=1000).fit(pooled(X), y).decision_function(pooled(X))
    ax = plot_roc(clf, X, y, baseline_scores=baseline)
    assert len(ax.lines) == 3  # federated, baseline, chance
    labels = [t.get_text() for t in ax.get_legend().get_texts()]
    assert labels[0].startswith("federated (AUC = ") and "centralized baseline (AUC" in labels[1]
    _saved(ax, tmp_path / "roc.png")

    from matplotlib.figure import Figure

    own = Figure().add_subplot()
    assert plot_roc(clf, X, y, ax=own) is own
    assert len(own.lines) == 2
    with pytest.raises(ValueError, match="shape"):
        plot_roc(clf, X, y, baseline_scores=baseline[:-1])


def test_plot_roc_refuses_multiclass(multiclass):
    X, y = load_iris(return_X_y=True)
    with pytest.raises(ValueError, match="binary"):
        plot_roc(multiclass, X, y)


def test_plot_transcript_bars_by_type_and_kind(fitted, multiclass, tmp_path):
    clf, _, _ = fitted
    transcript = clf.transcript_
    types = {r.type for r in transcript}
    ax = plot_transcript(clf)
    assert len(ax.patches) == len(types)
    assert [t.get_text() for t in ax.get_yticklabels()] == list(
        dict.fromkeys(r.type for r in transcript)
    )
    legend = {t.get_text() for t in ax.get_legend().get_texts()}
    assert {"ciphertext", "masked", "public"} <= legend and "plaintext" not in legend
    widths = sum(p.get_width() for p in ax.patches)
    assert widths == transcript.total_bytes
    _saved(ax, tmp_path / "transcript.png")

    # a transcript mixing a secure and a plaintext run: lr.* types get two segments
    mixed = ftl.Transcript()
    mixed.extend(transcript)
    mixed.extend(multiclass.transcript_)
    path = mixed.to_jsonl(tmp_path / "mixed.jsonl")
    ax = plot_transcript(path, log=False)
    assert ax.get_xscale() == "linear"
    pairs = {(r.type, payload_kind(r)) for r in mixed}
    assert len(ax.patches) == len(pairs) > len({r.type for r in mixed})
    _saved(ax, tmp_path / "mixed.png")


def test_plots_for_the_transfer_model():
    import ftl

    data = ftl.datasets.load_breast_transfer()
    X, y = ftl.align(data.source, data.target, how="left")
    clf = ftl.FederatedTransferClassifier(encryption=None, random_state=0, max_iter=4)
    clf.fit(X, y)
    ax = ftl.plot.plot_training(clf)
    assert len(ax.lines) == 2  # the model's line and the tol line
    test = data.target.select(data.target_only_ids)
    labels = data.target_labels.loc[data.target_only_ids].to_numpy()
    ftl.plot.plot_roc(clf, test, labels)
    ftl.plot.plot_transcript(clf)


def test_plot_split_importance_shows_the_guests_features_and_each_host(breast, tmp_path):
    X, y = breast
    clf = ftl.ensemble.FederatedGradientBoostingClassifier(
        encryption=None, max_iter=5, random_state=0
    ).fit(X, y)
    guest, host = X.parties
    ax = ftl.plot.plot_split_importance(clf)
    assert len(ax.patches) == guest.n_features + 1
    widths = np.array([p.get_width() for p in ax.patches])
    # the guest's features, largest gain first, then the host's total
    np.testing.assert_allclose(widths[:-1], np.sort(clf.split_gains_)[::-1])
    all_gains = sum(t.gain[~t.is_leaf].sum() for it in clf.trees_ for t in it)
    np.testing.assert_allclose(widths.sum(), all_gains)
    labels = [t.get_text() for t in ax.get_yticklabels()]
    assert labels[-1] == f"{host.name} (all its features)"
    assert set(labels[:-1]) == set(X.feature_names[: guest.n_features])
    assert ax.texts[0].get_text() == f"{clf.party_split_counts_[host.name]} splits"
    _saved(ax, tmp_path / "split_gains.png")

    ax = ftl.plot.plot_split_importance(clf, kind="count")
    counts = [p.get_width() for p in ax.patches]
    assert counts[-1] == clf.party_split_counts_[host.name] > 0
    assert sorted(counts[:-1], reverse=True) == counts[:-1]
    assert sum(counts[:-1]) == clf.split_counts_.sum() == clf.party_split_counts_[guest.name]
    with pytest.raises(ValueError, match="kind"):
        ftl.plot.plot_split_importance(clf, kind="weight")


def test_plot_split_importance_of_a_simulated_federation_with_two_hosts():
    from sklearn.exceptions import NotFittedError

    rng = np.random.default_rng(0)
    X = rng.normal(size=(300, 6))
    y = X @ np.arange(1.0, 7.0) + rng.normal(size=300)
    reg = ftl.ensemble.FederatedGradientBoostingRegressor(
        encryption=None, max_iter=5, simulated_hosts=2, random_state=0
    )
    with pytest.raises(NotFittedError):
        ftl.plot.plot_split_importance(reg)
    ax = ftl.plot.plot_split_importance(reg.fit(X, y), kind="count")
    n_guest = reg.split_counts_.shape[0]
    labels = [t.get_text() for t in ax.get_yticklabels()]
    assert len(labels) == n_guest + 2 and all(label.startswith("x") for label in labels[:n_guest])
    hosts = list(reg.party_split_counts_)[1:]
    assert [p.get_width() for p in ax.patches[n_guest:]] == [
        reg.party_split_counts_[h] for h in hosts
    ]
