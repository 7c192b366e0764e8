"""Where TLS key material comes from: never the bus, only a Secret store.

The local default is a directory laid out like mounted Secrets: ``<root>/<namespace>/<name>/``
holding ``tls.crt`` and ``tls.key``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Protocol

from ..domain.model import SecretLookup, SecretMaterial, SecretMissing

MAX_SECRET_BYTES = 1024 * 1024


class SecretStore(Protocol):
    def read(self, namespace: str, name: str) -> SecretLookup: ...


class DirectorySecretStore:
    def __init__(self, root: Path) -> None:
        self._root = root

    def read(self, namespace: str, name: str) -> SecretLookup:
        # Both parts are Kubernetes names (no '/', no '..'), checked by the event schema.
        folder = self._root / namespace / name
        if not folder.is_dir():
            return SecretMissing("SecretNotFound", f"Secret {namespace}/{name} does not exist")
        crt, key = folder / "tls.crt", folder / "tls.key"
        if not crt.is_file() or not key.is_file():
            return SecretMissing(
                "SecretNotTls",
                f"Secret {namespace}/{name} is not a TLS Secret (it needs tls.crt and tls.key)",
            )
        if crt.stat().st_size > MAX_SECRET_BYTES or key.stat().st_size > MAX_SECRET_BYTES:
            return SecretMissing("SecretTooLarge", f"Secret {namespace}/{name} exceeds 1 MiB")
        return SecretMaterial(crt.read_bytes(), key.read_bytes())


class MemorySecretStore:
    """In-memory fake: Secrets as a dict of ``namespace/name`` -> {key: bytes}."""

    def __init__(self) -> None:
        self.secrets: dict[str, dict[str, bytes]] = {}

    def read(self, namespace: str, name: str) -> SecretLookup:
        data = self.secrets.get(f"{namespace}/{name}")
        if data is None:
            return SecretMissing("SecretNotFound", f"Secret {namespace}/{name} does not exist")
        if "tls.crt" not in data or "tls.key" not in data:
            return SecretMissing(
                "SecretNotTls",
                f"Secret {namespace}/{name} is not a TLS Secret (it needs tls.crt and tls.key)",
            )
        return SecretMaterial(data["tls.crt"], data["tls.key"])
