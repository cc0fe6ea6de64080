"""Mutual-TLS settings of a party: its certificate and key, and whom it trusts."""

from __future__ import annotations

import contextlib
import socket
import ssl
from dataclasses import dataclass
from pathlib import Path

from ftl.exceptions import PeerIdentityError
from ftl.federation.transport.grpc.wire import import_grpc

__all__ = ["PeerIdentityError", "TLSConfig"]


def _read(path: str | Path, what: str) -> bytes:
    try:
        return Path(path).read_bytes()
    except OSError as exc:
        raise ValueError(f"cannot read the TLS {what} {str(path)!r}: {exc}") from None


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

    def server_credentials(self):
        """gRPC credentials for serving: a client certificate is required."""
        grpc = import_grpc()

        return grpc.ssl_server_credentials(
            [(_read(self.key, "private key"), _read(self.cert, "certificate"))],
            root_certificates=_read(self.ca, "CA certificate"),
            require_client_auth=True,
        )

    def peer_certificate(self, address: str, server_name: str, timeout: float = 10.0):
        """The certificate a server at ``address`` presents, verified against the CA.

        Only for explaining a failed connection: it opens a TLS connection of its
        own (offering this party's certificate, sending no request) and closes it.
        The name is not checked here; that is the caller's question.

        Parameters
        ----------
        address : str
            ``host:port`` (``[v6-address]:port`` for IPv6).
        server_name : str
            The name sent for server name indication, as gRPC sends it.
        timeout : float
            Seconds for connecting and the handshake.

        Returns
        -------
        cryptography.x509.Certificate or None
            ``None`` if the address cannot be parsed or reached, the handshake
            fails, or the certificate is not signed by this configuration's CA.
        """
        from cryptography import x509

        host, sep, port = address.rpartition(":")
        if not sep or not port.isdigit() or "/" in host:
            return None  # a gRPC target such as "dns:///..." or "unix:..."
        host = host[1:-1] if host.startswith("[") and host.endswith("]") else host
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        context.check_hostname = False  # the name is what the caller checks
        context.verify_mode = ssl.CERT_REQUIRED
        try:
            context.load_verify_locations(cafile=str(self.ca))
            context.load_cert_chain(certfile=str(self.cert), keyfile=str(self.key))
            context.set_alpn_protocols(["h2"])
            with contextlib.ExitStack() as stack:
                sock = stack.enter_context(socket.create_connection((host, int(port)), timeout))
                tls = stack.enter_context(context.wrap_socket(sock, server_hostname=server_name))
                der = tls.getpeercert(binary_form=True)
        except (OSError, ValueError):  # ssl.SSLError is an OSError
            return None
        return x509.load_der_x509_certificate(der) if der else None
