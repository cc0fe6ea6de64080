"""Party identities in X.509 certificates: who a peer is, which party a server is.

A party certificate names its party twice, once for each direction of a
connection:

* as a **client**, by its subject *common name* (CN): the server attributes a
  peer's requests to the CN of its verified certificate (:func:`certificate_identity`
  reads it, refusing a certificate that claims more than one identity);
* as a **server**, by the DNS subject alternative name ``<party>.ftl``
  (:func:`party_server_name`). A driver connecting to party ``"shop"`` has TLS
  verify the host's certificate against ``shop.ftl`` -- the check that normally
  compares a certificate with the host name dialled -- so the certificate of any
  other party, although signed by the same CA, fails the handshake before a
  single request is sent.

``.ftl`` is not a real top-level domain, so a party name never collides with a
host name. These rules hold for any transport over TLS; :mod:`ftl.federation.certs`
issues certificates that follow them.
"""

from __future__ import annotations

import os
from pathlib import Path

from cryptography import x509
from cryptography.x509.oid import NameOID

__all__ = [
    "PARTY_DOMAIN",
    "certificate_identity",
    "certificate_names",
    "describe_certificate",
    "dns_names",
    "in_party_domain",
    "load_identity",
    "party_names",
    "party_server_name",
]

#: Pseudo top-level domain of the DNS names that pin party identities.
PARTY_DOMAIN = "ftl"


def party_server_name(name: str) -> str:
    """The DNS name that pins party ``name``'s certificate: ``<name>.ftl``.

    A driver connecting to the party has TLS verify the server's certificate
    against this name (see :class:`ftl.RemoteParty`);
    :func:`~ftl.federation.certs.make_certificates` puts it into each party's
    certificate. TLS compares DNS names without regard to case, which is why party
    names differing in case only are refused.

    Parameters
    ----------
    name : str
        The party's name.

    Returns
    -------
    str
    """
    return f"{name}.{PARTY_DOMAIN}"


def dns_names(cert: x509.Certificate) -> list[str]:
    """The DNS subject alternative names of a certificate, in order."""
    try:
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        return []
    return list(san.get_values_for_type(x509.DNSName))


def certificate_names(cert: x509.Certificate, server_name: str) -> bool:
    """Whether TLS host-name verification accepts ``cert`` for ``server_name``.

    The exact (case-insensitive) DNS names only, as ftl's checks need; the
    subject common name counts only in a certificate without alternative names,
    as in gRPC's verification. Wildcards are not expanded.
    """
    wanted = server_name.rstrip(".").lower()
    try:
        cert.extensions.get_extension_for_class(x509.SubjectAlternativeName)
    except x509.ExtensionNotFound:
        cns = cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
        return any(str(a.value).rstrip(".").lower() == wanted for a in cns)
    return any(n.rstrip(".").lower() == wanted for n in dns_names(cert))


def in_party_domain(dns_name: str) -> bool:
    """Whether a DNS name lies under ``.ftl`` (names a party)."""
    return dns_name.rstrip(".").lower().endswith("." + PARTY_DOMAIN)


def party_names(cert: x509.Certificate) -> list[str]:
    """The DNS names under ``.ftl`` of a certificate: the parties it may serve as.

    Parameters
    ----------
    cert : cryptography.x509.Certificate

    Returns
    -------
    list of str
        Full DNS names (``"shop.ftl"``), in certificate order; empty for a
        certificate made before party names were pinned, or by another PKI.
    """
    return [n for n in dns_names(cert) if in_party_domain(n)]


def _load(cert: x509.Certificate | bytes | str) -> x509.Certificate:
    if isinstance(cert, x509.Certificate):
        return cert
    data = cert.encode("ascii") if isinstance(cert, str) else bytes(cert)
    if data.lstrip().startswith(b"-----BEGIN"):
        return x509.load_pem_x509_certificate(data)
    return x509.load_der_x509_certificate(data)


def certificate_identity(cert: x509.Certificate | bytes | str) -> str:
    """The one identity a peer's certificate claims: its subject common name.

    A certificate that claims more than one identity is refused rather than
    read one way: TLS libraries report the first common name (gRPC's
    ``x509_common_name``), other software may take the last, so a certificate
    with the common names ``"eve"`` and ``"bank"`` must not be taken for either.
    Likewise its party names (DNS names under ``.ftl``, see
    :func:`party_server_name`), if it has any, must be exactly
    ``<common name>.ftl``: a certificate that serves as one party and connects
    as another is ambiguous.

    Parameters
    ----------
    cert : cryptography.x509.Certificate, or bytes or str
        The certificate, or its PEM or DER encoding (e.g. gRPC's
        ``x509_pem_cert`` auth-context property).

    Returns
    -------
    str
        The subject common name.

    Raises
    ------
    ValueError
        If the certificate cannot be parsed, its subject has no common name or
        more than one, or its party names disagree with the common name.
    """
    try:
        cert = _load(cert)
    except (ValueError, TypeError) as exc:
        raise ValueError(f"not an X.509 certificate: {exc}") from None
    cns = cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
    if len(cns) != 1:
        raise ValueError(
            f"expected exactly one subject common name, found {len(cns)}: a certificate "
            "must claim one identity"
        )
    value = cns[0].value
    identity = value if isinstance(value, str) else value.decode("utf-8")
    names = party_names(cert)
    expected = party_server_name(identity).lower()
    if names and [n.rstrip(".").lower() for n in names] != [expected]:
        raise ValueError(
            f"the certificate of {identity!r} carries the party names {names}: a certificate "
            f"must claim one identity (as a server, {expected!r} only)"
        )
    return identity


def describe_certificate(cert: x509.Certificate) -> str:
    """A short description for error messages: common name(s) and DNS names."""
    cns = [a.value for a in cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)]
    shown = ", ".join(repr(c) for c in cns) or "none"
    return f"common name {shown}, DNS names {dns_names(cert)}"


def load_identity(cert_path: str | os.PathLike[str]) -> str:
    """:func:`certificate_identity` of a PEM certificate file.

    This is the name the gRPC server attributes a peer's requests to.

    Parameters
    ----------
    cert_path : str or os.PathLike
        A PEM certificate file, e.g. one written by
        :func:`~ftl.federation.certs.make_certificates`.

    Returns
    -------
    str
        The certificate's one subject common name; a ``ValueError`` names the
        file when it holds no PEM certificate, or one that claims no identity
        or more than one.

    See Also
    --------
    ftl.federation.certs.make_certificates : Certificates whose common names are
        the party names.
    """
    cert = x509.load_pem_x509_certificate(Path(cert_path).read_bytes())
    try:
        return certificate_identity(cert)
    except ValueError as exc:
        raise ValueError(f"{cert_path}: {exc}") from None
