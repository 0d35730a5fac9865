"""A node's identity: an Ed25519 key kept in its data directory; node_id = hex SHA-256 of the public key.

The key is made on first start and read on every later one, so a restarted node comes back
under the same node_id. It never leaves the node; peers learn the public key from its card.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from node.security.certs import write_private

IDENTITY_FILE = "identity.key"


class IdentityError(ValueError):
    """An identity key file that exists but cannot be used; the message names it."""


def node_id_of(public_key: bytes) -> str:
    """The node_id for a raw 32-byte Ed25519 public key."""
    return hashlib.sha256(public_key).hexdigest()


def verify_signature(public_key: bytes, data: bytes, signature: bytes) -> bool:
    """Whether signature is public_key's Ed25519 signature of data."""
    try:
        Ed25519PublicKey.from_public_bytes(public_key).verify(signature, data)
    except (InvalidSignature, ValueError):
        return False
    return True


@dataclass(frozen=True)
class NodeIdentity:
    private_key: Ed25519PrivateKey

    @property
    def public_key(self) -> bytes:
        """The raw 32-byte public key (what goes into NodeCards)."""
        return self.private_key.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)

    @property
    def node_id(self) -> str:
        return node_id_of(self.public_key)

    def sign(self, data: bytes) -> bytes:
        return self.private_key.sign(data)

    @classmethod
    def load_or_create(cls, data_dir: Path) -> NodeIdentity:
        """The identity in data_dir, made (and saved 0600) on first use."""
        path = data_dir / IDENTITY_FILE
        if path.exists():
            try:
                key = serialization.load_pem_private_key(path.read_bytes(), password=None)
            except ValueError as exc:
                raise IdentityError(
                    f"{path} is not a readable private key ({exc}); move it aside to make a new identity"
                ) from None
            if not isinstance(key, Ed25519PrivateKey):
                raise IdentityError(f"{path} holds a {type(key).__name__}, not an Ed25519 key")
            return cls(key)
        key = Ed25519PrivateKey.generate()
        pem = key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
        staging = path.with_name(f".{IDENTITY_FILE}.tmp")
        write_private(staging, pem)
        staging.rename(path)  # atomic: a crash never leaves half a key behind
        return cls(key)
