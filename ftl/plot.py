"""Plotting helpers: training progress, ROC curves, transcript volume and where a
boosted model splits.

matplotlib is imported inside the functions, so ``import ftl`` does not need it
(install it with ``pip install 'ftl[plot]'``).
Figures are created with :class:`matplotlib.figure.Figure`, never through
pyplot's global state, so the helpers are safe with any backend (including
Agg on a server) and never call ``show``. Every function returns the Axes it
drew on; save it with ``ax.figure.savefig(path)``.
"""

from __future__ import annotations

import numbers
from typing import TYPE_CHECKING, Any

import numpy as np

from ftl.reporting import KIND_ORDER, as_transcript, human_bytes, payload_kind

if TYPE_CHECKING:
    from matplotlib.axes import Axes

__all__ = ["plot_roc", "plot_split_importance", "plot_training", "plot_transcript"]

#: Colour of each value kind in :func:`plot_transcript`.
KIND_COLORS = {
    "plaintext": "#d62728",
    "ciphertext": "#2ca02c",
    "masked": "#1f77b4",
    "own_result": "#9467bd",
    "public": "#7f7f7f",
    "none": "#c7c7c7",
}


def _new_axes(ax: Axes | None, figsize: tuple[float, float]) -> Axes:
    """``ax`` itself, or the Axes of a new pyplot-free figure."""
    if ax is not None:
        return ax
    try:
        from matplotlib.figure import Figure
    except ImportError as exc:  # pragma: no cover - depends on the environment
        raise ImportError(
            "ftl.plot needs matplotlib: pip install 'ftl[plot]' (or pip install matplotlib)"
        ) from exc
    fig = Figure(figsize=figsize, layout="constrained")
    return fig.add_subplot()


def _label_bar_ends(ax: Axes, positions, ends, texts) -> None:
    """Write ``texts`` just right of the ends of horizontal bars."""
    for pos, end, text in zip(positions, ends, texts, strict=True):
        ax.annotate(
            text,
            (end, pos),
            xytext=(3, 0),
            textcoords="offset points",
            va="center",
            fontsize="x-small",
        )


def plot_training(
    clf: Any, ax: Axes | None = None, *, show_tol: bool = True, metric: str = "relative_change"
) -> Axes:
    """Relative weight change (or training loss) per epoch, one line per binary model.

    Parameters
    ----------
    clf : FederatedLogisticRegression or FederatedTransferClassifier
        A fitted estimator; its ``history_`` (one dict per epoch with ``epoch``
        and ``relative_change``; per binary model for logistic regression, a
        single list for the transfer model) is plotted.
    ax : matplotlib.axes.Axes, optional
        Axes to draw on; a new figure is created when omitted.
    show_tol : bool, default=True
        Also draw the stopping threshold ``clf.tol`` as a dashed horizontal
        line (one extra line in ``ax.lines``); only for the weight change, and
        only where ``tol`` is a number that applies to it (not ``"auto"``, and
        not for L-BFGS, which stops on the gradient norm).
    metric : {"relative_change", "loss"}, default="relative_change"
        What to draw: the relative weight change (log scale), or the training
        loss -- the secure epoch log-loss of a logistic regression fitted with
        ``verbose=True`` (one host), the source-side loss of the transfer model.

    Returns
    -------
    matplotlib.axes.Axes
        The Axes, with one line per binary model (plus the ``tol`` line).

    Raises
    ------
    sklearn.exceptions.NotFittedError
        If ``clf`` has no ``history_``.
    ValueError
        If ``metric`` is unknown or the history does not record it.

    Examples
    --------
    >>> ax = ftl.plot.plot_training(clf)  # doctest: +SKIP
    >>> ax.figure.savefig("training.png")  # doctest: +SKIP
    """
    from sklearn.utils.validation import check_is_fitted

    check_is_fitted(clf, "history_")
    ax = _new_axes(ax, (6.0, 4.0))
    from matplotlib.ticker import MaxNLocator

    if metric not in ("relative_change", "loss"):
        raise ValueError(f"metric must be 'relative_change' or 'loss', got {metric!r}")
    history = clf.history_
    if history and isinstance(history[0], dict):  # one model (transfer learning)
        history = [history]
    key = metric
    if metric == "loss" and history and history[0] and "source_side_loss" in history[0][0]:
        key = "source_side_loss"
    if not all(key in e for epochs in history for e in epochs):
        raise ValueError(
            f"the history records no {metric!r}; a logistic regression records its loss "
            "only when fitted with verbose=True and one host"
        )
    classes = getattr(clf, "classes_", None)
    for k, epochs in enumerate(history):
        x = [int(e["epoch"]) + 1 for e in epochs]
        y = [float(e[key]) for e in epochs]
        if len(history) == 1:
            label = "model"
        elif classes is not None and len(classes) == len(history):
            label = f"class {classes[k]!s} vs rest"
        else:
            label = f"model {k}"
        ax.plot(x, y, marker="o", label=label)
    tol = getattr(clf, "tol", None)
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_xlabel("epoch")
    if metric == "loss":
        ax.set_ylabel("training log-loss" if key == "loss" else "source-side loss")
        ax.set_title("Training loss")
        ax.grid(True, alpha=0.3)
        ax.legend()
        return ax
    # tol="auto" (the default) resolves to a threshold per optimiser, and L-BFGS
    # stops on the gradient norm rather than the weight change: only a number the
    # user gave for this very criterion is drawn.
    stops_on_change = getattr(clf, "optimizer", None) != "lbfgs"
    if show_tol and stops_on_change and isinstance(tol, numbers.Real) and tol > 0:
        ax.axhline(float(tol), color="0.4", linestyle="--", linewidth=1, label=f"tol = {tol:g}")
    ax.set_yscale("log")
    ax.set_ylabel(r"relative weight change $\|w_t - w_{t-1}\| / \|w_t\|$")
    ax.set_title("Training progress")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend()
    return ax


def plot_roc(
    clf: Any,
    X: Any,
    y: Any,
    baseline_scores: Any | None = None,
    ax: Axes | None = None,
    *,
    baseline_label: str = "centralized baseline",
) -> Axes:
    """ROC curve of the federated model, optionally against a centralised baseline.

    Parameters
    ----------
    clf : FederatedLogisticRegression
        A fitted binary classifier.
    X : VerticalData or array-like of shape (n_samples, n_features)
        Rows to score with ``clf.decision_function(X)`` (a secure prediction:
        its messages are appended to ``clf.transcript_``).
    y : array-like of shape (n_samples,)
        True labels of these rows; ``clf.classes_[1]`` is the positive class.
    baseline_scores : array-like of shape (n_samples,), optional
        Scores of a model trained on the pooled data (e.g.
        ``LogisticRegression().decision_function``) for the same rows.
    ax : matplotlib.axes.Axes, optional
        Axes to draw on; a new figure is created when omitted.
    baseline_label : str, default="centralized baseline"
        Legend label of the baseline curve.

    Returns
    -------
    matplotlib.axes.Axes
        The Axes, with the federated curve, the baseline curve when given and
        the chance diagonal, each a line; the AUCs are in the legend.

    Raises
    ------
    ValueError
        If ``clf`` has more than two classes, or the scores and ``y`` differ in
        length.
    """
    from sklearn.metrics import auc, roc_curve

    classes = getattr(clf, "classes_", None)
    if classes is not None and len(classes) != 2:
        raise ValueError(f"plot_roc needs a binary classifier, got {len(classes)} classes")
    y = np.asarray(y).ravel()
    pos_label = classes[1] if classes is not None else None
    curves = [("federated", np.asarray(clf.decision_function(X), dtype=float))]
    if baseline_scores is not None:
        curves.append((baseline_label, np.asarray(baseline_scores, dtype=float).ravel()))
    for name, scores in curves:
        if scores.ndim != 1 or len(scores) != len(y):
            raise ValueError(
                f"{name} scores have shape {scores.shape}, expected ({len(y)},) like y"
            )
    ax = _new_axes(ax, (5.0, 5.0))
    for name, scores in curves:
        fpr, tpr, _ = roc_curve(y, scores, pos_label=pos_label)
        ax.plot(fpr, tpr, label=f"{name} (AUC = {auc(fpr, tpr):.4f})")
    ax.plot([0, 1], [0, 1], color="0.6", linestyle="--", linewidth=1, label="chance")
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1.01)
    ax.set_aspect("equal")
    ax.set_xlabel("false positive rate")
    ax.set_ylabel("true positive rate")
    ax.set_title("ROC")
    ax.legend(loc="lower right")
    return ax


def plot_transcript(transcript_or_clf: Any, ax: Axes | None = None, *, log: bool = True) -> Axes:
    """Bytes exchanged per message type, bars split and coloured by value kind.

    Each message's bytes are attributed to its payload kind, the most sensitive
    value kind it carries (``plaintext`` > ``ciphertext`` > ``masked`` >
    ``own_result`` > ``public``; ``none`` for messages without fields), see
    ``ftl.reporting.payload_kind``. A message type whose messages have several
    payload kinds gets one stacked segment per kind.

    Parameters
    ----------
    transcript_or_clf : estimator, Transcript, str or os.PathLike
        A fitted estimator (its ``transcript_``), a
        :class:`~ftl.Transcript` or the path of a transcript
        ``.jsonl``.
    ax : matplotlib.axes.Axes, optional
        Axes to draw on; a new figure is created when omitted.
    log : bool, default=True
        Logarithmic byte axis (sizes span several orders of magnitude).

    Returns
    -------
    matplotlib.axes.Axes
        The Axes, with one horizontal bar (patch) per (message type, payload
        kind) pair with a non-zero byte count, message types in order of first
        appearance from the top.
    """
    transcript, _, _ = as_transcript(transcript_or_clf)
    types: dict[str, dict[str, int]] = {}
    for r in transcript:
        by_kind = types.setdefault(r.type, {})
        kind = payload_kind(r)
        by_kind[kind] = by_kind.get(kind, 0) + r.nbytes
    names = list(types)
    kinds = [k for k in (*KIND_ORDER, "none") if any(k in v for v in types.values())]
    kinds += sorted({k for v in types.values() for k in v} - set(kinds))
    ax = _new_axes(ax, (7.0, 1.5 + 0.32 * max(len(names), 1)))
    positions = np.arange(len(names))
    left = np.zeros(len(names))
    for kind in kinds:
        widths = np.array([types[n].get(kind, 0) for n in names], dtype=float)
        keep = widths > 0
        if not keep.any():
            continue
        ax.barh(
            positions[keep],
            widths[keep],
            left=left[keep],
            color=KIND_COLORS.get(kind, "#bcbd22"),
            label=kind,
        )
        left += widths
    _label_bar_ends(ax, positions, left, [human_bytes(total) for total in left])
    ax.set_yticks(positions, names)
    ax.invert_yaxis()
    if log and len(names):
        ax.set_xscale("log")
        ax.set_xlim(left=max(left.min() / 3, 1.0), right=left.max() * 4)
    elif len(names):
        ax.set_xlim(right=left.max() * 1.15)
    ax.set_xlabel("bytes" + (" (log scale)" if log else ""))
    ax.set_title(f"{len(transcript):,} messages, {human_bytes(transcript.total_bytes)}")
    if kinds:
        ax.legend(title="value kind", loc="lower right", fontsize="small")
    return ax


#: Bar colours of :func:`plot_split_importance`: the guest's features, the hosts.
IMPORTANCE_COLORS = {"guest": "#1f77b4", "host": "#ff7f0e"}


def plot_split_importance(clf: Any, ax: Axes | None = None, *, kind: str = "gain") -> Axes:
    """Split importance of a federated gradient boosting model, as the guest sees it.

    One bar per feature of the guest's own: the summed gains of the splits on it
    (``clf.split_gains_``) or their number (``clf.split_counts_``); and one bar per
    host for all its features together (``clf.party_split_counts_``, and the gains
    the guest computed when it chose those splits), annotated with its number of
    splits.

    Parameters
    ----------
    clf : FederatedGradientBoostingClassifier or FederatedGradientBoostingRegressor
        A fitted model.
    ax : matplotlib.axes.Axes, optional
        Axes to draw on; a new figure is created when omitted.
    kind : {"gain", "count"}, default="gain"
        Summed split gains, or numbers of splits.

    Returns
    -------
    matplotlib.axes.Axes
        The Axes, with one horizontal bar (patch) per guest feature, largest first,
        then one per host.

    Raises
    ------
    sklearn.exceptions.NotFittedError
        If ``clf`` is not a fitted gradient boosting model.
    ValueError
        If ``kind`` is unknown.

    Notes
    -----
    A host plots the splits on each of its own features from the split table it
    keeps under the model's id (its shard, which also holds their real
    thresholds); it knows nothing of the guest's features. At the host, for
    example::

        splits = lab.load_model(model_id)["splits"]  # model_id: lab.model_ids()
        ax.barh(lab.feature_names, splits.counts(lab.n_features))

    Examples
    --------
    >>> ax = ftl.plot.plot_split_importance(clf, kind="count")  # doctest: +SKIP
    >>> ax.figure.savefig("splits.png")  # doctest: +SKIP
    """
    from sklearn.utils.validation import check_is_fitted

    if kind not in ("gain", "count"):
        raise ValueError(f"kind must be 'gain' or 'count', got {kind!r}")
    check_is_fitted(clf, ("split_counts_", "split_gains_", "party_split_counts_", "trees_"))
    guest, *hosts = clf.party_split_counts_
    own = np.asarray(clf.split_gains_ if kind == "gain" else clf.split_counts_, dtype=float)
    names = getattr(clf, "feature_names_in_", None)
    names = [str(n) for n in names[: own.shape[0]]] if names is not None else None
    names = names or [f"x{j}" for j in range(own.shape[0])]
    order = np.argsort(-own, kind="stable")
    host_counts = [clf.party_split_counts_[h] for h in hosts]
    if kind == "gain":
        # the guest scored every host split it chose: block b > 0 is host b - 1
        nodes = [t for per_iteration in clf.trees_ for t in per_iteration]
        host_values = [
            float(sum(t.gain[~t.is_leaf & (t.block == b)].sum() for t in nodes))
            for b in range(1, len(hosts) + 1)
        ]
    else:
        host_values = [float(n) for n in host_counts]
    labels = [names[j] for j in order] + [f"{h} (all its features)" for h in hosts]
    values = np.concatenate([own[order], host_values])
    colors = [IMPORTANCE_COLORS["guest"]] * own.shape[0] + [IMPORTANCE_COLORS["host"]] * len(hosts)
    ax = _new_axes(ax, (7.0, 1.5 + 0.3 * max(len(labels), 1)))
    positions = np.arange(len(labels))
    ax.barh(positions, values, color=colors)
    _label_bar_ends(
        ax, positions[own.shape[0] :], host_values, [f"{n} splits" for n in host_counts]
    )
    ax.set_yticks(positions, labels)
    ax.invert_yaxis()
    ax.set_xlabel("summed split gain" if kind == "gain" else "number of splits")
    ax.set_title(f"Splits: {guest}'s features and each host")
    from matplotlib.patches import Patch

    ax.legend(
        handles=[
            Patch(color=IMPORTANCE_COLORS["guest"], label=f"{guest} (guest)"),
            Patch(color=IMPORTANCE_COLORS["host"], label="host"),
        ],
        loc="best",
        fontsize="small",
    )
    return ax
