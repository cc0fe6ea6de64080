"""The driver's side of the gRPC transport: one served party's connection.

:class:`PartyClient` sends a party's public-facts request (``Info``) and each
encoded protocol request (``Call``) in chunks, with the metadata the server checks
first -- session, operation, party path, sequence number, length, digest -- and
turns the server's refusals back into the exceptions an in-process run raises.
:class:`ftl.RemoteParty` is the party-shaped object built on it.
"""

from __future__ import annotations

import datetime
import hashlib
import json
import logging
import os
import random
import threading
import time
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.x509.oid import NameOID

from ftl.exceptions import (
    MessageError,
    PartyUnavailableError,
    PeerIdentityError,
    PolicyError,
    ProtocolError,
    TLSHandshakeError,
)
from ftl.federation.identity import (
    certificate_names,
    describe_certificate,
    party_names,
    party_server_name,
)
from ftl.federation.transport.grpc.tls import HandshakeOutcome, HandshakeProbe, TLSConfig
from ftl.federation.transport.grpc.wire import (
    CALL,
    CLIENT_OPTIONS,
    ERROR_KEY,
    INFO,
    RETRY_BUSY,
    RETRY_KEY,
    chunks,
    import_grpc,
)

__all__ = ["Connection", "PartyClient"]

#: Waits between retries of an unavailable party; the last one repeats (capped back-off).
_RETRY_BACKOFF = (0.25, 1.0, 3.0)
#: A call put off as busy is sent again after about this long, doubled each time up
#: to the cap; half of each wait is random, so that drivers put off together do
#: not all come back at once.
_BUSY_FIRST, _BUSY_CAP = 0.05, 2.0
#: gRPC's message for a call refused unread because the server had its
#: ``maximum_concurrent_rpcs`` in flight (``grpc._server._handle_call``).
_SERVER_FULL = "Concurrent RPC limit exceeded!"
_log = logging.getLogger(__name__)
#: Longest the TLS probe that explains an unavailable party may take per step.
_PROBE_SECONDS = 5.0


def _issuer_and_expiry(cert_path) -> tuple[str, datetime.datetime | None]:
    """Who issued the certificate in ``cert_path`` (its common name), and when it
    expired if it has: what a host that refused it may have objected to."""
    try:
        cert = x509.load_pem_x509_certificate(Path(cert_path).read_bytes())
    except (OSError, ValueError):
        return "an unreadable certificate", None
    names = cert.issuer.get_attributes_for_oid(NameOID.COMMON_NAME)
    issuer = ", ".join(repr(n.value) for n in names) or repr(cert.issuer.rfc4514_string())
    # not_valid_after_utc appeared in cryptography 42; the naive one is UTC too.
    utc = datetime.timezone.utc
    end = getattr(cert, "not_valid_after_utc", None) or cert.not_valid_after.replace(tzinfo=utc)
    return issuer, (end if end < datetime.datetime.now(utc) else None)


def _put_off(exc) -> bool:
    """Whether a failed call was put off as busy (not read; to be sent again), as
    opposed to refused: the ``ftl-retry: busy`` trailer says so, and so does gRPC's
    own answer to a call above the server's ``maximum_concurrent_rpcs``."""
    trailers = dict(exc.trailing_metadata() or ())
    if trailers.get(RETRY_KEY) == RETRY_BUSY:
        return True
    # gRPC's server refuses such a call before any handler (so any of ours) sees it:
    # nothing was read, as for our busy answer. Known by its exact message and the
    # lack of our trailers -- a refusal of ours (open sessions: RESOURCE_EXHAUSTED
    # too) always names its error, and a message over gRPC's size limit, which
    # would only fail again, says something else.
    return (
        exc.code() == import_grpc().StatusCode.RESOURCE_EXHAUSTED
        and ERROR_KEY not in trailers
        and exc.details() == _SERVER_FULL
    )


#: Words of gRPC's details for a failed TLS handshake (certificate refused or not
#: verified, a name that does not match), none of which a refused, reset or timed-out
#: connection's details carry.
_TLS_WORDS = ("handshake", "verif", "certificate", "ssl", "tls", "alert")


def _tls_words(details: str | None) -> bool:
    """Whether gRPC's details of an unavailable party speak of TLS."""
    text = (details or "").lower()
    return any(word in text for word in _TLS_WORDS)


class Connection:
    """One gRPC channel per process (gRPC channels do not survive a fork).

    TLS verifies the server's certificate against ``server_name`` instead of the
    host name dialled: the party's pinned name, so the handshake fails, before
    any request, unless the certificate names that party.
    """

    def __init__(self, address: str, tls: TLSConfig, server_name: str):
        grpc = import_grpc()

        options = [*CLIENT_OPTIONS, ("grpc.ssl_target_name_override", server_name)]
        self.pid = os.getpid()
        self.channel = grpc.secure_channel(address, tls.channel_credentials(), options=options)
        self.call = self.channel.stream_stream(CALL)
        self.info = self.channel.unary_unary(INFO)


class PartyClient:
    """Requests to one served party (seen through the fitted transformers ``path``).

    Parameters
    ----------
    name : str
        The party's name, for error messages.
    address : str
        ``host:port`` of the party's ``ftl serve``.
    tls : TLSConfig
        This driver's certificate and key, and the CA it trusts.
    server_name : str
        The DNS name the party's certificate must carry.
    path : tuple of str
        The fitted transformers to see the party through.
    timeout, connect_timeout : float
        Seconds to wait for one operation's reply, and for the public facts.
    retries : int
        Retries after a transport failure (gRPC ``UNAVAILABLE``) at least; 0 fails
        at the first one.
    retry_for : float
        Seconds an outage is retried for (beyond ``retries``): a host restart or a
        fail-over that refuses connections for a while is survived if it ends
        within this budget.
    """

    def __init__(
        self,
        name: str,
        address: str,
        tls: TLSConfig,
        server_name: str,
        path: tuple[str, ...],
        *,
        timeout: float,
        connect_timeout: float,
        retries: int,
        retry_for: float = 0.0,
    ):
        self.name = name
        self.address = address
        self.tls = tls
        self.server_name = server_name
        self.path = tuple(path)
        self.timeout = float(timeout)
        self.connect_timeout = float(connect_timeout)
        self.retries = int(retries)
        self.retry_for = float(retry_for)
        self._lock = threading.Lock()
        self._connection: Connection | None = None
        self._seq: dict[str, int] = {}

    def connection(self) -> Connection:
        """This process's connection (a new one, with fresh sequence numbers, after a
        fork)."""
        with self._lock:
            if self._connection is None or self._connection.pid != os.getpid():
                self._connection = Connection(self.address, self.tls, self.server_name)
                self._seq = {}
            return self._connection

    def _metadata(self, **extra: str) -> list[tuple[str, str]]:
        return [("ftl-path", "/".join(self.path)), *extra.items()]

    def info(self) -> dict:
        """The party's public facts (name, rows, columns, announced policy, budget)."""
        conn = self.connection()
        raw = self._with_retries(
            "info",
            lambda: conn.info(b"", metadata=self._metadata(), timeout=self.connect_timeout),
            # put off only by gRPC's server-wide limit, before it runs: sent again as is
            busy_for=self.connect_timeout,
        )
        try:
            info = json.loads(raw.decode("utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError):
            raise MessageError(f"party {self.name!r} sent malformed public facts") from None
        if not isinstance(info, dict) or not isinstance(info.get("feature_names"), list):
            raise MessageError(f"party {self.name!r} sent malformed public facts")
        return info

    def _unavailable(
        self, what: str, details: str, probe: HandshakeProbe | None
    ) -> PartyUnavailableError | PeerIdentityError:
        """The error for a party that did not answer, saying why if ``probe`` (a TLS
        connection of our own, see :meth:`TLSConfig.probe`) found out."""
        where = f"party {self.name!r} ({self.address})"
        outcome = None if probe is None else probe.outcome
        if outcome is HandshakeOutcome.UNREACHABLE:
            details = f"cannot reach {self.address} ({probe.reason}): is `ftl serve` running there?"
        if probe is not None and probe.certificate is not None:
            # gRPC checks the server's name before the server judges ours: so do we.
            mismatch = self._identity_mismatch(probe.certificate)
            if mismatch is not None:
                return mismatch
        if outcome is HandshakeOutcome.CERTIFICATE_REFUSED:
            issuer, expired = _issuer_and_expiry(self.tls.cert)
            question = (
                f"it expired on {expired:%Y-%m-%d %H:%M} UTC: renew it"
                if expired is not None
                else "does the host trust your CA?"
            )
            return TLSHandshakeError(
                f"TLS handshake failed: {where} refused your certificate ({self.tls.cert}, "
                f"issued by {issuer}; {probe.reason}): {question}"
            )
        if outcome is HandshakeOutcome.SERVER_NOT_VERIFIED:
            verdict = (
                f"is not signed by your CA ({self.tls.ca}): {probe.reason}; is that the CA "
                "that issued the host's certificate?"
                if probe.signed_by_another_ca
                else f"does not verify against your CA ({self.tls.ca}): {probe.reason}"
            )
            return TLSHandshakeError(f"TLS handshake failed: the certificate of {where} {verdict}")
        return PartyUnavailableError(f"{where} did not answer {what!r}: {details}")

    def _identity_mismatch(self, cert) -> PeerIdentityError | None:
        """Why the party's verified certificate ``cert`` was refused, if it does not
        name the party."""
        if certificate_names(cert, self.server_name):
            return None  # it does name the party; the connection failed for another reason
        where = f"the server at {self.address} (party {self.name!r})"
        seen = describe_certificate(cert)
        others = party_names(cert)
        if others or self.server_name != party_server_name(self.name):
            claimed = f"for {others[0]!r}" if others else "that does not name it"
            return PeerIdentityError(
                f"{where} presented a certificate {claimed} ({seen}), not one naming "
                f"{self.server_name!r}: refused before sending any request. Check the address, "
                "and the certificate the party serves with"
            )
        return PeerIdentityError(
            f"{where} presented a certificate that names no ftl party ({seen}), so it cannot "
            f"prove to be {self.name!r}: refused before sending any request. Certificates made "
            f"before ftl pinned party identities lack the name {self.server_name!r}: re-issue "
            "them with `ftl certs`, or pass RemoteParty(..., server_name=...) with a DNS name "
            "that only this party's certificate carries"
        )

    def call(self, session: str, op: str, payload: bytes, max_reply_bytes: int) -> bytes:
        """Send one encoded request to operation ``op`` in ``session``; return the reply.

        The request carries the next sequence number of its session, consumed even
        if the call fails (the host may have run it); a retry after a transport
        failure resends the same number and digest, so the host answers it from the
        stored reply instead of running it twice. A call the host put off as busy
        (its cap of calls in flight from this peer, or gRPC's cap of calls in flight
        at the server) is sent again, with jittered exponential back-off, until the
        call's timeout is spent.
        """
        conn = self.connection()
        with self._lock:
            seq = self._seq.get(session, 0)
            self._seq[session] = seq + 1
        metadata = self._metadata(
            **{
                "ftl-session": session,
                "ftl-op": op,
                "ftl-seq": str(seq),
                "ftl-length": str(len(payload)),
                "ftl-digest": hashlib.sha256(payload).hexdigest(),
            }
        )

        # A close only frees the host's session state (which its TTL frees anyway):
        # after a failure it must not make the driver wait out a second timeout.
        timeout = min(self.timeout, self.connect_timeout) if op.endswith(".close") else self.timeout

        def attempt() -> bytes:
            reply = bytearray()
            for chunk in conn.call(chunks(payload), metadata=metadata, timeout=timeout):
                reply += chunk
                if len(reply) > max_reply_bytes:
                    raise MessageError(f"{op}: reply exceeds {max_reply_bytes} bytes")
            return bytes(reply)

        return self._with_retries(op, attempt, busy_for=timeout)

    def _with_retries(self, what: str, attempt, busy_for: float = 0.0) -> Any:
        """``attempt()``, retried while the party is unavailable: at least
        ``retries`` times, and for as long as the outage is shorter than
        ``retry_for`` seconds (safe: the server answers a retransmitted request
        with its stored reply); and while the party puts it off as busy, for up to
        ``busy_for`` seconds (safe: it did not read the request)."""
        grpc = import_grpc()

        start = time.monotonic()
        first_failure = None
        tries = busy = 0
        while True:
            try:
                return attempt()
            except grpc.RpcError as exc:
                now = time.monotonic()
                if _put_off(exc):
                    # not a refusal: the request was not read; back off and send it again
                    # (the doubling stops at the cap: 2**busy alone would overflow a float
                    # after ~1 000 put-offs)
                    grown = min(_BUSY_CAP, _BUSY_FIRST * 2 ** min(busy, 16))
                    wait = grown * random.uniform(0.5, 1.0)
                    if now - start + wait > busy_for:
                        raise self._error(what, exc) from None
                    _log.debug("party %r busy during %r; again in %.2f s", self.name, what, wait)
                    time.sleep(wait)
                    busy += 1
                    continue
                first_failure = now if first_failure is None else first_failure
                wait = _RETRY_BACKOFF[min(tries, len(_RETRY_BACKOFF) - 1)]
                within = tries < self.retries or now - first_failure + wait <= self.retry_for
                if exc.code() != grpc.StatusCode.UNAVAILABLE or self.retries == 0 or not within:
                    raise self._error(what, exc) from None
                if tries == 0 and _tls_words(exc.details()):
                    # a certificate or identity that does not match will not heal by
                    # waiting: say so now, not after `retry_for` seconds of retries (the
                    # probe that tells is a connection of its own: only when gRPC's words
                    # point at TLS, never for a refused or reset connection)
                    error = self._error(what, exc)
                    if isinstance(error, (TLSHandshakeError, PeerIdentityError)):
                        raise error from None
                if tries == 0:
                    _log.warning(
                        "party %r (%s) unavailable during %r (%s); retrying for up to %.0f s",
                        self.name,
                        self.address,
                        what,
                        exc.details() or exc.code().name,
                        max(self.retry_for, sum(_RETRY_BACKOFF[: self.retries])),
                    )
                time.sleep(wait)
                tries += 1

    def _error(self, what: str, exc) -> Exception:
        """The exception an in-process run would raise for the server's refusal."""
        grpc = import_grpc()

        code = exc.code()
        details = exc.details() or code.name
        trailer = dict(exc.trailing_metadata() or ()).get(ERROR_KEY)
        where = f"party {self.name!r} ({self.address}) refused {what!r}: {details}"
        if code in (
            grpc.StatusCode.UNAVAILABLE,
            grpc.StatusCode.DEADLINE_EXCEEDED,
            grpc.StatusCode.CANCELLED,
        ):
            # gRPC reports a host that is down and a failed TLS handshake alike: a
            # probe of our own tells them apart, once per failure.
            probe = None
            if code == grpc.StatusCode.UNAVAILABLE:
                seconds = min(self.connect_timeout, _PROBE_SECONDS)
                probe = self.tls.probe(self.address, self.server_name, seconds)
            return self._unavailable(what, details, probe)
        if code == grpc.StatusCode.PERMISSION_DENIED or trailer == "PolicyError":
            return PolicyError(where)
        if code == grpc.StatusCode.UNAUTHENTICATED:
            return PolicyError(where)
        if trailer == "MessageError":
            return MessageError(where)
        if code == grpc.StatusCode.FAILED_PRECONDITION:
            return ProtocolError(where)
        if code == grpc.StatusCode.INVALID_ARGUMENT:
            return ValueError(where)
        if code == grpc.StatusCode.RESOURCE_EXHAUSTED:
            return MessageError(where)
        return RuntimeError(where)

    # -- pickling (joblib workers reconnect on their own) ---------------------------------
    def __getstate__(self) -> dict:
        state = self.__dict__.copy()
        state["_connection"] = None
        state["_seq"] = {}
        state["_lock"] = None
        return state

    def __setstate__(self, state: dict) -> None:
        self.__dict__.update(state)
        self._lock = threading.Lock()
