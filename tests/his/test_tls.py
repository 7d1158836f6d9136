"""Mutual TLS to a HIS: the simulator process serves HTTPS and asks for a client
certificate signed by its CA; a connection with the CA bundle and our certificate gets
its token and its FHIR answers over it, one without the certificate, or trusting another
CA, gets nothing."""

from __future__ import annotations

import datetime as dt
import ipaddress
import ssl
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from inventory.his.auth import TokenAuth
from inventory.his.client import FhirHisClient
from inventory.his.connections import TlsFiles, load_connections
from inventory.his.errors import HisUnavailableError
from tests.his.conftest import client_config
from tests.his.hospitals import Hospitals, write_hospitals


def _name(common: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common)])


def _write_key(key: Any, path: Path) -> None:
    path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )


def make_ca(directory: Path, name: str) -> tuple[Any, x509.Certificate]:
    """A CA key and self-signed certificate, written as ``<name>-ca.pem``."""
    key = ec.generate_private_key(ec.SECP256R1())
    now = dt.datetime.now(dt.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(_name(f"{name} CA"))
        .issuer_name(_name(f"{name} CA"))
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .sign(key, hashes.SHA256())
    )
    (directory / f"{name}-ca.pem").write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    return key, cert


def issue(directory: Path, name: str, ca: tuple[Any, x509.Certificate], *, server: bool) -> None:
    """A leaf certificate signed by ``ca``: ``<name>.pem`` and ``<name>.key``."""
    ca_key, ca_cert = ca
    key = ec.generate_private_key(ec.SECP256R1())
    now = dt.datetime.now(dt.UTC)
    builder = (
        x509.CertificateBuilder()
        .subject_name(_name(name))
        .issuer_name(ca_cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=1))
        .add_extension(
            x509.ExtendedKeyUsage(
                [ExtendedKeyUsageOID.SERVER_AUTH if server else ExtendedKeyUsageOID.CLIENT_AUTH]
            ),
            critical=False,
        )
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()),
            critical=False,
        )
    )
    if server:
        builder = builder.add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
            critical=False,
        )
    cert = builder.sign(ca_key, hashes.SHA256())
    (directory / f"{name}.pem").write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    _write_key(key, directory / f"{name}.key")


@pytest.fixture(scope="module")
def tls_hospitals(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Hospitals]:
    """The hospitals' simulator over HTTPS, asking for client certificates of its CA."""
    from inventory.simulators.his.process import SimProcess

    directory = Path(tmp_path_factory.mktemp("his-tls"))
    server_ca = make_ca(directory, "server")
    client_ca = make_ca(directory, "client")
    stranger_ca = make_ca(directory, "stranger")
    issue(directory, "stranger-client", stranger_ca, server=False)
    issue(directory, "server", server_ca, server=True)
    issue(directory, "client", client_ca, server=False)
    path = write_hospitals(directory)
    ready = TlsFiles(
        ca_file=directory / "server-ca.pem",
        client_cert_file=directory / "client.pem",
        client_key_file=directory / "client.key",
    ).context()
    sim = SimProcess(
        directory / "sim",
        seed_rng=5,
        extra_args=(
            "--hospitals",
            str(path),
            "--days",
            "2",
            "--tls-cert",
            str(directory / "server.pem"),
            "--tls-key",
            str(directory / "server.key"),
            "--tls-client-ca",
            str(directory / "client-ca.pem"),
        ),
        hospitals=("hosp-a", "hosp-b", "hosp-c", "hosp-open"),
        ssl_context=ready,
    )
    sim.start()
    try:
        yield Hospitals(directory, sim)
    finally:
        sim.stop()


async def test_mutual_tls_with_credentials(tls_hospitals: Hospitals) -> None:
    """A connections file's TLS table: the CA bundle and our certificate carry the token
    request and the FHIR calls."""
    hospitals = tls_hospitals
    directory = hospitals.directory
    path = directory / "his.toml"
    path.write_text(
        f"""
[hospitals.hosp-b]
base_url = "{hospitals.sim.fhir_url_of("hosp-b")}"
[hospitals.hosp-b.auth]
method = "private_key_jwt"
token_url = "{hospitals.sim.token_url_of("hosp-b")}"
client_id = "inventory-hosp-b"
private_key_file = "our-hosp-b-key.pem"
[hospitals.hosp-b.tls]
ca_file = "server-ca.pem"
client_cert_file = "client.pem"
client_key_file = "client.key"
"""
    )
    connection = load_connections(path).hospitals["hosp-b"]
    his = connection.build()
    try:
        catalogue = await his.fetch_catalogue()
    finally:
        await his.close()
    assert catalogue.hospital_id == "hosp-b"


@pytest.mark.parametrize("missing", ["client certificate", "server CA"])
async def test_without_our_certificate_or_the_right_ca_nothing_is_answered(
    tls_hospitals: Hospitals, missing: str
) -> None:
    """No client certificate: the handshake fails; trusting another CA: the server's
    certificate is refused. Either way the HIS is unavailable (no HTTP at all)."""
    directory = tls_hospitals.directory
    files = (
        TlsFiles(ca_file=directory / "server-ca.pem")
        if missing == "client certificate"
        else TlsFiles(
            ca_file=directory / "stranger-ca.pem",
            client_cert_file=directory / "client.pem",
            client_key_file=directory / "client.key",
        )
    )
    config = client_config(
        tls_hospitals.sim,
        base_url=tls_hospitals.sim.fhir_url_of("hosp-open"),
        attempts=1,
        breaker_failures=10,
    )
    async with FhirHisClient(config, ssl_context=files.context()) as his:
        with pytest.raises(HisUnavailableError):
            await his.fetch_catalogue()
    # The same without TLS settings at all: the system's CAs do not know the server's.
    auth = TokenAuth(tls_hospitals.auth_config("hosp-a"))
    async with FhirHisClient(
        client_config(
            tls_hospitals.sim, base_url=tls_hospitals.sim.fhir_url_of("hosp-a"), attempts=1
        ),
        auth=auth,
    ) as his:
        with pytest.raises(HisUnavailableError):
            await his.fetch_catalogue()
    assert isinstance(files.context(), ssl.SSLContext)


async def test_a_rotated_client_certificate_is_used_without_a_new_client(
    tls_hospitals: Hospitals, tmp_path: Path
) -> None:
    """Our certificate files are replaced while the client runs: a certificate the HIS
    does not trust gets nothing; once the files hold one it trusts, the same client's
    next call goes through on a new connection."""
    import shutil

    directory = tls_hospitals.directory
    cert, key = tmp_path / "client.pem", tmp_path / "client.key"
    shutil.copy(directory / "stranger-client.pem", cert)
    shutil.copy(directory / "stranger-client.key", key)
    path = tmp_path / "his.toml"
    path.write_text(
        f"""
[hospitals.hosp-open]
base_url = "{tls_hospitals.sim.fhir_url_of("hosp-open")}"
attempts = 1
breaker_failures = 10
[hospitals.hosp-open.tls]
ca_file = "{directory / "server-ca.pem"}"
client_cert_file = "client.pem"
client_key_file = "client.key"
"""
    )
    his = load_connections(path).hospitals["hosp-open"].build()
    try:
        with pytest.raises(HisUnavailableError):
            await his.fetch_catalogue()
        # The key first, then the certificate: in between the pair does not load and
        # the previous context stays.
        shutil.copy(directory / "client.key", key)
        shutil.copy(directory / "client.pem", cert)
        catalogue = await his.fetch_catalogue()
    finally:
        await his.close()
    assert catalogue.hospital_id == "hosp-open"
