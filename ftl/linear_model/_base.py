"""What every federated linear model does around the protocol.

:class:`AlignedLinearModel` turns ``X`` (an aligned handle, or a plain array
split into a simulated federation) into the parties' rows, runs the guest's
side of the vertical protocol (:class:`~ftl.linear_model.guest.LogisticGuest`)
once per target, and computes the guest's secure margins for prediction. The
estimators add their link, their targets and their scikit-learn face.
"""

from __future__ import annotations

import numpy as np
from sklearn.utils.validation import check_is_fitted, column_or_1d

from ftl.data.batch_scoring import rows_identity, score_in_batches, scoring_settings
from ftl.data.fit_checks import show_progress
from ftl.data.handles import VerticalData
from ftl.data.simulate import simulate_for_fit, simulate_for_predict
from ftl.federation.channel import Channel
from ftl.federation.transcript import Transcript
from ftl.linear_model._checkpoint import fit_checkpoint
from ftl.linear_model.guest import LogisticGuest, guest_secret, predict_margin, start_seed

__all__ = ["AlignedLinearModel"]


class AlignedLinearModel:
    """Mixin of the federated linear models (logistic, linear, Poisson).

    Uses the estimator's parameters ``simulated_hosts``, ``encryption``,
    ``insecure_for_tests``, ``verbose`` and ``max_iter``; subclasses give
    :meth:`_params` (the protocol parameters) and :meth:`_tol`.
    """

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.input_tags.allow_nan = False
        return tags

    def _as_handle(self, X, y=None, *, fitting: bool):
        """The aligned handle for ``X`` (simulating a federation for a plain array).

        When fitting, returns ``(handle, y)`` with ``y`` validated as 1-d targets.
        """
        if isinstance(X, VerticalData):
            if fitting:
                self._sim_hosts = None
                self.n_features_in_ = X.shape[1]
                self.feature_names_in_ = np.asarray(X.feature_names, dtype=object)
            elif X.shape[1] != self.n_features_in_:
                raise ValueError(
                    f"X has {X.shape[1]} features, but {type(self).__name__} is expecting "
                    f"{self.n_features_in_} features as input"
                )
            if len(X) == 0:
                raise ValueError("X has 0 rows; at least 1 is required")
            self._check_parties(X, fitting)
            if fitting:
                # a column vector is accepted with a DataConversionWarning, as in sklearn
                y = np.asarray(y)
                return X, column_or_1d(y, warn=True) if y.ndim == 2 else y
            return X
        if fitting:
            handle, y = simulate_for_fit(self, X, y, y_numeric=self._numeric_y)
            self._sim_hosts, self.party_names_ = handle.alignment.hosts, None
            return handle, y
        return simulate_for_predict(self, X, self._sim_hosts)

    #: Whether ``fit`` converts ``y`` to float (regressors) when given a plain array.
    _numeric_y = False

    def _check_parties(self, X: VerticalData, fitting: bool) -> None:
        names = [p.name for p in X.parties]
        if fitting:
            self.party_names_ = names
        elif self.party_names_ is None:
            raise ValueError(
                "this model was fitted on a plain array (a simulated federation); "
                "predict on a plain array too"
            )
        elif names != self.party_names_:
            raise ValueError(
                f"X is aligned over parties {names}, the model over {self.party_names_}"
            )

    def _secret(self, handle: VerticalData) -> int | None:
        """The guest's secret, or None for a simulated federation (no other party)."""
        if self._sim_hosts is not None:
            return None
        return guest_secret(handle.alignment.guest)

    def _train(self, handle: VerticalData, targets: list, seeds: list, varies: bool) -> list:
        """Run the protocol once per target; return the guest's training results.

        ``varies``: whether the secret random start also follows ``random_state``
        (mini-batch optimisers), or only the guest's secret and the training rows
        (L-BFGS: every fit on these rows is then the same run, so repeated fits
        give a host no second sample of the start to average away). A simulated
        federation has no secret: its start always follows ``random_state``.
        With ``checkpoint_dir`` the fit keeps, and resumes from, its checkpoint
        (:mod:`~ftl.linear_model._checkpoint`).
        """
        alignment = handle.alignment
        checkpoint = fit_checkpoint(self, handle, targets)
        secret = self._secret(handle)
        rows = (
            None if secret is None else alignment.guest.aligned_rows(alignment.id, handle.positions)
        )
        self.transcript_ = Transcript()
        results = []
        for k, (target, seed) in enumerate(zip(targets, seeds, strict=True)):
            channel = Channel(alignment.guest.name, self.transcript_)
            guest = LogisticGuest(
                alignment.guest,
                alignment.hosts,
                alignment.id,
                handle.positions,
                target,
                self._params(len(handle), len(alignment.hosts)),
                channel,
                np.random.default_rng(seed),
                verbose=show_progress(self.verbose, self.encryption),
                start=start_seed(secret, k, seed if varies or secret is None else None, rows),
                model=(k + 1, len(targets)),
                checkpoint=None if checkpoint is None else checkpoint.model(k),
            )
            results.append(guest.fit(self.max_iter, self._tol(), self._batch_size()))
        return results

    def _batch_size(self):
        return getattr(self, "batch_size", None)

    def _margins(self, X) -> np.ndarray:
        """Every model's margins ``X w + b``, (n_samples, n_models): computed with the
        hosts, revealed only to the guest; in ``predict_batch_rows`` batches,
        resumable with ``checkpoint_dir`` (:mod:`ftl.data.batch_scoring`)."""
        check_is_fitted(self)
        handle = self._as_handle(X, fitting=False)
        alignment = handle.alignment
        coef = np.atleast_2d(self.coef_)
        intercept = np.atleast_1d(self.intercept_)

        def score(batch: slice) -> np.ndarray:
            scores = []
            for k, model in enumerate(self.models_):
                channel = Channel(alignment.guest.name, self.transcript_)
                scores.append(
                    predict_margin(
                        alignment.guest,
                        alignment.hosts,
                        alignment.id,
                        handle.positions[batch],
                        coef[k],
                        intercept[k],
                        model["model_id"],
                        model["host_public_keys"],
                        self.encryption,
                        channel,
                        self.insecure_for_tests,
                    )
                )
            return np.column_stack(scores)

        model = {"models": [m["model_id"] for m in self.models_], "coef": coef, "b": intercept}
        run = {"protocol": "lr.predict", "model": model, "rows": rows_identity(handle)}
        return score_in_batches(len(handle), score, run, **scoring_settings(self))
