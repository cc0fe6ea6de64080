"""The host's data-use policy: who may use which protocols on which columns, and how.

A party served by ``ftl serve`` answers a peer only as far as its policy allows.
The policy lives in the host's configuration (the ``[policy]`` table of its TOML
file, see :mod:`ftl.federation.config`) and is enforced by the host, never by the
driver:

- **peers**: only listed certificate identities (the common name of the peer's
  TLS client certificate) may open sessions;
- **protocols**: which protocol families a peer may run (every family in the
  protocol registry, :mod:`ftl.federation.protocols`: the built-in ones and
  ``ftl.protocols`` plug-ins), and each family's own settings and checks of the
  parameters a peer opens a session with;
- **columns**: which feature columns a peer's protocols see (the others do not
  exist for that peer);
- **encryption**: minimum Paillier key size for every key in a session, and no
  plaintext (``encryption=None``) or insecure-test-key sessions unless allowed;
- **intersection**: a minimum intersection size, which the PSI host enforces
  before the guest can learn the intersection or its size (see :mod:`ftl.psi.host`);
- **privacy budget** (:mod:`ftl.federation.budget`): per peer, minimum rows per
  fit, batch, prediction request and fitted transformer; fits, prediction
  requests, rows scored, transformers and alignments per day (fits and
  predictions also per alignment); caps on the resources a peer may ask for --
  all enforced by the host's own protocol roles and persisted across restarts;
- **resources**: the host's own ``n_jobs``, whatever the driver asks.

Every refusal raises :class:`PolicyError`; the server logs it with the reason and
returns it to the driver, where it is raised again as a :class:`PolicyError`.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ftl.crypto.keys import MIN_SECURE_KEY_SIZE
from ftl.exceptions import PolicyError
from ftl.federation.budget import BudgetLedger, BudgetLimits
from ftl.federation.messages import Message
from ftl.federation.protocols import RegistryError, load_protocols, protocol, protocol_of_role

__all__ = ["PROTOCOL_ROLES", "PeerRule", "Policy", "PolicyError"]


class _ProtocolRoles(Mapping):
    """Protocol family -> the party-side roles it opens, read from the registry."""

    def __getitem__(self, family: str) -> frozenset[str]:
        load_protocols()
        try:
            return protocol(family).role_names
        except RegistryError:
            raise KeyError(family) from None

    def __iter__(self) -> Iterator[str]:
        return iter(_families())

    def __len__(self) -> int:
        return len(_families())


#: Protocol families a policy names, and the party-side roles each one opens.
PROTOCOL_ROLES: Mapping[str, frozenset[str]] = _ProtocolRoles()

#: Settings of the ``[policy]`` table that are neither a protocol's nor the budget's.
_POLICY_KEYS = {
    "min_key_size",
    "max_key_size",
    "allow_plaintext",
    "min_intersection",
    "n_jobs",
    "protocols",
    "columns",
    "peers",
}


def _families() -> tuple[str, ...]:
    """Every registered protocol family (the built-ins and plug-ins loaded first)."""
    return tuple(spec.family for spec in load_protocols())


def _protocol_settings() -> dict[str, Any]:
    """Every registered protocol's policy settings, with their defaults."""
    return {k: v for spec in load_protocols() for k, v in spec.policy_settings.items()}


def _integer(value: Any, what: str) -> int:
    if not isinstance(value, int) or isinstance(value, bool):
        raise ValueError(f"policy: {what} must be an integer, got {value!r}")
    return value


def _names(value: Any, what: str) -> tuple[str, ...]:
    if isinstance(value, str) or not isinstance(value, Iterable):
        raise ValueError(f"policy: {what} must be a list of strings, got {value!r}")
    out = tuple(value)
    if not all(isinstance(v, str) and v for v in out):
        raise ValueError(f"policy: {what} must be a list of non-empty strings")
    return out


@dataclass(frozen=True)
class PeerRule:
    """What one peer (a certificate identity) may do.

    Parameters
    ----------
    identity : str
        Common name of the peer's TLS client certificate.
    protocols : tuple of str, optional
        Protocol families the peer may run; by default every registered family
        (:func:`ftl.federation.protocols.protocols`).
    columns : tuple of str or None
        Feature columns the peer's protocols may use; None means all.
    budget : BudgetLimits
        The peer's privacy budget (safe defaults; see
        :class:`~ftl.federation.budget.BudgetLimits`).
    """

    identity: str
    protocols: tuple[str, ...] = field(default_factory=_families)
    columns: tuple[str, ...] | None = None
    budget: BudgetLimits = field(default_factory=BudgetLimits)

    def __post_init__(self):
        known = _families()
        unknown = sorted(set(self.protocols) - set(known))
        if unknown:
            raise ValueError(
                f"policy for {self.identity!r}: unknown protocol(s) {unknown}; "
                f"known: {sorted(known)}"
            )

    @property
    def roles(self) -> frozenset[str]:
        """The roles the peer may open: those of its families that are registered."""
        return frozenset().union(*(PROTOCOL_ROLES.get(p, ()) for p in self.protocols))


@dataclass
class Policy:
    """A host's data-use policy (see the module docstring).

    Parameters
    ----------
    peers : dict of str to PeerRule
        The peers that may connect, by certificate identity.
    min_key_size : int, default=2048
        Smallest Paillier modulus (bits) accepted for any key in a session,
        including the key the host makes for itself at the driver's request.
    max_key_size : int, default=4096
        Largest Paillier modulus (bits) the host makes for itself at the driver's
        request (key generation time grows with the fourth power of the size, so a
        huge size would tie up the host's CPU).
    allow_plaintext : bool, default=False
        Accept sessions with ``encryption=None`` (values cross in the clear) or
        with insecure test keys. Never in production.
    min_intersection : int, default=100
        Smallest intersection the PSI host accepts; 0 disables the check.
    settings : dict, optional
        The registered protocols' own settings (each protocol's
        ``policy_settings``, e.g. ``allow_lbfgs``); unset ones take the
        protocol's default. Read with :meth:`setting` or as attributes
        (``policy.allow_lbfgs``).
    n_jobs : int or None, default=1
        The host's own parallelism for every session (joblib's meaning); the
        ``n_jobs`` a driver passes is not used at the host.
    state_path : path, optional
        JSON file that keeps the privacy-budget counts across restarts.
    """

    peers: dict[str, PeerRule] = field(default_factory=dict)
    min_key_size: int = MIN_SECURE_KEY_SIZE
    max_key_size: int = 4096
    allow_plaintext: bool = False
    min_intersection: int = 100
    settings: dict[str, Any] = field(default_factory=dict)
    n_jobs: int | None = 1
    state_path: str | Path | None = None

    def __post_init__(self):
        known = _protocol_settings()
        for name, value in self.settings.items():
            if name not in known:
                raise ValueError(
                    f"policy: unknown protocol setting {name!r}; known: {sorted(known)}"
                )
            default = known[name]
            if type(value) is not type(default) and not (
                isinstance(value, int) and type(default) is float
            ):
                raise ValueError(
                    f"policy: {name} must be of type {type(default).__name__} like its "
                    f"default {default!r}, got {value!r}"
                )
        self.ledger = BudgetLedger(self.state_path)

    def setting(self, name: str) -> Any:
        """The value of a registered protocol's policy setting ``name``."""
        values = self.protocol_settings()
        if name not in values:
            raise KeyError(f"no registered protocol has the policy setting {name!r}")
        return values[name]

    def protocol_settings(self) -> dict[str, Any]:
        """Every registered protocol's policy setting: its value here, or its default."""
        return {**_protocol_settings(), **self.settings}

    def __getattr__(self, name: str) -> Any:
        # only for names that are no attribute: the protocols' settings
        if name.startswith("_") or name == "settings":
            raise AttributeError(name)
        try:
            return self.setting(name)
        except KeyError:
            raise AttributeError(f"{type(self).__name__!r} has no attribute {name!r}") from None

    @classmethod
    def from_dict(cls, table: Mapping[str, Any], state_path: str | Path | None = None) -> Policy:
        """Build a policy from the ``[policy]`` table of a configuration file."""
        budget_keys = set(BudgetLimits.keys())
        setting_keys = set(_protocol_settings())
        known = _POLICY_KEYS | budget_keys | setting_keys
        extra = sorted(set(table) - known)
        if extra:
            raise ValueError(f"policy: unknown setting(s) {extra}; known: {sorted(known)}")
        defaults = {
            "protocols": _names(table.get("protocols", list(_families())), "protocols"),
            "columns": (
                _names(table["columns"], "columns") if table.get("columns") is not None else None
            ),
        }
        budget_defaults = {k: table[k] for k in budget_keys if k in table}
        peers: dict[str, PeerRule] = {}
        raw_peers = table.get("peers", [])
        if not isinstance(raw_peers, list) or not raw_peers:
            raise ValueError("policy: list at least one peer ([[policy.peers]] identity = ...)")
        for raw in raw_peers:
            if not isinstance(raw, Mapping) or not isinstance(raw.get("identity"), str):
                raise ValueError("policy: every peer needs an identity (certificate common name)")
            extra = sorted(set(raw) - {"identity", *defaults, *budget_keys})
            if extra:
                raise ValueError(f"policy peer {raw['identity']!r}: unknown setting(s) {extra}")
            settings: dict[str, Any] = {**defaults}
            if "protocols" in raw:
                settings["protocols"] = _names(raw["protocols"], "protocols")
            if "columns" in raw:
                settings["columns"] = _names(raw["columns"], "columns")
            # TOML has no null: a limit of -1 in the file means "no limit"
            budget = {**budget_defaults, **{k: raw[k] for k in budget_keys if k in raw}}
            budget = {k: (None if v == -1 and k != "score_ids" else v) for k, v in budget.items()}
            settings["budget"] = BudgetLimits(**budget)
            if raw["identity"] in peers:
                raise ValueError(f"policy: peer {raw['identity']!r} listed twice")
            peers[raw["identity"]] = PeerRule(identity=raw["identity"], **settings)
        n_jobs = table.get("n_jobs", 1)
        if not isinstance(n_jobs, int) or isinstance(n_jobs, bool) or n_jobs == 0:
            raise ValueError("policy: n_jobs must be a non-zero integer (joblib's meaning)")
        policy = cls(
            peers=peers,
            min_key_size=_integer(table.get("min_key_size", MIN_SECURE_KEY_SIZE), "min_key_size"),
            max_key_size=_integer(table.get("max_key_size", 4096), "max_key_size"),
            allow_plaintext=bool(table.get("allow_plaintext", False)),
            min_intersection=_integer(table.get("min_intersection", 100), "min_intersection"),
            settings={k: table[k] for k in setting_keys if k in table},
            n_jobs=n_jobs,
            state_path=state_path,
        )
        if policy.min_key_size < 1024 and not policy.allow_plaintext:
            raise ValueError("policy: min_key_size below 1024 bits is not a real protection")
        if policy.max_key_size < policy.min_key_size:
            raise ValueError("policy: max_key_size is below min_key_size")
        if policy.min_intersection < 0:
            raise ValueError("policy: min_intersection must be >= 0")
        return policy

    # -- checks, in the order the server applies them ------------------------------
    def peer(self, identity: str | None) -> PeerRule:
        """The rule of an authenticated peer; refuses anyone not listed."""
        if not identity:
            raise PolicyError("the peer presented no certificate identity")
        rule = self.peers.get(identity)
        if rule is None:
            raise PolicyError(f"peer {identity!r} is not allowed by this host's policy")
        return rule

    def check_operation(self, rule: PeerRule, op: str) -> None:
        """Refuse operations of protocols the peer may not run."""
        role = op.rpartition(".")[0]
        if role not in rule.roles:
            raise PolicyError(
                f"peer {rule.identity!r} may not run {role!r} (allowed protocols: "
                f"{', '.join(rule.protocols) or 'none'})"
            )

    def check_request(self, rule: PeerRule, op: str, request: Message) -> None:
        """Check a decoded request before any role sees it: the encryption mode and
        key size a session-opening request asks for, and every public key any
        request carries (multi-host runs pass peer keys after the open too)."""
        params = request.fields.get("params")
        if op.endswith(".open") and isinstance(params, Mapping):
            if "encryption" in params and params["encryption"] is None:
                self._plaintext(rule, "encryption=None")
            if params.get("insecure_for_tests"):
                self._plaintext(rule, "insecure test keys")
            self._check_protocol_params(rule, op, params)
            if params.get("encryption") is not None and "key_size" in params:
                size = params["key_size"]
                # "2048" or 2048.0 must not slip past a numeric comparison
                if not isinstance(size, int) or isinstance(size, bool):
                    raise PolicyError(
                        f"key_size must be an integer number of bits, got {size!r} "
                        f"(peer {rule.identity!r})"
                    )
                self._key_bits(rule, size, "the requested key size")
                if size > self.max_key_size:
                    raise PolicyError(
                        f"the requested key size ({size} bits) is above this host's maximum "
                        f"of {self.max_key_size} bits (policy key 'max_key_size'; peer "
                        f"{rule.identity!r})"
                    )
        for name in ("public_key", "public_keys"):
            if name not in request.fields:
                continue
            keys = request.fields[name]
            if not isinstance(keys, Mapping):
                raise PolicyError(f"{request.type}.{name} is not a key table; refused")
            batch = keys.values() if name == "public_keys" else [keys]
            for key in batch:
                self._check_key(rule, key)

    def _check_protocol_params(self, rule: PeerRule, op: str, params: Mapping) -> None:
        """The checks of the parameters that the protocol of ``op`` declares."""
        try:
            spec = protocol_of_role(op.rpartition(".")[0])
        except RegistryError:  # no such role: check_operation refuses it
            return
        if spec.check_params is not None:
            spec.check_params(params, self, rule)

    def _plaintext(self, rule: PeerRule, what: str) -> None:
        if not self.allow_plaintext:
            raise PolicyError(
                f"{what} is not allowed by this host's policy (peer {rule.identity!r})"
            )

    def _key_bits(self, rule: PeerRule, bits: int, what: str) -> None:
        if bits < self.min_key_size:
            raise PolicyError(
                f"{what} ({bits} bits) is below this host's minimum of {self.min_key_size} "
                f"bits (peer {rule.identity!r})"
            )

    def _check_key(self, rule: PeerRule, key: Any) -> None:
        if not isinstance(key, Mapping):
            raise PolicyError("a public key that is not a key table; refused")
        scheme = key.get("scheme")
        if scheme == "plain":
            self._plaintext(rule, "a plaintext-mode key")
        elif scheme == "paillier":
            n = key.get("n")
            # keys travel as decimal strings or ints; anything else is no key
            if isinstance(n, str) and n.isdigit() and len(n) <= 10_000:
                n = int(n)
            if not isinstance(n, int) or isinstance(n, bool) or n <= 0:
                raise PolicyError("a Paillier public key without an integer modulus; refused")
            self._key_bits(rule, n.bit_length(), "a public key")
        else:
            raise PolicyError(f"a public key of unknown scheme {scheme!r}; refused")
