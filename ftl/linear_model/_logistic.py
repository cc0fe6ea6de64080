"""FederatedLogisticRegression: the scikit-learn face of the vertical LR protocol."""

from __future__ import annotations

import os
from numbers import Integral, Real

import numpy as np
from scipy.special import expit
from sklearn.base import BaseEstimator, ClassifierMixin
from sklearn.utils._param_validation import Interval, StrOptions
from sklearn.utils.validation import (
    check_random_state,
)

from ftl._docstrings import (
    CHECKPOINT_DIR_PARAMETER,
    ENCRYPTION_PARAMETERS,
    N_JOBS_PARAMETER,
    PREDICT_BATCH_ROWS_PARAMETER,
    fill_doc,
)
from ftl.crypto.keys import DEFAULT_KEY_SIZE, check_key_size
from ftl.data.fit_checks import class_labels, tracks_loss
from ftl.data.handles import VerticalData
from ftl.linear_model._base import AlignedLinearModel
from ftl.linear_model._label_privacy import (
    debiased_targets,
    randomized_response,
    response_probabilities,
    row_noise,
)

__all__ = ["FederatedLogisticRegression"]


@fill_doc(
    encryption_parameters=ENCRYPTION_PARAMETERS,
    n_jobs_parameter=N_JOBS_PARAMETER,
    checkpoint_dir_parameter=CHECKPOINT_DIR_PARAMETER,
    predict_batch_rows_parameter=PREDICT_BATCH_ROWS_PARAMETER,
)
class FederatedLogisticRegression(ClassifierMixin, AlignedLinearModel, BaseEstimator):
    """Logistic regression trained across parties that hold different features.

    The guest (the party with labels, which runs this code) and one or more hosts
    train one model on their aligned rows. Each party keeps its own features and
    its own block of weights; only Paillier ciphertexts under the owner's key and
    statistically masked values cross between them, and there is no trusted third
    party. With ``encryption=None`` the identical protocol runs on plaintext values
    (for debugging and for measuring what encryption costs).

    Paillier can only add, so the sigmoid in the residual is approximated (see
    ``sigmoid``): with two parties by default by a per-row polynomial in the
    host's margin, fitted by the guest around its own margin (near-lossless);
    with several hosts, or ``sigmoid="taylor"``, by FATE's degree-1 Taylor
    expansion around 0. The default optimiser is full-batch L-BFGS: each party
    keeps its own block of every vector and the driver assembles the search
    direction from inner products the parties report (a few hundred scalars per
    iteration, see ``optimizer``); mini-batch Adam or SGD, run by each party on its
    own weights, are the alternatives.

    Parameters
    ----------
    penalty : {"l2", "l1"} or None, default="l2"
        Regularisation of the feature weights (never of the intercept).
    C : float, default=1.0
        Inverse regularisation strength, as in
        :class:`sklearn.linear_model.LogisticRegression`: the objective is
        ``mean(loss) + R(w) / (C * n_samples)`` (``R = ||w||^2 / 2`` for "l2").
    fit_intercept : bool, default=True
        Fit an intercept (held by the guest).
    max_iter : int, default=50
        Maximum number of iterations (L-BFGS) or epochs (Adam, SGD).
    tol : float or "auto", default="auto"
        L-BFGS stops when the norm of the gradient over all parties' weights is at
        most ``tol``; Adam and SGD stop when the relative change of all weights over
        an epoch, ``||w_t - w_{t-1}|| / ||w_t||``, falls below ``tol``. "auto" is
        1e-2 for Adam and SGD; for L-BFGS it stops once L-BFGS estimates that at
        most 5e-5 of the objective (mean log-loss) is left to gain, from the inner
        products it already has (docs/protocols.md §3.8): independent of how the
        features are scaled, and about half the passes of ``tol=1e-4``.
    batch_size : int, "auto" or None, default="auto"
        Adam and SGD: rows per gradient step; ``None`` means full batch; "auto"
        uses ``clip(n_samples // 16, 32, 1024)``, raised to the guest's minimum.
        L-BFGS always uses every row (as scikit-learn's MLP ignores
        ``batch_size`` with ``solver="lbfgs"``). Each epoch is cut into
        ``n_samples // batch_size`` batches of nearly equal size (none shorter).
        To protect its labels the guest refuses mini-batches of fewer than 32 rows
        and any batch (a full batch too) of fewer than twice the hosts' total
        number of columns (docs/protocols.md §5.2).
    learning_rate : float, default=0.05
        Adam and SGD: initial step size (L-BFGS finds its own by line search).
    learning_rate_decay : float, default=0.5
        Adam and SGD: multiplier of the step size when it is decayed.
    learning_rate_schedule : {"adaptive", "epoch"}, default="adaptive"
        Adam and SGD. ``"epoch"`` decays after every epoch; ``"adaptive"`` only after an epoch in
        which a party's weights moved less than half the length of the path its
        steps took (they wander instead of travelling). Each party decides for its
        own block.
    optimizer : {"lbfgs", "adam", "sgd"}, default="lbfgs"
        ``"lbfgs"``: full-batch limited-memory BFGS (10 pairs) on the joint
        objective, vector-free: every party keeps its blocks of the last weight and
        gradient changes, reports their inner products (its partial Gram matrix,
        at most 32 x 32 scalars per iteration), and the driver returns the
        coefficients of the next direction; the initial inverse Hessian is each
        party's own block ``(X_P.T X_P / 4n + alpha I)^-1``; a secant line search
        on the directional derivative (one more scalar per pass) picks the step.
        Converges like scikit-learn's lbfgs; the inner products are an extra,
        documented disclosure (docs/protocols.md §3.8). Needs ``penalty="l2"`` or
        None. ``"adam"``, ``"sgd"``: mini-batch local optimisers each party
        applies to its own weights, disclosing only two weight norms per epoch.
    sigmoid : {"auto", "poly", "taylor"}, default="auto"
        How ``sigmoid(u_guest + u_host)`` is approximated in the residual.
        ``"poly"`` (two parties only): the host encrypts ``K`` fixed polynomials
        ``phi_1(s), ..., phi_K(s)`` of its smoothly clipped, scaled margin
        ``s = c(u_host) / R`` in ``[-1, 1]`` (``c`` is the identity up to
        ``|u| = R - 1`` and ``±R`` beyond ``R + 1``, continuously differentiable),
        the ``K`` that approximate every ``s -> sigmoid(u + R s)`` best; the guest
        fits, per row, the least-squares combination of ``1, phi_1, ..., phi_K``
        closest to ``sigmoid(u_guest + R s)``; costs about ``K + 1/2`` times the
        encryptions of "taylor". ``"taylor"``: ``sigmoid(z) ~= 1/2 + z/4``
        (FATE's hetero LR), linear in every margin, for any number of hosts.
        ``"auto"``: "poly" with one host, "taylor" with several.
    sigmoid_degree : int, default=4
        ``K`` for ``sigmoid="poly"``: the host's encrypted columns per row.
    sigmoid_radius : float, default=4.0
        ``R`` for ``sigmoid="poly"``: host margins are clipped (smoothly) to
        ``[-R, R]``; the model trained is ``sigmoid(u_guest + c(u_host))``.
    %(encryption_parameters)s
    simulated_hosts : int, default=1
        When ``fit`` gets a plain array, its columns are split into a guest block
        and this many host blocks (a simulated federation).
    %(n_jobs_parameter)s
    label_privacy : float or None, default=None
        Label differential privacy towards the hosts: ``epsilon > 0``. Before
        training, the guest replaces each training label by a ``k``-ary randomized
        response (keeps it with probability ``e**eps / (e**eps + k - 1)``, else
        reports another class uniformly) and trains on the debiased targets, whose
        gradients are unbiased. Everything the hosts see is then a function of the
        randomized labels, so training is ``epsilon``-label-DP with respect to the
        labels of the training rows (not the guest's features; the set of classes is
        treated as public). A row's response is a fixed function of the guest
        party's secret, so repeated fits on the same guest party (cross-validation,
        grid search) reuse it and do not add up. Needs a penalty (the debiased
        objective is unbounded below without one). Costs accuracy at small
        ``epsilon``: docs/accuracy.md measures it. ``None``: no label noise.
    random_state : int, RandomState instance or None, default=None
        Seeds the batch order. The guest's weights start at a random point drawn
        from a secret of the guest's :class:`~ftl.Party` (256 bits from the OS,
        never sent) and the training rows -- with Adam and SGD also from this seed
        -- so a host that knows ``random_state`` cannot reproduce it; refits on the
        same guest party are reproducible (L-BFGS fits on the same rows are the
        same run whatever ``random_state``). With a plain array (a simulated
        federation) the start comes from ``random_state`` alone.
    verbose : bool or "auto", default="auto"
        ``"auto"`` shows a tqdm progress bar for encrypted fits (iterations or
        epochs against ``max_iter``, passes or batches, the relative weight
        change); ``False`` shows nothing. ``True`` always shows it and, with one
        host, also the mean training log-loss of each pass. The loss is computed
        securely: the guest sums its loss coefficients times the host's encrypted
        margin columns over the pass (under the host's key), masks the total,
        and the host decrypts it; the guest learns only that one scalar per pass
        over the data (a documented extra disclosure, so it is computed only when
        verbose). It is the loss of the sigmoid's approximation (Taylor-2 for
        ``"taylor"``, the per-row polynomial for ``"poly"``), without the penalty:
        for L-BFGS at the weights the iteration ends with, for Adam and SGD at each
        batch's weights, like scikit-learn's SGD "avg loss".
    %(checkpoint_dir_parameter)s
    %(predict_batch_rows_parameter)s

    Attributes
    ----------
    classes_ : ndarray of shape (n_classes,)
    coef_ : ndarray of shape (1, n_guest_features) or (n_classes, n_guest_features)
        The guest's own weight block only; the hosts' blocks stay at the hosts.
    intercept_ : ndarray of shape (1,) or (n_classes,)
    n_features_in_ : int
        Total number of features over all parties.
    n_iter_ : ndarray of shape (n_models,)
        Iterations (L-BFGS) or epochs (Adam, SGD) run for each binary model.
    transcript_ : Transcript
        Every message that crossed a party boundary during fit and predict.
    label_privacy_ : dict or None
        With ``label_privacy``: ``epsilon``, ``keep_probability`` (of the true
        class) and ``changed``, the fraction of training labels whose randomized
        response is another class (known to the guest only). ``None`` otherwise.
    history_ : list of list of dict
        Per iteration or epoch of each binary model: ``epoch`` (its index),
        ``relative_change`` (weights),
        ``seconds`` (wall time) and, in verbose runs with one host, ``loss`` (mean
        training log-loss).

    See Also
    --------
    sklearn.linear_model.LogisticRegression : the centralised model.

    Examples
    --------
    >>> import ftl
    >>> guest, host = ftl.datasets.load_breast_cancer()
    >>> X, y = ftl.align(guest, host)
    >>> clf = ftl.FederatedLogisticRegression(encryption=None, random_state=0).fit(X, y)
    >>> round(clf.score(X, y), 2) > 0.9
    True
    """

    _parameter_constraints: dict = {
        "penalty": [StrOptions({"l2", "l1"}), None],
        "C": [Interval(Real, 0, None, closed="neither")],
        "fit_intercept": ["boolean"],
        "max_iter": [Interval(Integral, 1, None, closed="left")],
        "tol": [Interval(Real, 0, None, closed="left"), StrOptions({"auto"})],
        "batch_size": [Interval(Integral, 1, None, closed="left"), StrOptions({"auto"}), None],
        "learning_rate": [Interval(Real, 0, None, closed="neither")],
        "learning_rate_decay": [Interval(Real, 0, 1, closed="right")],
        "learning_rate_schedule": [StrOptions({"adaptive", "epoch"})],
        "optimizer": [StrOptions({"lbfgs", "adam", "sgd"})],
        "sigmoid": [StrOptions({"auto", "taylor", "poly"})],
        "sigmoid_degree": [Interval(Integral, 1, 8, closed="both")],
        "sigmoid_radius": [Interval(Real, 0, None, closed="neither")],
        "encryption": [StrOptions({"paillier"}), None],
        "key_size": [Interval(Integral, 256, None, closed="left")],
        "insecure_for_tests": ["boolean"],
        "simulated_hosts": [Interval(Integral, 1, None, closed="left")],
        "n_jobs": [Integral, None],
        "label_privacy": [Interval(Real, 0, None, closed="neither"), None],
        "random_state": ["random_state"],
        "verbose": ["verbose", StrOptions({"auto"})],
        "checkpoint_dir": [str, os.PathLike, None],
        "predict_batch_rows": [Interval(Integral, 1, None, closed="left"), None],
    }

    def __init__(
        self,
        penalty="l2",
        C=1.0,
        fit_intercept=True,
        max_iter=50,
        tol="auto",
        batch_size="auto",
        learning_rate=0.05,
        learning_rate_decay=0.5,
        learning_rate_schedule="adaptive",
        optimizer="lbfgs",
        sigmoid="auto",
        sigmoid_degree=4,
        sigmoid_radius=4.0,
        encryption="paillier",
        key_size=DEFAULT_KEY_SIZE,
        insecure_for_tests=False,
        simulated_hosts=1,
        n_jobs=None,
        label_privacy=None,
        random_state=None,
        verbose="auto",
        checkpoint_dir=None,
        predict_batch_rows=None,
    ):
        self.penalty = penalty
        self.C = C
        self.fit_intercept = fit_intercept
        self.max_iter = max_iter
        self.tol = tol
        self.batch_size = batch_size
        self.learning_rate = learning_rate
        self.learning_rate_decay = learning_rate_decay
        self.learning_rate_schedule = learning_rate_schedule
        self.optimizer = optimizer
        self.sigmoid = sigmoid
        self.sigmoid_degree = sigmoid_degree
        self.sigmoid_radius = sigmoid_radius
        self.encryption = encryption
        self.key_size = key_size
        self.insecure_for_tests = insecure_for_tests
        self.simulated_hosts = simulated_hosts
        self.n_jobs = n_jobs
        self.label_privacy = label_privacy
        self.random_state = random_state
        self.verbose = verbose
        self.checkpoint_dir = checkpoint_dir
        self.predict_batch_rows = predict_batch_rows

    def _sigmoid_for(self, n_hosts: int) -> str:
        if self.sigmoid == "auto":
            return "poly" if n_hosts == 1 else "taylor"
        if self.sigmoid == "poly" and n_hosts > 1:
            raise ValueError(
                "sigmoid='poly' needs exactly one host (the residual must be a polynomial "
                "in one party's margin); use sigmoid='taylor' or 'auto' with several hosts"
            )
        return self.sigmoid

    def _params(self, n_train: int, n_hosts: int = 1) -> dict:
        return {
            "sigmoid": self._sigmoid_for(n_hosts),
            "sigmoid_degree": int(self.sigmoid_degree),
            "sigmoid_radius": float(self.sigmoid_radius),
            "sigmoid_basis": "kernel",
            "schedule": self.learning_rate_schedule,
            "penalty": self.penalty,
            "alpha": 1.0 / (self.C * n_train),
            "fit_intercept": bool(self.fit_intercept),
            "optimizer": self.optimizer,
            "learning_rate": float(self.learning_rate),
            "decay": float(self.learning_rate_decay),
            "encryption": self.encryption,
            "key_size": int(self.key_size),
            "insecure_for_tests": bool(self.insecure_for_tests),
            "n_jobs": self.n_jobs,
            # With one host, a verbose run also computes its epoch's training loss
            # securely (the guest learns that one scalar per epoch; see verbose).
            "track_loss": tracks_loss(self.verbose) and n_hosts == 1,
        }

    def _tol(self) -> float | str:
        if self.tol == "auto":  # L-BFGS resolves "auto" itself (linear_model/_lbfgs.py)
            return "auto" if self.optimizer == "lbfgs" else 1e-2
        return float(self.tol)

    def _targets(self, handle: VerticalData, y: np.ndarray, secret, seed: int) -> list:
        """The binary target of every model: one for two classes, else one per class.

        With ``label_privacy`` the guest randomizes each label once (k-ary randomized
        response; the noise of a row is a fixed function of the guest's secret and
        its row) and debiases the one-vs-rest targets.
        """
        if self.label_privacy is None:
            self.label_privacy_ = None
            if len(self.classes_) == 2:
                return [(y == self.classes_[1]).astype(np.float64)]
            return [(y == c).astype(np.float64) for c in self.classes_]
        k = len(self.classes_)
        codes = np.searchsorted(self.classes_, y)
        guest = handle.alignment.guest
        if secret is None:  # simulated: rows are the array's rows, noise from the seed
            rows, n_rows, secret = np.arange(len(y)), len(y), int(seed)
        else:
            rows = guest.aligned_rows(handle.alignment.id, handle.positions)
            n_rows = guest.n_rows
        reported = randomized_response(
            codes, k, self.label_privacy, row_noise(secret, rows, n_rows)
        )
        self.label_privacy_ = {
            "epsilon": float(self.label_privacy),
            "keep_probability": response_probabilities(self.label_privacy, k)[0],
            "changed": float(np.mean(reported != codes)),
        }
        return debiased_targets(reported, k, self.label_privacy)

    # ------------------------------------------------------------------ public API
    def fit(self, X, y):
        """Train on aligned rows.

        Parameters
        ----------
        X : VerticalData or array-like of shape (n_samples, n_features)
            A handle from :func:`ftl.align` (rows at every party), or a plain
            array, which is split by columns into a simulated federation.
        y : array-like of shape (n_samples,)
            The guest's labels for these rows.

        Returns
        -------
        self : FederatedLogisticRegression
        """
        self._validate_params()
        if self.optimizer == "lbfgs" and self.penalty == "l1":
            raise ValueError(
                "optimizer='lbfgs' needs a smooth penalty ('l2' or None); use "
                "optimizer='adam' or 'sgd' with penalty='l1'"
            )
        if self.label_privacy is not None and self.penalty is None:
            raise ValueError(
                "label_privacy needs a penalty ('l2' or 'l1'): a debiased target above 1 "
                "or below 0 makes a row's loss fall without bound as its margin grows, "
                "so without a penalty the objective may have no minimum"
            )
        if self.encryption is not None:
            check_key_size(int(self.key_size), self.insecure_for_tests)
        handle, y = self._as_handle(X, y, fitting=True)
        if y.ndim != 1 or len(y) != len(handle):
            raise ValueError(f"y must be 1-d with {len(handle)} labels, got shape {y.shape}")
        self.classes_ = class_labels(
            y, "FederatedLogisticRegression", "one-vs-rest: {k} binary models, {k}x the cost of one"
        )
        if len(self.classes_) < 2:
            raise ValueError(
                f"This solver needs samples of at least 2 classes in the data, but the data "
                f"contains only one class: {self.classes_[0]!r}"
            )
        rng = check_random_state(self.random_state)
        seeds = [
            rng.randint(2**31 - 1)
            for _ in range(1 if len(self.classes_) == 2 else len(self.classes_))
        ]
        targets = self._targets(handle, y, self._secret(handle), seeds[0])
        # L-BFGS is deterministic given its start: a start drawn from the guest's secret
        # and the training rows alone (not random_state) makes every L-BFGS fit on these
        # rows the same run, so repeated fits give a host no second sample of the start
        # to average away. Adam's and SGD's batch orders follow random_state, and so
        # do their starts.
        results = self._train(handle, targets, seeds, varies=self.optimizer != "lbfgs")
        self.coef_ = np.vstack([r.coef for r in results])
        self.intercept_ = np.asarray([r.intercept for r in results])
        self.models_ = [
            {"model_id": r.model_id, "host_public_keys": r.host_public_keys} for r in results
        ]
        self.n_iter_ = np.asarray([r.n_iter for r in results])
        self.history_ = [r.history for r in results]
        return self

    def decision_function(self, X):
        """Decision values; computed with the hosts, revealed only to the guest.

        Parameters
        ----------
        X : VerticalData or array-like of shape (n_samples, n_features)
            A handle from :func:`ftl.align` over the parties the model was
            fitted on, or a plain array if it was fitted on one.

        Returns
        -------
        ndarray of shape (n_samples,) or (n_samples, n_classes)
        """
        scores = self._margins(X)
        return scores[:, 0] if scores.shape[1] == 1 else scores

    def predict_proba(self, X):
        """Class probabilities (one-vs-rest normalised for several classes).

        Parameters
        ----------
        X : VerticalData or array-like of shape (n_samples, n_features)
            See :meth:`decision_function`.

        Returns
        -------
        ndarray of shape (n_samples, n_classes)
        """
        scores = self.decision_function(X)
        if scores.ndim == 1:
            p = expit(scores)
            return np.column_stack([1 - p, p])
        p = expit(scores)
        return p / p.sum(axis=1, keepdims=True)

    def predict_log_proba(self, X):
        """Logarithm of :meth:`predict_proba`."""
        return np.log(self.predict_proba(X))

    def predict(self, X):
        """Predicted class labels.

        Parameters
        ----------
        X : VerticalData or array-like of shape (n_samples, n_features)
            See :meth:`decision_function`.

        Returns
        -------
        ndarray of shape (n_samples,)
        """
        scores = self.decision_function(X)
        if scores.ndim == 1:
            return self.classes_[(scores > 0).astype(int)]
        return self.classes_[np.argmax(scores, axis=1)]
