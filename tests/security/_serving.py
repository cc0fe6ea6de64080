"""An in-process ``ftl serve`` and a raw client: for the wire attack tests here, and
for the server's own tests (``tests/federation/test_serve.py``).

The attacks talk to the server the way a deviating peer would: hand-made
metadata and hand-made bytes on the ``Call`` stream, not through
:class:`ftl.RemoteParty`. Settings a server version does not know are left out
(:func:`start_server`), so that the same attack also runs against older code.
"""

from __future__ import annotations

import hashlib
import inspect
import json
import struct
import threading
import time
import tracemalloc

import numpy as np
import pytest

import ftl
from ftl.federation import Message, encode
from ftl.federation.certs import make_certificates
from ftl.federation.policy import PeerRule, Policy
from ftl.federation.server import PartyServer
from ftl.federation.wire import CHUNK_BYTES, import_grpc

pytest.importorskip("grpc")
grpc = import_grpc()


def make_certs(out):
    make_certificates(out, ["bank", "shop", "eve"])
    return out


def tls_for(certs, name):
    return ftl.TLSConfig(ca=certs / "ca.crt", cert=certs / f"{name}.crt", key=certs / f"{name}.key")


def shop_party(n=300):
    rng = np.random.default_rng(0)
    return ftl.Party(
        "shop", rng.normal(size=(n, 3)), ids=np.arange(n), feature_names=["a", "b", "c"]
    )


def policy(*peers: str, **rule) -> Policy:
    return Policy(
        peers={p: PeerRule(p, **rule) for p in peers or ("bank",)},
        min_key_size=512,
        allow_plaintext=True,
        min_intersection=0,
    )


def start_server(certs, peers=("bank",), max_workers=8, rule=None, **settings):
    """A served shop; ``settings`` this version of ``PartyServer`` lacks are dropped;
    ``rule`` holds keyword arguments of every peer's ``PeerRule``."""
    known = inspect.signature(PartyServer).parameters
    server = PartyServer(
        shop_party(),
        policy(*peers, **(rule or {})),
        **{k: v for k, v in settings.items() if k in known},
    )
    grpc_server, port = server.start("127.0.0.1:0", tls_for(certs, "shop"), max_workers=max_workers)
    return server, grpc_server, f"localhost:{port}"


def psi_open(n_guest=50, mode="full") -> bytes:
    return encode(
        Message(
            "psi.open",
            {
                "salt": bytes(32),
                "n_guest": n_guest,
                "mode": mode,
                "how": "inner",
                "order": "blinded",
                "n_hosts": 1,
                "batch_size": 1000,
            },
        )
    )


def forge(msg_type, fields, version=1) -> bytes:
    """An encoded message built by hand: ``fields`` is a list of (header entry,
    payload bytes); ``nbytes`` is filled in unless given."""
    metas = [{"nbytes": len(blob), **meta} for meta, blob in fields]
    header = json.dumps({"v": version, "type": msg_type, "fields": metas}).encode()
    return struct.pack(">I", len(header)) + header + b"".join(blob for _, blob in fields)


def raw_header(header: bytes, body: bytes = b"") -> bytes:
    return struct.pack(">I", len(header)) + header + body


def metadata(payload: bytes, *, session="a" * 32, op="psi.host.open", seq=0, **override):
    meta = {
        "ftl-session": session,
        "ftl-op": op,
        "ftl-seq": str(seq),
        "ftl-path": "",
        "ftl-length": str(len(payload)),
        "ftl-digest": hashlib.sha256(payload).hexdigest(),
        **override,
    }
    return list(meta.items())


def pieces(payload: bytes) -> list[bytes]:
    return [payload[i : i + CHUNK_BYTES] for i in range(0, len(payload), CHUNK_BYTES)] or [b""]


class RawClient:
    """Sends hand-made requests, metadata included, to the ``Call`` method."""

    def __init__(self, certs, address, name="bank"):
        self.channel = grpc.secure_channel(address, tls_for(certs, name).channel_credentials())
        self.call = self.channel.stream_stream("/ftl.Party/Call")

    def send(self, payload: bytes, *, timeout=20, chunks=None, **meta) -> bytes:
        stream = iter(chunks if chunks is not None else pieces(payload))
        return b"".join(self.call(stream, metadata=metadata(payload, **meta), timeout=timeout))

    def stream(self, requests, payload_meta: list, timeout=30):
        """Start a call whose request chunks come from ``requests`` (may block)."""
        return self.call(requests, metadata=payload_meta, timeout=timeout)

    def close(self):
        self.channel.close()


def outcome(call) -> tuple:
    """(status code, ``ftl-error`` trailer, details) of a refused call; OK if none."""
    try:
        call()
    except grpc.RpcError as err:
        trailer = dict(err.trailing_metadata() or ()).get("ftl-error")
        return err.code(), trailer, err.details()
    return grpc.StatusCode.OK, None, ""


def peak_memory(fn):
    """Run ``fn``; return its result and the peak of Python allocations meanwhile
    (all threads: the in-process server's included)."""
    tracemalloc.start()
    try:
        base, _ = tracemalloc.get_traced_memory()
        tracemalloc.reset_peak()
        result = fn()
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    return result, peak - base


def stalling(first: bytes, release: threading.Event, trickle: float | None = None):
    """Request chunks: ``first``, then nothing until ``release`` (or one byte every
    ``trickle`` seconds) -- a slow or stalled upload."""
    yield first
    while not release.is_set():
        if trickle is None:
            release.wait(0.1)
        else:
            time.sleep(trickle)
            yield b"\0"
