"""FederatedLinearRegression and FederatedPoissonRegressor: exact federated GLMs.

Both run the vertical protocol of :class:`~ftl.FederatedLogisticRegression` (the
same roles, messages and host policy family ``"lr"``) with a link whose residual
needs no approximation (``_links.py``): the identity (ridge regression) and the
logarithm (Poisson regression, two parties). Full-batch L-BFGS minimises the
objective of scikit-learn's ``Ridge`` / ``PoissonRegressor`` on the pooled columns.
"""

from __future__ import annotations

import os
from numbers import Integral, Real

import numpy as np
from sklearn.base import BaseEstimator, RegressorMixin
from sklearn.metrics import d2_tweedie_score
from sklearn.utils._param_validation import Interval, StrOptions
from sklearn.utils.validation import check_random_state

from ftl._docstrings import (
    CHECKPOINT_DIR_PARAMETER,
    ENCRYPTION_PARAMETERS,
    N_JOBS_PARAMETER,
    PREDICT_BATCH_ROWS_PARAMETER,
    fill_doc,
)
from ftl.crypto.keys import DEFAULT_KEY_SIZE, check_key_size
from ftl.data.fit_checks import tracks_loss
from ftl.linear_model._base import AlignedLinearModel
from ftl.linear_model._label_privacy import row_noise

__all__ = ["FederatedLinearRegression", "FederatedPoissonRegressor", "laplace_noise"]

#: Stream of the guest's secret that draws the regressors' label noise (randomized
#: response and the random start use others).
TARGET_NOISE_STREAM = 0x4C41504C  # "LAPL"


def laplace_noise(uniforms: np.ndarray, scale: float) -> np.ndarray:
    """Laplace noise of ``scale`` from uniforms in ``[0, 1)`` (inverse CDF)."""
    centred = np.clip(uniforms, 2.0**-53, 1.0 - 2.0**-53) - 0.5
    return -scale * np.sign(centred) * np.log1p(-2.0 * np.abs(centred))


_SHARED_DOC = """
    Parameters
    ----------
    alpha : float, default=1.0
        L2 regularisation strength, as in scikit-learn's ``{sklearn}`` (the
        intercept is not penalised).
    fit_intercept : bool, default=True
        Fit an intercept (kept by the guest).
    max_iter : int, default=200
        Most L-BFGS iterations (each a protocol pass over all rows, a few with a
        line search).
    tol : float, default=1e-8
        Stop when the norm of the gradient of the mean objective over all
        parties' weights is at most ``tol``.
    %(encryption_parameters)s
    simulated_hosts : int, default=1
        With a plain array ``X``: the number of simulated hosts its columns are
        split over (the first ``n_features // (simulated_hosts + 1)`` columns go
        to the guest).{hosts_note}
    %(n_jobs_parameter)s
    label_privacy : float or None, default=None
        Label differential privacy towards the hosts: ``epsilon > 0``. Before
        training, the guest clips each training target to ``label_range`` and adds
        Laplace noise of scale ``(high - low) / epsilon`` (the Laplace mechanism);
        everything the hosts see is then a function of the noisy targets, so
        training is ``epsilon``-label-DP with respect to the targets of the
        training rows (docs/protocols.md §3.12). The gradient is linear in the
        target, so the noise is unbiased; it costs accuracy when the rows are
        few. A row's noise is a fixed function of the guest party's secret:
        repeated fits on the same guest party (cross-validation, grid search)
        reuse it and do not add up. ``None``: no label noise.{privacy_note}
    label_range : tuple of (float, float) or None, default=None
        The public ``(low, high)`` the targets are clipped to for
        ``label_privacy``. ``None`` takes the training targets' minimum and
        maximum, which are then treated as public.
    random_state : int, RandomState instance or None, default=None
        Seeds the random start when ``X`` is a plain array (a simulated
        federation); with parties the start comes from the guest's own secret.
    verbose : bool or "auto", default="auto"
        ``"auto"`` shows a progress bar for encrypted fits, ``False`` nothing;
        ``True`` always shows it{loss_note}.
    %(checkpoint_dir_parameter)s
    %(predict_batch_rows_parameter)s

    Attributes
    ----------
    coef_ : ndarray of shape (n_guest_features,)
        The guest's weights (each host keeps its own block, never sent).
    intercept_ : float
        The intercept (0.0 without ``fit_intercept``).
    n_iter_ : int
        L-BFGS iterations run.
    label_privacy_ : dict or None
        With ``label_privacy``: ``epsilon``, the clipping ``range`` and the
        Laplace ``scale`` of the noise; ``None`` without.
    models_ : list of one dict
        ``model_id`` and the hosts' public keys of the trained model (the hosts
        keep their weights under this id).
    history_ : list of dict
        Per iteration: ``epoch``, ``relative_change``, ``seconds`` (and ``loss``
        when it is tracked).
    transcript_ : Transcript
        Every message of fit and prediction that crossed a party boundary.
    n_features_in_ : int
        Number of features over all parties.
    feature_names_in_ : ndarray of str
        Feature names, guest's first.
    party_names_ : list of str or None
        The parties of the aligned handle (guest first), ``None`` for a plain array.
"""


#: ``X`` of a regressor's ``predict``.
_PREDICT_X = """\
X : VerticalData or array-like of shape (n_samples, n_features)
    A handle over the parties the model was fitted on, or a plain array
    if it was fitted on one."""

#: The parameters of a regressor's ``score``.
_SCORE_PARAMETERS = """\
X : VerticalData or array-like of shape (n_samples, n_features)
    See :meth:`predict`.
y : array-like of shape (n_samples,)
    True targets (counts, for Poisson regression).
sample_weight : array-like of shape (n_samples,), default=None
    Row weights."""


class _FederatedRegressor(RegressorMixin, AlignedLinearModel, BaseEstimator):
    """Shared face of the federated regressors (one L-BFGS model, exact link)."""

    _link: str = ""
    _numeric_y = True

    _parameter_constraints: dict = {
        "alpha": [Interval(Real, 0, None, closed="left")],
        "fit_intercept": ["boolean"],
        "max_iter": [Interval(Integral, 1, None, closed="left")],
        "tol": [Interval(Real, 0, None, closed="left")],
        "encryption": [StrOptions({"paillier"}), None],
        "key_size": [Interval(Integral, 1, None, closed="left")],
        "insecure_for_tests": ["boolean"],
        "simulated_hosts": [Interval(Integral, 1, None, closed="left")],
        "n_jobs": [Integral, None],
        "label_privacy": [Interval(Real, 0, None, closed="neither"), None],
        "label_range": [tuple, list, None],
        "random_state": ["random_state"],
        "verbose": ["verbose", StrOptions({"auto"})],
        "checkpoint_dir": [str, os.PathLike, None],
        "predict_batch_rows": [Interval(Integral, 1, None, closed="left"), None],
    }

    def __init__(
        self,
        alpha=1.0,
        *,
        fit_intercept=True,
        max_iter=200,
        tol=1e-8,
        encryption="paillier",
        key_size=DEFAULT_KEY_SIZE,
        insecure_for_tests=False,
        simulated_hosts=1,
        n_jobs=None,
        label_privacy=None,
        label_range=None,
        random_state=None,
        verbose="auto",
        checkpoint_dir=None,
        predict_batch_rows=None,
    ):
        self.alpha = alpha
        self.fit_intercept = fit_intercept
        self.max_iter = max_iter
        self.tol = tol
        self.encryption = encryption
        self.key_size = key_size
        self.insecure_for_tests = insecure_for_tests
        self.simulated_hosts = simulated_hosts
        self.n_jobs = n_jobs
        self.label_privacy = label_privacy
        self.label_range = label_range
        self.random_state = random_state
        self.verbose = verbose
        self.checkpoint_dir = checkpoint_dir
        self.predict_batch_rows = predict_batch_rows

    def _penalty(self, n_train: int) -> float:
        """The per-row penalty ``alpha`` of the protocol (its objective is a mean)."""
        raise NotImplementedError

    def _params(self, n_train: int, n_hosts: int = 1) -> dict:
        from ftl.linear_model._links import make_link

        tracks = make_link({"link": self._link}).tracks_loss
        return {
            "link": self._link,
            # the logistic keys every LR host expects (unused by these links)
            "sigmoid": "taylor",
            "sigmoid_degree": 1,
            "sigmoid_radius": 1.0,
            "schedule": "adaptive",
            "penalty": "l2",
            "alpha": self._penalty(n_train),
            "fit_intercept": bool(self.fit_intercept),
            "optimizer": "lbfgs",
            "learning_rate": 0.0,
            "decay": 0.0,
            "encryption": self.encryption,
            "key_size": int(self.key_size),
            "insecure_for_tests": bool(self.insecure_for_tests),
            "n_jobs": self.n_jobs,
            "track_loss": tracks_loss(self.verbose) and n_hosts == 1 and tracks,
        }

    def _tol(self) -> float:
        return float(self.tol)

    def _check_hosts(self, n_hosts: int) -> None:
        """Refuse a federation the link cannot serve (before any message)."""

    def fit(self, X, y):
        """Train on aligned rows.

        Parameters
        ----------
        X : VerticalData or array-like of shape (n_samples, n_features)
            A handle from :func:`ftl.align` (rows at every party), or a plain
            array, which is split by columns into a simulated federation.
        y : array-like of shape (n_samples,)
            The guest's targets for these rows.

        Returns
        -------
        self
        """
        self._validate_params()
        if self.encryption is not None:
            check_key_size(int(self.key_size), self.insecure_for_tests)
        handle, y = self._as_handle(X, y, fitting=True)
        try:
            y = np.asarray(y, dtype=np.float64)
        except (TypeError, ValueError):
            raise ValueError(f"{type(self).__name__} needs numeric targets") from None
        if y.ndim != 1 or len(y) != len(handle):
            raise ValueError(f"y must be 1-d with {len(handle)} targets, got shape {y.shape}")
        if not np.isfinite(y).all():
            raise ValueError("y contains NaN or infinity")
        if len(y) < 2:
            raise ValueError(f"{type(self).__name__} needs at least 2 samples, got n_samples = 1")
        self._check_targets(y)
        self._check_hosts(len(handle.alignment.hosts))
        seed = check_random_state(self.random_state).randint(2**31 - 1)
        targets = self._private_targets(handle, y, seed)
        # L-BFGS is deterministic given its start: the start follows the guest's
        # secret and rows only (random_state seeds it only in a simulation).
        (result,) = self._train(handle, [targets], [seed], varies=False)
        self.coef_ = result.coef
        self.intercept_ = float(result.intercept)
        self.models_ = [{"model_id": result.model_id, "host_public_keys": result.host_public_keys}]
        self.n_iter_ = int(result.n_iter)
        self.history_ = result.history
        return self

    def _check_targets(self, y: np.ndarray) -> None:
        """Refuse targets the link cannot model."""

    def _private_targets(self, handle, y: np.ndarray, seed: int) -> np.ndarray:
        """The targets the protocol trains on: ``y``, or with ``label_privacy`` the
        clipped targets plus Laplace noise (a fixed function of the guest's secret
        and each row; of ``seed`` in a simulated federation, which has no secret)."""
        if self.label_privacy is None:
            self.label_privacy_ = None
            return y
        bounds = (y.min(), y.max()) if self.label_range is None else self.label_range
        if len(bounds) != 2 or not float(bounds[0]) <= float(bounds[1]):
            raise ValueError(f"label_range must be (low, high) with low <= high, got {bounds}")
        low, high = float(bounds[0]), float(bounds[1])
        scale = (high - low) / float(self.label_privacy)
        secret = self._secret(handle)
        if secret is None:
            rows, n_rows, secret = np.arange(len(y)), len(y), int(seed)
        else:
            guest = handle.alignment.guest
            rows, n_rows = guest.aligned_rows(handle.alignment.id, handle.positions), guest.n_rows
        uniforms = row_noise(secret, rows, n_rows, stream=TARGET_NOISE_STREAM)[:, 0]
        self.label_privacy_ = {
            "epsilon": float(self.label_privacy),
            "range": (low, high),
            "scale": scale,
        }
        return np.clip(y, low, high) + laplace_noise(uniforms, scale)

    def _linear_predictor(self, X) -> np.ndarray:
        return self._margins(X)[:, 0]


@fill_doc(
    encryption_parameters=ENCRYPTION_PARAMETERS,
    n_jobs_parameter=N_JOBS_PARAMETER,
    checkpoint_dir_parameter=CHECKPOINT_DIR_PARAMETER,
    predict_batch_rows_parameter=PREDICT_BATCH_ROWS_PARAMETER,
)
class FederatedLinearRegression(_FederatedRegressor):
    __doc__ = """Ridge regression trained across parties that hold different features.

    Exact: the residual ``u_guest + sum u_host - y`` is linear in every party's
    margin, so the protocol of :class:`~ftl.FederatedLogisticRegression` (each
    party keeps its features and its weight block; only Paillier ciphertexts and
    masked aggregates cross) computes the exact gradient, and L-BFGS minimises
    ``||y - X w - b||**2 / 2 + alpha ||w||**2 / 2`` as ``sklearn.linear_model.Ridge``
    does on the pooled columns. Any number of hosts. ``predict`` is computed with
    the hosts and revealed to the guest only; ``score`` is R².
""" + _SHARED_DOC.format(
        sklearn="Ridge",
        hosts_note="",
        privacy_note="",
        loss_note=" and, with one host, the training loss (one masked scalar per pass)",
    )

    _link = "identity"

    def _penalty(self, n_train: int) -> float:
        # Ridge: ||r||**2 + alpha ||w||**2; the protocol's mean objective
        # ||r||**2 / (2 n) + (alpha / n) ||w||**2 / 2 has the same minimiser
        return float(self.alpha) / n_train

    @fill_doc(predict_x=_PREDICT_X)
    def predict(self, X):
        """Predicted targets ``X w + b`` (revealed to the guest only).

        Parameters
        ----------
        %(predict_x)s

        Returns
        -------
        ndarray of shape (n_samples,)
        """
        return self._linear_predictor(X)

    @fill_doc(score_parameters=_SCORE_PARAMETERS)
    def score(self, X, y, sample_weight=None):
        """R², the coefficient of determination of :meth:`predict` (as scikit-learn's
        ``Ridge.score``).

        Parameters
        ----------
        %(score_parameters)s

        Returns
        -------
        float
        """
        return super().score(X, y, sample_weight=sample_weight)


@fill_doc(
    encryption_parameters=ENCRYPTION_PARAMETERS,
    n_jobs_parameter=N_JOBS_PARAMETER,
    checkpoint_dir_parameter=CHECKPOINT_DIR_PARAMETER,
    predict_batch_rows_parameter=PREDICT_BATCH_ROWS_PARAMETER,
)
class FederatedPoissonRegressor(_FederatedRegressor):
    __doc__ = """Poisson regression (log link) across a guest and one host.

    Exact: the mean factorises, ``exp(u_guest + u_host) = exp(u_guest) *
    exp(u_host)``, so the residual ``exp(u) - y`` is a sum of products of one
    guest value and one host value; the host encrypts ``exp(u_host)``, the guest
    ``-y`` and ``exp(u_guest)`` (docs/protocols.md §3). L-BFGS minimises the mean
    Poisson deviance / 2 plus ``alpha ||w||**2 / 2`` as
    ``sklearn.linear_model.PoissonRegressor`` does on the pooled columns (FATE's
    hetero Poisson regression factorises the mean the same way, through an
    arbiter). ``score`` is D², the fraction of Poisson deviance explained.
""" + _SHARED_DOC.format(
        sklearn="PoissonRegressor",
        hosts_note=" Poisson regression needs exactly one host.",
        privacy_note=(
            "\n        Needs ``alpha > 0``: a noisy target below 0 makes its row's loss"
            "\n        unbounded below without a penalty."
        ),
        loss_note="",
    )

    _link = "log"

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.target_tags.positive_only = True
        return tags

    def _penalty(self, n_train: int) -> float:
        return float(self.alpha)  # PoissonRegressor's objective is already a mean

    def _check_targets(self, y: np.ndarray) -> None:
        if (y < 0).any():
            raise ValueError("Some value(s) of y are negative which is not allowed for Poisson")
        if not (y > 0).any():
            raise ValueError("Sum of y is not strictly positive, which is needed for Poisson")
        if self.label_privacy is not None and self.alpha == 0:
            raise ValueError(
                "label_privacy needs alpha > 0 for Poisson regression: a noisy target below 0 "
                "makes its row's loss fall without bound as its margin falls"
            )

    def _private_targets(self, handle, y: np.ndarray, seed: int) -> np.ndarray:
        targets = super()._private_targets(handle, y, seed)
        if not targets.sum() > 0:
            # the intercept's gradient mean(exp(u)) - mean(targets) never vanishes
            raise ValueError(
                "label_privacy: the noisy targets sum to zero or less, and no Poisson model "
                "fits them; use a larger epsilon or more rows"
            )
        return targets

    def _check_hosts(self, n_hosts: int) -> None:
        if n_hosts != 1:
            raise ValueError(
                f"FederatedPoissonRegressor needs exactly one host, got {n_hosts}: with "
                "several the mean exp(u_G + u_H1 + u_H2) is a product of three parties' values"
            )

    @fill_doc(predict_x=_PREDICT_X)
    def predict(self, X):
        """Predicted means ``exp(X w + b)`` (revealed to the guest only).

        Parameters
        ----------
        %(predict_x)s

        Returns
        -------
        ndarray of shape (n_samples,)
        """
        return np.exp(self._linear_predictor(X))

    @fill_doc(score_parameters=_SCORE_PARAMETERS)
    def score(self, X, y, sample_weight=None):
        """D², the fraction of Poisson deviance explained (as scikit-learn's
        ``PoissonRegressor.score``).

        Parameters
        ----------
        %(score_parameters)s

        Returns
        -------
        float
        """
        return d2_tweedie_score(y, self.predict(X), sample_weight=sample_weight, power=1)
