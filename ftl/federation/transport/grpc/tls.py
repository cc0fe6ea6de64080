"""Mutual-TLS settings of a party: its certificate and key, and whom it trusts.

gRPC reports a failed TLS handshake like a host that is down (``UNAVAILABLE``),
without saying which side refused which certificate. :meth:`TLSConfig.probe`
finds out, after a failure only, with a TLS connection of its own.
"""

from __future__ import annotations

import contextlib
import enum
import socket
import ssl
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509

from ftl.exceptions import PeerIdentityError, TLSHandshakeError
from ftl.federation.transport.grpc.wire import import_grpc

__all__ = [
    "HandshakeOutcome",
    "HandshakeProbe",
    "PeerIdentityError",
    "TLSConfig",
    "TLSHandshakeError",
]

#: What an HTTP/2 client sends first (RFC 9113 §3.4): the preface and an empty
#: SETTINGS frame. A server that accepted the handshake answers with its SETTINGS.
_HTTP2_PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n" + bytes.fromhex("000000040000000000")
_CLOSED_AFTER_HANDSHAKE = "closed the connection after the handshake"
#: TLS alerts with which a server refuses the client's certificate.
_CERTIFICATE_ALERTS = frozenset(
    {
        "SSLV3_ALERT_BAD_CERTIFICATE",
        "SSLV3_ALERT_CERTIFICATE_EXPIRED",
        "SSLV3_ALERT_CERTIFICATE_REVOKED",
        "SSLV3_ALERT_CERTIFICATE_UNKNOWN",
        "SSLV3_ALERT_UNSUPPORTED_CERTIFICATE",
        "TLSV13_ALERT_CERTIFICATE_REQUIRED",
        "TLSV1_ALERT_ACCESS_DENIED",
        "TLSV1_ALERT_UNKNOWN_CA",
    }
)


#: OpenSSL verification errors that mean "no chain to a CA we trust": unable to get
#: the issuer (2, 20), self-signed (18, 19), leaf signature unverifiable (21), bad
#: signature (7).
_NOT_SIGNED_BY_OUR_CA = frozenset({2, 7, 18, 19, 20, 21})


def _read(path: str | Path, what: str) -> bytes:
    try:
        return Path(path).read_bytes()
    except OSError as exc:
        raise ValueError(f"cannot read the TLS {what} {str(path)!r}: {exc}") from None


def _host_port(address: str) -> tuple[str, int] | None:
    """``(host, port)`` of a ``host:port`` address; ``None`` for other gRPC targets
    (``dns:///...``, ``unix:...``)."""
    host, sep, port = address.rpartition(":")
    if not sep or not port.isdigit() or "/" in host:
        return None
    return (host[1:-1] if host.startswith("[") and host.endswith("]") else host), int(port)


class HandshakeOutcome(enum.Enum):
    """How a TLS connection to a server ended (see :meth:`TLSConfig.probe`)."""

    UNREACHABLE = "no TCP connection"
    SERVER_NOT_VERIFIED = "the server's certificate did not verify against our CA"
    CERTIFICATE_REFUSED = "the server refused our certificate"
    ACCEPTED = "both sides accepted the other's certificate"
    FAILED = "the connection failed otherwise"


@dataclass(frozen=True)
class HandshakeProbe:
    """What :meth:`TLSConfig.probe` saw.

    Attributes
    ----------
    outcome : HandshakeOutcome
    reason : str
        The cause in a few words (``"connection refused"``, the verification
        error, the server's alert), empty when accepted.
    certificate : cryptography.x509.Certificate or None
        The server's certificate, if it verified against our CA (its name is
        not checked: that is the caller's question).
    verify_code : int or None
        OpenSSL's verification error code, for ``SERVER_NOT_VERIFIED``.
    """

    outcome: HandshakeOutcome
    reason: str = ""
    certificate: x509.Certificate | None = None
    verify_code: int | None = None

    @property
    def signed_by_another_ca(self) -> bool:
        """Whether the server's certificate failed verification for want of a
        signature by our CA (rather than, say, having expired)."""
        return self.verify_code in _NOT_SIGNED_BY_OUR_CA


@dataclass(frozen=True)
class TLSConfig:
    """Certificates for one side of a mutually authenticated TLS connection.

    Both sides present a certificate signed by a CA the other side trusts, and
    each pins the other's identity. The host takes the *common name* of the
    driver's certificate as the driver's identity, which its data-use policy
    refers to. The driver verifies that the host's certificate carries the DNS
    name of the party it means to reach (``shop.ftl`` for party ``"shop"``, see
    :class:`ftl.RemoteParty`), so another party's certificate from the same CA
    is refused. ``ftl certs`` makes a throwaway CA and party certificates to try
    things out; in production use the organisations' own PKI.

    Parameters
    ----------
    ca : path
        PEM file of the certificate authority (or authorities) whose
        certificates this side accepts from the peer.
    cert : path
        PEM file of this party's certificate (chain).
    key : path
        PEM file of this party's private key. Keep it secret.
    server_name : str, optional
        No longer used, and refused by :class:`ftl.RemoteParty`: one name for
        every party this configuration connects to would pin no party. The driver
        checks each party's certificate against the party's own name; pass
        ``RemoteParty(..., server_name=...)`` to pin another name per party.

    Examples
    --------
    >>> tls = ftl.TLSConfig(ca="certs/ca.crt", cert="certs/bank.crt", key="certs/bank.key")
    ... # doctest: +SKIP
    """

    ca: str | Path
    cert: str | Path
    key: str | Path
    server_name: str | None = None

    def channel_credentials(self):
        """gRPC credentials for dialling a host (client side)."""
        grpc = import_grpc()

        return grpc.ssl_channel_credentials(
            root_certificates=_read(self.ca, "CA certificate"),
            private_key=_read(self.key, "private key"),
            certificate_chain=_read(self.cert, "certificate"),
        )

    def server_credentials(self, on_connection: Callable[[], None] | None = None):
        """gRPC credentials for serving: a client certificate is required.

        Parameters
        ----------
        on_connection : callable, optional
            Called, without arguments, as each client connection starts its TLS
            handshake: gRPC tells the application nothing else about connections
            whose handshake fails (see
            :class:`~ftl.federation.transport.grpc.handshakes.HandshakeWatcher`).
            It must return quickly and never raise.
        """
        grpc = import_grpc()

        pairs = [(_read(self.key, "private key"), _read(self.cert, "certificate"))]
        ca = _read(self.ca, "CA certificate")
        if on_connection is None:
            return grpc.ssl_server_credentials(
                pairs, root_certificates=ca, require_client_auth=True
            )

        def keep_certificates():
            # gRPC asks before every handshake whether the certificates changed:
            # the one hook it has into connections. They never change here.
            on_connection()
            return None

        return grpc.dynamic_ssl_server_credentials(
            grpc.ssl_server_certificate_configuration(pairs, root_certificates=ca),
            keep_certificates,
            require_client_authentication=True,
        )

    def peer_certificate(self, address: str, server_name: str, timeout: float = 10.0):
        """The certificate a server at ``address`` presents, verified against the CA.

        Only for explaining a failed connection (see :meth:`probe`). The name is
        not checked here; that is the caller's question.

        Returns
        -------
        cryptography.x509.Certificate or None
            ``None`` if the address cannot be parsed or reached, or the
            certificate is not signed by this configuration's CA.
        """
        probe = self.probe(address, server_name, timeout)
        return None if probe is None else probe.certificate

    def probe(self, address: str, server_name: str, timeout: float = 5.0) -> HandshakeProbe | None:
        """Find out why a TLS connection to ``address`` fails, with one of its own.

        Only for explaining a failed connection, never on the happy path: it
        connects with this configuration's CA, certificate and key, offering
        ALPN ``h2`` and sending ``server_name`` for server name indication as
        gRPC does, then sends the HTTP/2 preface and reads the server's first
        bytes, and closes. A TLS 1.3 server judges the client's certificate
        after the client has finished its part of the handshake, so only that
        first read tells whether the server accepted it.

        Parameters
        ----------
        address : str
            ``host:port`` (``[v6-address]:port`` for IPv6).
        server_name : str
            The name sent for server name indication.
        timeout : float
            Seconds for connecting, and for each step of the handshake.

        Returns
        -------
        HandshakeProbe or None
            ``None`` if the address is not ``host:port`` or this configuration's
            files cannot be read.
        """
        target = _host_port(address)
        context = self._probe_context()
        if target is None or context is None:
            return None
        try:
            sock = socket.create_connection(target, timeout)
        except OSError as exc:
            return HandshakeProbe(HandshakeOutcome.UNREACHABLE, _unreachable_reason(exc, timeout))
        with contextlib.ExitStack() as stack:
            stack.enter_context(sock)
            try:
                tls = stack.enter_context(context.wrap_socket(sock, server_hostname=server_name))
            except ssl.SSLCertVerificationError as exc:
                return HandshakeProbe(
                    HandshakeOutcome.SERVER_NOT_VERIFIED,
                    exc.verify_message,
                    verify_code=exc.verify_code,
                )
            except OSError as exc:  # ssl.SSLError is an OSError
                return _refusal(exc, None)
            der = tls.getpeercert(binary_form=True)
            cert = x509.load_der_x509_certificate(der) if der else None
            # A server that refused our certificate may have closed before we write;
            # its alert, if it sent one, is still there to read.
            with contextlib.suppress(OSError):
                tls.sendall(_HTTP2_PREFACE)
            try:
                answer = tls.recv(64)
            except OSError as exc:
                return _refusal(exc, cert)
        if not answer:
            return HandshakeProbe(
                HandshakeOutcome.CERTIFICATE_REFUSED, _CLOSED_AFTER_HANDSHAKE, cert
            )
        return HandshakeProbe(HandshakeOutcome.ACCEPTED, certificate=cert)

    def _probe_context(self) -> ssl.SSLContext | None:
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        context.check_hostname = False  # the name is what the caller checks
        context.verify_mode = ssl.CERT_REQUIRED
        try:
            context.load_verify_locations(cafile=str(self.ca))
            context.load_cert_chain(certfile=str(self.cert), keyfile=str(self.key))
        except (OSError, ValueError):
            return None
        context.set_alpn_protocols(["h2"])
        return context


def _unreachable_reason(exc: OSError, timeout: float) -> str:
    """Why no TCP connection was made, in a few words."""
    if isinstance(exc, ConnectionRefusedError):
        return "connection refused"
    if isinstance(exc, socket.gaierror):
        return f"host name not found: {exc.strerror}"
    if isinstance(exc, TimeoutError):
        return f"no answer within {timeout:g} s"
    return exc.strerror or str(exc)


def _refusal(exc: OSError, cert: x509.Certificate | None) -> HandshakeProbe:
    """The probe's outcome when the server ended the connection with ``exc``.

    After a completed handshake (``cert`` is the server's, verified), a server that
    closes at once has refused our certificate: gRPC's BoringSSL closes without a
    word. During the handshake only an alert about the certificate says so; a bare
    close there could mean anything.
    """
    reason = getattr(exc, "reason", None)
    closed = (ssl.SSLEOFError, ssl.SSLZeroReturnError, ConnectionResetError, BrokenPipeError)
    if cert is not None and isinstance(exc, closed):
        return HandshakeProbe(HandshakeOutcome.CERTIFICATE_REFUSED, _CLOSED_AFTER_HANDSHAKE, cert)
    if reason in _CERTIFICATE_ALERTS:
        alert = reason.partition("_ALERT_")[2].lower().replace("_", " ")
        return HandshakeProbe(HandshakeOutcome.CERTIFICATE_REFUSED, f"alert: {alert}", cert)
    return HandshakeProbe(HandshakeOutcome.FAILED, str(exc), cert)
