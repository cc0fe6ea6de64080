"""What the two organisations of a bed run have on disk: tables, certificates, config.

:func:`prepare` writes the guest's and the host's tables (a slice of a bundled
data set; the host also holds some customers the guest does not, so PSI has
work to do), throwaway certificates for both, and the host's ``ftl serve``
configuration.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

import ftl
from ftl.federation.certs import make_certificates

from .bed import Driver

__all__ = ["Deployment", "TEST_POLICY", "prepare"]

DATA = Path(ftl.__file__).parent / "datasets" / "data"
#: Bundled data sets: file stem, guest name, host name.
DATASETS = {
    "breast": ("breast_hetero", "hospital", "lab"),
    "default_credit": ("default_credit_hetero", "bank", "shop"),
}
#: A host policy for tests of the network: plaintext and 1024-bit keys allowed.
TEST_POLICY = {
    "allow_plaintext": True,
    "min_key_size": 1024,
    "min_intersection": 10,
    "min_fit_rows": 50,
}


@dataclass
class Deployment:
    """The files of one guest and one host (see :func:`prepare`)."""

    workdir: Path
    guest: str
    host: str
    guest_csv: Path
    host_csv: Path

    @property
    def certs(self) -> Path:
        return self.workdir / "certs"

    def write_config(self, name: str, policy: dict, server: dict | None = None) -> Path:
        """The host's ``ftl serve`` configuration ``<name>.toml``, its audit log
        ``<name>-audit.jsonl``; ``policy`` and ``server`` add to the defaults."""
        sections = {
            "party": {"name": self.host, "data": str(self.host_csv), "id_column": "id"},
            "server": {
                "listen": "127.0.0.1:0",
                "audit_log": f"{name}-audit.jsonl",
                **(server or {}),
            },
            "tls": {
                "cert": f"certs/{self.host}.crt",
                "key": f"certs/{self.host}.key",
                "ca": "certs/ca.crt",
            },
            "policy": policy,
        }
        lines = []
        for section, values in sections.items():
            lines.append(f"[{section}]")
            # JSON's strings, numbers, booleans and lists are TOML's too
            lines += [f"{key} = {json.dumps(value)}" for key, value in values.items()]
        lines += ["[[policy.peers]]", f"identity = {json.dumps(self.guest)}"]
        path = self.workdir / f"{name}.toml"
        path.write_text("\n".join(lines) + "\n")
        return path

    def audit_log(self, name: str) -> Path:
        """The audit log of the host configured as ``name``."""
        return self.workdir / f"{name}-audit.jsonl"

    def driver(self, address: str, audit_log: Path, control: Path | None = None) -> Driver:
        """What a driver script dialling ``address`` is told."""
        return Driver(
            address,
            self.host,
            self.guest,
            self.certs,
            self.guest_csv,
            self.host_csv,
            audit_log,
            control,
        )


def prepare(workdir: Path, dataset: str = "breast", rows: int = 0) -> Deployment:
    """Write both parties' files for ``rows`` shared customers (0: all of them).

    The guest keeps the first ``rows`` customers of its table; the host keeps the
    same ones and a tenth as many of its own.
    """
    stem, guest, host = DATASETS[dataset]
    workdir = Path(workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    guest_table = pd.read_csv(DATA / f"{stem}_guest.csv")
    host_table = pd.read_csv(DATA / f"{stem}_host.csv")
    if rows:
        guest_table = guest_table.iloc[:rows]
        shared = host_table["id"].isin(guest_table["id"])
        extra = host_table[~shared].iloc[: max(1, rows // 10)]
        host_table = pd.concat([host_table[shared], extra])
    deployment = Deployment(workdir, guest, host, workdir / f"{guest}.csv", workdir / f"{host}.csv")
    guest_table.to_csv(deployment.guest_csv, index=False)
    host_table.to_csv(deployment.host_csv, index=False)
    make_certificates(deployment.certs, [guest, host])
    return deployment
