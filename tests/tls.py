"""A redis-server speaking TLS only, with a certificate authority of the test's own."""

from __future__ import annotations

import datetime
import ipaddress
import shutil
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import redis
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from tests.conftest import RedisServer
from tests.util import TIMEOUT, free_port, wait_for


@dataclass(frozen=True)
class Authority:
    """A CA's certificate file, and a server certificate it signed for 127.0.0.1."""

    ca: Path
    cert: Path
    key: Path


def make_authority(folder: Path, name: str = "wxpush test CA") -> Authority:
    folder.mkdir(parents=True, exist_ok=True)
    now = datetime.datetime.now(datetime.UTC)
    ca_key, key = ec.generate_private_key(ec.SECP256R1()), ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    ca = (
        x509.CertificateBuilder().subject_name(ca_name).issuer_name(ca_name)
        .public_key(ca_key.public_key()).serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(ca_key, hashes.SHA256())
    )  # fmt: skip
    server = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")]))
        .issuer_name(ca_name).public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.SubjectAlternativeName(
            [x509.IPAddress(ipaddress.ip_address("127.0.0.1")), x509.DNSName("localhost")]),
            critical=False)
        .sign(ca_key, hashes.SHA256())
    )  # fmt: skip
    found = Authority(folder / "ca.pem", folder / "server.pem", folder / "server.key")
    found.ca.write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    found.cert.write_bytes(server.public_bytes(serialization.Encoding.PEM))
    found.key.write_bytes(key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption()))  # fmt: skip
    return found


@dataclass
class TlsRedisServer(RedisServer):
    """:class:`RedisServer` on a TLS port only (no plain port)."""

    authority: Authority | None = None

    @property
    def url(self) -> str:
        assert self.authority is not None
        return f"rediss://127.0.0.1:{self.port}/0?ssl_ca_certs={self.authority.ca}"

    def start(self) -> None:
        binary, tls = shutil.which("redis-server"), self.authority
        assert binary and tls is not None
        self.proc = subprocess.Popen(
            [binary, "--port", "0", "--tls-port", str(self.port), "--bind", "127.0.0.1",
             "--tls-cert-file", str(tls.cert), "--tls-key-file", str(tls.key),
             "--tls-ca-cert-file", str(tls.ca), "--tls-auth-clients", "no",
             "--save", "", "--appendonly", "no", "--dir", str(self.workdir)],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )  # fmt: skip
        wait_for(lambda: self.client().ping())

    def client(self) -> redis.Redis:
        assert self.authority is not None
        return redis.Redis(port=self.port, socket_timeout=TIMEOUT, ssl=True,
                           ssl_ca_certs=str(self.authority.ca))  # fmt: skip


@pytest.fixture
def tls_redis(tmp_path: Path) -> Iterator[TlsRedisServer]:
    server = TlsRedisServer(free_port(), tmp_path, authority=make_authority(tmp_path / "tls"))
    server.start()
    yield server
    server.stop()
