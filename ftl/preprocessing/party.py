"""Party role of preprocessing (runs where the party's data is): ``prep.party``.

Message sequence, as seen from a party P (the driver calls every party alike):

1. ``open``: the driver names a fresh transformer id.
2. ``fit``: P builds the transformer from its JSON spec -- only an allowlisted
   scikit-learn class (see ``_spec.py``) with parameters that name no data
   value -- checks the request against its own guard (at least
   ``min_transformer_rows`` rows, ``max_transformers_per_day``, caps on the
   resources the parameters ask for), fits it on its own rows of the handle
   (rows it does not have in a ``how="left"`` alignment are skipped) and keeps
   it. P returns how many rows it fitted on and *positional* output feature
   names (``city_0``, ``city_1``, ``income``: see ``_names.py``); categories,
   bin edges and every other fitted statistic stay at P.
3. ``transform``: P derives a party that serves its rows through the fitted
   transformer (:meth:`ftl.Party.derive`) and returns the derived feature
   names. The driver, which holds P's local object, takes the derived party
   with :meth:`ftl.Party.derived` and builds a handle over it.

Only public metadata crosses: the spec, row positions, counts and positional
feature names. An error raised by scikit-learn while fitting or transforming
P's rows can quote them (``Found unknown categories [75056.0]``), so it
crosses as its type only; the full text goes to P's log.

A transformer fitted for a peer lives while that peer uses it: ``ftl serve``
drops one that no kept model needs once it has been unused for the session
TTL (:meth:`ftl.Party.expire_transformers`).
"""

from __future__ import annotations

import logging
import re

import numpy as np
import pandas as pd
from scipy import sparse
from sklearn import config_context
from sklearn.compose import ColumnTransformer
from sklearn.impute import SimpleImputer
from sklearn.preprocessing import (
    KBinsDiscretizer,
    OneHotEncoder,
    OrdinalEncoder,
    PolynomialFeatures,
)

from ftl.exceptions import PolicyError
from ftl.federation.budget import guard_of
from ftl.federation.messages import Message
from ftl.federation.service import operation, role
from ftl.preprocessing import _messages as msg
from ftl.preprocessing._names import placeholders, positional_names
from ftl.preprocessing._spec import build_transformer

__all__ = ["FittedTransform", "PreprocessingParty"]

log = logging.getLogger("ftl.preprocessing")

#: A party refuses a transformer that would widen its table beyond this many features
#: (rows are served dense: width x rows x 8 bytes); a guarded party's policy caps it
#: lower (``max_output_features``, and ``max_degree`` for polynomial features).
MAX_OUTPUT_FEATURES = 100_000
#: Transformers a party chains (a pipeline's steps, each fitted on the one before).
MAX_CHAIN = 8
#: Transformer ids name files of kept models and path elements of served requests.
_TRANSFORMER_ID = re.compile(r"^[A-Za-z0-9_.-]{1,64}$")


class FittedTransform:
    """A transformer fitted at a party, applied to that party's raw feature rows.

    The transformer is fitted on columns named by placeholders (``<0>``,
    ``<1>``, ...), so that its scikit-learn output names say which input columns
    each output comes from and nothing the party can publish holds a category
    or threshold; ``feature_names_out`` are the positional names built from
    them (:func:`~ftl.preprocessing._names.positional_names`). Output is always
    a dense float array, whatever scikit-learn's global output configuration
    says.

    Parameters
    ----------
    transformer : transformer
        The fitted scikit-learn transformer (kept at the party).
    input_names : list of str
        The party's columns it takes.
    feature_names_out : list of str
        The positional names of its output (public).
    legacy_names_out : list of str, optional
        For a transformer saved by an earlier ftl (fitted on the real column
        names): its scikit-learn output names, which name the columns a
        transformer chained after it was fitted on. Never published.
    """

    def __init__(
        self,
        transformer,
        input_names: list[str],
        feature_names_out: list[str],
        legacy_names_out: list[str] | None = None,
    ):
        self.transformer = transformer
        self.input_names = list(input_names)
        self.feature_names_out = list(feature_names_out)
        self.legacy_names_out = None if legacy_names_out is None else list(legacy_names_out)

    @classmethod
    def fit(
        cls,
        transformer,
        features: np.ndarray,
        input_names: list[str],
        max_features: int = MAX_OUTPUT_FEATURES,
    ) -> FittedTransform:
        """Fit ``transformer`` on ``features`` (placeholder-named columns).

        Raises
        ------
        ValueError
            If the transformer would output more than ``max_features`` features
            or two outputs would share a name, or scikit-learn's fit fails (then
            with the error's type only: its text may quote the party's values).
        """
        frame = pd.DataFrame(features, columns=placeholders(len(input_names)))
        try:
            with config_context(transform_output="default"):
                transformer.fit(frame)
        except Exception as exc:  # noqa: BLE001 - its text may quote the party's values
            raise _quiet(exc, f"cannot fit {_name(transformer)} on its rows") from None
        _check_width(_polynomial_width(transformer), max_features)  # before its names exist
        raw = [str(c) for c in transformer.get_feature_names_out()]
        _check_width(len(raw), max_features)
        return cls(transformer, input_names, positional_names(raw, input_names))

    def __call__(self, features: np.ndarray) -> np.ndarray:
        columns = getattr(self.transformer, "feature_names_in_", None)
        frame = features if columns is None else pd.DataFrame(features, columns=list(columns))
        try:
            with config_context(transform_output="default"):
                out = self.transformer.transform(frame)
        except Exception as exc:  # noqa: BLE001 - its text may quote the party's values
            what = f"cannot transform the requested rows with its {_name(self.transformer)}"
            raise _quiet(exc, what) from None
        if sparse.issparse(out):
            out = out.toarray()
        return np.asarray(out, dtype=np.float64)


def _name(transformer) -> str:
    return type(_inner(transformer)).__name__


def _quiet(exc: Exception, what: str) -> ValueError:
    """A scikit-learn error as the party may let it cross: its type, not its text."""
    log.warning("%s: %s: %s", what, type(exc).__name__, exc)
    return ValueError(
        f"{what} ({type(exc).__name__}); the reason stays in the party's log, since it may "
        "quote the party's data"
    )


def _check_width(n_out: int | None, max_features: int) -> None:
    if n_out is not None and n_out > max_features:
        raise ValueError(
            f"the transformer would output {n_out} features, more than the "
            f"{max_features} this party accepts"
        )


def _inner(transformer):
    """The allowlisted transformer, also inside the ColumnTransformer ``columns`` makes."""
    if type(transformer) is ColumnTransformer:
        return transformer.transformers[0][1]
    return transformer


def _polynomial_width(transformer) -> int | None:
    """A fitted PolynomialFeatures' output count (its names are enumerated: check first)."""
    if type(transformer) is ColumnTransformer:
        transformer = transformer.named_transformers_["transform"]
    return getattr(transformer, "n_output_features_", None)


# ------------------------------------------------------------------ the party's checks
def _refuse(name: str, param: str, why: str) -> None:
    raise ValueError(f"a party does not fit a {name} with {param}: {why}")


def _check_parameters(transformer, guard) -> None:
    """Refuse parameters that probe the party's values or ask for unbounded resources.

    A peer chooses every parameter. Explicit categories (``OneHotEncoder``,
    ``OrdinalEncoder``), categories to drop and a missing-value marker other
    than NaN name values, and whether the fit succeeds (or how many outputs it
    has) then says whether the party holds them: refused everywhere. At a
    guarded party an encoder must also handle unknown categories without an
    error (an error on a prediction request says a row holds a new value), and
    ``n_bins`` and a polynomial ``degree`` are capped.
    """
    inner = _inner(transformer)
    # scikit-learn's checks of the peer's own parameters: their messages are data-free
    transformer._validate_params()
    if inner is not transformer:
        inner._validate_params()
    name = type(inner).__name__
    if isinstance(inner, (OneHotEncoder, OrdinalEncoder)):
        if not (isinstance(inner.categories, str) and inner.categories == "auto"):
            _refuse(name, "explicit categories", "they name values of the party's columns")
        if guard.enforce and inner.handle_unknown == "error":
            _refuse(
                name,
                "handle_unknown='error'",
                "an error on new rows would tell whether they hold a value unseen in fit; "
                "use 'ignore' (OneHotEncoder) or 'use_encoded_value' (OrdinalEncoder)",
            )
    if isinstance(inner, OneHotEncoder) and not (
        inner.drop is None or (isinstance(inner.drop, str) and inner.drop in ("first", "if_binary"))
    ):
        _refuse(name, "explicit categories to drop", "they name values of the party's columns")
    if isinstance(inner, SimpleImputer) and not (
        isinstance(inner.missing_values, float) and np.isnan(inner.missing_values)
    ):
        _refuse(name, "missing_values other than NaN", "it names a value of the party's columns")
    if isinstance(inner, KBinsDiscretizer):
        guard.cap("n_bins", int(np.max(inner.n_bins)))
    if isinstance(inner, PolynomialFeatures):
        degree = inner.degree
        top = max(degree) if isinstance(degree, tuple) else degree
        guard.cap("degree", int(top))


def _max_output_features(guard) -> int:
    """Widest output this party accepts (its policy's cap, within the absolute one)."""
    limit = guard.limits.max_output_features
    return MAX_OUTPUT_FEATURES if limit is None else min(MAX_OUTPUT_FEATURES, limit)


def _chain_length(party) -> int:
    """Fitted transformers between ``party`` and the data it is derived from."""
    n = 0
    while party is not None:
        n += isinstance(getattr(party, "_transform", None), FittedTransform)
        party = getattr(party, "_base", None)
    return n


def _own_rows(party, alignment: str, positions: np.ndarray, guard) -> np.ndarray:
    """The party's local rows behind the request (rows it lacks are skipped)."""
    if alignment:
        rows = party.aligned_rows(alignment, positions)
        return rows[rows >= 0]  # how="left": the guest's rows this party does not have
    if guard.enforce:
        # Row numbers would reach customers outside every alignment (past PSI and its
        # minimum intersection): a guarded party fits for a peer on aligned rows only.
        raise PolicyError(
            f"party {party.name!r} fits a peer's transformer only on aligned rows (a handle "
            "from ftl.align), not on rows it names by number"
        )
    if positions.size and (positions.min() < 0 or positions.max() >= party.n_rows):
        raise ValueError(f"party {party.name!r}: row number out of range")
    return positions


def _column_indices(party, columns: list | None) -> list[int] | None:
    """The requested columns as positions (the transformer sees placeholder names)."""
    if columns is None:
        return None
    n = party.n_features
    if isinstance(columns[0], str):
        missing = [c for c in columns if c not in party.feature_names]
    else:
        missing = [c for c in columns if not -n <= c < n]
    if missing:
        raise ValueError(
            f"party {party.name!r} has no feature column(s) {missing}; its features are "
            f"{party.feature_names}"
        )
    if isinstance(columns[0], str):
        indices = [party.feature_names.index(c) for c in columns]
    else:
        indices = [c % n for c in columns]
    if len(set(indices)) != len(indices):
        raise ValueError(f"columns {columns} name a column of party {party.name!r} twice")
    return indices


@role("prep.party", opens=(msg.OPEN.name,))
class PreprocessingParty:
    """One transformer at one party: fit it on own rows, derive the transformed party."""

    def __init__(self, party, request: Message):
        if request.type != msg.OPEN.name:
            raise ValueError("prep.party sessions open with a prep.open message")
        transformer_id = request["transformer_id"]
        if not _TRANSFORMER_ID.match(transformer_id):
            raise ValueError("a transformer id is 1 to 64 letters, digits, '_', '.' or '-'")
        self.party = party
        self.transformer_id = transformer_id

    @operation(accepts=(msg.FIT.name,))
    def fit(self, request: Message) -> Message:
        """Fit the described transformer on this party's rows; keep it here."""
        if request.type != msg.FIT.name:
            raise ValueError("prep.party.fit expects a prep.fit message")
        party, guard = self.party, guard_of(self.party)
        spec = request["spec"]
        build_transformer(spec)  # the allowlist first, before anything else is read
        columns = _column_indices(party, spec["columns"])
        transformer = build_transformer({**spec, "columns": columns})
        _check_parameters(transformer, guard)
        if _chain_length(party) >= MAX_CHAIN:
            raise ValueError(f"party {party.name!r} chains at most {MAX_CHAIN} fitted transformers")
        rows = _own_rows(party, request["alignment"], request["positions"], guard)
        if rows.size == 0:
            raise ValueError(f"party {party.name!r} has none of the rows to fit on")
        # minimum rows and transformers per day; counted before fitting, so a fit that
        # fails on the party's data (a bit about it) still uses the peer's budget
        guard.admit_transformer_fit(int(rows.size))
        features = party.raw_features(rows)
        try:
            fitted = FittedTransform.fit(
                transformer, features, party.feature_names, _max_output_features(guard)
            )
        except ValueError as exc:  # data-free by construction: counts, column names, a type
            raise ValueError(f"party {party.name!r}: {exc}") from None
        party.store_transformer(self.transformer_id, fitted)
        return Message(
            msg.FITTED.name,
            {"n_samples": int(rows.size), "feature_names": fitted.feature_names_out},
        )

    @operation(accepts=("ack",))
    def transform(self, request: Message) -> Message:
        """Serve this party's rows through the fitted transformer from now on."""
        derived = self.party.derive(self.transformer_id)
        return Message(msg.DERIVED.name, {"feature_names": list(derived.feature_names)})
