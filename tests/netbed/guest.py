"""What a driver script in the guest's namespace uses (see :meth:`bed.NetBed.drive`).

The bed tells the script, through ``FTL_NETBED_*`` environment variables, where
the host is, the guest's data and certificates, and the proxy's control socket.
A script builds its parties with :func:`guest_party` and :func:`remote_party`,
injects faults at the moments it chooses with :func:`inject`, and ends with
:func:`emit`, whose JSON line the bed returns to the test. A script the test kills
and starts again keeps what its first run made (an alignment, a model) with
:func:`once`.
"""

from __future__ import annotations

import json
import os
import socket
import time
from collections import Counter
from contextlib import contextmanager
from pathlib import Path

import joblib
import pandas as pd

import ftl

from .bed import RESULT_MARK

__all__ = [
    "calls",
    "emit",
    "guest_party",
    "inject",
    "local_host",
    "model_summary",
    "once",
    "proxy_stats",
    "reference_fit",
    "remote_party",
    "timed",
]


def _env(key: str) -> str:
    return os.environ[f"FTL_NETBED_{key}"]


def guest_party() -> ftl.Party:
    """The guest's party: its table, labels in column ``y``."""
    return ftl.Party(_env("IDENTITY"), pd.read_csv(_env("GUEST_CSV")), "id", "y")


def local_host() -> ftl.Party:
    """The host's table as an in-process party: the reference a networked run must
    reproduce (fitted with the same guest party, hence the same secret start)."""
    return ftl.Party.from_file(_env("HOST_CSV"), _env("PARTY"), "id")


def remote_party(**options) -> ftl.RemoteParty:
    """The host, dialled at the bed's address (the proxy's, or the host's own), with
    the guest's certificate; the host's certificate must still name the host."""
    certs, identity = Path(_env("CERTS")), _env("IDENTITY")
    tls = ftl.TLSConfig(
        ca=certs / "ca.crt", cert=certs / f"{identity}.crt", key=certs / f"{identity}.key"
    )
    options.setdefault("audit_log", _env("AUDIT_LOG"))
    return ftl.RemoteParty(_env("PARTY"), _env("ADDRESS"), tls=tls, **options)


def _control(message: dict) -> dict:
    with socket.socket(socket.AF_UNIX) as sock:
        sock.connect(_env("CONTROL"))
        sock.sendall(json.dumps(message).encode() + b"\n")
        answer = json.loads(sock.makefile().readline())
    if not answer.get("ok"):
        raise ValueError(f"the proxy refused {message}: {answer.get('error')}")
    return answer


def inject(**fault) -> None:
    """Schedule a fault at the proxy, timed from now: ``inject(at=0.5, stall=3)``."""
    _control({"fault": fault})


def proxy_stats() -> dict:
    """The proxy's counters: connections, bytes forwarded and held, resets."""
    return _control({"stats": True})["stats"]


def calls() -> dict:
    """What crossed so far: requests this driver sent (round trips), their types, and
    the bytes of all messages (its audit log), and the bytes on the link both ways
    (the guest's interface counters: TLS and HTTP/2 framing included)."""
    log = Path(_env("AUDIT_LOG"))
    records = ftl.Transcript.from_jsonl(log).records if log.exists() else []
    requests = [r for r in records if r.receiver == _env("PARTY")]
    link = Path("/sys/class/net") / _env("DEVICE") / "statistics"
    return {
        "calls": len(requests),
        "types": Counter(r.type for r in requests),
        "bytes": sum(r.nbytes for r in records),
        "wire_bytes": sum(int((link / f"{d}_bytes").read_text()) for d in ("rx", "tx")),
    }


@contextmanager
def timed(result: dict, step: str):
    """Record in ``result[step]`` the seconds of the block and what crossed in it
    (see :func:`calls`)."""
    before, started = calls(), time.perf_counter()
    yield
    seconds = time.perf_counter() - started
    after = calls()
    result[step] = {"seconds": seconds, **{k: after[k] - before[k] for k in after}}


def model_summary(clf, X) -> dict:
    """What identifies a fitted LR model: coefficients, intercept, margins on ``X``."""
    return {
        "coef": clf.coef_.ravel().tolist(),
        "intercept": float(clf.intercept_[0]),
        "decision": clf.decision_function(X).tolist(),
        "n_iter": int(clf.n_iter_[0]),
    }


def once(path, make):
    """``make()``, made by the script's first run and kept in ``path`` (joblib,
    written atomically) for its runs after a kill: loaded from there every time."""
    path = Path(path)
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        part = path.with_name(path.name + ".part")
        joblib.dump(make(), part)
        os.replace(part, path)
    return joblib.load(path)


def reference_fit(guest: ftl.Party, params: dict) -> tuple:
    """The in-process reference of a networked fit: ``guest`` aligned with
    :func:`local_host` by id, and the :func:`model_summary` of the logistic
    regression fitted there with ``params`` (the same guest party, hence the same
    secret start as the networked fit); the aligned data and the summary."""
    X, y = ftl.align(guest, local_host(), order="id")
    return X, model_summary(ftl.FederatedLogisticRegression(**params).fit(X, y), X)


def emit(**result) -> None:
    """Print the script's result for the bed (the last such line counts)."""
    print(RESULT_MARK + json.dumps(result), flush=True)
