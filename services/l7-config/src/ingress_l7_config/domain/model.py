"""Values the domain code passes around."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Problem:
    """Why a domain cannot be configured: a CamelCase reason and a message for humans."""

    reason: str
    message: str


@dataclass(frozen=True)
class SecretMaterial:
    """The PEM contents of a kubernetes.io/tls Secret (tls.crt and tls.key)."""

    cert_pem: bytes
    key_pem: bytes


@dataclass(frozen=True)
class SecretMissing:
    """A Secret that could not be used at all, before its contents are even looked at."""

    reason: str  # SecretNotFound | SecretNotTls
    message: str


SecretLookup = SecretMaterial | SecretMissing
