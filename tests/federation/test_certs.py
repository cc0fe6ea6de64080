import datetime
import ipaddress
import os
import stat
from concurrent import futures

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from ftl.federation.certs import (
    CA_COMMON_NAME,
    CertificatePaths,
    certificate_identity,
    certificate_names,
    load_identity,
    make_certificates,
    party_names,
    party_server_name,
)

PARTIES = ["bank", "insurer"]
posix_only = pytest.mark.skipif(os.name != "posix", reason="POSIX file modes")


def _cert(path):
    return x509.load_pem_x509_certificate(path.read_bytes())


def _mode(path):
    return stat.S_IMODE(path.stat().st_mode)


def _validity(cert):
    # not_valid_before_utc appeared in cryptography 42; the naive one is UTC too.
    if hasattr(cert, "not_valid_before_utc"):
        return cert.not_valid_before_utc, cert.not_valid_after_utc
    utc = datetime.timezone.utc
    return cert.not_valid_before.replace(tzinfo=utc), cert.not_valid_after.replace(tzinfo=utc)


@pytest.fixture(scope="module")
def certs(tmp_path_factory):
    out = tmp_path_factory.mktemp("certs") / "nested" / "dir"
    return out, make_certificates(out, PARTIES)


def test_writes_ca_and_party_files(certs):
    out, paths = certs
    assert set(paths) == set(PARTIES)
    assert sorted(p.name for p in out.iterdir()) == sorted(
        ["ca.crt", "ca.key", "bank.crt", "bank.key", "insurer.crt", "insurer.key"]
    )
    for name, p in paths.items():
        assert isinstance(p, CertificatePaths)
        assert p == CertificatePaths(out / f"{name}.crt", out / f"{name}.key", out / "ca.crt")
    with pytest.raises(AttributeError):
        paths["bank"].cert = out / "x"  # frozen


@posix_only
def test_private_keys_are_owner_only(certs):
    out, paths = certs
    assert _mode(out / "ca.key") == 0o600
    for p in paths.values():
        assert _mode(p.key) == 0o600
        assert not _mode(p.cert) & 0o022  # certificates are public, but not writable by others


def test_keys_are_unencrypted_pkcs8_matching_their_certificates(certs):
    out, paths = certs
    for cert_path, key_path in [(out / "ca.crt", out / "ca.key")] + [
        (p.cert, p.key) for p in paths.values()
    ]:
        pem = key_path.read_bytes()
        assert pem.startswith(b"-----BEGIN PRIVATE KEY-----")  # PKCS#8, not encrypted
        key = serialization.load_pem_private_key(pem, password=None)
        assert isinstance(key, ec.EllipticCurvePrivateKey)
        assert key.curve.name == "secp256r1"
        assert key.public_key() == _cert(cert_path).public_key()


def test_ca_certificate(certs):
    out, _ = certs
    ca = _cert(out / "ca.crt")
    assert ca.subject == ca.issuer
    assert ca.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value == CA_COMMON_NAME
    assert load_identity(out / "ca.crt") == CA_COMMON_NAME
    ca.verify_directly_issued_by(ca)  # self-signed
    bc = ca.extensions.get_extension_for_class(x509.BasicConstraints)
    assert bc.critical and bc.value.ca and bc.value.path_length == 0
    ku = ca.extensions.get_extension_for_class(x509.KeyUsage)
    assert ku.critical and ku.value.key_cert_sign and ku.value.crl_sign
    assert not ku.value.digital_signature
    ski = ca.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value
    assert ski == x509.SubjectKeyIdentifier.from_public_key(ca.public_key())
    assert ca.signature_hash_algorithm.name == "sha256"


@pytest.mark.parametrize("name", PARTIES)
def test_party_certificate(certs, name):
    out, paths = certs
    ca, cert = _cert(out / "ca.crt"), _cert(paths[name].cert)
    assert load_identity(paths[name].cert) == name
    assert cert.issuer == ca.subject
    cert.verify_directly_issued_by(ca)
    # The same check by hand: the CA's key signed exactly these bytes.
    ca.public_key().verify(
        cert.signature, cert.tbs_certificate_bytes, ec.ECDSA(cert.signature_hash_algorithm)
    )
    assert cert.signature_hash_algorithm.name == "sha256"

    bc = cert.extensions.get_extension_for_class(x509.BasicConstraints).value
    assert not bc.ca
    ku = cert.extensions.get_extension_for_class(x509.KeyUsage)
    assert ku.critical and ku.value.digital_signature and ku.value.key_agreement
    assert not ku.value.key_cert_sign and not ku.value.key_encipherment
    eku = cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    assert ExtendedKeyUsageOID.SERVER_AUTH in eku and ExtendedKeyUsageOID.CLIENT_AUTH in eku
    san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    # The party's pinned name first, then the (default) shared host names.
    assert san.get_values_for_type(x509.DNSName) == [f"{name}.ftl", "localhost"]
    assert party_names(cert) == [party_server_name(name)]
    assert certificate_identity(cert) == name
    assert san.get_values_for_type(x509.IPAddress) == [ipaddress.ip_address("127.0.0.1")]
    aki = cert.extensions.get_extension_for_class(x509.AuthorityKeyIdentifier).value
    ca_ski = ca.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value
    assert aki.key_identifier == ca_ski.digest


def test_serials_are_random_and_distinct(certs):
    out, paths = certs
    serials = {_cert(out / "ca.crt").serial_number}
    serials |= {_cert(p.cert).serial_number for p in paths.values()}
    assert len(serials) == 1 + len(PARTIES)
    assert all(s > 2**64 for s in serials)


def test_validity_window(tmp_path):
    before = datetime.datetime.now(datetime.timezone.utc)
    paths = make_certificates(tmp_path, ["a"], days=7)
    after = datetime.datetime.now(datetime.timezone.utc)
    for path in (paths["a"].cert, paths["a"].ca):
        start, end = _validity(_cert(path))
        skew, week = datetime.timedelta(minutes=5), datetime.timedelta(days=7)
        slack = datetime.timedelta(seconds=1)  # certificates carry whole seconds
        assert before - skew - slack <= start <= after - skew
        assert before + week - slack <= end <= after + week


def test_custom_hosts_and_ipv6(tmp_path):
    paths = make_certificates(tmp_path, ["h1"], hosts=["node.example.org", "10.0.0.5", "::1"])
    san = _cert(paths["h1"].cert).extensions.get_extension_for_class(x509.SubjectAlternativeName)
    assert san.value.get_values_for_type(x509.DNSName) == ["h1.ftl", "node.example.org"]
    assert san.value.get_values_for_type(x509.IPAddress) == [
        ipaddress.ip_address("10.0.0.5"),
        ipaddress.ip_address("::1"),
    ]


def test_party_named_like_a_host_keeps_its_own_pinned_name(tmp_path):
    # A party name never doubles as a host name: "localhost" the party is
    # "localhost.ftl", which no host name can be.
    paths = make_certificates(tmp_path, ["localhost"], hosts=["localhost", "localhost"])
    san = _cert(paths["localhost"].cert).extensions.get_extension_for_class(
        x509.SubjectAlternativeName
    )
    assert san.value.get_values_for_type(x509.DNSName) == ["localhost.ftl", "localhost"]


def test_rsa_keys(tmp_path):
    paths = make_certificates(tmp_path, ["r"], key_type="rsa")
    key = serialization.load_pem_private_key(paths["r"].key.read_bytes(), password=None)
    assert isinstance(key, rsa.RSAPrivateKey) and key.key_size == 3072
    ca_key = serialization.load_pem_private_key((tmp_path / "ca.key").read_bytes(), None)
    assert isinstance(ca_key, rsa.RSAPrivateKey)
    cert = _cert(paths["r"].cert)
    cert.verify_directly_issued_by(_cert(paths["r"].ca))
    ku = cert.extensions.get_extension_for_class(x509.KeyUsage).value
    assert ku.digital_signature and ku.key_encipherment and not ku.key_agreement


def test_refuses_to_overwrite(tmp_path):
    paths = make_certificates(tmp_path, ["bank"])
    before = {p: p.read_bytes() for p in tmp_path.iterdir()}
    with pytest.raises(FileExistsError, match="overwrite=True"):
        make_certificates(tmp_path, ["bank"])
    # One clash is enough, and nothing is written, not even the new party's files.
    with pytest.raises(FileExistsError, match="bank.crt"):
        make_certificates(tmp_path, ["other", "bank"])
    (tmp_path / "ca.crt").unlink()
    (tmp_path / "ca.key").unlink()
    with pytest.raises(FileExistsError, match="bank.key"):
        make_certificates(tmp_path, ["bank"])
    assert not (tmp_path / "other.crt").exists() and not (tmp_path / "ca.crt").exists()
    assert paths["bank"].cert.read_bytes() == before[paths["bank"].cert]


@posix_only
def test_overwrite_replaces_files_and_tightens_key_mode(tmp_path):
    old = make_certificates(tmp_path, ["bank"])
    old_cert = old["bank"].cert.read_bytes()
    old["bank"].key.chmod(0o644)
    new = make_certificates(tmp_path, ["bank"], overwrite=True)
    assert new == old
    assert new["bank"].cert.read_bytes() != old_cert
    assert _mode(new["bank"].key) == 0o600
    _cert(new["bank"].cert).verify_directly_issued_by(_cert(new["bank"].ca))
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "bank.crt",
        "bank.key",
        "ca.crt",
        "ca.key",
    ]  # no temporary files left behind


@pytest.mark.parametrize(
    "parties, match",
    [
        ([""], "invalid party name"),
        (["a b"], "invalid party name"),
        (["../evil"], "invalid party name"),
        (["a/b"], "invalid party name"),
        (["bänk"], "invalid party name"),
        ([None], "invalid party name"),
        (["bank", "bank"], "repeats"),
        (["Bank", "bank"], "repeats"),
        (["ca"], "reserved"),
        (["CA"], "reserved"),
        ([], "at least one"),
    ],
)
def test_bad_party_names(tmp_path, parties, match):
    with pytest.raises(ValueError, match=match):
        make_certificates(tmp_path / "out", parties)
    assert not (tmp_path / "out").exists()


def test_allowed_punctuation_in_names(tmp_path):
    paths = make_certificates(tmp_path, ["org-1_a.b"])
    assert load_identity(paths["org-1_a.b"].cert) == "org-1_a.b"


def test_single_string_is_not_a_list_of_parties(tmp_path):
    with pytest.raises(TypeError, match="single string"):
        make_certificates(tmp_path, "bank")


@pytest.mark.parametrize("key_type", ["dsa", "EC", "ed25519", ""])
def test_bad_key_type(tmp_path, key_type):
    with pytest.raises(ValueError, match="key_type"):
        make_certificates(tmp_path / "out", ["a"], key_type=key_type)
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("days", [0, -1, 1.5, True])
def test_bad_days(tmp_path, days):
    with pytest.raises(ValueError, match="days"):
        make_certificates(tmp_path, ["a"], days=days)


def test_bad_host(tmp_path):
    with pytest.raises(ValueError, match="host"):
        make_certificates(tmp_path, ["a"], hosts=["localhost", ""])


def _self_signed(common_names, dns=None, organization=None):
    """A self-signed certificate with these common names (and organisation) in its
    subject and, when ``dns`` is given, these DNS alternative names."""
    key = ec.generate_private_key(ec.SECP256R1())
    attributes = [x509.NameAttribute(NameOID.COMMON_NAME, cn) for cn in common_names]
    if organization is not None:
        attributes.append(x509.NameAttribute(NameOID.ORGANIZATION_NAME, organization))
    name = x509.Name(attributes)
    now = datetime.datetime.now(datetime.timezone.utc)
    builder = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(1)
        .not_valid_before(now)
        .not_valid_after(now + datetime.timedelta(days=1))
    )
    if dns is not None:
        builder = builder.add_extension(
            x509.SubjectAlternativeName([x509.DNSName(d) for d in dns]), critical=False
        )
    return builder.sign(key, hashes.SHA256())


def test_load_identity_rejects_certificate_without_cn(tmp_path):
    cert = _self_signed([], organization="no cn")
    path = tmp_path / "x.crt"
    path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    with pytest.raises(ValueError, match="common name"):
        load_identity(str(path))


@pytest.mark.parametrize("host", ["shop.ftl", "X.FTL", "a.b.ftl.", "*.ftl", "*.example.org", "*"])
def test_hosts_that_could_name_a_party_are_refused(tmp_path, host):
    with pytest.raises(ValueError, match="reserved for party identities|wildcards"):
        make_certificates(tmp_path, ["a"], hosts=[host])
    assert not any(tmp_path.iterdir())


def test_certificate_identity_is_the_one_common_name(tmp_path):
    cert = _self_signed(["bank"], ["bank.ftl", "localhost"])
    assert certificate_identity(cert) == "bank"
    pem = cert.public_bytes(serialization.Encoding.PEM)
    assert certificate_identity(pem) == certificate_identity(pem.decode()) == "bank"
    assert certificate_identity(cert.public_bytes(serialization.Encoding.DER)) == "bank"
    assert certificate_identity(_self_signed(["bank"], ["BANK.FTL"])) == "bank"
    # A certificate from another PKI, with no party name, is known by its common name.
    assert certificate_identity(_self_signed(["bank"], ["bank.example.com"])) == "bank"
    with pytest.raises(ValueError, match="not an X.509 certificate"):
        certificate_identity(b"junk")


@pytest.mark.parametrize(
    "common_names, dns",
    [
        (["bank", "eve"], ["bank.ftl"]),  # gRPC reports the first, others the last
        (["eve", "bank"], None),
        (["eve"], ["bank.ftl"]),  # would serve as the bank, connect as eve
        (["eve"], ["eve.ftl", "bank.ftl"]),
        (["eve"], ["*.ftl"]),  # a wildcard gRPC matches against every party name
    ],
)
def test_certificate_identity_refuses_a_certificate_with_two_identities(
    tmp_path, common_names, dns
):
    cert = _self_signed(common_names, dns)
    with pytest.raises(ValueError, match="one identity"):
        certificate_identity(cert)
    path = tmp_path / "two.crt"
    path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    with pytest.raises(ValueError, match="two.crt.*one identity"):
        load_identity(path)


def test_certificate_names_is_exact_and_ignores_case():
    cert = _self_signed(["shop"], ["shop.ftl", "localhost"])
    assert certificate_names(cert, "shop.ftl") and certificate_names(cert, "SHOP.ftl")
    assert not certificate_names(cert, "eve.ftl") and not certificate_names(cert, "shop")
    assert not certificate_names(_self_signed(["x"], ["*.ftl"]), "shop.ftl")
    # Without alternative names TLS falls back to the common name; with them it does not.
    assert certificate_names(_self_signed(["shop.ftl"]), "shop.ftl")
    assert not certificate_names(_self_signed(["shop.ftl"], ["x.example"]), "shop.ftl")


# --- end to end: the certificates work for mutual TLS in gRPC ---------------------------


@pytest.fixture
def tls_server(tmp_path):
    """A gRPC echo server with the "insurer" certificate that requires client certificates
    from the CA; yields (port, paths, peer common names seen by the handler)."""
    grpc = pytest.importorskip("grpc")
    paths = make_certificates(tmp_path / "a", ["bank", "insurer"])
    seen = []

    def echo(request, context):
        seen.append(context.auth_context().get("x509_common_name"))
        return request

    server = grpc.server(futures.ThreadPoolExecutor(max_workers=2))
    server.add_generic_rpc_handlers(
        [
            grpc.method_handlers_generic_handler(
                "t.T", {"Echo": grpc.unary_unary_rpc_method_handler(echo)}
            )
        ]
    )
    me = paths["insurer"]
    creds = grpc.ssl_server_credentials(
        [(me.key.read_bytes(), me.cert.read_bytes())],
        root_certificates=me.ca.read_bytes(),
        require_client_auth=True,
    )
    port = server.add_secure_port("127.0.0.1:0", creds)
    assert port
    server.start()
    try:
        yield port, paths, seen
    finally:
        server.stop(None)


def _credentials(ca, client=None):
    """Channel credentials trusting the CA certificate file ``ca``; with ``client`` (a
    :class:`CertificatePaths`) presenting its certificate and key."""
    import grpc

    if client is None:
        return grpc.ssl_channel_credentials(root_certificates=ca.read_bytes())
    return grpc.ssl_channel_credentials(
        root_certificates=ca.read_bytes(),
        private_key=client.key.read_bytes(),
        certificate_chain=client.cert.read_bytes(),
    )


def _echo(port, creds, server_name=None):
    import grpc

    # A private subchannel pool keeps one test's TLS connection from serving another.
    options = [("grpc.use_local_subchannel_pool", 1)]
    if server_name is not None:
        options.append(("grpc.ssl_target_name_override", server_name))
    with grpc.secure_channel(f"localhost:{port}", creds, options=options) as channel:
        return channel.unary_unary("/t.T/Echo")(b"ping", timeout=10)


def _handshake_fails(port, creds, server_name=None):
    """Whether the echo fails as a failed TLS handshake does (the server never runs it)."""
    import grpc

    with pytest.raises(grpc.RpcError) as err:
        _echo(port, creds, server_name)
    return err.value.code() == grpc.StatusCode.UNAVAILABLE


def test_grpc_mutual_tls_identifies_client_by_common_name(tls_server):
    port, paths, seen = tls_server
    bank = paths["bank"]
    assert _echo(port, _credentials(bank.ca, bank)) == b"ping"
    assert seen == [[b"bank"]]


def test_grpc_rejects_client_without_certificate(tls_server):
    port, paths, seen = tls_server
    assert _handshake_fails(port, _credentials(paths["bank"].ca))
    assert seen == []


def test_grpc_rejects_client_certificate_from_another_ca(tls_server, tmp_path):
    port, paths, seen = tls_server
    # Same party name and same CA common name, but a different CA key.
    rogue = make_certificates(tmp_path / "b", ["bank"])["bank"]
    # the client does trust the server
    assert _handshake_fails(port, _credentials(paths["bank"].ca, rogue))
    assert seen == []


def test_grpc_client_rejects_server_from_another_ca(tls_server, tmp_path):
    import grpc

    port, paths, seen = tls_server
    other_ca = make_certificates(tmp_path / "c", ["bank"])["bank"].ca
    with pytest.raises(grpc.RpcError):
        _echo(port, _credentials(other_ca, paths["bank"]))
    assert seen == []


def test_grpc_pins_the_server_to_its_party_name(tls_server):
    """TLS itself checks the party name: the bank reaches the insurer only as the
    insurer, and another party's name fails the handshake (the echo never runs)."""
    port, paths, seen = tls_server
    bank = paths["bank"]
    creds = _credentials(bank.ca, bank)
    assert _echo(port, creds, party_server_name("insurer")) == b"ping"
    for other in (party_server_name("bank"), "insurer", "ftl"):
        assert _handshake_fails(port, creds, other)
    assert seen == [[b"bank"]]
