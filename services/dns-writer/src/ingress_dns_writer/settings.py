"""dns-writer settings, from ``DNS_WRITER_*`` environment variables."""

from __future__ import annotations

from pathlib import Path

from ingress_runtime import ServiceSettings
from pydantic import Field
from pydantic_settings import SettingsConfigDict


class DnsWriterSettings(ServiceSettings):
    model_config = SettingsConfigDict(env_prefix="DNS_WRITER_", extra="ignore", frozen=True)

    owner_id: str | None = Field(
        default=None,
        pattern=r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$",
        description="This cluster's id in the TXT ownership registry (default: the cluster name)",
    )
    server: str | None = Field(default=None, description="IP address of the primary DNS server")
    port: int = Field(default=53, ge=1, le=65535)
    zones: str = Field(default="", description="Comma-separated managed zones")
    tsig_key_name: str | None = None
    tsig_algorithm: str = "hmac-sha256"
    tsig_secret_file: Path | None = Field(
        default=None, description="File holding the base64 TSIG secret (never an env value)"
    )
    default_ttl_seconds: int = Field(default=30, ge=1, le=86400)
    hold_down_seconds: float = Field(default=30.0, ge=0)
    verify_interval_seconds: float = Field(default=30.0, gt=0)
    upsert_only: bool = False
    registry_prefix: str = Field(default="_ingress-owner", pattern=r"^_?[a-z0-9-]{1,40}$")
    batch_size: int = Field(default=200, ge=1, le=2000)
    read_by_transfer_above: int = Field(
        default=64, ge=1, description="Read a zone by AXFR when more names than this changed"
    )
    timeout_seconds: float = Field(default=2.0, gt=0)
    max_backoff_seconds: float = Field(default=30.0, gt=0)

    @property
    def owner(self) -> str:
        return self.owner_id or self.cluster

    def zone_list(self) -> list[str]:
        return sorted({z.strip().lower().rstrip(".") for z in self.zones.split(",") if z.strip()})

    def missing(self) -> list[str]:
        """What must be configured before anything is written, by variable name."""
        missing = []
        if not self.server:
            missing.append("DNS_WRITER_SERVER")
        if not self.zone_list():
            missing.append("DNS_WRITER_ZONES")
        if not self.tsig_key_name:
            missing.append("DNS_WRITER_TSIG_KEY_NAME")
        if self.tsig_secret_file is None:
            missing.append("DNS_WRITER_TSIG_SECRET_FILE")
        elif not self.tsig_secret_file.is_file():
            missing.append(f"DNS_WRITER_TSIG_SECRET_FILE ({self.tsig_secret_file} not readable)")
        return missing
