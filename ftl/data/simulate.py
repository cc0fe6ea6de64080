"""Simulated federations: a plain array split by columns into local parties.

Used when a federated estimator is given an ndarray (e.g. by scikit-learn's
estimator checks): the first column block goes to a guest, the others to hosts.
Ids are the row numbers, so alignment is the identity and no PSI is needed; the
training protocol itself runs unchanged over the channel.
"""

from __future__ import annotations

import uuid

import numpy as np

from ftl.data.handles import Alignment, VerticalData
from ftl.data.party import Party

__all__ = ["column_blocks", "simulate_federation"]


def column_blocks(n_features: int, n_hosts: int) -> list[np.ndarray]:
    """Column indices of the guest block and each host block."""
    return np.array_split(np.arange(n_features), n_hosts + 1)


def simulate_federation(X: np.ndarray, y: np.ndarray | None, n_hosts: int = 1) -> VerticalData:
    """Split ``X`` by columns into a guest and ``n_hosts`` hosts; return the aligned handle."""
    n = X.shape[0]
    ids = np.arange(n)
    blocks = column_blocks(X.shape[1], n_hosts)
    labels = y if y is not None else np.zeros(n)
    # the blocks are runs of columns: slices are views, and each Party makes its own copy
    columns = [slice(int(b[0]), int(b[-1]) + 1) if len(b) else slice(0, 0) for b in blocks]
    guest = Party(
        "sim_guest",
        X[:, columns[0]],
        ids=ids,
        labels=labels,
        feature_names=[f"x{j}" for j in blocks[0]],
    )
    hosts = tuple(
        Party(f"sim_host{k}", X[:, c], ids=ids, feature_names=[f"x{j}" for j in b])
        for k, (b, c) in enumerate(zip(blocks[1:], columns[1:], strict=True), start=1)
    )
    alignment = Alignment(
        id=uuid.uuid4().hex,
        guest=guest,
        hosts=hosts,
        ids=ids,
        n_features=tuple(len(b) for b in blocks),
        feature_names=tuple(f"x{j}" for j in range(X.shape[1])),
        how="simulated",
    )
    for party in (guest, *hosts):
        party.remember_alignment(alignment.id, ids)
    return VerticalData(alignment)


def simulate_for_fit(
    estimator, X, y, *, y_numeric: bool = False
) -> tuple[VerticalData, np.ndarray]:
    """Validate a plain array ``X`` (and ``y``) for ``estimator``'s ``fit`` and split it
    into its simulated federation of ``estimator.simulated_hosts`` hosts.

    Returns the handle and the validated ``y``; the handle's hosts keep the model
    shards that :func:`simulate_for_predict` hands to the next simulation.
    """
    from sklearn.utils.validation import validate_data

    X, y = validate_data(estimator, X, y, dtype=np.float64, y_numeric=y_numeric)
    return simulate_federation(X, y, estimator.simulated_hosts), y


def simulate_for_predict(estimator, X, fitted_hosts: list | None) -> VerticalData:
    """The simulated federation of a plain array ``X`` to predict on, its hosts
    holding the model shards of ``fitted_hosts`` (the hosts of the fit's simulation;
    ``None`` when the model was fitted on an aligned handle, which is refused)."""
    from sklearn.utils.validation import validate_data

    if fitted_hosts is None:
        raise ValueError(
            "this model was fitted on an aligned data handle (ftl.align); predict on "
            "a handle over the same parties, not on a plain array"
        )
    X = validate_data(estimator, X, dtype=np.float64, reset=False)
    handle = simulate_federation(X, None, estimator.simulated_hosts)
    for new, old in zip(handle.alignment.hosts, fitted_hosts, strict=True):
        new._models = old._models
    return handle
