"""The guest's document of a fitted pipeline (format ``"ftl-pipeline"``).

The step names, each ftl.preprocessing step's parameters and public fitted
metadata (no statistic of any party) and the estimator's document.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from sklearn.pipeline import Pipeline
from sklearn.utils.validation import check_is_fitted

from ftl.federation.transcript import Transcript
from ftl.persistence._formats import (
    MODEL_FORMAT,
    MODEL_VERSION,
    PIPELINE_FORMAT,
    PIPELINE_VERSION,
    _model_spec_of,
    _pipeline_steps,
)
from ftl.persistence._json import PathLike, _check_format, _read_json, _str_list
from ftl.persistence._model import _check_federated, _model_document, _model_from_document
from ftl.persistence._transformer import _transformer_id
from ftl.preprocessing._spec import (
    _json_columns,
    build_transformer,
    decode_param,
    encode_param,
    transformer_spec,
)

_PIPELINE_KEYS = frozenset(
    {"format", "version", "role", "params", "unsaved_params", "steps", "estimator"}
)

#: The public fitted metadata a pipeline step keeps at the driver (after a fit on a handle).
_STEP_ATTRIBUTES = frozenset(
    {
        "transformer_id_",
        "party_names_",
        "transformed_parties_",
        "party_feature_names_out_",
        "n_features_in_",
        "feature_names_in_",
    }
)


def _is_passthrough(step: Any) -> bool:
    return step is None or (isinstance(step, str) and step == "passthrough")


def _pipeline_parts(model: Any) -> tuple[list[tuple[str, Any]], Any]:
    """The ``(name, step)`` pairs before the estimator, and the estimator, checked."""
    if isinstance(model, Pipeline):
        head, last = list(model.steps[:-1]), model.steps[-1][1]
    else:
        head, last = [], model
    steps = [(n, s) for n, s in head if not _is_passthrough(s)]
    known = _pipeline_steps()
    for step_name, step in steps:
        if known.get(type(step).__name__) is not type(step):
            raise TypeError(
                f"cannot save pipeline step {step_name!r}, a {type(step).__name__}; supported: "
                f"{sorted(known)} (ftl.preprocessing) or 'passthrough'"
            )
    _model_spec_of(last)
    check_is_fitted(last)
    for _, step in steps:
        check_is_fitted(step)
    _check_federated(last)
    if any(not hasattr(step, "transformer_id_") for _, step in steps):
        raise ValueError(
            "this pipeline was fitted on a plain array (a simulated federation), so it "
            "cannot be saved as one file per party; fit it on a handle from ftl.align(...) "
            "instead"
        )
    return head, last


def _step_document(step_name: str, step: Any) -> dict:
    """A pipeline step's parameters and public fitted metadata (no statistic of a party)."""
    if _is_passthrough(step):
        return {"name": step_name, "class": "passthrough"}
    params = {}
    for key, value in step.get_params(deep=False).items():
        if key == "transformer":  # PerParty: an allowlisted transformer, as its JSON spec
            spec = transformer_spec(value)
            params[key] = {"class": spec["class"], "params": spec["params"]}
        elif key == "columns":
            params[key] = _json_columns(value)
        else:
            params[key] = encode_param(value, f"parameter {key!r} of step {step_name!r}")
    return {
        "name": step_name,
        "class": type(step).__name__,
        "params": params,
        "attributes": {
            "transformer_id_": str(step.transformer_id_),
            "party_names_": [str(p) for p in step.party_names_],
            "transformed_parties_": [str(p) for p in step.transformed_parties_],
            "party_feature_names_out_": {
                str(p): [str(c) for c in names]
                for p, names in step.party_feature_names_out_.items()
            },
            "n_features_in_": int(step.n_features_in_),
            "feature_names_in_": [str(f) for f in step.feature_names_in_],
        },
    }


def _check_chain(steps: list[tuple[str, Any]], final: Any, where: PathLike) -> None:
    """Each step is fitted over the estimator's parties and feeds the next one's features."""
    names = None
    for step_name, step in steps:
        if _is_passthrough(step):
            continue
        if list(step.party_names_) != list(final.party_names_):
            raise ValueError(
                f"{where}: step {step_name!r} was fitted over parties {step.party_names_}, the "
                f"estimator over {final.party_names_}"
            )
        if names is not None and [str(f) for f in step.feature_names_in_] != names:
            raise ValueError(f"{where}: step {step_name!r} takes other features than it is given")
        names = [str(f) for f in step.get_feature_names_out()]
    if names is not None and names != [str(f) for f in final.feature_names_in_]:
        raise ValueError(f"{where}: the estimator takes other features than the steps output")


def _pipeline_document(pipe: Pipeline) -> dict:
    """The guest's document of a fitted pipeline: what :func:`save_model` writes."""
    steps, estimator = _pipeline_parts(pipe)
    _check_chain(steps, estimator, "pipeline")
    transform_input = getattr(pipe, "transform_input", None)
    return {
        "format": PIPELINE_FORMAT,
        "version": PIPELINE_VERSION,
        "role": _model_spec_of(estimator).driver_role,
        "params": {
            "verbose": bool(pipe.verbose),
            "transform_input": encode_param(transform_input, "transform_input"),
        },
        "unsaved_params": [] if pipe.memory is None else ["memory"],
        "steps": [_step_document(name, step) for name, step in steps],
        "estimator": {"name": str(pipe.steps[-1][0]), "model": _model_document(estimator)},
    }


def _step_name(value: Any, seen: set, where: PathLike) -> str:
    if not isinstance(value, str) or not value or "__" in value or value in seen:
        raise ValueError(f"{where} is corrupted: invalid or repeated step name {value!r}")
    seen.add(value)
    return value


def _step_from_document(doc: Any, where: str) -> Any:
    """A pipeline step rebuilt from its document, only from the known classes."""
    name = doc["class"]
    if name == "passthrough":
        if set(doc) != {"name", "class"}:
            raise ValueError(f"{where}: a passthrough step has only a name")
        return "passthrough"
    known = _pipeline_steps()
    cls = known.get(name) if isinstance(name, str) else None
    if cls is None:
        raise ValueError(f"{where}: unknown step class {name!r}; supported: {sorted(known)}")
    if set(doc) != {"name", "class", "params", "attributes"}:
        raise ValueError(f"{where}: a step has exactly name, class, params and attributes")
    params = doc["params"]
    unknown = sorted(set(params) - set(cls._get_param_names()))
    if unknown:
        raise ValueError(f"{where}: {name} has no parameter(s) {unknown}")
    decoded = {}
    for key, value in params.items():
        if key == "transformer":  # the allowlist decides
            decoded[key] = build_transformer({**value, "columns": None})
        elif key == "columns":
            decoded[key] = None if value is None else _json_columns(value)
        else:
            decoded[key] = decode_param(value, f"{where}: parameter {key!r}")
    step = cls(**decoded)
    try:
        step._validate_params()
    except (TypeError, ValueError) as exc:
        raise ValueError(f"{where}: invalid parameters: {exc}") from None
    attrs = doc["attributes"]
    if not isinstance(attrs, dict) or set(attrs) != _STEP_ATTRIBUTES:
        raise ValueError(f"{where}: a step has exactly the attributes {sorted(_STEP_ATTRIBUTES)}")
    party_names = _str_list(attrs["party_names_"], "party_names_")
    transformed = _str_list(attrs["transformed_parties_"], "transformed_parties_")
    outs = attrs["party_feature_names_out_"]
    feature_names = _str_list(attrs["feature_names_in_"], "feature_names_in_")
    n_features = attrs["n_features_in_"]
    if (
        not party_names
        or len(set(party_names)) != len(party_names)
        or not set(transformed) <= set(party_names)
        or not isinstance(outs, dict)
        or sorted(outs) != sorted(party_names)
        or isinstance(n_features, bool)
        or not isinstance(n_features, int)
        or len(feature_names) != n_features
    ):
        raise ValueError(f"{where}: fitted attributes do not fit together")
    step.transformer_id_ = _transformer_id(attrs["transformer_id_"], where)
    step.party_names_ = party_names
    step.transformed_parties_ = [p for p in party_names if p in transformed]
    step.party_feature_names_out_ = {
        p: _str_list(outs[p], f"{p} feature names") for p in party_names
    }
    step.n_features_in_ = n_features
    step.feature_names_in_ = np.asarray(feature_names, dtype=object)
    step.transcript_ = Transcript()
    return step


def _load_pipeline(path: PathLike, estimator: type | None) -> Pipeline:
    if estimator is not None and estimator is not Pipeline:
        expected = getattr(estimator, "__name__", repr(estimator))
        raise ValueError(f"{path} holds a pipeline, expected a {expected}")
    doc = _read_json(path, PIPELINE_FORMAT, PIPELINE_VERSION)
    if set(doc) != _PIPELINE_KEYS:
        raise ValueError(
            f"{path} is corrupted: expected exactly the fields {sorted(_PIPELINE_KEYS)}"
        )
    try:
        final_doc = doc["estimator"]
        where = f"{path} (estimator)"
        _check_format(final_doc["model"], where, MODEL_FORMAT, MODEL_VERSION)
        final = _model_from_document(final_doc["model"], where)
        if doc["role"] != _model_spec_of(final).driver_role:
            raise ValueError(f"role {doc['role']!r} for a {type(final).__name__}")
        seen: set = set()
        steps = []
        for item in doc["steps"]:
            name = _step_name(item["name"], seen, path)
            steps.append((name, _step_from_document(item, f"{path} (step {name!r})")))
        steps.append((_step_name(final_doc["name"], seen, path), final))
        _check_chain(steps[:-1], final, path)
        params = doc["params"]
        verbose = params["verbose"]
        transform_input = decode_param(params["transform_input"], "transform_input")
        if not isinstance(verbose, bool) or not (
            transform_input is None or isinstance(transform_input, list)
        ):
            raise ValueError("invalid pipeline parameters")
    except (KeyError, TypeError, AttributeError) as exc:
        raise ValueError(f"{path} is corrupted: {exc!r}") from None
    except ValueError as exc:
        message = str(exc)
        raise ValueError(message if str(path) in message else f"{path}: {message}") from None
    return Pipeline(steps, verbose=verbose, transform_input=transform_input)
