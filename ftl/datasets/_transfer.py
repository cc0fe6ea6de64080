"""Transfer-learning splits of the bundled data: two parties, few shared rows.

In federated transfer learning the two organisations hold *different feature
groups* of *different, partly overlapping populations*: the source is labelled,
the target is not, and only the (small) overlap links them. The loaders here
derive such splits from the bundled public data; nothing new is shipped.
"""

from __future__ import annotations

import numbers

import numpy as np
import pandas as pd
from sklearn.utils import Bunch

from ftl._docstrings import fill_doc
from ftl.data.party import Party
from ftl.datasets._loaders import _read

__all__ = ["load_breast_transfer", "load_credit_transfer"]

_CREDIT_N_ROWS = 30_000
_BREAST_N_ROWS = 569

_CREDIT_LABEL = "default.payment.next.month"
_CREDIT_SOURCE_FEATURES = [
    "LIMIT_BAL",
    "SEX",
    "MARRIAGE",
    "AGE",
    *[f"BILL_AMT{k}" for k in range(1, 7)],
    *[f"PAY_AMT{k}" for k in range(1, 7)],
]
_CREDIT_TARGET_FEATURES = ["PAY_0", "PAY_2", "PAY_3", "PAY_4", "PAY_5", "PAY_6", "EDUCATION"]
#: EDUCATION codes of the source's own population: 1 = graduate school, 2 = university.
_CREDIT_SOURCE_EDUCATION = (1, 2)

# Column names of FATE's breast split (x0, x1, ...) in the Wisconsin data set's own
# terms; checked against scikit-learn's bundled copy (the ids are its row numbers).
_WDBC_MEASURES = [
    "radius",
    "texture",
    "perimeter",
    "area",
    "smoothness",
    "compactness",
    "concavity",
    "concave_points",
    "symmetry",
    "fractal_dimension",
]
_BREAST_SOURCE_FEATURES = [f"worst_{m}" for m in _WDBC_MEASURES]
_BREAST_TARGET_FEATURES = [f"mean_{m}" for m in _WDBC_MEASURES] + [
    f"{m}_error" for m in _WDBC_MEASURES
]

_CITATION_CREDIT = (
    "Yeh, I.-C. & Lien, C.-H. (2009). The comparisons of data mining techniques for "
    "the predictive accuracy of probability of default of credit card clients. Expert "
    "Systems with Applications 36(2), 2473-2480. Data: UCI Machine Learning Repository, "
    '"default of credit card clients", CC BY 4.0.'
)
_CITATION_BREAST = (
    "Wolberg, W. H., Street, W. N. & Mangasarian, O. L., Breast Cancer Wisconsin "
    "(Diagnostic), UCI Machine Learning Repository, CC BY 4.0; vertical split from FATE "
    "(FederatedAI/FATE, examples/data, Apache-2.0)."
)


def _check_overlap(overlap, n_rows: int) -> int:
    if isinstance(overlap, (bool, np.bool_)) or not isinstance(overlap, numbers.Integral):
        raise ValueError(f"overlap must be an int, got {overlap!r}")
    overlap = int(overlap)
    if not 1 <= overlap < n_rows:
        raise ValueError(f"overlap must satisfy 1 <= overlap < {n_rows}, got {overlap}")
    return overlap


def _zscore(frame: pd.DataFrame) -> pd.DataFrame:
    """Standardise with the frame's own mean and (population) std; constant columns -> 0."""
    values = frame.to_numpy(dtype=np.float64)
    mean = values.mean(axis=0)
    std = values.std(axis=0)
    std[std == 0] = 1.0
    return pd.DataFrame((values - mean) / std, columns=frame.columns, index=frame.index)


def _transfer_pair(
    names: tuple[str, str],
    *,
    ids: np.ndarray,
    labels: np.ndarray,
    shared: np.ndarray,
    in_source: np.ndarray,
    in_target: np.ndarray,
    source_features: pd.DataFrame,
    target_features: pd.DataFrame,
    descr: str,
) -> Bunch:
    """The two parties and the facts a loader returns about them.

    ``ids`` and ``labels`` run over all rows of the table; ``shared``, ``in_source``
    and ``in_target`` mark its rows that both parties, the source and the target
    hold; ``source_features`` and ``target_features`` are each party's feature
    columns of its own rows, in table order.
    """
    src = source_features.copy()
    src.insert(0, "id", ids[in_source])
    src["y"] = labels[in_source]
    tgt = target_features.copy()
    tgt.insert(0, "id", ids[in_target])
    return Bunch(
        source=Party(names[0], src.reset_index(drop=True), id_column="id", label_column="y"),
        target=Party(names[1], tgt.reset_index(drop=True), id_column="id"),
        target_labels=pd.Series(
            labels[in_target], index=pd.Index(ids[in_target], name="id"), name="y"
        ),
        overlap_ids=np.sort(ids[shared]),
        source_only_ids=np.sort(ids[in_source & ~shared]),
        target_only_ids=np.sort(ids[in_target & ~shared]),
        source_features=list(source_features.columns),
        target_features=list(target_features.columns),
        DESCR=descr,
    )


def _returns(
    *, source: str, label: str, source_features: list, target: str, target_features: list, rows: str
) -> str:
    """The Returns section of a loader's docstring (``rows``: what a row is)."""
    return f"""\
data : sklearn.utils.Bunch
    With fields

    source : Party
        ``"{source}"``, ``id_column="id"``, ``label_column="y"``
        ({label}), {len(source_features)} features.
    target : Party
        ``"{target}"``, ``id_column="id"``, {len(target_features)} features, no labels.
    target_labels : pandas.Series
        True labels of all target rows, indexed by target id, in the
        target's row order. For scoring only: a real target has no labels.
    overlap_ids, source_only_ids, target_only_ids : numpy.ndarray
        Sorted ids of the shared {rows}, of the source's own and of the
        target's own {rows}.
    source_features, target_features : list of str
        Feature column names of each party.
    DESCR : str
        Description, rationale and attribution."""


@fill_doc(
    returns=_returns(
        source="card_issuer",
        label="1 = default next month",
        source_features=_CREDIT_SOURCE_FEATURES,
        target="collector",
        target_features=_CREDIT_TARGET_FEATURES,
        rows="customers",
    )
)
def load_credit_transfer(
    overlap: int = 1000, random_state: int | np.random.Generator | None = 0
) -> Bunch:
    """UCI credit-card default as a transfer-learning pair: card issuer and collector.

    Two organisations see different things about different customers. The
    source (``"card_issuer"``) holds the statement data (credit limit,
    demographics, six months of bill and payment amounts) and the default
    label; the target (``"collector"``) holds the repayment-status history
    (``PAY_0``, ``PAY_2`` ... ``PAY_6``) and the education code, but no labels.
    The feature groups are disjoint.

    ``overlap`` customers, drawn uniformly at random from the whole table, are
    customers of both. Of the remaining customers, those with a graduate or
    university education (``EDUCATION`` in {1, 2}) belong to the source only,
    all others (high school, other or unknown) to the target only, so the
    target's own customers come from a different population than the
    source's (covariate shift). Each party z-scores its own features with the
    mean and standard deviation of its own rows, as it would do locally.
    Rows keep the table's order (by id) within each party.

    Parameters
    ----------
    overlap : int, default=1000
        Number of customers shared by both parties, ``1 <= overlap < 30000``.
    random_state : int, numpy.random.Generator or None, default=0
        Seed for :func:`numpy.random.default_rng` choosing the shared customers.
        The result is deterministic for a given int.

    Returns
    -------
    %(returns)s

    Raises
    ------
    ValueError
        If ``overlap`` is not an int in ``[1, 30000)``.

    Notes
    -----
    Data: Yeh & Lien (2009), UCI Machine Learning Repository, CC BY 4.0
    (bundled as ``UCI_Credit_Card.csv``).

    Examples
    --------
    >>> import ftl
    >>> data = ftl.datasets.load_credit_transfer(overlap=500)
    >>> data.source.has_labels, data.target.has_labels, len(data.overlap_ids)
    (True, False, 500)
    """
    table = _read("UCI_Credit_Card.csv")
    n_rows = len(table)
    overlap = _check_overlap(overlap, n_rows)
    rng = np.random.default_rng(random_state)

    ids = table["ID"].to_numpy().astype(np.int64)
    shared = np.zeros(n_rows, dtype=bool)
    shared[rng.choice(n_rows, size=overlap, replace=False)] = True
    source_pop = table["EDUCATION"].isin(_CREDIT_SOURCE_EDUCATION).to_numpy()
    in_source = shared | source_pop
    in_target = shared | ~source_pop
    labels = table[_CREDIT_LABEL].to_numpy().astype(np.int64)

    n_src, n_tgt = int(in_source.sum()), int(in_target.sum())
    descr = (
        "Credit-card default, transfer-learning split (derived from UCI_Credit_Card.csv).\n\n"
        f"source 'card_issuer': {n_src} customers, label y (default next month), "
        f"{len(_CREDIT_SOURCE_FEATURES)} statement features "
        f"({', '.join(_CREDIT_SOURCE_FEATURES)}).\n"
        f"target 'collector': {n_tgt} customers, no labels, "
        f"{len(_CREDIT_TARGET_FEATURES)} features ({', '.join(_CREDIT_TARGET_FEATURES)}).\n"
        f"overlap: {overlap} customers drawn at random from the whole table "
        f"(random_state={random_state!r}); the other customers with EDUCATION in {{1, 2}} "
        "(graduate school, university) are the source's only, all others (high school, "
        "other, unknown) the target's only: disjoint feature groups, different populations "
        "(covariate shift), small overlap. Each party z-scores its own features over its "
        "own rows. target_labels are for scoring only; a real target has no labels.\n\n"
        f"Source: {_CITATION_CREDIT}"
    )
    return _transfer_pair(
        ("card_issuer", "collector"),
        ids=ids,
        labels=labels,
        shared=shared,
        in_source=in_source,
        in_target=in_target,
        source_features=_zscore(table.loc[in_source, _CREDIT_SOURCE_FEATURES]),
        target_features=_zscore(table.loc[in_target, _CREDIT_TARGET_FEATURES]),
        descr=descr,
    )


@fill_doc(
    returns=_returns(
        source="hospital",
        label="1 = benign",
        source_features=_BREAST_SOURCE_FEATURES,
        target="lab",
        target_features=_BREAST_TARGET_FEATURES,
        rows="patients",
    )
)
def load_breast_transfer(
    overlap: int = 150, random_state: int | np.random.Generator | None = 0
) -> Bunch:
    """Wisconsin breast cancer as a small transfer-learning pair: hospital and lab.

    A fast split of FATE's vertical breast data for tests and examples. The
    source (``"hospital"``) holds the label and the 10 "worst" features (FATE's
    guest file); the target (``"lab"``) holds the 20 "mean" and "error"
    features (FATE's host file) and no labels. ``overlap`` patients, drawn at
    random, are shared; the other patients are split at random half and half
    into the source's own and the target's own (the source gets the extra one
    when the remainder is odd). Unlike :func:`load_credit_transfer` there is
    no covariate shift by design, only few shared rows.

    FATE's columns ``x0``, ``x1``, ... are renamed to the Wisconsin data set's
    feature names (e.g. ``worst_radius``, ``mean_texture``, ``area_error``) so
    that the two feature groups have distinct names. The values are FATE's,
    z-scored over all 569 rows; rows keep FATE's file order within each party.

    Parameters
    ----------
    overlap : int, default=150
        Number of patients shared by both parties, ``1 <= overlap < 569``.
    random_state : int, numpy.random.Generator or None, default=0
        Seed for :func:`numpy.random.default_rng` choosing the shared patients
        and splitting the rest. The result is deterministic for a given int.

    Returns
    -------
    %(returns)s

    Raises
    ------
    ValueError
        If ``overlap`` is not an int in ``[1, 569)``.

    Examples
    --------
    >>> import ftl
    >>> data = ftl.datasets.load_breast_transfer()
    >>> data.source.n_features, data.target.n_features, len(data.overlap_ids)
    (10, 20, 150)
    """
    guest = _read("breast_hetero_guest.csv")
    host = _read("breast_hetero_host.csv")
    n_rows = len(guest)
    overlap = _check_overlap(overlap, n_rows)
    if not np.array_equal(guest["id"].to_numpy(), host["id"].to_numpy()):  # pragma: no cover
        host = host.set_index("id").loc[guest["id"]].reset_index()
    rng = np.random.default_rng(random_state)

    ids = guest["id"].to_numpy().astype(np.int64)
    order = rng.permutation(n_rows)
    n_source_only = (n_rows - overlap + 1) // 2
    shared = np.zeros(n_rows, dtype=bool)
    shared[order[:overlap]] = True
    source_only = np.zeros(n_rows, dtype=bool)
    source_only[order[overlap : overlap + n_source_only]] = True
    in_source = shared | source_only
    in_target = ~source_only
    labels = guest["y"].to_numpy().astype(np.int64)

    g_features = [c for c in guest.columns if c not in ("id", "y")]
    h_features = [c for c in host.columns if c != "id"]
    descr = (
        "Breast cancer (Wisconsin diagnostic), transfer-learning split (derived from FATE's "
        "breast_hetero_guest.csv and breast_hetero_host.csv).\n\n"
        f"source 'hospital': {int(in_source.sum())} patients, label y (1 = benign), "
        "10 'worst' features.\n"
        f"target 'lab': {int(in_target.sum())} patients, no labels, 20 'mean' and 'error' "
        "features.\n"
        f"overlap: {overlap} patients drawn at random (random_state={random_state!r}); "
        "the rest split at random half and half into source-only and target-only. "
        "Features as in FATE's files (z-scored over all 569 rows). target_labels are for "
        "scoring only; a real target has no labels.\n\n"
        f"Source: {_CITATION_BREAST}"
    )
    return _transfer_pair(
        ("hospital", "lab"),
        ids=ids,
        labels=labels,
        shared=shared,
        in_source=in_source,
        in_target=in_target,
        source_features=guest.loc[in_source, g_features].set_axis(_BREAST_SOURCE_FEATURES, axis=1),
        target_features=host.loc[in_target, h_features].set_axis(_BREAST_TARGET_FEATURES, axis=1),
        descr=descr,
    )
