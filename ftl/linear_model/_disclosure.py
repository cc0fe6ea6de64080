"""What vertical logistic regression declares about itself to the audit report.

Its leakages are those of docs/protocols.md §3-5; the fitted estimator adds the
sigmoid approximation it trained with, its iteration counts and whether it trained
with label privacy.
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np

from ftl.federation.disclosure import Disclosure, Findings, Leakage

__all__ = ["DISCLOSURE", "effective_sigmoid", "estimator_facts"]


def _training(a: Findings) -> bool:
    return bool(a.type_set & {"lr.open", "lr.contribution"})


def _prediction(a: Findings) -> bool:
    return bool(a.type_set & {"lr.predict_open", "lr.masked_margin"})


def effective_sigmoid(est) -> str:
    """The ``sigmoid`` parameter, with the approximation it resolved to for the
    fitted number of hosts when that differs (``"auto (→ poly)"``)."""
    names = getattr(est, "party_names_", None)
    n_hosts = len(names) - 1 if names else est.simulated_hosts
    try:
        effective = est._sigmoid_for(n_hosts)
    except ValueError:  # a parameter the fit would refuse
        return str(est.sigmoid)
    return str(est.sigmoid) if effective == est.sigmoid else f"{est.sigmoid} (→ {effective})"


#: What the report says of a regressor's link (both exact: nothing approximated).
_LINKS = {
    "identity": "identity: linear (ridge) regression, exact",
    "log": "log: Poisson regression, exact (the host encrypts exp(u_host))",
}


def _label_privacy_fact(est) -> str:
    """The fitted ``label_privacy_`` in words: ``off``, or epsilon and the noise --
    randomized response (a classifier) or Laplace noise on the clipped targets (a
    regressor). Parts a model file of an older version did not keep are said to be
    not recorded."""
    fitted = getattr(est, "label_privacy_", None)
    if fitted is None:
        return "off"
    text = f"on, ε = {fitted['epsilon']:.4g}: "
    if "keep_probability" in fitted:  # randomized response
        return text + (
            f"randomized response (true class kept with probability "
            f"{fitted['keep_probability']:.3f})"
        )
    low_high, scale = fitted["range"], fitted["scale"]
    if low_high is None or scale is None:
        return text + "Laplace noise on the clipped targets (range not recorded)"
    low, high = low_high
    text += f"Laplace noise of scale {scale:.4g} on the targets clipped to [{low:.4g}, {high:.4g}]"
    if est.label_range is None:
        text += " (the training targets' minimum and maximum, treated as public)"
    return text


def estimator_facts(est) -> Iterator[tuple[str, str]]:
    """Summary rows of a fitted :class:`~ftl.FederatedLogisticRegression`: the
    sigmoid approximation, and the iterations of each binary model (one per
    class in one-vs-rest) with the optimiser that ran them; of a federated
    regressor: its link and its L-BFGS iterations; of both, their label privacy."""
    link = getattr(est, "_link", "")
    if link:  # a regressor: an exact link, one model fitted by L-BFGS
        yield "Link", _LINKS[link]
        if getattr(est, "n_iter_", None) is not None:
            yield "L-BFGS iterations", str(int(est.n_iter_))
    else:
        yield "Sigmoid approximation", effective_sigmoid(est)
        n_iter = getattr(est, "n_iter_", None)
        if n_iter is not None:
            unit = "L-BFGS iterations" if est.optimizer == "lbfgs" else "Epochs"
            yield f"{unit} per binary model", ", ".join(str(int(n)) for n in np.ravel(n_iter))
            yield "Optimiser", f"`{est.optimizer}`"
    yield "Label privacy", _label_privacy_fact(est)


DISCLOSURE = Disclosure(
    listed="unless_framed",
    name="vertical logistic regression (docs/protocols.md §3)",
    owner_types=frozenset({"lr.contribution"}),
    plaintext_values=" (labels and margins inside per-row columns, cross terms)",
    leakages=(
        Leakage(
            "training",
            "Hosts learn the public training parameters (penalty, `alpha = 1/(C n)`, "
            "optimiser, learning rate, sigmoid approximation, key size, encryption mode), "
            "every party's block width, the number of epochs and of classes.",
            "§4, §5.4",
            applies=_training,
        ),
        Leakage(
            "training",
            "Hosts learn which of their customers are training rows and which are in each "
            "batch (row positions).",
            "§4, §5.4",
            applies=_training,
        ),
        Leakage(
            "training",
            "Labels to every host: per batch a host learns its gradient term "
            "`X_Hᵀ (residual)` (the residual `σ̃(z) − y`; a regressor's: prediction minus "
            "target), which correlates with the labels; a host column non-zero on a single "
            "row (a spy column, which the guest can neither see nor refuse) makes that row's "
            "residual, and so its label, an entry of it in every batch. Only "
            "`label_privacy=ε` bounds what a host learns of each label (ε-label-DP: "
            "randomized response, or Laplace noise on a regressor's targets); whether a fit "
            "used it is the guest's to know: an estimator's report shows it in the summary "
            "(row Label privacy), a transcript does not record it.",
            "§5.2",
            applies=_training,
        ),
        Leakage(
            "training",
            "Host margins to the guest: per batch and host the guest learns an aggregate of "
            "the host's margin weighted by its own features (`X_Gᵀ u_H` or the polynomial "
            "analogue), solvable for the margins when the guest has at least as many columns "
            "as the batch has rows.",
            "§5.2",
            applies=_training,
        ),
        Leakage(
            "training",
            "Several hosts: each host learns `X_Hᵀ u_O` for every other host `O`.",
            "§5.2",
            applies=lambda a: _training(a) and a.n_hosts > 1,
        ),
        Leakage(
            "training",
            "Per epoch (iteration) each host reveals `‖Δw_H‖²` and `‖w_H‖²` (two scalars) "
            "to the guest for the stopping rule.",
            "§5.3",
            applies=_training,
        ),
        Leakage(
            "training",
            "optimizer='lbfgs': per iteration each party reveals to the driver the inner "
            "products of its own blocks of the last weight changes, gradient changes and "
            "gradient (a Gram matrix of at most 32 x 32 scalars) and per pass `g_H · d_H`; "
            "the hosts learn the direction's coefficients and the step length. Sums over "
            "features, never per-sample values; they fix the host's vectors only up to a "
            "rotation of its feature space.",
            "§3.8, §5.3",
            applies=lambda a: "lr.gram" in a.type_set,
        ),
        Leakage(
            "training",
            "Verbose runs: per epoch the guest learns the epoch's total training log-loss "
            "(of the sigmoid approximation; one scalar), decrypted by the host from a masked "
            "sum over all the epoch's rows.",
            "§3.8",
            applies=lambda a: "lr.loss_term" in a.type_set,
        ),
        Leakage(
            "prediction",
            "The guest learns each host's margin `u_H` on every scored row; hosts learn which "
            "of their customers are scored, how many, and how often.",
            "§4, §5.1, §5.4",
            applies=_prediction,
        ),
    ),
    estimator_facts=estimator_facts,
)
