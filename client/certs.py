"""A cluster's certificate authority: the CA, broker certificates and client certificates.

``raftlog cluster up`` makes one under ``<dir>/tls`` and the brokers, the CLI, the demo, the chaos
harness and the benches use it; ``raftlog tls ...`` does the same for a real deployment (see
examples/). Files (PEM; keys mode 0600, written tmp+rename so a crash leaves the old one
or the new one)::

    ca.pem, ca.key                 the CA (ECDSA P-256, 10 years); keep ca.key off the brokers
    broker-<id>.pem, .key          a broker's certificate: CN broker-<id>, SAN URI
                                   raftlog://broker/<id> plus its hosts (DNS and IP), usable as
                                   TLS server and client (inter-broker mutual TLS)
    client-<name>.pem, .key        a client's certificate: CN <name>, client use only

How a broker reads a peer certificate (``raftlog.cluster.auth``): the SAN URI
``raftlog://broker/<id>`` makes the principal *broker <id>* (the only kind allowed to call
broker-only RPCs, and only for its own id); any other certificate is the principal
``User:<CN>``. Only the CA key can mint either, so whoever holds ``ca.key`` is the cluster's
root of trust.
"""

from __future__ import annotations

import datetime
import ipaddress
import os
import re
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

__all__ = [
    "BROKER_URI_PREFIX",
    "CertificateAuthority",
    "CertificateError",
    "KeyPair",
    "broker_uri",
]

BROKER_URI_PREFIX = "raftlog://broker/"
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._@-]{0,127}$")
_CA_DAYS = 3650
_LEAF_DAYS = 825  # the CA/Browser forum's old ceiling; renew with `raftlog tls issue-*`


class CertificateError(Exception):
    """A missing or unusable CA or certificate; the message names the file."""


def broker_uri(node_id: int) -> str:
    return f"{BROKER_URI_PREFIX}{node_id}"


@dataclass(frozen=True, slots=True)
class KeyPair:
    cert_file: Path
    key_file: Path


def _write_private(path: Path, data: bytes, mode: int) -> None:
    tmp = path.with_name(path.name + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    try:
        os.write(fd, data)
        os.fsync(fd)
    finally:
        os.close(fd)
    os.chmod(tmp, mode)  # an existing tmp keeps its old mode through O_CREAT
    os.replace(tmp, path)


def _key_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )


def _san(host: str) -> x509.GeneralName:
    try:
        return x509.IPAddress(ipaddress.ip_address(host))
    except ValueError:
        return x509.DNSName(host)


class CertificateAuthority:
    """The CA of one cluster, kept in a directory. Not thread-safe (a CLI-time tool)."""

    def __init__(self, directory: str | Path) -> None:
        self.dir = Path(directory)
        self.ca_file = self.dir / "ca.pem"
        self.ca_key_file = self.dir / "ca.key"

    def exists(self) -> bool:
        return self.ca_file.exists() and self.ca_key_file.exists()

    def create(self, cluster_name: str = "raftlog") -> None:
        """Make the CA unless it exists (an existing CA is never replaced: every certificate
        it signed would stop working)."""
        if self.exists():
            return
        self.dir.mkdir(parents=True, exist_ok=True)
        key = ec.generate_private_key(ec.SECP256R1())
        name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, f"{cluster_name} CA")])
        now = datetime.datetime.now(datetime.UTC)
        cert = (
            x509.CertificateBuilder()
            .subject_name(name)
            .issuer_name(name)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + datetime.timedelta(days=_CA_DAYS))
            .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
            .add_extension(
                x509.KeyUsage(False, False, False, False, False, True, True, False, False),
                critical=True,
            )
            .sign(key, hashes.SHA256())
        )
        _write_private(self.ca_key_file, _key_pem(key), 0o600)
        _write_private(self.ca_file, cert.public_bytes(serialization.Encoding.PEM), 0o644)

    def _load(self) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
        try:
            cert = x509.load_pem_x509_certificate(self.ca_file.read_bytes())
            key = serialization.load_pem_private_key(self.ca_key_file.read_bytes(), None)
        except (OSError, ValueError) as exc:
            raise CertificateError(f"cannot load the CA in {self.dir}: {exc}") from exc
        if not isinstance(key, ec.EllipticCurvePrivateKey):
            raise CertificateError(f"{self.ca_key_file} is not an EC key")
        return cert, key

    def _issue(
        self,
        stem: str,
        common_name: str,
        sans: list[x509.GeneralName],
        usages: list[x509.ObjectIdentifier],
    ) -> KeyPair:
        ca_cert, ca_key = self._load()
        key = ec.generate_private_key(ec.SECP256R1())
        now = datetime.datetime.now(datetime.UTC)
        builder = (
            x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)]))
            .issuer_name(ca_cert.subject)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + datetime.timedelta(days=_LEAF_DAYS))
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.ExtendedKeyUsage(usages), critical=False)
        )
        if sans:
            builder = builder.add_extension(x509.SubjectAlternativeName(sans), critical=False)
        cert = builder.sign(ca_key, hashes.SHA256())
        pair = KeyPair(self.dir / f"{stem}.pem", self.dir / f"{stem}.key")
        _write_private(pair.key_file, _key_pem(key), 0o600)
        _write_private(pair.cert_file, cert.public_bytes(serialization.Encoding.PEM), 0o644)
        return pair

    def issue_broker(self, node_id: int, hosts: list[str]) -> KeyPair:
        """A broker's certificate for ``hosts`` (the names and IPs clients dial it by)."""
        if node_id < 0:
            raise CertificateError("a broker id is >= 0")
        sans: list[x509.GeneralName] = [x509.UniformResourceIdentifier(broker_uri(node_id))]
        sans += [_san(h) for h in dict.fromkeys(hosts) if h]
        return self._issue(
            f"broker-{node_id}",
            f"broker-{node_id}",
            sans,
            [ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH],
        )

    def issue_client(self, name: str) -> KeyPair:
        """A client's certificate: the principal ``User:<name>``."""
        if not _NAME.match(name) or name.startswith("broker-"):
            raise CertificateError(
                f"client name {name!r}: letters, digits, '.', '_', '@', '-' (at most 128), "
                "not starting with 'broker-'"
            )
        return self._issue(f"client-{name}", name, [], [ExtendedKeyUsageOID.CLIENT_AUTH])

    def broker_pair(self, node_id: int) -> KeyPair:
        return KeyPair(self.dir / f"broker-{node_id}.pem", self.dir / f"broker-{node_id}.key")

    def client_pair(self, name: str) -> KeyPair:
        return KeyPair(self.dir / f"client-{name}.pem", self.dir / f"client-{name}.key")
