"""What a fit checks of its guest-side settings: labels that are classes, and progress."""

from __future__ import annotations

import warnings

import numpy as np
from sklearn.utils.multiclass import check_classification_targets, type_of_target

__all__ = ["MANY_CLASSES", "class_labels", "show_progress", "tracks_loss"]

#: Above this many distinct integer labels a classifier warns that the label looks
#: like a count or a grade (a regression target), at that many times the cost.
MANY_CLASSES = 10

_REGRESSORS = "ftl.linear_model.FederatedLinearRegression (or FederatedPoissonRegressor for counts)"


def class_labels(y: np.ndarray, estimator: str, cost: str) -> np.ndarray:
    """The sorted classes of ``y`` for classifier ``estimator``.

    A continuous ``y`` is refused with an error that names the regressors (the
    message starts as scikit-learn's, ``Unknown label type: ...``). Integer labels
    with more than :data:`MANY_CLASSES` values are accepted with a warning that
    says what ``cost`` they incur (e.g. one binary model per class).
    """
    try:
        check_classification_targets(y)
    except ValueError:
        kind = type_of_target(y)
        raise ValueError(
            f"Unknown label type: {kind}. {estimator} is a classifier, and these labels "
            f"are not classes; for a numeric target use {_REGRESSORS}"
        ) from None
    classes = np.unique(y)
    numeric = np.issubdtype(classes.dtype, np.number)
    if numeric and len(classes) > MANY_CLASSES:
        warnings.warn(
            f"y has {len(classes)} distinct integer values, so {estimator} treats it as "
            f"{len(classes)} classes ({cost.format(k=len(classes))}); if y is a count, a "
            f"grade or another quantity, use {_REGRESSORS}",
            UserWarning,
            stacklevel=3,
        )
    return classes


def show_progress(verbose, encryption) -> bool:
    """Whether a fit shows its progress bar: ``verbose="auto"`` (the estimators'
    default) shows it for encrypted fits, which take minutes, and not for plaintext
    ones; ``True``/``False`` (or an int, scikit-learn style) decide outright."""
    if isinstance(verbose, str):  # "auto"
        return encryption is not None
    return bool(verbose)


def tracks_loss(verbose) -> bool:
    """Whether a fit computes its secure training loss: only when asked for
    outright (``verbose=True`` or a positive int), never by ``"auto"`` -- the loss
    is an extra disclosure (one masked scalar per pass), the bar is not."""
    return not isinstance(verbose, str) and bool(verbose)
