"""The network CA and node certificates (X.509, ECDSA P-256), for mTLS between nodes.

`agora certs init-ca` makes a CA directory (``ca.crt``, ``ca.key``); `agora certs issue` signs a
node certificate with CN = the node name and SANs for its DNS names and IP addresses, and writes
``ca.crt``, ``node.crt`` and ``node.key``: exactly the files a node reads by default from
``<data_dir>/certs/``. Leaf certificates serve as both TLS server and client certificates.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import os
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

CA_CERT, CA_KEY = "ca.crt", "ca.key"
NODE_CERT, NODE_KEY = "node.crt", "node.key"


class CertificateError(ValueError):
    """Certificate material that cannot be made or read; the message names the file or value."""


def write_private(path: Path, data: bytes) -> None:
    """Write a secret readable by its owner only (created 0600, never world-readable in between)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(descriptor, "wb") as handle:
        handle.write(data)


@dataclass(frozen=True)
class Issued:
    """A certificate and its private key, PEM-encoded."""

    cert: bytes
    key: bytes

    def write(self, directory: Path, stem: str) -> tuple[Path, Path]:
        """Write ``<stem>.crt`` and ``<stem>.key`` (0600) under ``directory``; return their paths."""
        cert_path, key_path = directory / f"{stem}.crt", directory / f"{stem}.key"
        directory.mkdir(parents=True, exist_ok=True)
        cert_path.write_bytes(self.cert)
        write_private(key_path, self.key)
        return cert_path, key_path


def _key_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )


def _validity(days: float) -> tuple[dt.datetime, dt.datetime]:
    now = dt.datetime.now(dt.UTC)
    return now - dt.timedelta(minutes=5), now + dt.timedelta(days=days)  # 5 minutes of clock-skew slack


def _san(dns_names: tuple[str, ...], ips: tuple[str, ...]) -> list[x509.GeneralName]:
    names: list[x509.GeneralName] = [x509.DNSName(name) for name in dns_names]
    for ip in ips:
        try:
            names.append(x509.IPAddress(ipaddress.ip_address(ip)))
        except ValueError:
            raise CertificateError(f"{ip!r} is not an IP address") from None
    return names


class CertificateAuthority:
    """A self-signed network CA that issues node certificates."""

    def __init__(self, name: str = "agora-network-ca", days: float = 3650) -> None:
        self._key = ec.generate_private_key(ec.SECP256R1())
        subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
        not_before, not_after = _validity(days)
        usage = x509.KeyUsage(
            digital_signature=True,
            content_commitment=False,
            key_encipherment=False,
            data_encipherment=False,
            key_agreement=False,
            key_cert_sign=True,
            crl_sign=True,
            encipher_only=False,
            decipher_only=False,
        )
        self._cert = (
            x509.CertificateBuilder()
            .subject_name(subject)
            .issuer_name(subject)
            .public_key(self._key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(not_before)
            .not_valid_after(not_after)
            .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
            .add_extension(usage, critical=True)
            .sign(self._key, hashes.SHA256())
        )

    @classmethod
    def load(cls, directory: Path) -> CertificateAuthority:
        """The CA saved in directory by `save` (or `agora certs init-ca`)."""
        try:
            cert = x509.load_pem_x509_certificate((directory / CA_CERT).read_bytes())
            key = serialization.load_pem_private_key((directory / CA_KEY).read_bytes(), password=None)
        except FileNotFoundError as exc:
            raise CertificateError(f"{exc.filename} does not exist; make a CA with `agora certs init-ca`") from None
        except ValueError as exc:
            raise CertificateError(f"the CA in {directory} cannot be read: {exc}") from None
        if not isinstance(key, ec.EllipticCurvePrivateKey):
            raise CertificateError(f"{directory / CA_KEY} is not an EC private key")
        authority = cls.__new__(cls)
        authority._key, authority._cert = key, cert
        return authority

    def save(self, directory: Path) -> None:
        directory.mkdir(parents=True, exist_ok=True)
        (directory / CA_CERT).write_bytes(self.cert_pem)
        write_private(directory / CA_KEY, _key_pem(self._key))

    @property
    def name(self) -> str:
        return str(self._cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value)

    @property
    def cert_pem(self) -> bytes:
        return self._cert.public_bytes(serialization.Encoding.PEM)

    def issue(
        self, common_name: str, dns_names: tuple[str, ...] = (), ips: tuple[str, ...] = (), days: float = 825
    ) -> Issued:
        """A certificate for common_name (the node name), valid as TLS server and client certificate."""
        key = ec.generate_private_key(ec.SECP256R1())
        not_before, not_after = _validity(days)
        builder = (
            x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)]))
            .issuer_name(self._cert.subject)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(not_before)
            .not_valid_after(not_after)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(
                x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH]),
                critical=False,
            )
        )
        names = _san(dns_names, ips)
        if names:
            builder = builder.add_extension(x509.SubjectAlternativeName(names), critical=False)
        cert = builder.sign(self._key, hashes.SHA256())
        return Issued(cert=cert.public_bytes(serialization.Encoding.PEM), key=_key_pem(key))

    def issue_node(
        self, name: str, out_dir: Path, dns_names: tuple[str, ...] = (), ips: tuple[str, ...] = (), days: float = 825
    ) -> Path:
        """Write ca.crt, node.crt and node.key for a node into out_dir (a node's `certs/` directory).

        The node name is always a DNS SAN too: TLS checks SANs, not the CN, and peers verify a node
        under its name (gRPC's ssl_target_name_override) whatever address they dial.
        """
        issued = self.issue(name, tuple(dict.fromkeys((name, *dns_names))), ips, days)
        out_dir.mkdir(parents=True, exist_ok=True)
        (out_dir / CA_CERT).write_bytes(self.cert_pem)
        (out_dir / NODE_CERT).write_bytes(issued.cert)
        write_private(out_dir / NODE_KEY, issued.key)
        return out_dir
