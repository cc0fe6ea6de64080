"""The protocol registry: every protocol declares itself once.

A protocol (a policy *family* such as ``"lr"``) is described by one
:class:`ProtocolSpec`, registered by its own package when that package is
imported (``ftl/linear_model/_protocol.py`` for logistic regression). The
cross-cutting parts of the library read the registry instead of naming
protocols:

* the host policy (:mod:`ftl.federation.policy`): which families exist, which
  roles each family serves, the family's own policy settings and its checks of
  the parameters a peer opens a session with;
* the party service (:mod:`ftl.federation.service`) and ``ftl serve``: which
  roles may be opened -- a class marked with :func:`~ftl.federation.service.role`
  is served only once a registered spec lists it;
* persistence: which estimator classes a model file may name, the driver's role,
  how each estimator's fitted attributes and each kind of party shard are
  written and read;
* the audit report: the protocol's title, message types and leakage rows;
* the common estimator tests: every estimator, its check instances and its
  expected check failures.

The registry lives in the federation layer and never imports an estimator: a
package higher up registers itself here (its spec holds the classes and
functions), and :func:`load_protocols` imports the built-in packages and the
plug-ins named by the ``ftl.protocols`` entry-point group. A name claimed twice
-- a family, a role, an estimator class name, a shard kind or a message prefix
-- is a :class:`RegistryError`: two packages claiming one name would make the
policy and persistence ambiguous.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from importlib.metadata import entry_points
from typing import Any

from ftl.exceptions import RegistryError

__all__ = [
    "EstimatorSpec",
    "ProtocolSpec",
    "RegistryError",
    "ShardCodec",
    "estimator_spec",
    "load_protocols",
    "protocol",
    "protocol_of_role",
    "protocols",
    "register_protocol",
    "role_class",
    "roles",
    "shard_codec",
    "unregister_protocol",
]

#: Packages of the protocols that ship with ftl (plug-ins add entry points).
BUILTIN_PROTOCOL_PACKAGES = (
    "ftl.psi",
    "ftl.preprocessing",
    "ftl.linear_model",
    "ftl.transfer",
    "ftl.ensemble",
)

#: Entry-point group under which a plug-in package names the module to import.
ENTRY_POINT_GROUP = "ftl.protocols"


@dataclass(frozen=True)
class ShardCodec:
    """How a party's model shard of one kind is written to and read from a file.

    Attributes
    ----------
    kind : str
        The ``"kind"`` of the shard dict a role stores at its party
        (``party.store_model(model_id, {"kind": kind, ...})``).
    role : str
        The party's role written into the shard file (e.g. ``"host"``).
    to_json : callable
        ``to_json(shard) -> dict`` of JSON-able fields. The file's envelope --
        format, version, role, party, model id and kind -- is added by
        persistence and must not be among them. Raises ``ValueError`` for a
        shard that cannot be saved faithfully.
    from_json : callable
        ``from_json(fields, party) -> shard``: the inverse, checked against the
        importing party (its number of features, ...); raises ``ValueError``
        (or ``KeyError``/``TypeError``) on any missing, extra or malformed field.
    """

    kind: str
    role: str
    to_json: Callable[[dict], dict]
    from_json: Callable[[dict, Any], dict]


@dataclass(frozen=True)
class EstimatorSpec:
    """A driver-side estimator of a protocol, for persistence and the common tests.

    The estimator follows scikit-learn's conventions (parameters stored
    unchanged, ``_parameter_constraints`` checked by ``_validate_params``).
    Fitted on a handle from :func:`ftl.align` it sets ``party_names_`` (the
    driver's party first); fitted on a plain array (a simulated federation,
    whose other parties live inside the estimator) it sets
    ``party_names_ = None`` and cannot be saved one file per party.

    Attributes
    ----------
    cls : type
        The estimator class (named in model files by ``cls.__name__``).
    driver_role : str or None
        The driver's role written into its model file (e.g. ``"guest"``);
        None for a pipeline step, which is saved within a pipeline's file only.
    to_json : callable, optional
        ``to_json(estimator) -> dict``: the driver's fitted attributes,
        JSON-able (parameters and the file's envelope are written by
        persistence).
    from_json : callable, optional
        ``from_json(estimator, attributes, path) -> None``: set the fitted
        attributes on an estimator made from the saved parameters; raises
        ``ValueError`` naming ``path`` (or ``KeyError``/``TypeError``) if they
        are malformed or do not fit together.
    shard_ids : callable, optional
        ``shard_ids(estimator) -> list of str``: the ids under which the other
        parties keep their shards of the fitted estimator.
    check_instances : callable, optional
        ``check_instances() -> list``: instances for scikit-learn's estimator
        checks (fast settings, e.g. ``encryption=None``; a plain array gives a
        simulated federation). By default ``[cls()]``.
    expected_failed_checks : mapping of str to str
        Check name -> why the estimator cannot pass it.
    """

    cls: type
    driver_role: str | None = None
    to_json: Callable[[Any], dict] | None = None
    from_json: Callable[[Any, dict, Any], None] | None = None
    shard_ids: Callable[[Any], list[str]] | None = None
    check_instances: Callable[[], Sequence[Any]] | None = None
    expected_failed_checks: Mapping[str, str] = field(default_factory=dict)

    @property
    def name(self) -> str:
        """The class name model files use."""
        return self.cls.__name__

    @property
    def is_model(self) -> bool:
        """Whether :func:`ftl.save_model` saves it as a driver's model file."""
        return self.driver_role is not None

    def instances(self) -> list[Any]:
        """The instances the common estimator tests check."""
        return list(self.check_instances()) if self.check_instances else [self.cls()]


@dataclass(frozen=True)
class ProtocolSpec:
    """One protocol, declared once by its package.

    Attributes
    ----------
    family : str
        Policy family name (``"lr"``); hosts list the families a peer may run.
    title : str
        Human name, used by the audit report.
    message_prefix : str
        Prefix of the protocol's message types and role names (``"lr."``).
    roles : tuple of type
        Party-side role classes (marked with
        :func:`ftl.federation.service.role`) this protocol serves.
    check_params : callable, optional
        ``check_params(params, policy, rule)``: the host policy's checks, beyond
        the common ones (encryption, key sizes), of the parameters a peer opens
        one of the protocol's sessions with; raises
        :class:`~ftl.exceptions.PolicyError`. ``policy.setting(name)`` reads
        the protocol's settings.
    policy_settings : mapping of str to object
        Settings of the host's ``[policy]`` table this protocol adds, with their
        defaults (a value in a file must have its default's type).
    estimators : tuple of EstimatorSpec
        Driver-side estimators (and pipeline steps).
    shards : tuple of ShardCodec
        Kinds of model shards the protocol's roles store at their parties.
    report : object, optional
        What the audit report says about the protocol (see
        :mod:`ftl.federation.disclosure`).
    docs : str
        Where the protocol is documented (e.g. ``"docs/protocols.md §3"``).
    """

    family: str
    title: str
    message_prefix: str
    roles: tuple[type, ...] = ()
    check_params: Callable[[Mapping, Any, Any], None] | None = None
    policy_settings: Mapping[str, Any] = field(default_factory=dict)
    estimators: tuple[EstimatorSpec, ...] = ()
    shards: tuple[ShardCodec, ...] = ()
    report: Any = None
    docs: str = ""

    @property
    def role_names(self) -> frozenset[str]:
        """Names of the party-side roles this protocol serves."""
        return frozenset(_role_name(cls) for cls in self.roles)


def _role_name(cls: type) -> str:
    name = getattr(cls, "role_name", None)
    if not isinstance(name, str):
        raise RegistryError(f"{cls.__qualname__} is not marked with @role(name)")
    return name


_PROTOCOLS: dict[str, ProtocolSpec] = {}


def _names_of(spec: ProtocolSpec) -> dict[str, list[str]]:
    """Every name ``spec`` claims, by what it names (for the clash checks)."""
    return {
        "role": [_role_name(cls) for cls in spec.roles],
        "estimator": [e.name for e in spec.estimators],
        "shard kind": [s.kind for s in spec.shards],
        "policy setting": list(spec.policy_settings),
    }


def _check_spec(spec: ProtocolSpec) -> None:
    if not spec.family or not spec.message_prefix.endswith("."):
        raise RegistryError(
            f"protocol {spec.family!r}: a family name and a message prefix ending in '.' "
            f"are required, got {spec.message_prefix!r}"
        )
    if spec.family in _PROTOCOLS:
        raise RegistryError(f"protocol family {spec.family!r} is already registered")
    for est in spec.estimators:
        if est.is_model and None in (est.to_json, est.from_json, est.shard_ids):
            raise RegistryError(
                f"estimator {est.name!r} of protocol {spec.family!r} has a driver role but "
                "not all of to_json, from_json and shard_ids (persistence needs them)"
            )
    mine = _names_of(spec)
    for what, names in mine.items():
        repeated = sorted({n for n in names if names.count(n) > 1})
        if repeated:
            raise RegistryError(f"{what} {repeated[0]!r} is declared twice by {spec.family!r}")
    for other in _PROTOCOLS.values():
        theirs = _names_of(other)
        for what, names in mine.items():
            clash = sorted(set(names) & set(theirs[what]))
            if clash:
                raise RegistryError(
                    f"{what} {clash[0]!r} of protocol {spec.family!r} is already "
                    f"registered by {other.family!r}"
                )
    # a role's name starts with its protocol's prefix, and no prefix starts
    # another: the policy and the service find a role's protocol from its name
    stray = sorted(n for n in mine["role"] if not n.startswith(spec.message_prefix))
    if stray:
        raise RegistryError(
            f"role {stray[0]!r} of protocol {spec.family!r} does not start with its "
            f"message prefix {spec.message_prefix!r}"
        )
    for other in _PROTOCOLS.values():
        a, b = spec.message_prefix, other.message_prefix
        if a.startswith(b) or b.startswith(a):
            raise RegistryError(
                f"message prefix {a!r} of protocol {spec.family!r} overlaps {b!r} of "
                f"{other.family!r}"
            )


def register_protocol(spec: ProtocolSpec) -> ProtocolSpec:
    """Add ``spec`` to the registry.

    Raises
    ------
    RegistryError
        If its family, message prefix, a role name, an estimator class name, a
        shard kind or a policy setting is already registered (or declared twice
        by ``spec``), a role's name does not start with the message prefix, or
        an estimator with a driver role lacks a codec.
    """
    _check_spec(spec)
    _PROTOCOLS[spec.family] = spec
    return spec


def unregister_protocol(family: str) -> ProtocolSpec:
    """Remove the protocol of ``family`` (for tests and plug-in reloads); returns it."""
    try:
        return _PROTOCOLS.pop(family)
    except KeyError:
        raise RegistryError(f"unknown protocol family {family!r}") from None


def protocols() -> tuple[ProtocolSpec, ...]:
    """Every registered protocol, in registration order."""
    return tuple(_PROTOCOLS.values())


def protocol(family: str) -> ProtocolSpec:
    """The registered protocol of ``family``; :class:`RegistryError` if unknown."""
    try:
        return _PROTOCOLS[family]
    except KeyError:
        raise RegistryError(
            f"unknown protocol family {family!r}; known: {sorted(_PROTOCOLS)}"
        ) from None


def roles() -> dict[str, type]:
    """Every servable role: role name -> role class."""
    return {_role_name(cls): cls for spec in _PROTOCOLS.values() for cls in spec.roles}


def protocol_of_role(name: str) -> ProtocolSpec:
    """The protocol that serves role ``name``; :class:`RegistryError` if none does."""
    for spec in _PROTOCOLS.values():
        if name in spec.role_names:
            return spec
    raise RegistryError(f"unknown protocol role {name!r}")


def role_class(name: str) -> type:
    """The class of role ``name``; :class:`RegistryError` if no protocol serves it."""
    spec = protocol_of_role(name)
    return next(cls for cls in spec.roles if _role_name(cls) == name)


def estimator_spec(name: str) -> EstimatorSpec:
    """The registered estimator of class name ``name``; :class:`RegistryError` if none."""
    found = {e.name: e for spec in _PROTOCOLS.values() for e in spec.estimators}
    if name not in found:
        raise RegistryError(f"unknown estimator {name!r}")
    return found[name]


def shard_codec(kind: str) -> ShardCodec:
    """The codec of shard kind ``kind``; :class:`RegistryError` if none."""
    found = {c.kind: c for spec in _PROTOCOLS.values() for c in spec.shards}
    if kind not in found:
        raise RegistryError(f"unknown model shard kind {kind!r}")
    return found[kind]


_loaded = False


def load_protocols() -> tuple[ProtocolSpec, ...]:
    """Import the built-in protocol packages and every ``ftl.protocols`` plug-in.

    Importing a package registers its protocol; the imports run once per process
    (later calls return the registry as it is).
    """
    global _loaded
    if not _loaded:
        # set first: a package that asks for the registry while it is being
        # imported gets it as it is, not a second round of imports
        _loaded = True
        names = list(BUILTIN_PROTOCOL_PACKAGES)
        names += [ep.value for ep in entry_points(group=ENTRY_POINT_GROUP)]
        try:
            for name in names:
                importlib.import_module(name)
        except BaseException:
            _loaded = False
            raise
    return protocols()
