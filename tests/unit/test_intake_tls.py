"""The DICOM node over TLS, with dcmtk's storescu as the sender (built with OpenSSL on Debian).

A throwaway CA signs the node's certificate and a sender's; a second CA signs an impostor's.
The node is built from settings as `imaging-agent listen` builds it (agent/intake.py).
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import logging
import shutil
import socket
import ssl
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pydicom
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
from pynetdicom import AE
from pynetdicom.sop_class import CTImageStorage

from agent.intake import storage_node, tls_context
from agent.settings import Settings
from tests.ci import missing
from tools.dimse.peers import Peer
from tools.dimse.scp import SUCCESS
from tools.dimse.tls import TlsConfigError
from tools.intake.inbox import Inbox
from tools.phantom import PhantomSpec, make_phantom, write_phantom

pytestmark = pytest.mark.unit

NODE_AET = "AGENT_NODE"
SENDER = "CT_SCANNER"


@dataclass(frozen=True)
class Pki:
    ca: Path
    node_cert: Path
    node_key: Path
    sender_cert: Path
    sender_key: Path
    impostor_cert: Path
    impostor_key: Path


def _key() -> rsa.RSAPrivateKey:
    # RSA: dcmtk's default BCP 195 profile negotiates ECDHE-RSA suites only.
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


def _name(common_name: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])


def _certificate(
    subject: str, key: rsa.RSAPrivateKey, issuer: tuple[x509.Name, rsa.RSAPrivateKey] | None, usage: str
) -> x509.Certificate:
    now = dt.datetime.now(dt.UTC)
    issuer_name, issuer_key = issuer or (_name(subject), key)
    builder = (
        x509.CertificateBuilder()
        .subject_name(_name(subject))
        .issuer_name(issuer_name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=1))
    )
    if usage == "ca":
        builder = builder.add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True).add_extension(
            x509.KeyUsage(
                digital_signature=True, content_commitment=False, key_encipherment=False, data_encipherment=False,
                key_agreement=False, key_cert_sign=True, crl_sign=True, encipher_only=False, decipher_only=False,
            ),
            critical=True,
        )
    else:
        purpose = ExtendedKeyUsageOID.SERVER_AUTH if usage == "server" else ExtendedKeyUsageOID.CLIENT_AUTH
        builder = builder.add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        builder = builder.add_extension(x509.ExtendedKeyUsage([purpose]), critical=False)
        if usage == "server":
            builder = builder.add_extension(
                x509.SubjectAlternativeName([x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
                critical=False,
            )
    return builder.sign(issuer_key, hashes.SHA256())


def _write(folder: Path, name: str, cert: x509.Certificate, key: rsa.RSAPrivateKey | None = None) -> tuple[Path, Path]:
    cert_path, key_path = folder / f"{name}.pem", folder / f"{name}.key"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    if key is not None:
        key_path.write_bytes(
            key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
        )
    return cert_path, key_path


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    folder = tmp_path_factory.mktemp("pki")
    ca_key, rogue_key = _key(), _key()
    ca = _certificate("imaging-agent test CA", ca_key, None, "ca")
    rogue = _certificate("another CA", rogue_key, None, "ca")
    node_key, sender_key, impostor_key = _key(), _key(), _key()
    node = _certificate("localhost", node_key, (ca.subject, ca_key), "server")
    sender = _certificate(SENDER, sender_key, (ca.subject, ca_key), "client")
    impostor = _certificate(SENDER, impostor_key, (rogue.subject, rogue_key), "client")
    ca_path, _ = _write(folder, "ca", ca)
    node_paths = _write(folder, "node", node, node_key)
    sender_paths = _write(folder, "sender", sender, sender_key)
    impostor_paths = _write(folder, "impostor", impostor, impostor_key)
    return Pki(ca_path, *node_paths, *sender_paths, *impostor_paths)


@pytest.fixture(scope="module")
def phantom_files(tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    spec = PhantomSpec(slices=8, rows=64, columns=64, pixel_spacing_mm=5.0, slice_thickness_mm=5.0, seed=78)
    return sorted(write_phantom(make_phantom(spec), tmp_path_factory.mktemp("phantom")))


@pytest.fixture(scope="module")
def storescu() -> str:
    path = shutil.which("storescu")
    if path is None:
        missing("dcmtk's storescu is missing", "apt-get install dcmtk, or run scripts/bootstrap.sh")
    help_text = subprocess.run([path, "--help"], capture_output=True, text=True, timeout=30).stdout
    if "--enable-tls" not in help_text:
        missing("this storescu was built without OpenSSL (no --enable-tls)", "install Debian's dcmtk, which has TLS")
    return path


@dataclass
class TlsNode:
    inbox: Inbox
    port: int


def _settings(pki: Pki, *, ca: bool) -> Settings:
    return Settings(
        _env_file=None,
        intake_ae_title=NODE_AET,
        intake_peers=[Peer(ae_title=SENDER, host="127.0.0.1")],
        intake_tls_cert=pki.node_cert,
        intake_tls_key=pki.node_key,
        intake_tls_ca=pki.ca if ca else None,
    )


@pytest.fixture()
def node(pki: Pki, tmp_path: Path) -> Iterator[TlsNode]:
    """The node requiring senders' certificates signed by the test CA."""
    inbox = Inbox(tmp_path / "inbox")
    storage = storage_node(_settings(pki, ca=True), inbox)
    port = storage.start("127.0.0.1", 0)
    yield TlsNode(inbox, port)
    storage.stop()


def _push(storescu: str, node: TlsNode, files: list[Path], tls: list[str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [storescu, *tls, "-aet", SENDER, "-aec", NODE_AET, "-to", "10", "-ta", "10", "-td", "10",
         "127.0.0.1", str(node.port), *map(str, files)],
        capture_output=True, text=True, timeout=60,
    )


def _tls(pki: Pki, cert: Path, key: Path) -> list[str]:
    # The sender checks the node's certificate against the CA too (storescu's default, -rc).
    return ["+tls", str(key), str(cert), "+cf", str(pki.ca)]


def test_a_tls_push_with_a_trusted_certificate_arrives_whole(storescu: str, pki: Pki, node: TlsNode, phantom_files: list[Path]) -> None:
    sent = _push(storescu, node, phantom_files, _tls(pki, pki.sender_cert, pki.sender_key))
    assert sent.returncode == 0, sent.stdout + sent.stderr
    [series] = node.inbox.stable(0.0)
    assert series.instances == len(phantom_files)
    first = pydicom.dcmread(phantom_files[0])
    assert pydicom.dcmread(series.folder / f"{first.SOPInstanceUID}.dcm").PixelData == first.PixelData


def test_a_plain_association_to_the_tls_port_fails_and_the_node_keeps_serving(
    storescu: str, pki: Pki, node: TlsNode, phantom_files: list[Path]
) -> None:
    plain = _push(storescu, node, phantom_files[:1], [])
    assert plain.returncode != 0
    assert node.inbox.stable(0.0) == []
    again = _push(storescu, node, phantom_files, _tls(pki, pki.sender_cert, pki.sender_key))
    assert again.returncode == 0, again.stdout + again.stderr
    assert [s.instances for s in node.inbox.stable(0.0)] == [len(phantom_files)]


def test_a_certificate_from_another_ca_is_refused(
    storescu: str, pki: Pki, node: TlsNode, phantom_files: list[Path], caplog: pytest.LogCaptureFixture
) -> None:
    """Same AE title, same host, a certificate naming the sender: but not signed by the configured CA."""
    with caplog.at_level(logging.ERROR, logger="pynetdicom"):
        impostor = _push(storescu, node, phantom_files[:1], _tls(pki, pki.impostor_cert, pki.impostor_key))
    assert impostor.returncode != 0
    assert node.inbox.stable(0.0) == []
    assert "CERTIFICATE_VERIFY_FAILED" in caplog.text  # the node's side: refused for the certificate


def test_tls_without_a_client_certificate_is_refused_when_the_ca_is_set(pki: Pki, node: TlsNode, phantom_files: list[Path]) -> None:
    """pynetdicom as a second TLS sender: it trusts the node but shows no certificate of its own."""
    client = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=str(pki.ca))
    ae = AE(ae_title=SENDER)
    ae.acse_timeout = ae.dimse_timeout = ae.network_timeout = 10
    ae.add_requested_context(CTImageStorage, ["1.2.840.10008.1.2.1"])
    assoc = ae.associate("127.0.0.1", node.port, ae_title=NODE_AET, tls_args=(client, "localhost"))
    if assoc.is_established:  # TLS 1.3: the refusal of the certificate arrives with the first read
        status = assoc.send_c_store(pydicom.dcmread(phantom_files[0]))
        assert not status or status.Status != SUCCESS
        assoc.abort()
    assert node.inbox.stable(0.0) == []


def test_a_silent_connection_does_not_hold_up_other_senders(storescu: str, pki: Pki, node: TlsNode, phantom_files: list[Path]) -> None:
    """A sender that connects and never starts the TLS handshake must not block the node."""
    with socket.create_connection(("127.0.0.1", node.port)):
        sent = _push(storescu, node, phantom_files, _tls(pki, pki.sender_cert, pki.sender_key))
    assert sent.returncode == 0, sent.stdout + sent.stderr
    assert [s.instances for s in node.inbox.stable(0.0)] == [len(phantom_files)]


def test_tls_settings_that_cannot_work_are_refused_naming_the_file(pki: Pki, tmp_path: Path) -> None:
    missing_key = tmp_path / "no-such.key"
    with pytest.raises(TlsConfigError, match=f"{missing_key}.*IMAGING_AGENT_INTAKE_TLS_KEY"):
        tls_context(Settings(_env_file=None, intake_tls_cert=pki.node_cert, intake_tls_key=missing_key))
    not_a_ca = tmp_path / "ca.pem"
    not_a_ca.write_text("not a certificate")
    with pytest.raises(TlsConfigError, match=f"{not_a_ca}.*IMAGING_AGENT_INTAKE_TLS_CA"):
        tls_context(Settings(_env_file=None, intake_tls_cert=pki.node_cert, intake_tls_key=pki.node_key, intake_tls_ca=not_a_ca))
    with pytest.raises(TlsConfigError, match="IMAGING_AGENT_INTAKE_TLS_CERT is not"):
        tls_context(Settings(_env_file=None, intake_tls_ca=pki.ca))
