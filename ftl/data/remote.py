"""A party on another machine, reached over gRPC with mutual TLS (``ftl serve``).

:class:`RemoteParty` stands where a local :class:`~ftl.Party` stands in the
driver's code: ``ftl.align(bank, shop)`` and every estimator run unchanged,
because protocols only ever talk to a party through its ``endpoint``, with
encoded messages. The remote endpoint sends each encoded message in chunks to
the host, which checks it against its policy and its session state before any
protocol code sees it (see :mod:`ftl.federation.transport.grpc.server`).
"""

from __future__ import annotations

import os
from typing import Any

import numpy as np

from ftl.exceptions import MessageError
from ftl.federation.codec import FORMAT_VERSION, MAX_MESSAGE_BYTES
from ftl.federation.identity import load_identity, party_server_name
from ftl.federation.transcript import Transcript
from ftl.federation.transport.grpc.client import PartyClient
from ftl.federation.transport.grpc.tls import TLSConfig

__all__ = ["RemoteParty"]


class RemoteParty:
    """A party served by ``ftl serve`` on another machine.

    Use it wherever a host (or transfer target) :class:`~ftl.Party` goes:
    ``ftl.align(bank, shop)``, then any estimator, with the same code as in a
    simulation. The host decides, by its policy, what this driver may do; a
    refusal raises :class:`~ftl.federation.policy.PolicyError` with the host's
    reason.

    Parameters
    ----------
    name : str
        The party's name (must match the name the host serves).
    address : str
        ``host:port`` of the party's ``ftl serve``.
    tls : TLSConfig
        This driver's certificate and key, and the CA it trusts for the host.
        The host knows this driver by the certificate's common name. A failed
        TLS handshake raises :class:`~ftl.exceptions.TLSHandshakeError` (a
        :class:`~ftl.federation.PartyUnavailableError`) saying which side
        refused which certificate; an address where nothing listens says
        "cannot reach" (see docs/howto/deploy.md, *When the connection fails*).
    timeout : float, default=600
        Seconds to wait for one operation's reply (a host that died or is cut
        off gives :class:`~ftl.federation.PartyUnavailableError` after at most
        this long).
    connect_timeout : float, default=20
        Seconds to wait for the host's public facts when connecting.
    retries : int, default=2
        Retries after a transport failure (gRPC ``UNAVAILABLE``: the connection
        refused or reset) at least; ``0`` fails at the first one. Safe: a
        retransmitted request carries its sequence number and digest, and the
        host answers a repeat with the stored reply instead of running it twice.
    retry_for : float, default=30
        Seconds an outage is retried for beyond ``retries`` (back-off capped at
        3 s, one warning logged): a host restart or a network fail-over shorter
        than this is survived. A host that stays down fails the call after about
        this long.
    audit_log : path, optional
        JSON-lines file this driver appends every message it exchanges with the
        party to (read it with ``ftl report``).
    max_message_bytes : int, optional
        Largest reply accepted; defaults to the host's own limit.
    server_name : str, optional
        The DNS name the party's certificate must carry, checked by TLS when
        connecting; default ``"<name>.ftl"``, the name ``ftl certs`` gives party
        ``name``. Any other certificate, even one of another party from the same
        CA, fails the handshake and raises
        :class:`~ftl.federation.tls.PeerIdentityError` before any request is
        sent. Set it when the party's certificate comes from a PKI that names it
        otherwise; it must be a name that only this party's certificate carries.

    Attributes
    ----------
    n_rows : int
        The party's row count (public in PSI anyway).
    feature_names : list of str
        The columns this driver may use (after the host's policy).

    Examples
    --------
    >>> tls = ftl.TLSConfig(ca="ca.crt", cert="bank.crt", key="bank.key")  # doctest: +SKIP
    >>> shop = ftl.RemoteParty("shop", "shop.example:50051", tls=tls)  # doctest: +SKIP
    >>> X, y = ftl.align(bank, shop)  # doctest: +SKIP
    """

    has_labels = False

    def __init__(
        self,
        name: str,
        address: str,
        tls: TLSConfig,
        *,
        timeout: float = 600.0,
        connect_timeout: float = 20.0,
        retries: int = 2,
        retry_for: float = 30.0,
        audit_log: str | os.PathLike | None = None,
        max_message_bytes: int | None = None,
        server_name: str | None = None,
        _path: tuple[str, ...] = (),
        _info: dict | None = None,
    ):
        if not isinstance(tls, TLSConfig):
            raise TypeError("tls must be an ftl.TLSConfig (mutual TLS is required)")
        if not isinstance(address, str) or ":" not in address:
            raise ValueError(f"address must be 'host:port', got {address!r}")
        if tls.server_name:
            # One name for every party dialled with this configuration pins none.
            raise ValueError(
                "TLSConfig.server_name is no longer used: the driver checks that a party's "
                f"certificate names the party ({party_server_name(name)!r} for {name!r}); "
                "pass RemoteParty(..., server_name=...) to pin another name for one party"
            )
        if server_name is not None and (not isinstance(server_name, str) or not server_name):
            raise ValueError(f"server_name must be a non-empty DNS name, got {server_name!r}")
        self.name = name
        self.server_name = server_name or party_server_name(name)
        self.address = address
        self.tls = tls
        self.timeout = float(timeout)
        self.connect_timeout = float(connect_timeout)
        self.retries = int(retries)
        self.retry_for = float(retry_for)
        self.audit_log = audit_log
        self._path = tuple(_path)
        self._client = PartyClient(
            name,
            address,
            tls,
            self.server_name,
            self._path,
            timeout=self.timeout,
            connect_timeout=self.connect_timeout,
            retries=self.retries,
            retry_for=self.retry_for,
        )
        self._derived: dict[str, RemoteParty] = {}
        self._transcript = Transcript(log_path=audit_log) if audit_log else None
        self._identity = None
        if audit_log:
            # The driver's own log names it as the host's log does: by its certificate.
            self._identity = load_identity(tls.cert)
        self._info = _info if _info is not None else self._client.info()
        if self._info.get("format_version") != FORMAT_VERSION:
            raise ValueError(
                f"party {name!r} speaks message format {self._info.get('format_version')!r}, "
                f"this ftl speaks {FORMAT_VERSION}; install matching versions"
            )
        if self._info.get("name") != name:
            raise ValueError(f"{address} serves party {self._info.get('name')!r}, not {name!r}")
        limit = int(self._info.get("max_message_bytes", MAX_MESSAGE_BYTES))
        self.max_message_bytes = min(limit, max_message_bytes or limit)

    # -- what anyone may know about the party -------------------------------------
    @property
    def n_rows(self) -> int:
        return int(self._info["n_rows"])

    @property
    def feature_names(self) -> list[str]:
        return list(self._info["feature_names"])

    @property
    def n_features(self) -> int:
        return len(self._info["feature_names"])

    @property
    def policy(self) -> dict:
        """The parts of the host's policy it announces (protocols, key size, ...),
        with every protocol's setting (e.g. ``allow_lbfgs``, ``sbt_min_samples_leaf``)
        under ``"protocol_settings"`` (empty from a host of an earlier version)."""
        keys = ("protocols", "min_key_size", "allow_plaintext", "min_intersection")
        announced = {k: self._info.get(k) for k in keys}
        settings = self._info.get("protocol_settings")
        announced["protocol_settings"] = dict(settings) if isinstance(settings, dict) else {}
        return announced

    def budget(self) -> dict:
        """This driver's privacy budget at the party, as the party counts it now.

        Fetched from the party on every call: per counted item (alignments, fits,
        prediction requests, rows scored, transformers in the last 24 hours) the
        ``used`` count and the ``limit``, and under ``"limits"`` every budget key
        (see docs/howto/deploy.md, *The privacy budget*).
        """
        budget = self._client.info().get("budget")
        if not isinstance(budget, dict):
            raise MessageError(f"party {self.name!r} announced no privacy budget")
        return budget

    @property
    def endpoint(self) -> RemoteParty:
        """This object answers protocol operations itself, over the network."""
        return self

    def derived(self, transformer_id: str) -> RemoteParty:
        """The party seen through a transformer fitted at it (a proxy; nothing is fetched
        but the derived column names). One proxy per transformer, reused: a session's
        sequence numbers live in the proxy that sends its requests."""
        cached = self._derived.get(transformer_id)
        if cached is not None:
            return cached
        proxy = self._derived[transformer_id] = RemoteParty(
            self.name,
            self.address,
            self.tls,
            timeout=self.timeout,
            connect_timeout=self.connect_timeout,
            retries=self.retries,
            retry_for=self.retry_for,
            audit_log=self.audit_log,
            max_message_bytes=self.max_message_bytes,
            server_name=self.server_name,
            _path=(*self._path, transformer_id),
        )
        return proxy

    def __repr__(self) -> str:
        through = f", preprocessed x{len(self._path)}" if self._path else ""
        return (
            f"RemoteParty({self.name!r} at {self.address}, {self.n_rows} rows, "
            f"{self.n_features} features{through})"
        )

    def local_ids(self):
        raise ValueError(
            f"party {self.name!r} is remote: its ids never leave it; align with ftl.align"
        )

    def select(self, ids: Any = None):
        """A handle over rows of this party named by ids it gave you (e.g. the customers
        a transfer target asked you to score); the party checks they exist.

        Parameters
        ----------
        ids : array-like
            The party's ids of the wanted rows, in order.

        Returns
        -------
        PartyRows
        """
        from ftl.data.handles import PartyRows

        if ids is None:
            raise ValueError(
                f"party {self.name!r} is remote and its ids never leave it: pass the ids "
                "it asked you to score"
            )
        ids = np.asarray(ids)
        if ids.ndim != 1:
            raise ValueError("ids must be one-dimensional")
        return PartyRows(self, np.arange(len(ids)), ids)

    def handle(self, session: str, op: str, payload: bytes) -> bytes:
        """Send one encoded request to the party's operation ``op``; return its reply."""
        if len(payload) > self.max_message_bytes:
            raise MessageError(
                f"{op}: request of {len(payload)} bytes exceeds the host's limit of "
                f"{self.max_message_bytes}"
            )
        if self._transcript is not None:
            self._transcript.record_encoded(session, self._identity, self.name, payload)
        reply = self._client.call(session, op, payload, self.max_message_bytes)
        if self._transcript is not None:
            self._transcript.record_encoded(session, self.name, self._identity, reply)
        return reply
