"""Guest role of vertical gradient boosting, SecureBoost, and the driver that runs it.

The guest holds the labels and runs the driver. Per fit (see docs/protocols.md §7):

1. it bins its own columns on the training rows and opens a session at every host
   (``sbt.host.open``: public parameters, its public key, the training and
   validation rows), which answers with its bins per feature;
2. the boosting loop (:mod:`ftl.ensemble._boosting`) grows every tree over the
   guest's own columns (a :class:`~ftl.ensemble._grower.LocalBlock`) and each
   host's (a :class:`~ftl.ensemble._remote.RemoteBlock`): per tree the hosts get
   the gradients and hessians encrypted, per split the guest decrypts the hosts'
   packed histograms and finds the best split over all parties;
3. with early stopping, after every iteration it walks the new trees for the
   validation rows, asking each host about its nodes (``decide``); then every host
   that keeps steps keeps the iteration's end (``iteration_end``), and the guest
   keeps its own state (:mod:`ftl.ensemble._resume`: a fit resumes from there);
4. ``finish``: every host keeps its split table under one model id.

Prediction (:func:`predict_raw_federated`) walks all trees level by level and asks
a prediction session (``sbt.predict``) of each host that owns split nodes about the
rows at those nodes.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable

import numpy as np

from ftl.crypto.scheme import make_own_key, public_key_json
from ftl.data.fit_checkpoint import local_party_checkpoints
from ftl.ensemble import _messages as msg
from ftl.ensemble._binning import fit_binning
from ftl.ensemble._boosting import BoostingResult, fit_boosting, predict_raw
from ftl.ensemble._grower import LocalBlock
from ftl.ensemble._remote import RemoteBlock, remote_decisions
from ftl.ensemble._resume import ResumableBoosting
from ftl.ensemble._tree import SplitQueries, Tree, apply_trees, go_left
from ftl.ensemble.host import BINNING_SUBSAMPLE
from ftl.federation.channel import Channel
from ftl.federation.messages import Message

__all__ = ["BoostingGuest", "predict_raw_federated"]


#: Most random factors the guest's key precomputes (32 MB of 2048-bit factors).
MAX_POOLED_FACTORS = 1 << 16


def _pool_capacity(n_jobs, n_train: int) -> int | None:
    """Random factors to precompute: a whole tree's (one per training row), made in
    the background while the hosts build histograms, when ``n_jobs`` asks for
    parallel work; else the key's default (:class:`~ftl.crypto.paillier.PaillierOwnKey`)."""
    if n_jobs in (None, 1):
        return None
    return min(n_train, MAX_POOLED_FACTORS)


def _close(channel: Channel, endpoints, role: str) -> None:
    """Close the sessions of ``role`` (best effort: a first error is already raised)."""
    for endpoint in endpoints:
        try:
            channel.call(endpoint, f"{role}.close", Message("ack", {}))
        except Exception:  # noqa: BLE001
            pass


class BoostingGuest(ResumableBoosting):
    """The guest's side of one fit: its own block, the hosts' sessions and blocks.

    Parameters
    ----------
    alignment : Alignment
        The parties: the guest (local) and the hosts (their endpoints).
    positions : ndarray of int64
        Aligned positions of the training rows.
    validation : ndarray of int64
        Aligned positions of the validation rows of early stopping (maybe none).
    params : dict
        Public parameters sent to the hosts: ``max_bins``, ``min_samples_leaf``,
        ``max_leaf_nodes``, ``max_depth``, ``max_trees``, ``seed`` (the binning
        draw), ``encryption``, ``key_size``, ``insecure_for_tests``, ``n_jobs``;
        layered trees' ``host_depth``; mixed trees' plan (``mixed``), to which each
        host's open adds its turn (``party``).
    channel : Channel
    constant_hessian : bool
        Squared error: the hessians are not encrypted.
    mixed : bool, default=False
        Mixed trees: the hosts' trees are named (``sbt.tree_gradients``).
    checkpoint : BoostingCheckpoint, optional
        Where the fit keeps its state after every iteration, and resumes from
        (:mod:`~ftl.ensemble._resume`); without it the state is kept in memory
        only (a host's lost session still resumes).
    """

    def __init__(
        self,
        alignment,
        positions,
        validation,
        params: dict,
        channel,
        constant_hessian: bool,
        mixed: bool = False,
        checkpoint=None,
    ):
        self.alignment = alignment
        self.party = alignment.guest
        self.positions = np.asarray(positions, dtype=np.int64)
        self.validation = np.asarray(validation, dtype=np.int64)
        self.params = params
        self.channel = channel
        self.constant_hessian = constant_hessian
        self.mixed = mixed
        features = self._features(self.positions)
        binning = fit_binning(
            features, params["max_bins"], BINNING_SUBSAMPLE, random_state=params["seed"]
        )
        self.local = LocalBlock(
            binning.transform(features), binning.n_bins_non_missing, binning.thresholds
        )
        self.validation_features = self._features(self.validation)
        self.checkpoint = checkpoint
        self.stopping = None
        self.remote: list[RemoteBlock] = []
        self.stepping: list[bool] = []  # which hosts keep the fit's steps
        self._reset_steps()

    def _features(self, positions: np.ndarray) -> np.ndarray:
        rows = self.party.aligned_rows(self.alignment.id, positions)
        return self.party.local_features(rows)

    @property
    def blocks(self) -> list:
        """The guest's block, then each host's (pooled column order)."""
        return [self.local, *self.remote]

    @property
    def bin_thresholds(self) -> list:
        """The thresholds the guest knows: its own block's only."""
        return [self.local.bin_thresholds] + [None] * len(self.remote)

    def _open_sessions(self, resume_step: int | None = None) -> None:
        """Open a fit session at every host, which answers with its bins per feature;
        or, from step ``resume_step`` of this fit, re-open them as a resume (the
        guest's key and parameters restored)."""
        p = self.params
        if resume_step is None:
            self.own_key = make_own_key(
                p["encryption"],
                int(p["key_size"]),
                bool(p["insecure_for_tests"]),
                p["n_jobs"],
                pool_capacity=_pool_capacity(p["n_jobs"], self.positions.shape[0]),
            )
            # the fit id names the hosts' checkpoints of this run, for a resume
            self.params = p = {**p, "fit_id": uuid.uuid4().hex}
        request = {
            "public_key": public_key_json(self.own_key),
            "alignment": self.alignment.id,
            "positions": self.positions,
            "validation": self.validation,
        }
        self.remote, self.stepping = [], []
        for party, host in enumerate(self.alignment.hosts, start=1):
            # a mixed fit tells each host its turn: which trees are its own
            fields = {**request, "params": {**p, "party": party} if self.mixed else p}
            message = (
                Message(msg.OPEN.name, fields)
                if resume_step is None
                else Message(msg.RESUME.name, {**fields, "step": resume_step})
            )
            reply = self.channel.call(host.endpoint, "sbt.host.open", message)
            if resume_step is not None:
                self._check_resumed(party, reply, resume_step)
            self.stepping.append(reply.type == msg.OPENED_STEPS.name)
            self.remote.append(
                RemoteBlock(
                    self.channel,
                    host.endpoint,
                    self.own_key,
                    reply["n_bins_non_missing"],
                    self.constant_hessian,
                    self.mixed,
                )
            )

    def decide(self, block: int, queries: SplitQueries) -> np.ndarray:
        """Early stopping: decisions of one block for validation rows."""
        if block == 0:
            return go_left(self.validation_features, queries)
        endpoint = self.remote[block - 1].endpoint
        return remote_decisions(self.channel, endpoint, "sbt.host.decide", queries)

    def validation_leaves(self, trees: list[Tree]) -> np.ndarray:
        """The leaf of every validation row in each of ``trees`` (the walk)."""
        return apply_trees(trees, self.validation.shape[0], self.decide)

    def fit(
        self,
        y: np.ndarray,
        loss,
        tree_params,
        *,
        max_iter: int,
        learning_rate: float,
        plan,
        stopping=None,
        progress: Callable[[], None] | None = None,
    ) -> BoostingResult:
        """Grow the trees with the hosts (:func:`~ftl.ensemble._boosting.fit_boosting`),
        keeping a step after every iteration; with a checkpoint of this fit, go on
        from its last step; a host's session lost mid-fit is resumed at the last step
        (:mod:`~ftl.ensemble._resume`). ``stopping``: early stopping, called after
        every iteration; ``progress``: called once per iteration."""
        self.stopping = stopping

        def iteration_done(iteration, trees, raw) -> bool:
            self.trees.append(trees)
            self.raw = raw
            if progress is not None:
                progress()
            self.stopped = stopping is not None and bool(stopping(iteration, trees, raw))
            self._end_iteration()
            return self.stopped

        def run() -> BoostingResult:
            result = fit_boosting(
                self.blocks,
                y,
                loss,
                tree_params,
                max_iter=len(self.trees) if self.stopped else max_iter,
                learning_rate=learning_rate,
                bin_thresholds=self.bin_thresholds,
                callback=iteration_done,
                plan=plan,
                start=self.progress,
            )
            self.model_id = self.finish()
            return result

        with local_party_checkpoints(self.checkpoint, self.alignment.hosts):
            try:
                self._start_sessions()
                result = self._run_resuming(run)
            finally:
                self.close()
        if self.checkpoint is not None:
            self.checkpoint.remove()
        return result

    def finish(self) -> str:
        """Every host keeps its split table under one new model id; returns the id."""
        model_id = uuid.uuid4().hex
        for block in self.remote:
            self.channel.call(
                block.endpoint, "sbt.host.finish", Message(msg.FINISH.name, {"model_id": model_id})
            )
        return model_id

    def close(self) -> None:
        """Close every host's session opened so far."""
        _close(self.channel, [block.endpoint for block in self.remote], "sbt.host")


def predict_raw_federated(
    alignment,
    positions: np.ndarray,
    baseline: np.ndarray,
    trees: list[list[Tree]],
    model_id: str,
    channel: Channel,
) -> np.ndarray:
    """Raw predictions of aligned rows: the trees walked with every host's help.

    A prediction session is opened at a host when the walk first reaches one of its
    nodes (a host without splits on the paths learns nothing of the prediction).
    """
    guest = alignment.guest
    positions = np.asarray(positions, dtype=np.int64)
    features = guest.local_features(guest.aligned_rows(alignment.id, positions))
    opened: dict[int, object] = {}

    def decide(block: int, queries: SplitQueries) -> np.ndarray:
        if block == 0:
            return go_left(features, queries)
        endpoint = alignment.hosts[block - 1].endpoint
        if block not in opened:
            request = {"model_id": model_id, "alignment": alignment.id, "positions": positions}
            channel.call(endpoint, "sbt.predict.open", Message(msg.PREDICT_OPEN.name, request))
            opened[block] = endpoint
        return remote_decisions(channel, endpoint, "sbt.predict.decide", queries)

    try:
        return predict_raw(baseline, trees, positions.shape[0], decide)
    finally:
        _close(channel, opened.values(), "sbt.predict")
