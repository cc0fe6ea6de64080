"""The host's configuration file for ``ftl serve`` (TOML).

Example (paths are relative to the file)::

    [party]
    name = "shop"
    data = "shop.csv"            # CSV (or Parquet) with an id column and features
    id_column = "id"
    # columns = ["age", "spend"] # load only these features (default: all others)

    [server]
    listen = "0.0.0.0:50051"
    audit_log = "shop-audit.jsonl"
    # max_message_mb = 512
    # session_ttl_seconds = 3600
    # max_sessions_per_peer = 16
    # max_workers = 8                          # threads serving calls
    # max_streams_per_peer = 4                 # calls one peer may have in flight
    # read_timeout_seconds = 120               # to receive a request, per 64 MiB
    # idle_session_ttl_seconds = 60            # sessions without protocol state
    # state_file = "shop-policy-state.json"   # alignment counts survive restarts
    # model_dir = "models"                     # trained shards survive restarts
    # checkpoint_dir = "checkpoints"           # running fits resume after a restart
    # alignment_ttl_hours = 168                # a peer's alignment table, unused this
    #                                          # long, is dropped (it must align again)
    # model_ttl_hours = 168                    # a model shard in memory, unused this long,
    #                                          # is dropped (reloaded from model_dir if
    #                                          # kept there, else the peer fits again)

    [tls]
    cert = "certs/shop.crt"
    key = "certs/shop.key"
    ca = "certs/ca.crt"          # peers must present a certificate from this CA

    [policy]
    min_key_size = 2048
    min_intersection = 100
    protocols = ["psi", "lr", "transfer", "preprocessing"]
    # n_jobs = 1                   # this host's own parallelism (the driver's is ignored)
    # privacy budget (safe defaults; see ftl.federation.budget.BudgetLimits and
    # docs/howto/deploy.md), any of them also per peer; -1 means no limit:
    # max_alignments_per_day = 50
    # min_fit_rows = 100
    # max_fits_per_day = 200
    # min_prediction_rows = 20
    # score_ids = false

    [[policy.peers]]
    identity = "bank"            # common name of the bank's client certificate
    # columns = ["age"]          # this peer sees only these columns
"""

from __future__ import annotations

import sys
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ftl.federation.peer_views import LEASE_SECONDS
from ftl.federation.policy import Policy
from ftl.federation.transport.grpc.tls import TLSConfig

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

__all__ = ["ServeConfig", "load_config"]

#: Default lease of alignments and model shards in memory, in the file's unit.
_LEASE_HOURS = LEASE_SECONDS / 3600

_SECTIONS = {
    "party": {"name", "data", "id_column", "columns", "allow_missing"},
    "server": {
        "listen",
        "audit_log",
        "max_message_mb",
        "session_ttl_seconds",
        "max_sessions_per_peer",
        "max_workers",
        "max_streams_per_peer",
        "read_timeout_seconds",
        "idle_session_ttl_seconds",
        "state_file",
        "log_file",
        "model_dir",
        "checkpoint_dir",
        "alignment_ttl_hours",
        "model_ttl_hours",
    },
    "tls": {"cert", "key", "ca"},
}


@dataclass
class ServeConfig:
    """Everything ``ftl serve`` needs, read and checked from the TOML file."""

    name: str
    data: Path
    id_column: str
    columns: list[str] | None
    allow_missing: bool
    listen: str
    tls: TLSConfig
    policy: Policy
    audit_log: Path | None
    log_file: Path | None
    model_dir: Path | None
    max_message_bytes: int
    session_ttl: float
    max_sessions_per_peer: int
    max_workers: int = 8
    max_streams_per_peer: int | None = None
    read_timeout: float = 120.0
    idle_session_ttl: float = 60.0
    checkpoint_dir: Path | None = None
    alignment_ttl: float = LEASE_SECONDS
    model_ttl: float = LEASE_SECONDS

    def server_settings(self) -> dict[str, Any]:
        """The keyword arguments of :class:`~ftl.federation.server.PartyServer` set here."""
        return {
            "max_message_bytes": self.max_message_bytes,
            "session_ttl": self.session_ttl,
            "max_sessions_per_peer": self.max_sessions_per_peer,
            "max_streams_per_peer": self.max_streams_per_peer,
            "read_timeout": self.read_timeout,
            "idle_session_ttl": self.idle_session_ttl,
            "checkpoint_dir": self.checkpoint_dir,
            "alignment_ttl": self.alignment_ttl,
            "model_ttl": self.model_ttl,
        }

    def party_settings(self) -> dict[str, Any]:
        """The arguments of :meth:`ftl.Party.from_file` that read the served party."""
        return {
            "path": self.data,
            "name": self.name,
            "id_column": self.id_column,
            "columns": self.columns,
            "allow_missing": self.allow_missing,
        }


def _table(raw: Mapping[str, Any], name: str, required: bool = True) -> Mapping[str, Any]:
    table = raw.get(name)
    if table is None and not required:
        return {}
    if not isinstance(table, Mapping):
        raise ValueError(f"config: missing [{name}] table")
    extra = sorted(set(table) - _SECTIONS[name])
    if extra:
        raise ValueError(f"config [{name}]: unknown setting(s) {extra}")
    return table


def _required(table: Mapping[str, Any], section: str, key: str) -> Any:
    if key not in table:
        raise ValueError(f"config [{section}]: {key!r} is required")
    return table[key]


def load_config(path: str | Path) -> ServeConfig:
    """Read and check a ``ftl serve`` configuration file.

    Parameters
    ----------
    path : str or path-like
        The TOML file. Relative paths inside it are relative to the file.

    Returns
    -------
    ServeConfig

    Raises
    ------
    ValueError
        On a missing or unknown setting, or a malformed policy.
    """
    path = Path(path)
    try:
        raw = tomllib.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise ValueError(f"cannot read config {str(path)!r}: {exc}") from None
    except tomllib.TOMLDecodeError as exc:
        raise ValueError(f"config {str(path)!r} is not valid TOML: {exc}") from None
    extra = sorted(set(raw) - {"party", "server", "tls", "policy"})
    if extra:
        raise ValueError(f"config: unknown table(s) {extra}")
    base = path.parent

    def rel(value: Any) -> Path:
        p = Path(str(value))
        return p if p.is_absolute() else base / p

    party, server, tls = _table(raw, "party"), _table(raw, "server", False), _table(raw, "tls")
    state = server.get("state_file")
    columns = party.get("columns")
    if columns is not None and not (
        isinstance(columns, list) and all(isinstance(c, str) for c in columns)
    ):
        raise ValueError("config [party]: columns must be a list of column names")
    return ServeConfig(
        name=str(_required(party, "party", "name")),
        data=rel(_required(party, "party", "data")),
        id_column=str(_required(party, "party", "id_column")),
        columns=columns,
        allow_missing=bool(party.get("allow_missing", False)),
        listen=str(server.get("listen", "127.0.0.1:50051")),
        tls=TLSConfig(
            ca=rel(_required(tls, "tls", "ca")),
            cert=rel(_required(tls, "tls", "cert")),
            key=rel(_required(tls, "tls", "key")),
        ),
        policy=Policy.from_dict(raw.get("policy") or {}, state_path=rel(state) if state else None),
        audit_log=rel(server["audit_log"]) if server.get("audit_log") else None,
        log_file=rel(server["log_file"]) if server.get("log_file") else None,
        model_dir=rel(server["model_dir"]) if server.get("model_dir") else None,
        max_message_bytes=int(float(server.get("max_message_mb", 512)) * (1 << 20)),
        session_ttl=float(server.get("session_ttl_seconds", 3600)),
        max_sessions_per_peer=int(server.get("max_sessions_per_peer", 16)),
        max_workers=_positive(server, "max_workers", 8, int),
        max_streams_per_peer=(
            _positive(server, "max_streams_per_peer", 4, int)
            if "max_streams_per_peer" in server
            else None
        ),
        read_timeout=_positive(server, "read_timeout_seconds", 120.0, float),
        idle_session_ttl=_positive(server, "idle_session_ttl_seconds", 60.0, float),
        checkpoint_dir=rel(server["checkpoint_dir"]) if server.get("checkpoint_dir") else None,
        alignment_ttl=3600 * _positive(server, "alignment_ttl_hours", _LEASE_HOURS, float),
        model_ttl=3600 * _positive(server, "model_ttl_hours", _LEASE_HOURS, float),
    )


def _positive(table: Mapping[str, Any], key: str, default: Any, kind: type) -> Any:
    """A positive number setting of ``[server]`` (integers for ``kind=int``)."""
    value = table.get(key, default)
    if isinstance(value, bool) or not isinstance(value, (int, float) if kind is float else int):
        raise ValueError(f"config [server]: {key} must be a positive number, got {value!r}")
    if not value > 0:
        raise ValueError(f"config [server]: {key} must be > 0, got {value!r}")
    return kind(value)
