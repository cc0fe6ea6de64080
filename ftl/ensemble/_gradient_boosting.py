"""The scikit-learn face of vertical gradient boosting (SecureBoost): the classifier
and the regressor, named and defaulted like ``HistGradientBoosting*``."""

from __future__ import annotations

import types

import numpy as np
from sklearn.base import BaseEstimator, ClassifierMixin, RegressorMixin
from sklearn.utils._param_validation import StrOptions

from ftl._docstrings import (
    ENCRYPTION_PARAMETERS,
    N_JOBS_PARAMETER,
    PREDICT_BATCH_ROWS_PARAMETER,
    fill_doc,
)
from ftl.crypto.keys import DEFAULT_KEY_SIZE
from ftl.data.fit_checks import class_labels
from ftl.ensemble._base import BaseFederatedGradientBoosting
from ftl.ensemble._loss import make_loss

__all__ = ["FederatedGradientBoostingClassifier", "FederatedGradientBoostingRegressor"]

#: The parameters both estimators share (scikit-learn's text where it applies).
_BOOSTING_PARAMETERS = """\
learning_rate : float, default=0.1
    Shrinkage: the multiplier of every leaf value.
max_iter : int, default=100
    Maximum number of boosting iterations: trees for one target, ``n_classes``
    trees per iteration for several classes.
max_leaf_nodes : int or None, default=31
    Maximum number of leaves of each tree (at least 2); None for no limit.
max_depth : int or None, default=None
    Maximum depth of each tree (edges from the root to the deepest leaf); None
    for no limit.
min_samples_leaf : int, default=20
    Minimum number of training rows of a leaf. A host refuses, by its policy
    (``sbt_min_samples_leaf``), a fit that asks for fewer than its minimum, and
    every node or split below the fit's value.
l2_regularization : float, default=0.0
    L2 penalty of the leaf values.
max_bins : int, default=255
    Maximum number of bins of each feature (at most 255). Every party bins its own
    columns on the training rows, as scikit-learn would on the pooled columns; the
    bin edges never leave their party.
early_stopping : "auto" or bool, default="auto"
    "auto": on with more than 10 000 rows. The validation rows are scored after
    every iteration through the prediction walk (the hosts answer for their
    nodes), exactly as scikit-learn scores them.
scoring : str, callable or None, default="loss"
    Score of early stopping: "loss" (the negative loss), a scorer name or
    callable, or None (the estimator's ``score``).
validation_fraction : int, float or None, default=0.1
    Share (or number) of the rows held out, stratified for classification, to
    score early stopping on; None: the training rows are scored.
n_iter_no_change : int, default=10
    Early stopping stops when none of the last ``n_iter_no_change`` scores beats
    the one before them by more than ``tol``.
tol : float, default=1e-7
    Absolute tolerance of that comparison.
verbose : int, default=0
    Show a progress bar over the iterations.
random_state : int, RandomState instance or None, default=None
    Seeds the binning's subsample of rows (above 200 000 rows, the same rows at
    every party) and the validation split, as in scikit-learn."""

_FEDERATION_PARAMETERS = """\
guest_only_iterations : int, default=0
    SecureBoost's "complete secure" mode: the trees of the first iterations are
    grown on the guest's columns only, so the hosts learn nothing of them (no
    gradients, no partition); the model then differs from scikit-learn's, whose
    first trees may split on host columns.
tree_mode : {"standard", "layered", "mixed"}, default="standard"
    "layered": SecureBoost+'s layered trees. The top ``host_depth`` layers of
    every tree split on the hosts' columns only, the next ``guest_depth`` layers
    on the guest's only, so the guest learns host partitions only near the root,
    every leaf value is decided below by the guest's splits, and the hosts learn
    nothing of the guest layers. The trees are ``host_depth + guest_depth`` deep
    (``max_depth`` must be None or that sum) and differ from scikit-learn's. Each
    host refuses its own splits below ``host_depth``.
    "mixed": SecureBoost+'s mixed trees. The parties take turns, each growing the
    trees of ``tree_num_per_party`` iterations on its own columns only: the guest
    first, then the first host, the second, and round again (after the
    ``guest_only_iterations``). A host gets no gradient, partition or request of
    the other parties' trees, and the guest learns a host's partitions in that
    host's trees only; each host knows from the plan which trees are its own and
    refuses any other. Every tree is scikit-learn's tree on one party's columns,
    so the model differs from scikit-learn's on the pooled columns.
host_depth, guest_depth : int or None, default=None
    Layers of the hosts and of the guest in layered trees (each at least 1; both
    required by "layered", ignored otherwise).
tree_num_per_party : int, default=1
    Iterations of each party's turn in mixed trees (FATE's name; one tree per
    iteration, or one per class for several classes); ignored otherwise.
simulated_hosts : int, default=1
    When ``fit`` gets a plain array, its columns are split into a guest block and
    this many host blocks (a simulated federation)."""

#: Checkpoint and resume of a boosting fit (docs/howto/deploy.md).
_CHECKPOINT_DIR_PARAMETER = """\
checkpoint_dir : str, path-like or None, default=None
    Folder where the guest keeps its checkpoint of the fit after every boosting
    iteration (its trees, one per class): the trees so far, the training rows'
    raw predictions, early stopping's scores, the binning seed and its own key
    pair, in one JSON file (mode 0600) per fit, named by the fit's fingerprint
    (parameters, alignment, the guest's training data, the hosts). Calling
    ``fit`` again with the same fingerprint -- after the driver crashed or was
    stopped -- resumes after the last completed iteration and grows the trees an
    uninterrupted fit grows; the file is removed when the fit ends. Each host
    keeps its own part, its split table included (``ftl serve``'s
    ``checkpoint_dir``; the driver keeps a simulation's); a host that restarts
    mid-fit is resumed without it. With ``predict_batch_rows`` prediction keeps
    its finished batches there too. ``None``: nothing is written."""

_BOOSTING_ATTRIBUTES = """\
n_iter_ : int
    Boosting iterations run (fewer than ``max_iter`` after early stopping).
n_trees_per_iteration_ : int
    1, or the number of classes for several classes.
trees_ : list of list of Tree
    The guest's trees, ``trees_[i][k]`` of iteration ``i`` and target ``k``: node
    arrays in scikit-learn's order. A node split by a host holds the host's
    opaque split id, the bin and the host feature's pseudonym (its position in
    an order the host drew for the fit and keeps secret, not among the host's
    columns); the host keeps the feature and threshold (``num_threshold`` is
    NaN).
baseline_ : ndarray of shape ``(n_trees_per_iteration_,)``
    Raw prediction before the first tree.
model_id_ : str
    Id of every host's shard (its split table).
do_early_stopping_ : bool
train_score_, validation_score_ : ndarray
    Scores before the first tree and after each iteration (early stopping only).
split_counts_, split_gains_ : ndarray of shape (n_guest_features,)
    Splits on each of the guest's own features and their summed gains. A host's
    split features and thresholds stay in its shard; the guest knows a host's
    features by pseudonym only, and the bins its splits use.
party_split_counts_ : dict of str to int
    Splits per party.
n_features_in_ : int
    Total number of features over all parties.
party_names_ : list of str or None
    The parties, the guest first (None for a simulated federation).
transcript_ : Transcript
    Every message that crossed a party boundary during fit and predict."""

#: The rows a fitted estimator scores.
_PREDICT_X = """\
Parameters
----------
X : VerticalData or array-like of shape (n_samples, n_features)
    Rows to score: a handle from :func:`ftl.align` over the parties the model was
    fitted on (each host answers for its own split nodes), or a plain array if it
    was fitted on one."""

_FILL = dict(
    boosting_parameters=_BOOSTING_PARAMETERS,
    encryption_parameters=ENCRYPTION_PARAMETERS,
    n_jobs_parameter=N_JOBS_PARAMETER,
    federation_parameters="\n".join(
        [_FEDERATION_PARAMETERS, PREDICT_BATCH_ROWS_PARAMETER, _CHECKPOINT_DIR_PARAMETER]
    ),
    boosting_attributes=_BOOSTING_ATTRIBUTES,
)


def _init(
    self,
    loss,
    *,
    learning_rate=0.1,
    max_iter=100,
    max_leaf_nodes=31,
    max_depth=None,
    min_samples_leaf=20,
    l2_regularization=0.0,
    max_bins=255,
    early_stopping="auto",
    scoring="loss",
    validation_fraction=0.1,
    n_iter_no_change=10,
    tol=1e-7,
    verbose=0,
    random_state=None,
    encryption="paillier",
    key_size=DEFAULT_KEY_SIZE,
    insecure_for_tests=False,
    n_jobs=None,
    guest_only_iterations=0,
    tree_mode="standard",
    host_depth=None,
    guest_depth=None,
    tree_num_per_party=1,
    simulated_hosts=1,
    predict_batch_rows=None,
    checkpoint_dir=None,
):
    self.loss = loss
    self.learning_rate = learning_rate
    self.max_iter = max_iter
    self.max_leaf_nodes = max_leaf_nodes
    self.max_depth = max_depth
    self.min_samples_leaf = min_samples_leaf
    self.l2_regularization = l2_regularization
    self.max_bins = max_bins
    self.early_stopping = early_stopping
    self.scoring = scoring
    self.validation_fraction = validation_fraction
    self.n_iter_no_change = n_iter_no_change
    self.tol = tol
    self.verbose = verbose
    self.random_state = random_state
    self.encryption = encryption
    self.key_size = key_size
    self.insecure_for_tests = insecure_for_tests
    self.n_jobs = n_jobs
    self.guest_only_iterations = guest_only_iterations
    self.tree_mode = tree_mode
    self.host_depth = host_depth
    self.guest_depth = guest_depth
    self.tree_num_per_party = tree_num_per_party
    self.simulated_hosts = simulated_hosts
    self.predict_batch_rows = predict_batch_rows
    self.checkpoint_dir = checkpoint_dir


def _init_with_loss(loss: str):
    """The estimators' ``__init__``: one body and signature, the default ``loss``
    their own (scikit-learn reads parameters and defaults from the signature)."""
    init = types.FunctionType(_init.__code__, _init.__globals__, "__init__", (loss,))
    init.__kwdefaults__ = dict(_init.__kwdefaults__)
    return init


@fill_doc(**_FILL)
class FederatedGradientBoostingClassifier(
    ClassifierMixin, BaseFederatedGradientBoosting, BaseEstimator
):
    """Gradient-boosted trees across parties that hold different features (SecureBoost).

    The guest (the party with labels, which runs this code) and one or more hosts
    grow scikit-learn's histogram gradient boosting trees on their aligned rows.
    Every party bins its own columns; per tree the hosts get the rows' gradients
    and hessians encrypted under the guest's key (Paillier, packed), and return
    per-bin sums for the nodes being split, several bins per ciphertext; the guest
    decrypts them and finds the best split over all parties. A host's split is
    recorded at the host only (feature and threshold, under an opaque id); leaf
    values stay at the guest. With ``encryption=None`` the plaintext protocol
    grows exactly the trees of :class:`sklearn.ensemble.HistGradientBoostingClassifier`
    on the pooled columns (guest columns first, then each host's) with the same
    parameters; encrypted, the sums are fixed point (47 fraction bits). What each
    party learns: docs/protocols.md §7.

    Parameters
    ----------
    loss : {"log_loss"}, default="log_loss"
        Binary or multinomial log-loss.
    %(boosting_parameters)s
    %(encryption_parameters)s
    %(n_jobs_parameter)s
    %(federation_parameters)s

    Attributes
    ----------
    classes_ : ndarray of shape (n_classes,)
    %(boosting_attributes)s

    See Also
    --------
    sklearn.ensemble.HistGradientBoostingClassifier : the centralised model.

    Examples
    --------
    >>> import ftl
    >>> guest, host = ftl.datasets.load_breast_cancer()
    >>> X, y = ftl.align(guest, host)
    >>> clf = ftl.ensemble.FederatedGradientBoostingClassifier(encryption=None, max_iter=10)
    >>> round(clf.fit(X, y).score(X, y), 2) > 0.9
    True
    """

    _parameter_constraints: dict = {
        **BaseFederatedGradientBoosting._parameter_constraints,
        "loss": [StrOptions({"log_loss"})],
    }

    __init__ = _init_with_loss("log_loss")

    def _encode_y(self, y: np.ndarray) -> tuple[np.ndarray, int]:
        self.classes_ = class_labels(
            y, type(self).__name__, "one tree per class and iteration: {k}x the trees"
        )
        return np.searchsorted(self.classes_, y).astype(np.float64), max(len(self.classes_), 2)

    @fill_doc(predict_x=_PREDICT_X)
    def decision_function(self, X):
        """Raw predictions (the trees' summed leaf values), revealed only to the guest.

        %(predict_x)s

        Returns
        -------
        ndarray of shape (n_samples,) or (n_samples, n_classes)
        """
        raw = self._raw_predict(X)
        return raw.ravel() if raw.shape[1] == 1 else raw

    @fill_doc(predict_x=_PREDICT_X)
    def predict_proba(self, X):
        """Class probabilities: the sigmoid, or softmax, of the raw predictions.

        %(predict_x)s

        Returns
        -------
        ndarray of shape (n_samples, n_classes)
        """
        raw = self._raw_predict(X)
        return make_loss(max(raw.shape[1], 2)).predict_proba(raw)

    @fill_doc(predict_x=_PREDICT_X)
    def predict(self, X):
        """Predicted class labels: the class of the largest raw prediction.

        %(predict_x)s

        Returns
        -------
        ndarray of shape (n_samples,)
        """
        raw = self._raw_predict(X)
        # "> 0", not ">= 0": a tie goes to the first class, as argmax sends it
        encoded = (raw[:, 0] > 0).astype(int) if raw.shape[1] == 1 else np.argmax(raw, axis=1)
        return self.classes_[encoded]


@fill_doc(**_FILL)
class FederatedGradientBoostingRegressor(
    RegressorMixin, BaseFederatedGradientBoosting, BaseEstimator
):
    """Gradient-boosted regression trees across parties that hold different features.

    The protocol of :class:`FederatedGradientBoostingClassifier` with the squared
    error: per tree only the gradients are encrypted (the hessians are all one; the
    bins' row counts are their sums). In plaintext mode it grows the trees of
    :class:`sklearn.ensemble.HistGradientBoostingRegressor` on the pooled columns.

    Parameters
    ----------
    loss : {"squared_error"}, default="squared_error"
        Half squared error.
    %(boosting_parameters)s
    %(encryption_parameters)s
    %(n_jobs_parameter)s
    %(federation_parameters)s

    Attributes
    ----------
    %(boosting_attributes)s

    See Also
    --------
    sklearn.ensemble.HistGradientBoostingRegressor : the centralised model.
    """

    _parameter_constraints: dict = {
        **BaseFederatedGradientBoosting._parameter_constraints,
        "loss": [StrOptions({"squared_error"})],
    }
    _numeric_y = True

    __init__ = _init_with_loss("squared_error")

    def _encode_y(self, y: np.ndarray) -> tuple[np.ndarray, None]:
        return np.asarray(y, dtype=np.float64), None

    @fill_doc(predict_x=_PREDICT_X)
    def predict(self, X):
        """Predicted values (the trees' summed leaf values), revealed only to the guest.

        %(predict_x)s

        Returns
        -------
        ndarray of shape (n_samples,)
        """
        return self._raw_predict(X).ravel()
