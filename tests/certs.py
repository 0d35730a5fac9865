"""Throwaway X.509 material for mTLS tests: the product's own CA code (node.security.certs)."""

from __future__ import annotations

from node.security.certs import CertificateAuthority, Issued

__all__ = ["CertificateAuthority", "Issued"]
