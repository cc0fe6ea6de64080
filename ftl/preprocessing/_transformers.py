"""The scikit-learn face of per-party preprocessing."""

from __future__ import annotations

import uuid
from copy import deepcopy

import numpy as np
from sklearn.base import BaseEstimator, TransformerMixin
from sklearn.impute import SimpleImputer
from sklearn.preprocessing import StandardScaler
from sklearn.utils import get_tags
from sklearn.utils._param_validation import HasMethods, StrOptions
from sklearn.utils._set_output import _wrap_data_with_container
from sklearn.utils.validation import _check_feature_names_in, check_is_fitted, validate_data

from ftl._docstrings import fill_doc
from ftl.data.handles import PartyRows, VerticalData
from ftl.federation.channel import Channel
from ftl.federation.transcript import Transcript
from ftl.preprocessing._spec import local_transformer, transformer_spec
from ftl.preprocessing.driver import derive_parties, fit_parties, handle_parties, with_parties

__all__ = ["FederatedSimpleImputer", "FederatedStandardScaler", "PerParty"]

_HANDLES = (VerticalData, PartyRows)


class _PartyTransformer(TransformerMixin, BaseEstimator, auto_wrap_output_keys=None):
    """Base: a scikit-learn transformer run at each party of a handle.

    Subclasses say which scikit-learn transformer runs (``_base_transformer``),
    on which columns (``_columns``) and at which parties (``_parties``).
    ``set_output`` is honoured for plain arrays; a handle is returned as a handle.
    """

    def __init_subclass__(cls, **kwargs):
        # transform() wraps array output itself, so handles are never wrapped
        super().__init_subclass__(auto_wrap_output_keys=None, **kwargs)
        cls._sklearn_auto_wrap_output_keys = {"transform"}

    # ------------------------------------------------------------------ hooks
    def _base_transformer(self):
        raise NotImplementedError

    def _columns(self):
        return None

    def _parties(self, names: list[str]) -> list[str]:
        return names

    def _expose(self, fitted) -> None:
        """Copy scikit-learn's fitted attributes (plain arrays only)."""

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        try:
            inner = get_tags(self._base_transformer())
        except Exception:  # noqa: BLE001 - an invalid parameter is reported by fit
            return tags
        tags.input_tags = deepcopy(inner.input_tags)
        tags.transformer_tags = deepcopy(inner.transformer_tags)
        return tags

    # ------------------------------------------------------------------ fit
    def fit(self, X, y=None):
        """Fit at every party where the data is (or locally on a plain array).

        Parameters
        ----------
        X : VerticalData, PartyRows or array-like of shape (n_samples, n_features)
            A handle (:func:`ftl.align`, :meth:`ftl.Party.select`): each party
            fits on its own rows of it and keeps the fitted transformer. A plain
            array or DataFrame is local data, fitted here as scikit-learn would.
        y : None
            Ignored.

        Returns
        -------
        self : object
            The fitted transformer.
        """
        self._validate_params()
        for key in [k for k in vars(self) if k.endswith("_") and not k.startswith("__")]:
            delattr(self, key)
        if isinstance(X, _HANDLES):
            self._fit_handle(X)
        else:
            validate_data(self, X, skip_check_array=True)  # n_features_in_, feature_names_in_
            fitted = local_transformer(self._base_transformer(), self._columns())
            fitted.set_output(transform="default")  # self.set_output wraps the result
            self.transformer_ = fitted.fit(X, y)
            self._expose(fitted)
        return self

    def _fit_handle(self, X) -> None:
        if len(X) == 0:
            raise ValueError("X has 0 rows; at least 1 is required")
        parties = handle_parties(X)
        names = [p.name for p in parties]
        spec = transformer_spec(self._base_transformer(), self._columns())
        transformer_id = uuid.uuid4().hex
        transcript = Transcript()
        replies = fit_parties(
            X, self._parties(names), spec, transformer_id, Channel(names[0], transcript)
        )
        self.transformer_id_ = transformer_id
        self.transcript_ = transcript
        self.party_names_ = names
        self.transformed_parties_ = [n for n in names if n in replies]
        self.party_feature_names_out_ = {
            p.name: replies[p.name]["feature_names"] if p.name in replies else p.feature_names
            for p in parties
        }
        self.n_features_in_ = X.shape[1]
        in_names = (
            X.feature_names
            if isinstance(X, VerticalData)
            else [f"{X.party.name}__{c}" for c in X.party.feature_names]
        )
        self.feature_names_in_ = np.asarray(in_names, dtype=object)

    # ------------------------------------------------------------------ transform
    def transform(self, X):
        """Transform where the data is (or locally on a plain array).

        Parameters
        ----------
        X : VerticalData, PartyRows or array-like of shape (n_samples, n_features)
            A handle over the parties the transformer was fitted on (or rows of
            one of them), or a plain array when it was fitted on one.

        Returns
        -------
        X_new : VerticalData, PartyRows or ndarray
            A handle of the same kind over the same rows of the *derived* parties
            (each serves its rows through the transformer it fitted), or the
            transformed array.
        """
        check_is_fitted(self)
        if isinstance(X, _HANDLES):
            return self._transform_handle(X)
        if not hasattr(self, "transformer_"):
            raise ValueError(
                f"this {type(self).__name__} was fitted on a data handle; transform a "
                "handle over the same parties, not a plain array"
            )
        # the fitted scikit-learn transformer validates X (features, names) as it would alone
        return _wrap_data_with_container("transform", self.transformer_.transform(X), X, self)

    def _transform_handle(self, X):
        if not hasattr(self, "transformer_id_"):
            raise ValueError(
                f"this {type(self).__name__} was fitted on a plain array; transform a plain "
                "array too, or fit it on a data handle"
            )
        parties = handle_parties(X)
        names = [p.name for p in parties]
        if isinstance(X, VerticalData) and names != self.party_names_:
            raise ValueError(
                f"X is aligned over parties {names}, the transformer was fitted over "
                f"{self.party_names_}"
            )
        if isinstance(X, PartyRows) and names[0] not in self.party_names_:
            raise ValueError(
                f"rows of party {names[0]!r}, but the transformer was fitted over "
                f"{self.party_names_}"
            )
        channel = Channel(self.party_names_[0], self.transcript_)
        derived = derive_parties(parties, self.transformed_parties_, self.transformer_id_, channel)
        return with_parties(X, derived)

    def fit_transform(self, X, y=None):
        """Fit, then transform ``X`` (see :meth:`fit` and :meth:`transform`).

        Parameters
        ----------
        X : VerticalData, PartyRows or array-like of shape (n_samples, n_features)
        y : None
            Ignored.

        Returns
        -------
        X_new : VerticalData, PartyRows or ndarray
        """
        return self.fit(X, y).transform(X)

    def get_feature_names_out(self, input_features=None):
        """Output feature names.

        With a handle: ``"<party>__<feature>"`` for every party in order, as
        each party reported them. They are positional and carry no data: an
        input column's own name for an output that is that column transformed
        (``shop__income``), ``<column>_<k>`` for the ``k``-th of several
        outputs derived from one column (an encoder's categories, a
        discretiser's bins: ``shop__city_0``, ``shop__city_1``); the
        categories and bin edges stay at the party.

        Parameters
        ----------
        input_features : array-like of str or None, default=None
            Input feature names; checked against ``feature_names_in_``.

        Returns
        -------
        feature_names_out : ndarray of str objects
        """
        check_is_fitted(self)
        if not hasattr(self, "transformer_id_"):
            return self.transformer_.get_feature_names_out(input_features)
        _check_feature_names_in(self, input_features)
        return np.asarray(
            [
                f"{name}__{c}"
                for name in self.party_names_
                for c in self.party_feature_names_out_[name]
            ],
            dtype=object,
        )


#: The attributes every per-party transformer has (with a handle: at the parties).
_HANDLE_ATTRIBUTES = """\
transformer_id_ : str
    With a handle: the id under which every party keeps its fitted
    transformer (the fitted statistics stay at the parties).
transformed_parties_ : list of str
    With a handle: the parties that fitted a transformer.
party_names_ : list of str
    With a handle: its parties (guest first).
party_feature_names_out_ : dict of str to list of str
    With a handle: each party's output feature names (public metadata).
transcript_ : Transcript
    With a handle: every message of fit and transform (public metadata only).
n_features_in_ : int
    Number of features seen during fit (over all parties of a handle).
feature_names_in_ : ndarray of shape (`n_features_in_`,)
    Names of the features seen during fit (of a DataFrame, or of the handle)."""


@fill_doc(handle_attributes=_HANDLE_ATTRIBUTES)
class FederatedStandardScaler(_PartyTransformer):
    """Standardise features where they are: each party scales its own columns.

    Each party fits :class:`sklearn.preprocessing.StandardScaler` on its own rows
    of the handle it is given and keeps the means and variances; a transformed
    handle serves every party's rows scaled by that party. Only the parameters,
    row positions, row counts and feature names cross between parties. Given a
    plain array (local data) it is :class:`sklearn.preprocessing.StandardScaler`.

    Parameters
    ----------
    with_mean : bool, default=True
        Centre each feature.
    with_std : bool, default=True
        Scale each feature to unit variance.

    Attributes
    ----------
    mean_ : ndarray of shape (n_features,) or None
        Plain arrays only, as in scikit-learn.
    var_ : ndarray of shape (n_features,) or None
        Plain arrays only.
    scale_ : ndarray of shape (n_features,) or None
        Plain arrays only.
    n_samples_seen_ : int or ndarray of shape (n_features,)
        Plain arrays only.
    transformer_ : StandardScaler
        Plain arrays only: the fitted scikit-learn scaler.
    %(handle_attributes)s

    See Also
    --------
    sklearn.preprocessing.StandardScaler : the local scaler each party runs.
    PerParty : run another scikit-learn transformer at the parties.

    Examples
    --------
    >>> import ftl
    >>> from sklearn.pipeline import make_pipeline
    >>> X, y = ftl.align(*ftl.datasets.load_breast_cancer())
    >>> pipe = make_pipeline(
    ...     ftl.preprocessing.FederatedStandardScaler(),
    ...     ftl.FederatedLogisticRegression(encryption=None, random_state=0),
    ... ).fit(X, y)
    >>> round(pipe.score(X, y), 2) > 0.9
    True
    """

    _parameter_constraints: dict = {"with_mean": ["boolean"], "with_std": ["boolean"]}

    def __init__(self, with_mean=True, with_std=True):
        self.with_mean = with_mean
        self.with_std = with_std

    def _base_transformer(self):
        return StandardScaler(with_mean=self.with_mean, with_std=self.with_std)

    def _expose(self, fitted) -> None:
        self.mean_ = fitted.mean_
        self.var_ = fitted.var_
        self.scale_ = fitted.scale_
        self.n_samples_seen_ = fitted.n_samples_seen_


@fill_doc(handle_attributes=_HANDLE_ATTRIBUTES)
class FederatedSimpleImputer(_PartyTransformer):
    """Fill missing values where they are: each party imputes its own columns.

    Each party fits :class:`sklearn.impute.SimpleImputer` on its own rows of the
    handle (a party built with ``ftl.Party(..., allow_missing=True)`` may hold
    NaN) and keeps the fill values; a transformed handle serves every party's
    rows completed by that party. Only the parameters, row positions, row counts
    and feature names cross between parties. Given a plain array (local data) it
    is :class:`sklearn.impute.SimpleImputer`.

    Parameters
    ----------
    strategy : {"mean", "median", "most_frequent", "constant"}, default="mean"
        The statistic of each column's observed values that fills its gaps
        (``"constant"``: ``fill_value``).
    fill_value : float, str or None, default=None
        The value used with ``strategy="constant"`` (0 when None).

    Attributes
    ----------
    statistics_ : ndarray of shape (n_features,)
        Plain arrays only: the fill value of each feature.
    transformer_ : SimpleImputer
        Plain arrays only: the fitted scikit-learn imputer.
    %(handle_attributes)s

    See Also
    --------
    sklearn.impute.SimpleImputer : the local imputer each party runs.

    Notes
    -----
    As in scikit-learn, a column with no observed value in the fitted rows is
    dropped (at that party).

    Examples
    --------
    >>> import numpy as np, ftl
    >>> imputer = ftl.preprocessing.FederatedSimpleImputer(strategy="median")
    >>> imputer.fit_transform(np.array([[1.0], [np.nan], [3.0]])).ravel().tolist()
    [1.0, 2.0, 3.0]
    """

    _parameter_constraints: dict = {
        "strategy": [StrOptions({"mean", "median", "most_frequent", "constant"})],
        "fill_value": "no_validation",
    }

    def __init__(self, strategy="mean", fill_value=None):
        self.strategy = strategy
        self.fill_value = fill_value

    def _base_transformer(self):
        return SimpleImputer(strategy=self.strategy, fill_value=self.fill_value)

    def _expose(self, fitted) -> None:
        self.statistics_ = fitted.statistics_


@fill_doc(handle_attributes=_HANDLE_ATTRIBUTES)
class PerParty(_PartyTransformer):
    """Run a scikit-learn transformer where the data is: at one party or at each.

    Each selected party fits its own copy of ``transformer`` on its own rows of
    the handle (optionally only on some of its columns; the others pass through
    after the transformed ones) and keeps it; the other parties are left as
    they are. The transformer crosses to a party as its class name and its
    parameters as JSON, never as a Python object, and a party builds only
    transformers from an allowlist (``ftl.preprocessing.ALLOWED_TRANSFORMERS``):
    :class:`~sklearn.preprocessing.StandardScaler`,
    :class:`~sklearn.preprocessing.MinMaxScaler`,
    :class:`~sklearn.preprocessing.MaxAbsScaler`,
    :class:`~sklearn.preprocessing.RobustScaler`,
    :class:`~sklearn.preprocessing.Normalizer`,
    :class:`~sklearn.impute.SimpleImputer`,
    :class:`~sklearn.preprocessing.OneHotEncoder`,
    :class:`~sklearn.preprocessing.OrdinalEncoder`,
    :class:`~sklearn.preprocessing.KBinsDiscretizer`,
    :class:`~sklearn.preprocessing.PolynomialFeatures`,
    :class:`~sklearn.preprocessing.QuantileTransformer`,
    :class:`~sklearn.preprocessing.PowerTransformer` and
    :class:`~sklearn.preprocessing.Binarizer`. Given a plain array (local data),
    ``transformer`` (any transformer) is applied to all columns or to
    ``columns``.

    Parameters
    ----------
    transformer : scikit-learn transformer
        The transformer to run (cloned, never fitted in place).
    party : str or None, default=None
        Name of the party that runs it; None: every party. Ignored for plain
        arrays.
    columns : list of str or list of int, default=None
        Run it only on these of the party's columns (names, or indices); the
        remaining columns pass through unchanged, after the transformed ones.
        None: all columns.

    Attributes
    ----------
    transformer_ : transformer
        Plain arrays only: the fitted transformer (a
        :class:`~sklearn.compose.ColumnTransformer` when ``columns`` is given).
    %(handle_attributes)s

    See Also
    --------
    FederatedStandardScaler : per-party standardisation.
    FederatedSimpleImputer : per-party imputation.

    Notes
    -----
    Output feature names are public metadata and positional: an encoder's
    outputs are ``education_0``, ``education_1``, ... in the order of the
    categories the party found, but the categories themselves, a
    discretiser's bin edges and every other fitted statistic stay at the
    party; only the number of outputs per column crosses.

    A party guards itself against a peer that fits transformers to read its
    data (see :mod:`ftl.preprocessing.party`). It refuses parameters that name
    values: explicit ``categories``, categories to ``drop``, a
    ``missing_values`` other than NaN. A served party also refuses, by its
    policy: fits on fewer than ``min_transformer_rows`` aligned rows (or on
    rows named by number rather than aligned), more than
    ``max_transformers_per_day``, ``n_bins`` above ``max_n_bins``, a
    polynomial ``degree`` or an output width above its caps, and encoders
    with ``handle_unknown="error"``; and it drops a fitted transformer that no
    model it keeps needs once it has been unused for its session time-out.
    Errors of scikit-learn at a party cross as their type only (their text
    may quote the party's values).

    Examples
    --------
    >>> from sklearn.preprocessing import OneHotEncoder
    >>> from ftl.preprocessing import PerParty
    >>> encode = PerParty(
    ...     OneHotEncoder(sparse_output=False, handle_unknown="ignore"),
    ...     party="shop",
    ...     columns=["education"],
    ... )
    """

    _parameter_constraints: dict = {
        "transformer": [HasMethods(["fit", "transform"])],
        "party": [str, None],
        "columns": ["array-like", None],
    }

    def __init__(self, transformer, party=None, columns=None):
        self.transformer = transformer
        self.party = party
        self.columns = columns

    def _base_transformer(self):
        return self.transformer

    def _columns(self):
        return self.columns

    def _parties(self, names: list[str]) -> list[str]:
        if self.party is None:
            return names
        if self.party not in names:
            raise ValueError(f"party {self.party!r} is not one of the handle's parties {names}")
        return [self.party]
