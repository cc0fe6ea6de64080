"""Throwaway certificates for trying out the gRPC transport with mutual TLS.

Parties talk over gRPC with mutual TLS: each party presents a certificate when it
serves and when it connects, and each checks the other's against a shared
certificate authority. :func:`make_certificates` (behind ``ftl certs``) creates a
fresh CA and one certificate and private key per party, so that a federation can
be tried on one machine or a test network without an existing PKI.

Each party certificate names its party as :mod:`ftl.federation.identity`
describes: by its common name as a client, by the DNS name ``<party>.ftl`` as a
server. :func:`make_certificates` refuses extra host names under ``.ftl`` (and
wildcards, which could cover it). The identity functions stay importable from
here.

.. warning::

   These certificates are for trials only. The private keys, including the CA's,
   are written unencrypted, and anyone holding ``ca.key`` can mint a certificate
   for any party name. In production each organisation's certificates and keys
   come from its own PKI and the keys must be protected (restricted file access,
   a secrets manager or an HSM).
"""

from __future__ import annotations

import datetime
import ipaddress
import os
import re
import secrets
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from ftl.federation.identity import (
    PARTY_DOMAIN,
    certificate_identity,
    certificate_names,
    describe_certificate,
    dns_names,
    in_party_domain,
    load_identity,
    party_names,
    party_server_name,
)

__all__ = [
    "CA_COMMON_NAME",
    "PARTY_DOMAIN",
    "CertificatePaths",
    "certificate_identity",
    "certificate_names",
    "describe_certificate",
    "dns_names",
    "load_identity",
    "make_certificates",
    "party_names",
    "party_server_name",
]

#: Common name of the CA that :func:`make_certificates` creates.
CA_COMMON_NAME = "ftl throwaway CA"

# The CA's files are ca.crt/ca.key, so a party called "ca" would overwrite them.
_RESERVED_NAMES = frozenset({"ca"})
_NAME_PATTERN = re.compile(r"[A-Za-z0-9._-]+")
_RSA_KEY_SIZE = 3072
# Tolerates clocks that run a little behind the machine that made the certificates.
_CLOCK_SKEW = datetime.timedelta(minutes=5)


@dataclass(frozen=True)
class CertificatePaths:
    """Where one party's TLS files were written.

    Attributes
    ----------
    cert : pathlib.Path
        The party's certificate (PEM).
    key : pathlib.Path
        The party's private key (PEM, PKCS#8, unencrypted, mode ``0o600``).
    ca : pathlib.Path
        The CA certificate (PEM) that every party trusts.
    """

    cert: Path
    key: Path
    ca: Path


def make_certificates(
    out_dir: str | os.PathLike[str],
    parties: Iterable[str],
    hosts: Iterable[str] = ("localhost", "127.0.0.1"),
    days: int = 30,
    key_type: str = "ec",
    *,
    overwrite: bool = False,
) -> dict[str, CertificatePaths]:
    """Create a throwaway CA and a certificate and private key for each party.

    Writes ``ca.crt`` and ``ca.key`` and, for each party, ``<name>.crt`` and
    ``<name>.key`` to ``out_dir``. Private keys are PEM (PKCS#8) *unencrypted* with
    file mode ``0o600``; this is for trying the transport out only -- in production
    the certificates and keys come from each organisation's own PKI and the keys
    must be protected.

    The subject common name (CN) of each party's certificate is the party's name,
    and the gRPC server uses the CN of a peer's verified certificate as that peer's
    identity. Its first subject alternative name is the DNS name ``<party>.ftl``
    (:func:`party_server_name`), against which a driver verifies the certificate
    of the party it connects to. Every party certificate is valid for both TLS
    server and TLS client authentication, since each party may both serve and
    connect.

    Parameters
    ----------
    out_dir : str or os.PathLike
        Directory for the files; created (with parents) if missing.
    parties : iterable of str
        Party names: non-empty, unique (ignoring case, as file names may be), of
        ASCII letters, digits, ``-``, ``_`` and ``.``; ``"ca"`` is reserved.
    hosts : iterable of str
        Extra host names and IP addresses put into every party certificate as
        subject alternative names, for TLS clients other than ftl's that check the
        address they dial (ftl's driver checks the party name instead). Names
        under ``.ftl`` and wildcards are refused: they could name a party.
    days : int
        Validity of the certificates in days from now. They are valid from five
        minutes ago, to tolerate small clock differences between machines.
    key_type : {"ec", "rsa"}
        ``"ec"`` for ECDSA keys on curve P-256 (SECP256R1, fast) or ``"rsa"`` for
        3072-bit RSA keys.
    overwrite : bool
        Replace existing files instead of refusing to.

    Returns
    -------
    dict of str to CertificatePaths
        For each party name, the paths of its certificate, its key and the CA
        certificate. The CA's key (``ca.key``) is not listed: no party needs it.

    Raises
    ------
    ValueError
        If a party name is invalid, reserved or repeated, there are no parties, a
        host is empty, a wildcard or under ``.ftl``, ``days`` is not a positive
        integer or ``key_type`` is unknown.
    FileExistsError
        If one of the files exists already and ``overwrite`` is false. Nothing is
        written in that case.

    See Also
    --------
    load_identity : The identity (common name) in a certificate.
    party_server_name : The DNS name that pins a party's certificate.

    Examples
    --------
    >>> paths = make_certificates("certs", ["bank", "insurer"])  # doctest: +SKIP
    >>> load_identity(paths["bank"].cert)  # doctest: +SKIP
    'bank'
    """
    if isinstance(parties, str):
        # A lone string would otherwise be taken as one party per character.
        raise TypeError("parties must be an iterable of party names, not a single string")
    names = _check_party_names(parties)
    san_hosts = _parse_hosts(hosts)
    if isinstance(days, bool) or not isinstance(days, int) or days <= 0:
        raise ValueError(f"days must be a positive integer, got {days!r}")
    if key_type not in ("ec", "rsa"):
        raise ValueError(f"key_type must be 'ec' or 'rsa', got {key_type!r}")

    out = Path(out_dir)
    ca_cert_path, ca_key_path = out / "ca.crt", out / "ca.key"
    paths = {
        name: CertificatePaths(cert=out / f"{name}.crt", key=out / f"{name}.key", ca=ca_cert_path)
        for name in names
    }
    targets = [ca_cert_path, ca_key_path]
    for p in paths.values():
        targets += [p.cert, p.key]
    if not overwrite:
        # Checked up front so that a refusal leaves no half-written set behind.
        existing = [str(t) for t in targets if t.exists()]
        if existing:
            raise FileExistsError(
                f"refusing to overwrite existing certificate files: {', '.join(existing)} "
                "(pass overwrite=True to replace them)"
            )

    now = datetime.datetime.now(datetime.timezone.utc)
    not_before, not_after = now - _CLOCK_SKEW, now + datetime.timedelta(days=days)

    ca_key = _new_key(key_type)
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, CA_COMMON_NAME)])
    ca_ski = x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key())
    ca_cert = (
        x509.CertificateBuilder()
        .subject_name(ca_name)
        .issuer_name(ca_name)
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(not_before)
        .not_valid_after(not_after)
        # path_length=0: the CA signs party certificates only, never another CA.
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            _key_usage(key_cert_sign=True, crl_sign=True),
            critical=True,
        )
        .add_extension(ca_ski, critical=False)
        .sign(ca_key, hashes.SHA256())
    )

    out.mkdir(parents=True, exist_ok=True)
    _write(ca_cert_path, ca_cert.public_bytes(serialization.Encoding.PEM), overwrite, secret=False)
    _write(ca_key_path, _private_pem(ca_key), overwrite, secret=True)

    aki = x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ca_ski)
    for name in names:
        key = _new_key(key_type)
        # The party's own name comes first; the shared host names cannot collide
        # with it (_parse_hosts refuses names under .ftl).
        san: list[x509.GeneralName] = [x509.DNSName(party_server_name(name))]
        for host in san_hosts:
            if host not in san:
                san.append(host)
        if key_type == "rsa":
            # TLS 1.2 RSA key exchange encrypts the premaster secret to the key.
            usage = _key_usage(digital_signature=True, key_encipherment=True)
        else:
            usage = _key_usage(digital_signature=True, key_agreement=True)
        cert = (
            x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)]))
            .issuer_name(ca_name)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(not_before)
            .not_valid_after(not_after)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(usage, critical=True)
            .add_extension(
                x509.ExtendedKeyUsage(
                    [ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH]
                ),
                critical=False,
            )
            .add_extension(x509.SubjectAlternativeName(san), critical=False)
            .add_extension(aki, critical=False)
            .add_extension(
                x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False
            )
            .sign(ca_key, hashes.SHA256())
        )
        p = paths[name]
        _write(p.cert, cert.public_bytes(serialization.Encoding.PEM), overwrite, secret=False)
        _write(p.key, _private_pem(key), overwrite, secret=True)
    return paths


def _check_party_names(parties: Iterable[str]) -> list[str]:
    names = list(parties)
    if not names:
        raise ValueError("at least one party name is needed")
    seen: dict[str, str] = {}
    for name in names:
        if not isinstance(name, str) or not _NAME_PATTERN.fullmatch(name):
            raise ValueError(
                f"invalid party name {name!r}: use a non-empty name of ASCII letters, "
                "digits, '-', '_' and '.'"
            )
        folded = name.lower()
        if folded in _RESERVED_NAMES:
            raise ValueError(f"party name {name!r} is reserved for the CA's files")
        # Case-insensitive file systems (macOS, Windows) would put both in one file.
        if folded in seen:
            raise ValueError(f"party name {name!r} repeats {seen[folded]!r}")
        seen[folded] = name
    return names


def _parse_hosts(hosts: Iterable[str]) -> list[x509.GeneralName]:
    if isinstance(hosts, str):
        hosts = [hosts]
    out: list[x509.GeneralName] = []
    for host in hosts:
        if not isinstance(host, str) or not host.strip():
            raise ValueError(f"invalid host {host!r}: expected a host name or IP address")
        host = host.strip()
        if "*" in host:
            # gRPC matches "*.ftl" against "shop.ftl": a wildcard could name a party.
            raise ValueError(f"invalid host {host!r}: wildcards are not allowed")
        if in_party_domain(host):
            raise ValueError(
                f"invalid host {host!r}: names under .{PARTY_DOMAIN} are reserved for party "
                f"identities (each party's certificate names it as '<party>.{PARTY_DOMAIN}')"
            )
        try:
            entry: x509.GeneralName = x509.IPAddress(ipaddress.ip_address(host))
        except ValueError:
            entry = x509.DNSName(host)
        if entry not in out:
            out.append(entry)
    return out


def _new_key(key_type: str) -> ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey:
    if key_type == "rsa":
        return rsa.generate_private_key(public_exponent=65537, key_size=_RSA_KEY_SIZE)
    return ec.generate_private_key(ec.SECP256R1())


def _key_usage(**enabled: bool) -> x509.KeyUsage:
    flags = dict.fromkeys(
        (
            "digital_signature",
            "content_commitment",
            "key_encipherment",
            "data_encipherment",
            "key_agreement",
            "key_cert_sign",
            "crl_sign",
            "encipher_only",
            "decipher_only",
        ),
        False,
    )
    flags.update(enabled)
    return x509.KeyUsage(**flags)


def _private_pem(key: ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey) -> bytes:
    return key.private_bytes(
        encoding=serialization.Encoding.PEM,
        format=serialization.PrivateFormat.PKCS8,
        encryption_algorithm=serialization.NoEncryption(),
    )


def _write(path: Path, data: bytes, overwrite: bool, *, secret: bool) -> None:
    """Write ``data`` to ``path``; a ``secret`` file is readable by its owner only.

    The file is created with its final mode rather than chmod-ed afterwards, so a key
    is never readable by others, not even briefly. When replacing, it is written under
    a temporary name and renamed into place, so that it does not inherit the looser
    permissions of the file it replaces.
    """
    mode = 0o600 if secret else 0o644
    target = path.with_name(f".{path.name}.{secrets.token_hex(8)}.tmp") if overwrite else path
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_BINARY", 0)
    try:
        fd = os.open(target, flags, mode)
    except FileExistsError:
        # Created by someone else since the up-front check; O_EXCL keeps it intact.
        raise FileExistsError(
            f"refusing to overwrite existing certificate file: {target} "
            "(pass overwrite=True to replace it)"
        ) from None
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        if overwrite:
            os.replace(target, path)
    except BaseException:
        target.unlink(missing_ok=True)
        raise
