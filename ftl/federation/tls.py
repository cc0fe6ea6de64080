"""Mutual-TLS settings of a party: its certificate and key, and whom it trusts."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from ftl.federation.wire import import_grpc

__all__ = ["TLSConfig"]


def _read(path: str | Path, what: str) -> bytes:
    try:
        return Path(path).read_bytes()
    except OSError as exc:
        raise ValueError(f"cannot read the TLS {what} {str(path)!r}: {exc}") from None


@dataclass(frozen=True)
class TLSConfig:
    """Certificates for one side of a mutually authenticated TLS connection.

    Both sides present a certificate signed by a CA the other side trusts. The
    host takes the *common name* of the driver's certificate as the driver's
    identity, which its data-use policy refers to. ``ftl certs`` makes a
    throwaway CA and party certificates to try things out; in production use the
    organisations' own PKI.

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
        Host name to check the server's certificate against when it differs from
        the address dialled (e.g. dialling an IP address); client side only.

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
