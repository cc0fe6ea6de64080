"""Attack: a party impersonates another to the driver, or claims two identities to a host.

Every party certificate is signed by the same CA, so a certificate proves only that
its holder is *some* party. Before identities were pinned, ``ftl certs`` gave every
party certificate the same host names and the driver checked only those: eve,
holding her own certificate, could serve as "shop" (say after a DNS change or on a
shared machine), and the bank's driver would run PSI and training with her --
sending its blinded ids, encrypted residuals and chosen parameters to the wrong
organisation. Now the driver has TLS verify the server's certificate against
``shop.ftl``, a name only shop's certificate carries, and the handshake fails
before any request leaves.

Each test runs the attack with whatever ``make_certificates`` and ``RemoteParty``
the checkout provides, records what reached the attacker's server, and asserts on
that record.
"""

from __future__ import annotations

import datetime
from concurrent import futures
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pytest
from _serving import grpc, make_certs, policy, tls_for
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

import ftl
from ftl.federation.policy import Policy
from ftl.federation.server import PartyServer
from ftl.federation.wire import SERVER_OPTIONS


@pytest.fixture(scope="module")
def certs(tmp_path_factory) -> Path:
    return make_certs(tmp_path_factory.mktemp("identity") / "certs")


def mint(certs: Path, common_names: list[str], dns: list[str], out_name: str) -> ftl.TLSConfig:
    """A certificate signed by the federation's CA with the given subject and names
    (what a careless or compromised issuer could hand out)."""
    ca_cert = x509.load_pem_x509_certificate((certs / "ca.crt").read_bytes())
    ca_key = serialization.load_pem_private_key((certs / "ca.key").read_bytes(), password=None)
    key = ec.generate_private_key(ec.SECP256R1())
    now = datetime.datetime.now(datetime.timezone.utc)
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn) for cn in common_names])
    sans: list[x509.GeneralName] = [x509.DNSName(n) for n in dns]
    cert = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(ca_cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            x509.ExtendedKeyUsage(
                [ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH]
            ),
            critical=False,
        )
        .add_extension(x509.SubjectAlternativeName(sans), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    crt, pem_key = certs / f"{out_name}.crt", certs / f"{out_name}.key"
    crt.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    pem_key.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return ftl.TLSConfig(ca=certs / "ca.crt", cert=crt, key=pem_key)


def shop_data(n: int = 150) -> ftl.Party:
    """Whatever the server holds under the name "shop" (real or forged by eve)."""
    rng = np.random.default_rng(1)
    return ftl.Party("shop", rng.normal(size=(n, 2)), ids=np.arange(n), feature_names=["a", "b"])


def bank_data(n: int = 150) -> ftl.Party:
    return ftl.Party("bank", np.zeros((n, 1)), ids=np.arange(n), labels=np.arange(n) % 2)


@dataclass
class Outcome:
    """What reached the server, and what the connecting side got."""

    reached: list[str] = field(default_factory=list)
    learned: object = None
    error: Exception | None = None


def serve(host_policy: Policy, server_tls: ftl.TLSConfig):
    """An in-process ``PartyServer`` for "shop" that records every RPC reaching it."""
    reached: list[str] = []
    inner = PartyServer(shop_data(), host_policy, max_message_bytes=4 << 20).handlers()

    class Recorder(grpc.GenericRpcHandler):
        def service(self, handler_call_details):
            reached.append(handler_call_details.method)
            return inner.service(handler_call_details)

    server = grpc.server(
        futures.ThreadPoolExecutor(max_workers=4), handlers=[Recorder()], options=SERVER_OPTIONS
    )
    port = server.add_secure_port("127.0.0.1:0", server_tls.server_credentials())
    server.start()
    return server, f"localhost:{port}", reached


def connect_to_shop(server_tls: ftl.TLSConfig, client_tls: ftl.TLSConfig, learn) -> Outcome:
    """A server presenting ``server_tls`` answers as "shop" and serves only the bank; a
    driver presenting ``client_tls`` connects to party "shop" and ``learn(shop)`` runs."""
    server, address, reached = serve(policy("bank"), server_tls)
    outcome = Outcome(reached=reached)
    try:
        shop = ftl.RemoteParty("shop", address, tls=client_tls, connect_timeout=10, retries=0)
        outcome.learned = learn(shop)
    except Exception as exc:  # noqa: BLE001 - the refusal is the expected outcome
        outcome.error = exc
    finally:
        server.stop(0)
    return outcome


def bank_connects_to_shop(certs: Path, server_tls: ftl.TLSConfig) -> Outcome:
    """The attack: a server presenting ``server_tls`` answers as "shop"; the bank's
    driver connects to party "shop" and aligns with it (what it learns: the attacker
    ran PSI on the bank's ids)."""
    return connect_to_shop(
        server_tls, tls_for(certs, "bank"), lambda shop: len(ftl.align(bank_data(), shop)[0])
    )


def test_another_partys_certificate_cannot_serve_as_shop(certs):
    outcome = bank_connects_to_shop(certs, tls_for(certs, "eve"))
    assert outcome.reached == [], f"eve's server received {outcome.reached}"
    assert outcome.learned is None
    assert isinstance(outcome.error, ftl.PolicyError)
    message = str(outcome.error)
    assert "'eve'" in message and "shop.ftl" in message and "before sending any request" in message


def test_certificate_without_party_name_cannot_serve_and_says_to_reissue(certs):
    # eve's certificate in the layout `ftl certs` wrote before identities were pinned:
    # her name and the shared host names, all of which every other party has too.
    legacy = mint(certs, ["eve"], ["eve", "localhost"], "eve-legacy")
    outcome = bank_connects_to_shop(certs, legacy)
    assert outcome.reached == [], f"eve's server received {outcome.reached}"
    assert isinstance(outcome.error, ftl.PolicyError)
    assert "re-issue" in str(outcome.error) and "ftl certs" in str(outcome.error)


def test_the_real_shop_is_reached(certs):
    outcome = bank_connects_to_shop(certs, tls_for(certs, "shop"))
    assert outcome.error is None and outcome.learned == 150
    assert outcome.reached[0] == "/ftl.Party/Info"


def eve_connects_with_two_names(certs: Path, common_names: list[str]) -> Outcome:
    """The attack on the host: eve presents a certificate whose subject carries two
    common names, one of them the bank's, to a shop that serves only the bank."""
    forged = mint(certs, common_names, ["eve.ftl"], "eve-two-names")
    # what eve learns if served: the bank's view of the shop
    return connect_to_shop(tls_for(certs, "shop"), forged, lambda shop: shop.feature_names)


def test_a_client_certificate_with_two_identities_is_refused(certs):
    # gRPC reports the first common name only: the shop would take eve for the bank.
    outcome = eve_connects_with_two_names(certs, ["bank", "eve"])
    assert outcome.learned is None, f"eve was served as the bank: {outcome.learned}"
    assert isinstance(outcome.error, ftl.PolicyError)
