"""A connection that fails says why, at both ends.

gRPC reports a driver certificate the host does not trust, a host certificate the
driver does not trust and a port where nothing listens alike (``UNAVAILABLE``,
"Socket closed"). The driver's error names which; the host, which gRPC tells
nothing, logs the connection that never made a call. The server runs in this
process, as in ``tests/federation/test_serve.py``.
"""

from __future__ import annotations

import datetime
import logging
import socket
import ssl
import threading
import time

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization

import ftl
from ftl.exceptions import PartyUnavailableError, TLSHandshakeError
from ftl.federation.certs import make_certificates
from ftl.federation.transport.grpc.handshakes import (
    HandshakeWatcher,
    established_peers,
    grpc_peer_address,
)
from ftl.federation.transport.grpc.tls import HandshakeOutcome
from tests.security._serving import make_certs, start_server, tls_for

GRACE = 0.2


@pytest.fixture(scope="module")
def certs(tmp_path_factory):
    """The federation's certificates under ``certs/``, another CA's under ``other/``."""
    root = tmp_path_factory.mktemp("tls-errors")
    make_certs(root / "certs")
    make_certificates(root / "other", ["bank", "shop"])
    return root


@pytest.fixture
def served(certs):
    """The shop served in this process, logging connections that never call after
    ``GRACE`` seconds."""
    server, grpc_server, address = start_server(certs / "certs")
    server.handshakes.grace = GRACE
    yield server, address
    grpc_server.stop(0)


def mixed(certs, ca: str, cert: str) -> ftl.TLSConfig:
    """The bank's configuration with the CA of ``ca`` and the certificate of ``cert``."""
    return ftl.TLSConfig(
        ca=certs / ca / "ca.crt", cert=certs / cert / "bank.crt", key=certs / cert / "bank.key"
    )


def connect(address: str, tls: ftl.TLSConfig) -> ftl.RemoteParty:
    return ftl.RemoteParty("shop", address, tls=tls, retries=0, connect_timeout=5)


def test_a_certificate_the_host_does_not_trust_asks_about_the_ca(certs, served):
    _, address = served
    with pytest.raises(TLSHandshakeError) as err:
        connect(address, mixed(certs, ca="certs", cert="other"))
    message = str(err.value)
    assert message.startswith(f"TLS handshake failed: party 'shop' ({address}) refused your ")
    assert "issued by 'ftl throwaway CA'" in message and str(certs / "other") in message
    assert message.endswith("does the host trust your CA?")
    assert "Socket closed" not in message
    assert isinstance(err.value, PartyUnavailableError)  # what callers caught before


def test_a_host_certificate_the_driver_does_not_trust_is_not_signed_by_its_ca(certs, served):
    _, address = served
    with pytest.raises(TLSHandshakeError) as err:
        connect(address, mixed(certs, ca="other", cert="other"))
    assert str(err.value).startswith(
        f"TLS handshake failed: the certificate of party 'shop' ({address}) is not signed by "
        f"your CA ({certs / 'other' / 'ca.crt'}): unable to get local issuer certificate"
    )


def test_an_expired_certificate_says_so(certs, served, tmp_path):
    _, address = served
    ca_cert = x509.load_pem_x509_certificate((certs / "certs" / "ca.crt").read_bytes())
    ca_key = serialization.load_pem_private_key(
        (certs / "certs" / "ca.key").read_bytes(), password=None
    )
    bank = x509.load_pem_x509_certificate((certs / "certs" / "bank.crt").read_bytes())
    now = datetime.datetime.now(datetime.timezone.utc)
    builder = (
        x509.CertificateBuilder()
        .subject_name(bank.subject)
        .issuer_name(ca_cert.subject)
        .public_key(bank.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(days=2))
        .not_valid_after(now - datetime.timedelta(days=1))
    )
    for extension in bank.extensions:
        builder = builder.add_extension(extension.value, extension.critical)
    expired = tmp_path / "bank.crt"
    expired.write_bytes(
        builder.sign(ca_key, hashes.SHA256()).public_bytes(serialization.Encoding.PEM)
    )
    tls = ftl.TLSConfig(
        ca=certs / "certs" / "ca.crt", cert=expired, key=certs / "certs" / "bank.key"
    )
    with pytest.raises(
        TLSHandshakeError, match=r"refused your certificate .*: it expired on .*renew it"
    ):
        connect(address, tls)


def test_nothing_listening_says_cannot_reach(certs):
    with socket.socket() as sock:  # a port that was free a moment ago
        sock.bind(("127.0.0.1", 0))
        address = f"127.0.0.1:{sock.getsockname()[1]}"
    with pytest.raises(PartyUnavailableError) as err:
        connect(address, tls_for(certs / "certs", "bank"))
    assert not isinstance(err.value, TLSHandshakeError)
    assert str(err.value) == (
        f"party 'shop' ({address}) did not answer 'info': cannot reach {address} "
        "(connection refused): is `ftl serve` running there?"
    )


def test_the_probe_reads_a_certificate_alert(certs):
    # A TLS server other than gRPC's (a proxy in front of the host) may refuse the
    # client's certificate with an alert instead of closing.
    server_tls = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    server_tls.load_cert_chain(certs / "certs" / "shop.crt", certs / "certs" / "shop.key")
    server_tls.load_verify_locations(certs / "certs" / "ca.crt")
    server_tls.verify_mode = ssl.CERT_REQUIRED
    listener = socket.create_server(("127.0.0.1", 0))

    def refuse_one():
        conn, _ = listener.accept()
        with conn, pytest.raises(ssl.SSLError):
            server_tls.wrap_socket(conn, server_side=True).recv(1)

    thread = threading.Thread(target=refuse_one)
    thread.start()
    address = f"127.0.0.1:{listener.getsockname()[1]}"
    probe = mixed(certs, ca="certs", cert="other").probe(address, "shop.ftl")
    thread.join(10)
    listener.close()
    assert probe.outcome is HandshakeOutcome.CERTIFICATE_REFUSED
    assert probe.reason == "alert: unknown ca"


def test_a_healthy_host_probes_as_accepted(certs, served):
    _, address = served
    probe = tls_for(certs / "certs", "bank").probe(address, "shop.ftl")
    assert probe.outcome is HandshakeOutcome.ACCEPTED
    assert probe.certificate is not None


# -- the host's side ------------------------------------------------------------------


def _lines(caplog, port) -> list[str]:
    """The host's lines about connections to ``port`` that made no call."""
    return [
        r.getMessage()
        for r in caplog.records
        if r.name == "ftl.serve" and f"to port {port} made no call" in r.getMessage()
    ]


def _wait_for_line(caplog, port, seconds: float = 10.0) -> str:
    deadline = time.monotonic() + seconds
    while not _lines(caplog, port) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert _lines(caplog, port), "the host logged nothing"
    return _lines(caplog, port)[0]


def test_the_host_logs_a_refused_certificate(certs, served, caplog):
    caplog.set_level(logging.WARNING, logger="ftl.serve")
    server, address = served
    with pytest.raises(TLSHandshakeError):
        connect(address, mixed(certs, ca="certs", cert="other"))
    line = _wait_for_line(caplog, server.handshakes.port)
    assert line.startswith(("a connection from 127.0.0.1:", "a connection from [::1]:"))
    assert f"made no call within {GRACE:g} s: most likely the TLS handshake failed" in line
    assert "not issued by this host's CA" in line


def test_the_host_does_not_log_a_driver_that_calls(certs, served, caplog):
    caplog.set_level(logging.WARNING, logger="ftl.serve")
    server, address = served
    connect(address, tls_for(certs / "certs", "bank")).budget()
    time.sleep(4 * GRACE)
    assert not _lines(caplog, server.handshakes.port)


def test_peer_addresses_read_alike_from_grpc_and_the_system():
    assert grpc_peer_address("ipv4:10.0.0.7:50312") == "10.0.0.7:50312"
    assert grpc_peer_address("ipv6:%5B::1%5D:50312") == "[::1]:50312"
    assert grpc_peer_address("ipv6:[::ffff:10.0.0.7]:1") == "10.0.0.7:1"
    assert grpc_peer_address("unix:/tmp/socket") is None
    with socket.create_server(("127.0.0.1", 0)) as listener:
        port = listener.getsockname()[1]
        if established_peers(port) is None:
            pytest.skip("this system does not list its TCP connections in /proc/net")
        with socket.create_connection(("127.0.0.1", port)) as client:
            accepted, _ = listener.accept()
            with accepted:
                host, client_port = client.getsockname()
                assert established_peers(port) == {f"{host}:{client_port}"}


def test_without_client_addresses_the_watcher_counts_connections(monkeypatch, caplog):
    # Where the system lists no connections, a new client's first call accounts
    # for one connection; the rest are logged without an address.
    monkeypatch.setattr(
        "ftl.federation.transport.grpc.handshakes.established_peers", lambda port: None
    )
    caplog.set_level(logging.WARNING, logger="ftl.serve")
    # a grace long enough that a loaded machine cannot expire the first connection
    # before the other two are counted
    watcher = HandshakeWatcher(logging.getLogger("ftl.serve"), grace=2.0)
    watcher.port = 1
    for _ in range(3):
        watcher.connection_started()
    watcher.call_from("ipv4:10.0.0.7:50312")
    watcher.call_from("ipv4:10.0.0.7:50312")  # the same connection again
    line = _wait_for_line(caplog, 1)
    assert line.startswith("2 connection(s) from an address this system does not list")
