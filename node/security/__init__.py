"""Security: mTLS credentials (here), the network CA and node certificates (`certs`), and each
node's Ed25519 identity (`identity`). Envelope signing joins with the rest of the peer network.
"""

from __future__ import annotations

from pathlib import Path

import grpc

from node.config import ConfigError, Settings


def _read_pem(path: Path, what: str) -> bytes:
    try:
        return path.read_bytes()
    except FileNotFoundError:
        raise ConfigError(
            f"{what} {path} does not exist; point security.{what} at a PEM file, or set "
            "security.insecure: true to run without TLS on a loopback address"
        ) from None
    except OSError as exc:
        raise ConfigError(f"{what} {path} cannot be read: {exc.strerror}") from None


def tls_material(settings: Settings) -> tuple[bytes, bytes, bytes]:
    """(ca_cert, cert, key) PEM bytes; ConfigError naming the file when one is missing."""
    ca_path, cert_path, key_path = settings.security.tls_files(settings.node.data_dir)
    return _read_pem(ca_path, "ca_cert"), _read_pem(cert_path, "cert"), _read_pem(key_path, "key")


def server_credentials(settings: Settings) -> grpc.ServerCredentials | None:
    """mTLS server credentials (client certificates required), or None for plaintext."""
    if settings.security.insecure:
        return None
    ca, cert, key = tls_material(settings)
    return grpc.ssl_server_credentials([(key, cert)], root_certificates=ca, require_client_auth=True)


def channel_credentials(ca: bytes, cert: bytes, key: bytes) -> grpc.ChannelCredentials:
    """mTLS client credentials: verify the server against ``ca`` and present ``cert``."""
    return grpc.ssl_channel_credentials(root_certificates=ca, private_key=key, certificate_chain=cert)
