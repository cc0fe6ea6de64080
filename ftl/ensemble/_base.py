"""What both federated gradient boosting estimators do around the protocol.

:class:`BaseFederatedGradientBoosting` turns ``X`` (an aligned handle, or a plain
array split into a simulated federation) into the parties' rows, holds out the
validation rows of early stopping, runs the guest's side of the fit
(:class:`~ftl.ensemble.guest.BoostingGuest`) and the prediction walk, and keeps
the guest's trees. The estimators add their loss, their targets and their
scikit-learn face.
"""

from __future__ import annotations

import os
from numbers import Integral, Real

import numpy as np
from sklearn.model_selection import train_test_split
from sklearn.utils._param_validation import Interval, RealNotInt, StrOptions
from sklearn.utils.validation import check_is_fitted, column_or_1d
from tqdm import tqdm

from ftl.crypto.keys import check_key_size
from ftl.data.batch_scoring import rows_identity, score_in_batches, scoring_settings
from ftl.data.handles import VerticalData
from ftl.data.simulate import simulate_for_fit, simulate_for_predict
from ftl.ensemble._binning import draw_seed
from ftl.ensemble._early_stopping import EarlyStopping
from ftl.ensemble._loss import make_loss
from ftl.ensemble._plan import TreePlan
from ftl.ensemble._resume import boosting_checkpoint
from ftl.ensemble._split import TreeParams
from ftl.ensemble.guest import BoostingGuest, predict_raw_federated
from ftl.federation.channel import Channel
from ftl.federation.transcript import Transcript

__all__ = ["BaseFederatedGradientBoosting"]

#: Above this many rows ``early_stopping="auto"`` turns early stopping on (sklearn's rule).
AUTO_EARLY_STOPPING_ROWS = 10_000


class BaseFederatedGradientBoosting:
    """Mixin of the federated gradient boosting estimators (left of BaseEstimator).

    Subclasses give ``_encode_y(y) -> (targets, n_classes or None)`` and their
    ``loss`` options.
    """

    _parameter_constraints: dict = {
        "learning_rate": [Interval(Real, 0, None, closed="neither")],
        "max_iter": [Interval(Integral, 1, None, closed="left")],
        "max_leaf_nodes": [Interval(Integral, 2, None, closed="left"), None],
        "max_depth": [Interval(Integral, 1, None, closed="left"), None],
        "min_samples_leaf": [Interval(Integral, 1, None, closed="left")],
        "l2_regularization": [Interval(Real, 0, None, closed="left")],
        "max_bins": [Interval(Integral, 2, 255, closed="both")],
        "early_stopping": [StrOptions({"auto"}), "boolean"],
        "scoring": [str, callable, None],
        "validation_fraction": [
            Interval(RealNotInt, 0, 1, closed="neither"),
            Interval(Integral, 1, None, closed="left"),
            None,
        ],
        "n_iter_no_change": [Interval(Integral, 1, None, closed="left")],
        "tol": [Interval(Real, 0, None, closed="left")],
        "encryption": [StrOptions({"paillier"}), None],
        "key_size": [Interval(Integral, 256, None, closed="left")],
        "insecure_for_tests": ["boolean"],
        "simulated_hosts": [Interval(Integral, 1, None, closed="left")],
        "guest_only_iterations": [Interval(Integral, 0, None, closed="left")],
        "tree_mode": [StrOptions({"standard", "layered", "mixed"})],
        "host_depth": [Interval(Integral, 1, None, closed="left"), None],
        "guest_depth": [Interval(Integral, 1, None, closed="left"), None],
        "tree_num_per_party": [Interval(Integral, 1, None, closed="left")],
        "n_jobs": [Integral, None],
        "verbose": ["verbose"],
        "random_state": ["random_state"],
        "predict_batch_rows": [Interval(Integral, 1, None, closed="left"), None],
        "checkpoint_dir": [str, os.PathLike, None],
    }

    #: Whether ``fit`` converts ``y`` to float (regressors) when given a plain array.
    _numeric_y = False

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.input_tags.allow_nan = False
        return tags

    # ------------------------------------------------------------------ data
    def _as_handle(self, X, y=None, *, fitting: bool):
        """The aligned handle of ``X`` (a simulated federation for a plain array);
        when fitting, ``(handle, y)`` with ``y`` as 1-d targets."""
        if not isinstance(X, VerticalData):
            if fitting:
                handle, y = simulate_for_fit(self, X, y, y_numeric=self._numeric_y)
                self._sim_hosts, self.party_names_ = handle.alignment.hosts, None
                return handle, y
            return simulate_for_predict(self, X, self._sim_hosts)
        names = [p.name for p in X.parties]
        if len(X) == 0:
            raise ValueError("X has 0 rows; at least 1 is required")
        if fitting:
            self._sim_hosts, self.party_names_ = None, names
            self.n_features_in_ = X.shape[1]
            self.feature_names_in_ = np.asarray(X.feature_names, dtype=object)
            y = np.asarray(y)  # a column vector warns, as in scikit-learn
            return X, column_or_1d(y, warn=True) if y.ndim == 2 else y
        if self.party_names_ is None:
            raise ValueError(
                "this model was fitted on a plain array (a simulated federation); predict on "
                "a plain array too"
            )
        if names != self.party_names_:
            raise ValueError(
                f"X is aligned over parties {names}, the model over {self.party_names_}"
            )
        return X

    def _protocol_params(self, seed: int, plan: TreePlan) -> dict:
        """The public parameters every host gets (and checks) at ``sbt.open``: the
        most trees the fit may grow; layered trees add ``host_depth``, below which a
        host refuses to split, mixed trees their plan (each host's turn is added
        at its open)."""
        host_depth, max_depth = self._layers()
        layered = {} if host_depth is None else {"host_depth": host_depth}
        mixed = {"mixed": plan.to_json()} if plan.mixed else {}
        return {
            "max_bins": int(self.max_bins),
            "min_samples_leaf": int(self.min_samples_leaf),
            "max_leaf_nodes": None if self.max_leaf_nodes is None else int(self.max_leaf_nodes),
            "max_depth": None if max_depth is None else int(max_depth),
            "max_trees": int(self.max_iter) * plan.n_trees_per_iteration,
            **layered,
            **mixed,
            "seed": int(seed),
            "encryption": self.encryption,
            "key_size": int(self.key_size),
            "insecure_for_tests": bool(self.insecure_for_tests),
            "n_jobs": self.n_jobs,
        }

    def _layers(self) -> tuple[int | None, int | None]:
        """``(host_depth, max_depth)`` of the trees: layered trees are exactly
        ``host_depth + guest_depth`` deep; standard and mixed ones have no host
        layers."""
        if self.tree_mode != "layered":
            return None, self.max_depth
        if self.host_depth is None or self.guest_depth is None:
            raise ValueError('tree_mode="layered" needs host_depth and guest_depth (each >= 1)')
        depth = int(self.host_depth) + int(self.guest_depth)
        if self.max_depth is not None and self.max_depth != depth:
            raise ValueError(
                f'tree_mode="layered" grows trees of depth host_depth + guest_depth = {depth}: '
                f"max_depth must be None or {depth}, got {self.max_depth}"
            )
        return int(self.host_depth), depth

    def _tree_params(self) -> TreeParams:
        host_depth, max_depth = self._layers()
        return TreeParams(
            max_leaf_nodes=self.max_leaf_nodes,
            max_depth=max_depth,
            min_samples_leaf=self.min_samples_leaf,
            l2_regularization=float(self.l2_regularization),
            max_bins=self.max_bins,
            host_depth=host_depth,
        )

    def _split_rows(self, y: np.ndarray, stratify: bool, seed: int) -> tuple:
        """Training and validation rows, as scikit-learn splits them (by ``seed``)."""
        n = y.shape[0]
        auto = self.early_stopping == "auto"
        self.do_early_stopping_ = n > AUTO_EARLY_STOPPING_ROWS if auto else self.early_stopping
        rows = np.arange(n)
        if not self.do_early_stopping_ or self.validation_fraction is None:
            return rows, None
        return train_test_split(
            rows,
            test_size=self.validation_fraction,
            stratify=y if stratify else None,
            random_state=seed,
        )

    # ------------------------------------------------------------------ fit
    def fit(self, X, y):
        """Grow the boosted trees with the hosts (docs/protocols.md §7).

        Parameters
        ----------
        X : VerticalData or array-like of shape (n_samples, n_features)
            The training rows: an aligned handle (:func:`ftl.align`), each party's
            columns staying with it, or a plain array whose columns are dealt to a
            simulated guest and ``simulated_hosts`` hosts.
        y : array-like of shape (n_samples,)
            The guest's labels or targets of those rows.

        Returns
        -------
        self : object
            Fitted: the guest's trees, and a split table at every host.
        """
        self._validate_params()
        self._layers()  # the layered depths, checked before any host is contacted
        if self.encryption is not None:
            check_key_size(int(self.key_size), self.insecure_for_tests)
        handle, y = self._as_handle(X, y, fitting=True)
        if y.ndim != 1 or y.shape[0] != len(handle):
            raise ValueError(f"y must be 1-d with {len(handle)} values, got shape {y.shape}")
        y, n_classes = self._encode_y(y)
        loss = make_loss(n_classes)
        self.n_trees_per_iteration_ = loss.n_trees_per_iteration
        checkpoint = boosting_checkpoint(self, handle, y)
        seed = draw_seed(self.random_state)
        if checkpoint is not None and checkpoint.seed is not None:
            seed = checkpoint.seed  # a resumed fit bins and splits as it did before
        train, val = self._split_rows(y, n_classes is not None, seed)
        self.transcript_ = Transcript()
        alignment = handle.alignment
        plan = TreePlan(
            guest_only_iterations=int(self.guest_only_iterations),
            tree_num_per_party=int(self.tree_num_per_party) if self.tree_mode == "mixed" else None,
            n_parties=len(alignment.parties),
            n_trees_per_iteration=loss.n_trees_per_iteration,
        )
        guest = BoostingGuest(
            alignment,
            handle.positions[train],
            handle.positions[val] if val is not None else handle.positions[:0],
            self._protocol_params(seed, plan),
            Channel(alignment.guest.name, self.transcript_),
            loss.constant_hessian,
            plan.mixed,
            checkpoint,
        )
        stopping = None
        if self.do_early_stopping_:
            stopping = EarlyStopping(
                self,
                loss,
                y[train],
                None if val is None else y[val],
                guest.validation_leaves,
                loss.baseline(y[train]),
                seed,
            )
        bar = tqdm(total=self.max_iter, desc="federated boosting", disable=not self.verbose)
        try:
            result = guest.fit(
                y[train],
                loss,
                self._tree_params(),
                max_iter=self.max_iter,
                learning_rate=float(self.learning_rate),
                plan=plan,
                stopping=stopping,
                progress=lambda: bar.update(1),
            )
        finally:
            bar.close()
        self.model_id_ = guest.model_id
        self.baseline_ = result.baseline
        self.trees_ = result.trees
        self.n_iter_ = len(result.trees)
        self.train_score_ = np.asarray(stopping.train_score if stopping else [])
        self.validation_score_ = np.asarray(stopping.validation_score if stopping else [])
        self._importances([p.name for p in alignment.parties], guest.local.n_features)
        return self

    def _importances(self, parties: list[str], n_guest_features: int) -> None:
        """Where the splits are: per party (the guest sees which party split each node),
        and per feature and with their gains for the guest's own features only."""
        nodes = [t for per_iteration in self.trees_ for t in per_iteration]
        blocks = np.concatenate([t.block[~t.is_leaf] for t in nodes])
        counts = np.bincount(blocks, minlength=len(parties))
        self.party_split_counts_ = {p: int(n) for p, n in zip(parties, counts, strict=True)}
        own = [
            (t.feature[~t.is_leaf & (t.block == 0)], t.gain[~t.is_leaf & (t.block == 0)])
            for t in nodes
        ]
        features = np.concatenate([f for f, _ in own]).astype(np.intp)
        gains = np.concatenate([g for _, g in own])
        self.split_counts_ = np.bincount(features, minlength=n_guest_features)
        self.split_gains_ = np.bincount(features, gains, minlength=n_guest_features)

    # ------------------------------------------------------------------ predict
    def _raw_predict(self, X) -> np.ndarray:
        """Raw predictions (n_samples, n_trees_per_iteration), walked with the hosts;
        in ``predict_batch_rows`` batches, resumable with ``checkpoint_dir``
        (:mod:`ftl.data.batch_scoring`)."""
        check_is_fitted(self)
        handle = self._as_handle(X, fitting=False)
        alignment = handle.alignment

        def score(batch: slice) -> np.ndarray:
            return predict_raw_federated(
                alignment,
                handle.positions[batch],
                self.baseline_,
                self.trees_,
                self.model_id_,
                Channel(alignment.guest.name, self.transcript_),
            )

        leaves = [t.value for trees in self.trees_ for t in trees]
        model = {"model_id": self.model_id_, "baseline": self.baseline_, "values": leaves}
        run = {"protocol": "sbt.predict", "model": model, "rows": rows_identity(handle)}
        return score_in_batches(len(handle), score, run, **scoring_settings(self))
