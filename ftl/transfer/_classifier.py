"""FederatedTransferClassifier: the scikit-learn face of federated transfer learning."""

from __future__ import annotations

import os
import warnings
from numbers import Integral, Real

import numpy as np
from scipy.special import expit, softmax
from sklearn.base import BaseEstimator, ClassifierMixin
from sklearn.exceptions import ConvergenceWarning
from sklearn.utils._param_validation import Interval, StrOptions
from sklearn.utils.validation import (
    check_is_fitted,
    check_random_state,
    column_or_1d,
    validate_data,
)

from ftl._docstrings import (
    CHECKPOINT_DIR_PARAMETER,
    ENCRYPTION_PARAMETERS,
    N_JOBS_PARAMETER,
    PREDICT_BATCH_ROWS_PARAMETER,
    fill_doc,
)
from ftl.crypto import packed
from ftl.crypto.keys import DEFAULT_KEY_SIZE, check_key_size
from ftl.data.batch_scoring import rows_identity, score_in_batches, scoring_settings
from ftl.data.fit_checkpoint import fit_fingerprint
from ftl.data.fit_checks import class_labels, show_progress
from ftl.data.handles import PartyRows, VerticalData
from ftl.data.simulate import simulate_federation
from ftl.federation.channel import Channel
from ftl.federation.transcript import Transcript
from ftl.transfer._resume import SourceCheckpoint
from ftl.transfer.source import TransferSource, source_scores, target_scores

__all__ = ["FederatedTransferClassifier"]

#: Warn when the source-side loss ends within this factor of the loss at z = 0
#: (flat: no signal, or collapse) or above it (not settled).
_FLAT = 0.98


@fill_doc(
    encryption_parameters=ENCRYPTION_PARAMETERS,
    n_jobs_parameter=N_JOBS_PARAMETER,
    predict_batch_rows_parameter=PREDICT_BATCH_ROWS_PARAMETER,
    checkpoint_dir_parameter=CHECKPOINT_DIR_PARAMETER,
)
class FederatedTransferClassifier(ClassifierMixin, BaseEstimator):
    """Secure federated transfer learning to customers the labelled party never saw.

    A *source* party with labels and a *target* party without labels hold
    different features about partly the same customers. Each maps its features
    with its own small network to ``n_components``-dimensional representations;
    the source's labelled representations give one prototype per class (with two
    classes, the signed mean of Liu et al.); a target customer is scored by its
    representation's similarity to the prototypes. Training minimises the
    classification loss of the shared customers' target representations plus
    ``gamma`` times the distance between the two parties' representations of the
    same customers (alignment), with L2 penalty ``alpha``. The loss is replaced by
    its second-order Taylor expansion, so every cross-party gradient term is
    linear in the other party's values; each party encrypts its terms under its own
    Paillier key (row-packed), gradients return masked, and the source's labels,
    prototypes and representations never reach the target, nor the target's
    representations the source (method: Liu, Kang, Xing, Chen and Yang, "Secure
    Federated Transfer Learning", arXiv:1812.03337; multiclass with class
    prototypes and a softmax loss is this library's extension).

    The hidden layers of each network are trained locally before the federated
    phase (the source's as a classifier of its own labels, the target's as an
    autoencoder of all its rows); the federated phase trains both output layers.

    Parameters
    ----------
    n_components : int, default=32
        Dimension ``d`` of the shared representation space.
    hidden_layer_sizes : tuple of int, default=(32,)
        Hidden layers of both parties' networks; ``()`` makes the representation
        linear in the features.
    activation : {"tanh", "relu", "logistic", "identity"}, default="tanh"
    gamma : float, default=0.3
        Weight of the alignment loss ``||u_source - u_target||^2`` on shared rows.
        Large values let both parties shrink their representations together
        (measured: ``gamma=1`` collapses the four-class vehicle model). With
        ``gamma=0`` the target's gradients lie in the span of the prototypes and
        show it their direction (docs/transfer.md, leakages).
    gamma_warmup : int, default=10
        Epochs over which the alignment weight ramps linearly from 0 to ``gamma``
        (without it, unrelated random initial representations can both shrink to
        zero).
    alpha : float, default=1e-3
        L2 penalty on the output layers' weights (not the biases).
    max_iter : int, default=60
        Maximum number of epochs over the shared rows.
    tol : float, default=1e-3
        Stop when the relative change of both output layers over an epoch falls
        below ``tol``.
    batch_size : int or "auto", default="auto"
        Shared rows per step; "auto" uses ``min(1024, n_shared)``.
    learning_rate : float, default=0.05
    optimizer : {"adam", "sgd"}, default="adam"
        Each party's own optimiser for its own weights.
    pretrain_epochs : int, default=30
        Epochs of the local pre-training of the hidden layers.
    %(encryption_parameters)s
    %(n_jobs_parameter)s
    random_state : int, RandomState instance or None, default=None
    verbose : bool or "auto", default="auto"
        Show a tqdm progress bar (batches against ``max_iter`` epochs) with the
        source-side loss and the weight change: ``"auto"`` for encrypted fits, which
        take minutes; ``True`` always; ``False`` never.
    %(predict_batch_rows_parameter)s
    %(checkpoint_dir_parameter)s

    Attributes
    ----------
    classes_ : ndarray of shape (n_classes,)
    prototypes_ : ndarray of shape (1, n_components) or (n_classes, n_components)
        The source's prototypes (they stay at the source, which runs this code).
    n_features_in_ : int
    n_iter_ : int
    transcript_ : Transcript
        Every message that crossed the party boundary during fit and predict.
    history_ : list of dict
        Per epoch: ``relative_change`` of the weights, ``source_side_loss`` (the
        Taylor loss of the shared rows scored from the source's own representations,
        a progress signal; the true training loss scores the target's
        representations, which the source never sees) and wall-clock ``seconds``.

    Notes
    -----
    ``predict_proba`` takes an aligned handle (rows the target shares are scored
    from the target's representation through the secure protocol, rows only the
    source has from the source's own representation) or a handle of target rows
    (``target.select(ids)``: secure protocol). Scores are revealed only to the
    source, which runs this code. Rows named by raw id reach customers outside
    the alignment, so the target decides: a target served by ``ftl serve``
    scores them only if its policy sets ``score_ids = true``, counts them against
    its prediction budget, and refuses ids it cannot score without saying which.

    Examples
    --------
    >>> import ftl
    >>> data = ftl.datasets.load_breast_transfer()
    >>> X, y = ftl.align(data.source, data.target, how="left")
    >>> clf = ftl.FederatedTransferClassifier(encryption=None, random_state=0).fit(X, y)
    >>> proba = clf.predict_proba(data.target.select(data.target_only_ids))
    >>> proba.shape[1]
    2
    """

    _parameter_constraints: dict = {
        "n_components": [Interval(Integral, 1, None, closed="left")],
        "hidden_layer_sizes": [tuple, list],
        "activation": [StrOptions({"tanh", "relu", "logistic", "identity"})],
        "gamma": [Interval(Real, 0, None, closed="left")],
        "gamma_warmup": [Interval(Integral, 0, None, closed="left")],
        "alpha": [Interval(Real, 0, None, closed="left")],
        "max_iter": [Interval(Integral, 1, None, closed="left")],
        "tol": [Interval(Real, 0, None, closed="left")],
        "batch_size": [Interval(Integral, 1, None, closed="left"), StrOptions({"auto"})],
        "learning_rate": [Interval(Real, 0, None, closed="neither")],
        "optimizer": [StrOptions({"adam", "sgd"})],
        "pretrain_epochs": [Interval(Integral, 0, None, closed="left")],
        "encryption": [StrOptions({"paillier"}), None],
        "key_size": [Interval(Integral, 256, None, closed="left")],
        "insecure_for_tests": ["boolean"],
        "n_jobs": [Integral, None],
        "random_state": ["random_state"],
        "verbose": ["verbose", StrOptions({"auto"})],
        "predict_batch_rows": [Interval(Integral, 1, None, closed="left"), None],
        "checkpoint_dir": [str, os.PathLike, None],
    }

    def __init__(
        self,
        n_components=32,
        hidden_layer_sizes=(32,),
        activation="tanh",
        gamma=0.3,
        gamma_warmup=10,
        alpha=1e-3,
        max_iter=60,
        tol=1e-3,
        batch_size="auto",
        learning_rate=0.05,
        optimizer="adam",
        pretrain_epochs=30,
        encryption="paillier",
        key_size=DEFAULT_KEY_SIZE,
        insecure_for_tests=False,
        n_jobs=None,
        random_state=None,
        verbose="auto",
        predict_batch_rows=None,
        checkpoint_dir=None,
    ):
        self.n_components = n_components
        self.hidden_layer_sizes = hidden_layer_sizes
        self.activation = activation
        self.gamma = gamma
        self.gamma_warmup = gamma_warmup
        self.alpha = alpha
        self.max_iter = max_iter
        self.tol = tol
        self.batch_size = batch_size
        self.learning_rate = learning_rate
        self.optimizer = optimizer
        self.pretrain_epochs = pretrain_epochs
        self.encryption = encryption
        self.key_size = key_size
        self.insecure_for_tests = insecure_for_tests
        self.n_jobs = n_jobs
        self.random_state = random_state
        self.verbose = verbose
        self.predict_batch_rows = predict_batch_rows
        self.checkpoint_dir = checkpoint_dir

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.input_tags.allow_nan = False
        return tags

    # ------------------------------------------------------------------ helpers
    def _params(self) -> dict:
        hidden = [int(k) for k in self.hidden_layer_sizes]
        if any(k < 1 for k in hidden):
            raise ValueError(f"hidden_layer_sizes must be positive, got {self.hidden_layer_sizes}")
        return {
            "n_components": int(self.n_components),
            "hidden_layer_sizes": hidden,
            "activation": self.activation,
            "gamma": float(self.gamma),
            "gamma_warmup": int(self.gamma_warmup),
            "alpha": float(self.alpha),
            "learning_rate": float(self.learning_rate),
            "optimizer": self.optimizer,
            "pretrain_epochs": int(self.pretrain_epochs),
            "encryption": self.encryption,
            "key_size": int(self.key_size),
            "insecure_for_tests": bool(self.insecure_for_tests),
            "n_jobs": self.n_jobs,
        }

    def _fit_handle(self, X, y):
        if isinstance(X, VerticalData):
            if len(X.alignment.hosts) != 1:
                raise ValueError(
                    "transfer learning runs between exactly two parties (source and target); "
                    f"X is aligned over {len(X.parties)}"
                )
            y = np.asarray(y)
            y = column_or_1d(y, warn=True) if y.ndim == 2 else y
            self._simulated = None
            self.party_names_ = [p.name for p in X.parties]
            self.n_features_in_ = X.shape[1]
            self.feature_names_in_ = np.asarray(X.feature_names, dtype=object)
            return X, y
        X, y = validate_data(self, X, y, dtype=np.float64)
        if X.shape[1] < 2:
            raise ValueError(
                "a simulated federation needs at least 2 features (one per party), got "
                f"{X.shape[1]} feature(s)"
            )
        handle = simulate_federation(X, y, 1)
        self._simulated = handle.alignment.hosts[0]
        self.party_names_ = None
        return handle, y

    def _check_score_packing(self, params: dict, n_classes: int) -> None:
        """Encrypted prediction packs one row's scores into one ciphertext."""
        if self.encryption is None:
            return
        n_scores = 1 if n_classes == 2 else n_classes
        width = packed.slot_bits(params["n_components"], n_scores)
        per_ct, _ = packed.layout(int(self.key_size), width, 1)
        if n_scores > per_ct:
            raise ValueError(
                f"{n_classes} classes need {n_scores} scores per row, but one "
                f"{self.key_size}-bit ciphertext holds {per_ct}; use a larger key_size"
            )

    @staticmethod
    def _overlap(handle: VerticalData) -> np.ndarray:
        overlap = handle.alignment.overlap
        if overlap is None:
            return np.ones(len(handle), dtype=bool)
        return np.asarray(overlap, dtype=bool)[handle.positions]

    def _checkpoint(self, handle, codes, overlap) -> SourceCheckpoint | None:
        """The fit's checkpoint file with ``checkpoint_dir`` (:mod:`._resume`): its
        fingerprint covers the labels and which rows the target shares too."""
        if getattr(self, "checkpoint_dir", None) is None:
            return None
        return SourceCheckpoint(self.checkpoint_dir, fit_fingerprint(self, handle, codes, overlap))

    # ------------------------------------------------------------------ public API
    def fit(self, X, y):
        """Train on the source's labelled rows and the rows shared with the target.

        Parameters
        ----------
        X : VerticalData or array-like of shape (n_samples, n_features)
            A handle from ``ftl.align(source, target, how="left")`` (all labelled
            source rows; the target's rows where shared) or ``how="inner"``; or a
            plain array, split by columns into a simulated source and target that
            share every row.
        y : array-like of shape (n_samples,)
            The source's labels of these rows.

        Returns
        -------
        self : FederatedTransferClassifier
        """
        self._validate_params()
        if self.encryption is not None:
            check_key_size(int(self.key_size), self.insecure_for_tests)
        params = self._params()
        handle, y = self._fit_handle(X, y)
        if len(handle) == 0:
            raise ValueError("X has 0 rows; at least 1 is required")
        if y.ndim != 1 or len(y) != len(handle):
            raise ValueError(f"y must be 1-d with {len(handle)} labels, got shape {y.shape}")
        class_labels(y, "FederatedTransferClassifier", "one prototype and score column per class")
        self.classes_, codes = np.unique(y, return_inverse=True)
        if len(self.classes_) < 2:
            raise ValueError(
                f"This solver needs samples of at least 2 classes in the data, but the data "
                f"contains only one class: {self.classes_[0]!r}"
            )
        self._check_score_packing(params, len(self.classes_))
        rng = check_random_state(self.random_state)
        alignment = handle.alignment
        self.transcript_ = Transcript()
        channel = Channel(alignment.guest.name, self.transcript_)
        overlap = self._overlap(handle)
        n_shared = int(overlap.sum())
        batch_size = min(1024, max(n_shared, 1)) if self.batch_size == "auto" else self.batch_size
        source = TransferSource(
            alignment.guest,
            alignment.hosts[0],
            alignment.id,
            handle.positions,
            overlap,
            codes,
            len(self.classes_),
            params,
            channel,
            np.random.default_rng(rng.randint(2**31 - 1)),
            verbose=show_progress(self.verbose, self.encryption),
            checkpoint=self._checkpoint(handle, codes, overlap),
        )
        result = source.fit(self.max_iter, self.tol, batch_size)
        self.prototypes_ = result.prototypes
        final = result.history[-1]["source_side_loss"]
        if final > result.loss_at_zero / _FLAT:
            warnings.warn(
                f"the source-side loss ({final:.4f}) is still above that of a constant "
                f"score ({result.loss_at_zero:.4f}): training has not settled; raise "
                "max_iter or lower learning_rate (tune in plaintext mode, encryption=None)",
                ConvergenceWarning,
                stacklevel=2,
            )
        elif final >= _FLAT * result.loss_at_zero:
            warnings.warn(
                f"the source-side loss ({final:.4f}) is no better than a constant score "
                f"({result.loss_at_zero:.4f}): the source's features may carry little "
                "signal about the labels, or both representations collapsed towards zero "
                "(then lower gamma or raise gamma_warmup)",
                ConvergenceWarning,
                stacklevel=2,
            )
        self._source_model = {"hidden": result.hidden, "output": result.output}
        self.model_id_ = result.model_id
        self.n_iter_ = result.n_iter
        self.history_ = result.history
        return self

    def decision_function(self, X):
        """Scores ``P u`` (one column per prototype); revealed only to the source.

        Parameters
        ----------
        X : VerticalData, PartyRows or array-like
            An aligned handle over the fitted parties, a handle of target rows
            (``target.select(ids)``) or of source rows, or a plain array when the
            model was fitted on one.

        Returns
        -------
        ndarray of shape (n_samples,) or (n_samples, n_classes)
        """
        check_is_fitted(self)
        scores = self._scores(X)
        return scores[:, 0] if scores.shape[1] == 1 else scores

    def _scores(self, X) -> np.ndarray:
        params = self._params()
        protos = self.prototypes_
        model = self._source_model
        if isinstance(X, PartyRows):
            if self.party_names_ is None or X.party.name not in self.party_names_:
                raise ValueError(
                    f"rows of party {X.party.name!r}, but the model was fitted over "
                    f"{self.party_names_}"
                )
            if len(X) == 0:
                raise ValueError("X has 0 rows; at least 1 is required")
            if X.party.name == self.party_names_[0]:
                return source_scores(X.party, X.rows, model["hidden"], model["output"], protos)
            ids = np.asarray([str(i) for i in X.ids])

            def score_ids(batch: slice) -> np.ndarray:
                channel = Channel(self.party_names_[0], self.transcript_)
                return target_scores(
                    X.party, self.model_id_, protos, params, channel, ids=list(ids[batch])
                )

            rows = {"party": X.party.name, "ids": ids}  # fingerprinted by their bytes
            return self._in_batches(len(ids), score_ids, rows)
        if isinstance(X, VerticalData):
            if self.party_names_ is None:
                raise ValueError(
                    "this model was fitted on a plain array (a simulated federation); "
                    "predict on a plain array too"
                )
            names = [p.name for p in X.parties]
            if names != self.party_names_:
                raise ValueError(
                    f"X is aligned over parties {names}, the model over {self.party_names_}"
                )
            handle = X
        else:
            if self._simulated is None:
                raise ValueError(
                    "this model was fitted on an aligned data handle (ftl.align); predict "
                    "on a handle over the same parties, not on a plain array"
                )
            X = validate_data(self, X, dtype=np.float64, reset=False)
            handle = simulate_federation(X, None, 1)
            handle.alignment.hosts[0]._models = self._simulated._models
        if len(handle) == 0:
            raise ValueError("X has 0 rows; at least 1 is required")
        alignment = handle.alignment
        overlap = self._overlap(handle)
        scores = np.empty((len(handle), protos.shape[0]))
        if (~overlap).any():
            rows = alignment.guest.aligned_rows(alignment.id, handle.positions[~overlap])
            scores[~overlap] = source_scores(
                alignment.guest, rows, model["hidden"], model["output"], protos
            )
        if overlap.any():
            shared = handle.positions[overlap]

            def score_shared(batch: slice) -> np.ndarray:
                channel = Channel(alignment.guest.name, self.transcript_)
                return target_scores(
                    alignment.hosts[0],
                    self.model_id_,
                    protos,
                    params,
                    channel,
                    alignment_id=alignment.id,
                    positions=shared[batch],
                )

            rows = rows_identity(handle, shared)
            scores[overlap] = self._in_batches(len(shared), score_shared, rows)
        return scores

    def _in_batches(self, n_rows: int, score, rows: dict) -> np.ndarray:
        """The target's scores of ``n_rows`` rows in ``predict_batch_rows`` batches,
        resumable with ``checkpoint_dir`` (:mod:`ftl.data.batch_scoring`)."""
        model = {"model_id": self.model_id_, "prototypes": self.prototypes_}
        run = {"protocol": "ftl.target_predict", "model": model, "rows": rows}
        return score_in_batches(n_rows, score, run, **scoring_settings(self))

    def predict_proba(self, X):
        """Class probabilities: logistic (two classes) or softmax of the scores.

        Parameters
        ----------
        X : VerticalData, PartyRows or array-like
            See :meth:`decision_function`.

        Returns
        -------
        ndarray of shape (n_samples, n_classes)
        """
        check_is_fitted(self)
        scores = self._scores(X)
        if scores.shape[1] == 1:
            p = expit(scores[:, 0])
            return np.column_stack([1 - p, p])
        return softmax(scores, axis=1)

    def predict_log_proba(self, X):
        """Logarithm of :meth:`predict_proba`."""
        return np.log(self.predict_proba(X))

    def predict(self, X):
        """Predicted class labels.

        Parameters
        ----------
        X : VerticalData, PartyRows or array-like
            See :meth:`decision_function`.

        Returns
        -------
        ndarray of shape (n_samples,)
        """
        check_is_fitted(self)
        scores = self._scores(X)
        if scores.shape[1] == 1:
            return self.classes_[(scores[:, 0] > 0).astype(int)]
        return self.classes_[np.argmax(scores, axis=1)]
