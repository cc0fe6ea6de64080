"""Label differential privacy at the guest: randomized response, debiased targets.

With ``label_privacy=epsilon`` the guest replaces every training label by a
randomized response (Warner 1965) before the protocol starts: ``k``-ary randomized
response keeps the true class with probability ``p = e**eps / (e**eps + k - 1)``
and otherwise reports one of the ``k - 1`` other classes uniformly, each with
probability ``q = 1 / (e**eps + k - 1)``. The ratio of the probabilities of any
reported class under two true classes is at most ``p / q = e**eps``, so the
reported label is an ``eps``-differentially private release of the true one
(``eps``-label-DP in the sense of Chaudhuri & Hsu 2011 and Ghazi et al. 2021,
"Deep Learning with Label Differential Privacy", NeurIPS 2021). Everything a host
sees during training is computed from the reported labels, the guest's features
and the hosts' own data, never from the true labels, so by post-processing the
whole training run is ``eps``-label-DP towards the hosts.

Training on the reported labels as they are would fit a shrunken model (a fraction
of them is wrong). The logistic gradient ``x (sigmoid(z) - t)`` is linear in the
binary target ``t``, and ``E[t_reported] = q + (p - q) t``, so the debiased target
``(t_reported - q) / (p - q)`` makes every gradient an unbiased estimate of the
gradient on the true labels (the unbiased-loss correction of Natarajan et al.,
"Learning with Noisy Labels", NeurIPS 2013). The debiased targets lie outside
``[0, 1]`` (e.g. ``2.55`` and ``-1.55`` for two classes at ``eps = 0.5``); the
objective stays convex and, with the L2 penalty, bounded below.

The randomness of a row is a fixed function of the guest's secret (held by the
guest's :class:`~ftl.Party`, never sent) and of the row: every fit on the same
guest party reuses each row's reported label, so cross-validation folds, grid
points and refits do not compose into a larger ``eps``.
"""

from __future__ import annotations

import numpy as np

__all__ = ["debiased_targets", "randomized_response", "response_probabilities", "row_noise"]

#: Stream of the guest's secret that drives randomized response (the random start
#: uses others).
LABEL_NOISE_STREAM = 0x4C445020  # "LDP "


def response_probabilities(epsilon: float, n_classes: int) -> tuple[float, float]:
    """``(p, q)``: probability of reporting the true class, and each other class."""
    k = int(n_classes)
    if k < 2:
        raise ValueError("randomized response needs at least two classes")
    # written with e**-eps so that eps = inf gives p = 1, q = 0 without inf / inf
    rest = np.exp(-float(epsilon))
    q = rest / (1.0 + (k - 1) * rest)
    return 1.0 - (k - 1) * q, q


def row_noise(
    secret: int, rows: np.ndarray, n_rows: int, stream: int = LABEL_NOISE_STREAM
) -> np.ndarray:
    """Two uniforms per row, a fixed function of the guest's secret and the row.

    ``rows`` are the guest's own row numbers (``0 <= rows < n_rows``); the same row
    gets the same uniforms in every fit, whatever other rows are selected. Each
    mechanism draws from its own ``stream`` of the secret.
    """
    seed = np.random.SeedSequence(entropy=secret, spawn_key=(int(stream),))
    table = np.random.default_rng(seed).random((int(n_rows), 2))
    return table[np.asarray(rows, dtype=np.int64)]


def randomized_response(
    codes: np.ndarray, n_classes: int, epsilon: float, noise: np.ndarray
) -> np.ndarray:
    """``k``-ary randomized response of class codes ``0 .. k - 1``.

    ``noise[:, 0] < p`` keeps the true class; otherwise ``noise[:, 1]`` picks one of
    the ``k - 1`` other classes uniformly.
    """
    codes = np.asarray(codes, dtype=np.int64)
    k = int(n_classes)
    p, _ = response_probabilities(epsilon, k)
    other = (codes + 1 + np.floor(noise[:, 1] * (k - 1)).astype(np.int64)) % k
    return np.where(noise[:, 0] < p, codes, other)


def debiased_targets(reported: np.ndarray, n_classes: int, epsilon: float) -> list[np.ndarray]:
    """The debiased binary target of every model (one for two classes, else one per
    class, one-vs-rest): ``([reported == c] - q) / (p - q)``, unbiased for ``[y == c]``."""
    k = int(n_classes)
    p, q = response_probabilities(epsilon, k)
    classes = [1] if k == 2 else range(k)
    return [((reported == c).astype(np.float64) - q) / (p - q) for c in classes]
