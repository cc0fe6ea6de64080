"""The driver's document of a fitted estimator (format ``"ftl-model"``).

The envelope -- format, version, the driver's role, the estimator's class name
and its parameters -- is written and checked here for every registered
estimator; its fitted attributes are written and read by the codec its protocol
declares (:class:`~ftl.federation.protocols.EstimatorSpec`).
"""

from __future__ import annotations

from typing import Any

from sklearn.utils.validation import check_is_fitted

from ftl.persistence._formats import MODEL_FORMAT, MODEL_VERSION, _model_spec_of, _model_specs
from ftl.persistence._json import PathLike, _field, _params_to_json


def _check_federated(clf: Any) -> None:
    """Refuse an estimator fitted on a plain array (its other parties live inside it)."""
    if getattr(clf, "party_names_", None) is None:
        raise ValueError(
            "this model was fitted on a plain array (a simulated federation): its other "
            "parties' shards (and private keys) live inside the estimator, so it cannot be "
            "saved as one file per party; fit it on a handle from ftl.align(...) instead"
        )


def _model_document(clf: Any) -> dict:
    """The driver's document of a fitted estimator: what :func:`save_model` writes."""
    spec = _model_spec_of(clf)
    check_is_fitted(clf)
    _check_federated(clf)
    params, unsaved, tuples = _params_to_json(clf)
    return {
        "format": MODEL_FORMAT,
        "version": MODEL_VERSION,
        "role": spec.driver_role,
        "estimator": spec.name,
        "params": params,
        "unsaved_params": unsaved,
        "tuple_params": tuples,
        "attributes": spec.to_json(clf),
    }


def _model_from_document(doc: dict, path: PathLike, estimator: type | None = None) -> Any:
    """The fitted estimator of a checked driver's document (``path`` names it in errors)."""
    name = _field(doc, "estimator", path)
    specs = _model_specs()
    spec = specs.get(name) if isinstance(name, str) else None
    if spec is None:
        raise ValueError(f"{path}: unknown estimator {name!r}; supported: {sorted(specs)}")
    cls = spec.cls
    if estimator is not None and cls is not estimator:
        expected = getattr(estimator, "__name__", repr(estimator))
        raise ValueError(f"{path} holds a {name} model, expected a {expected}")
    role = doc.get("role")
    if role != spec.driver_role:
        raise ValueError(
            f"{path} is corrupted: role {role!r} in a {name} file, expected {spec.driver_role!r}"
        )
    params = _field(doc, "params", path)
    if not isinstance(params, dict):
        raise ValueError(f"{path} is corrupted: params must be an object")
    valid = set(cls().get_params(deep=False))
    unknown = sorted(set(params) - valid)
    if unknown:
        raise ValueError(f"{path}: unknown parameters {unknown} for {name}")
    tuples = doc.get("tuple_params", [])
    if not isinstance(tuples, list) or any(
        t not in params or not isinstance(params[t], list) for t in tuples
    ):
        raise ValueError(f"{path} is corrupted: bad tuple_params")
    params = {k: tuple(v) if k in tuples else v for k, v in params.items()}
    clf = cls(**params)
    try:
        clf._validate_params()
    except (TypeError, ValueError) as exc:
        raise ValueError(f"{path}: invalid parameters: {exc}") from None
    attrs = _field(doc, "attributes", path)
    if not isinstance(attrs, dict):
        raise ValueError(f"{path} is corrupted: attributes must be an object")
    try:
        spec.from_json(clf, attrs, path)
    except (KeyError, TypeError, AttributeError) as exc:
        raise ValueError(f"{path} is corrupted: bad fitted attributes ({exc!r})") from None
    return clf
