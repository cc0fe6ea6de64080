"""The host's data-use policy: who may use which protocols on which columns, and how.

A party served by ``ftl serve`` answers a peer only as far as its policy allows.
The policy lives in the host's configuration (the ``[policy]`` table of its TOML
file, see :mod:`ftl.federation.config`) and is enforced by the host, never by the
driver:

- **peers**: only listed certificate identities (the common name of the peer's
  TLS client certificate) may open sessions;
- **protocols**: which protocol families a peer may run (``psi``, ``lr``,
  ``transfer``, ``preprocessing``);
- **columns**: which feature columns a peer's protocols see (the others do not
  exist for that peer);
- **encryption**: minimum Paillier key size for every key in a session, and no
  plaintext (``encryption=None``) or insecure-test-key sessions unless allowed;
- **intersection**: a minimum intersection size, which the PSI host enforces
  before the guest can learn the intersection (see :mod:`ftl.psi.host`);
- **rate**: at most so many alignments per peer per 24 hours.

Every refusal raises :class:`PolicyError`; the server logs it with the reason and
returns it to the driver, where it is raised again as a :class:`PolicyError`.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ftl.federation.messages import Message

__all__ = ["PROTOCOL_ROLES", "PeerRule", "Policy", "PolicyError"]

#: Protocol families a policy names, and the party-side roles each one opens.
PROTOCOL_ROLES: dict[str, frozenset[str]] = {
    "psi": frozenset({"psi.host"}),
    "lr": frozenset({"lr.host", "lr.predict"}),
    "transfer": frozenset({"ftl.target", "ftl.target_predict"}),
    "preprocessing": frozenset({"prep.party"}),
}
_DAY = 24 * 3600.0


class PolicyError(PermissionError):
    """A party refused a request because its data-use policy forbids it."""


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
    protocols : tuple of str
        Protocol families the peer may run (keys of :data:`PROTOCOL_ROLES`).
    columns : tuple of str or None
        Feature columns the peer's protocols may use; None means all.
    max_alignments_per_day : int or None
        Alignments (PSI runs) the peer may start per 24 hours; None: no limit.
    """

    identity: str
    protocols: tuple[str, ...] = tuple(PROTOCOL_ROLES)
    columns: tuple[str, ...] | None = None
    max_alignments_per_day: int | None = None

    def __post_init__(self):
        unknown = sorted(set(self.protocols) - set(PROTOCOL_ROLES))
        if unknown:
            raise ValueError(
                f"policy for {self.identity!r}: unknown protocol(s) {unknown}; "
                f"known: {sorted(PROTOCOL_ROLES)}"
            )

    @property
    def roles(self) -> frozenset[str]:
        return frozenset().union(*(PROTOCOL_ROLES[p] for p in self.protocols))


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
    allow_plaintext : bool, default=False
        Accept sessions with ``encryption=None`` (values cross in the clear) or
        with insecure test keys. Never in production.
    min_intersection : int, default=100
        Smallest intersection the PSI host accepts; 0 disables the check.
    allow_lbfgs : bool, default=True
        Accept logistic-regression training with ``optimizer="lbfgs"``, in which the
        host reveals per iteration the inner products of its own weight and gradient
        changes (docs/protocols.md §3.8). ``False`` admits only the mini-batch
        optimisers, which reveal two weight norms per epoch.
    state_path : path, optional
        JSON file that keeps the alignment counts across restarts.
    """

    peers: dict[str, PeerRule] = field(default_factory=dict)
    min_key_size: int = 2048
    allow_plaintext: bool = False
    min_intersection: int = 100
    allow_lbfgs: bool = True
    state_path: str | Path | None = None

    def __post_init__(self):
        self._lock = threading.Lock()
        self._alignments: dict[str, list[float]] = {}
        if self.state_path is not None and Path(self.state_path).exists():
            try:
                raw = json.loads(Path(self.state_path).read_text(encoding="utf-8"))
                self._alignments = {str(k): [float(t) for t in v] for k, v in raw.items()}
            except (ValueError, TypeError, AttributeError) as exc:
                raise ValueError(f"policy state file {self.state_path} is corrupted") from exc

    @classmethod
    def from_dict(cls, table: Mapping[str, Any], state_path: str | Path | None = None) -> Policy:
        """Build a policy from the ``[policy]`` table of a configuration file."""
        known = {
            "min_key_size",
            "allow_plaintext",
            "min_intersection",
            "allow_lbfgs",
            "max_alignments_per_day",
            "protocols",
            "columns",
            "peers",
        }
        extra = sorted(set(table) - known)
        if extra:
            raise ValueError(f"policy: unknown setting(s) {extra}; known: {sorted(known)}")
        defaults = {
            "protocols": _names(table.get("protocols", list(PROTOCOL_ROLES)), "protocols"),
            "columns": (
                _names(table["columns"], "columns") if table.get("columns") is not None else None
            ),
            "max_alignments_per_day": table.get("max_alignments_per_day"),
        }
        peers: dict[str, PeerRule] = {}
        raw_peers = table.get("peers", [])
        if not isinstance(raw_peers, list) or not raw_peers:
            raise ValueError("policy: list at least one peer ([[policy.peers]] identity = ...)")
        for raw in raw_peers:
            if not isinstance(raw, Mapping) or not isinstance(raw.get("identity"), str):
                raise ValueError("policy: every peer needs an identity (certificate common name)")
            extra = sorted(set(raw) - {"identity", *defaults})
            if extra:
                raise ValueError(f"policy peer {raw['identity']!r}: unknown setting(s) {extra}")
            settings = {**defaults}
            if "protocols" in raw:
                settings["protocols"] = _names(raw["protocols"], "protocols")
            if "columns" in raw:
                settings["columns"] = _names(raw["columns"], "columns")
            if "max_alignments_per_day" in raw:
                settings["max_alignments_per_day"] = raw["max_alignments_per_day"]
            limit = settings["max_alignments_per_day"]
            if limit is not None and (not isinstance(limit, int) or limit < 0):
                raise ValueError("policy: max_alignments_per_day must be a non-negative integer")
            if raw["identity"] in peers:
                raise ValueError(f"policy: peer {raw['identity']!r} listed twice")
            peers[raw["identity"]] = PeerRule(identity=raw["identity"], **settings)
        policy = cls(
            peers=peers,
            min_key_size=int(table.get("min_key_size", 2048)),
            allow_plaintext=bool(table.get("allow_plaintext", False)),
            min_intersection=int(table.get("min_intersection", 100)),
            allow_lbfgs=bool(table.get("allow_lbfgs", True)),
            state_path=state_path,
        )
        if policy.min_key_size < 1024 and not policy.allow_plaintext:
            raise ValueError("policy: min_key_size below 1024 bits is not a real protection")
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

    def check_open(self, rule: PeerRule, op: str, request: Message) -> None:
        """Check a session-opening request: encryption mode, key sizes, rate."""
        params = request.fields.get("params")
        if isinstance(params, Mapping):
            if "encryption" in params and params["encryption"] is None:
                self._plaintext(rule, "encryption=None")
            if params.get("insecure_for_tests"):
                self._plaintext(rule, "insecure test keys")
            if params.get("optimizer") == "lbfgs" and not self.allow_lbfgs:
                raise PolicyError(
                    "optimizer='lbfgs' (the host reveals inner products of its weight and "
                    "gradient changes every iteration) is not allowed by this host's policy "
                    f"(peer {rule.identity!r}); train with optimizer='adam' or 'sgd'"
                )
            size = params.get("key_size")
            if params.get("encryption") is not None and isinstance(size, int):
                self._key_bits(rule, size, "the requested key size")
        for name in ("public_key", "public_keys"):
            keys = request.fields.get(name)
            if isinstance(keys, Mapping):
                batch = keys.values() if name == "public_keys" else [keys]
                for key in batch:
                    self._check_key(rule, key)
        if op == "psi.host.open" and request.fields.get("mode") == "full":
            self._count_alignment(rule)

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
            return
        if key.get("scheme") == "plain":
            self._plaintext(rule, "a plaintext-mode key")
        elif key.get("scheme") == "paillier":
            try:
                n = int(key.get("n"))
            except (TypeError, ValueError):
                return  # the protocol role rejects malformed keys itself
            self._key_bits(rule, n.bit_length(), "a public key")

    def _count_alignment(self, rule: PeerRule) -> None:
        limit = rule.max_alignments_per_day
        if limit is None:
            return
        now = time.time()
        with self._lock:
            recent = [t for t in self._alignments.get(rule.identity, []) if now - t < _DAY]
            if len(recent) >= limit:
                raise PolicyError(
                    f"peer {rule.identity!r} has used its {limit} alignment(s) for the last "
                    "24 hours"
                )
            recent.append(now)
            self._alignments[rule.identity] = recent
            if self.state_path is not None:
                tmp = Path(f"{self.state_path}.tmp")
                tmp.write_text(json.dumps(self._alignments), encoding="utf-8")
                tmp.replace(self.state_path)
