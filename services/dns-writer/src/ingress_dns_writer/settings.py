"""dns-writer settings, from ``DNS_WRITER_*`` environment variables."""

from __future__ import annotations

from pathlib import Path

from ingress_runtime import ServiceSettings
from pydantic import BaseModel, ConfigDict, Field
from pydantic_settings import SettingsConfigDict

REGION_PATTERN = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$"


class ProviderSettings(BaseModel):
    """One DNS server to publish to (an entry of ``DNS_WRITER_PROVIDERS``, a JSON list)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    server: str = Field(description="IP address of the server taking RFC 2136 updates and AXFR")
    port: int = Field(default=53, ge=1, le=65535)
    region: str | None = Field(
        default=None,
        pattern=REGION_PATTERN,
        description="The region this server answers for; none = it carries every region's VIPs",
    )
    name: str | None = Field(default=None, description="Label in logs and dns.published")
    tsig_key_name: str
    tsig_algorithm: str = "hmac-sha256"
    tsig_secret_file: Path


class DnsWriterSettings(ServiceSettings):
    model_config = SettingsConfigDict(env_prefix="DNS_WRITER_", extra="ignore", frozen=True)

    owner_id: str | None = Field(
        default=None,
        pattern=r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$",
        description="This cluster's id in the TXT ownership registry (default: the cluster name)",
    )
    region: str | None = Field(
        default=None,
        pattern=REGION_PATTERN,
        description="Region (edge site) of this cluster's VIPs (default: the cluster name)",
    )
    pool_regions: dict[str, str] = Field(
        default_factory=dict,
        description="JSON {pool: region} for pools whose VIPs live in another region",
    )
    providers: list[ProviderSettings] = Field(
        default_factory=list,
        description="JSON list of providers, each with its region; replaces SERVER and TSIG_*",
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
    announce_wait_seconds: float = Field(
        default=10.0,
        ge=0,
        le=3600,
        description="A new VIP enters DNS once a node announces its route to an established "
        "BGP peer, or after this long without (no BGP); 0 publishes at once",
    )
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

    @property
    def home_region(self) -> str:
        return self.region or self.cluster

    def provider_list(self) -> list[ProviderSettings]:
        """Every configured provider: ``PROVIDERS``, or the single ``SERVER`` / ``TSIG_*`` one."""
        if self.providers:
            return list(self.providers)
        if self.server is None or self.tsig_key_name is None or self.tsig_secret_file is None:
            return []
        return [
            ProviderSettings(
                server=self.server,
                port=self.port,
                tsig_key_name=self.tsig_key_name,
                tsig_algorithm=self.tsig_algorithm,
                tsig_secret_file=self.tsig_secret_file,
            )
        ]

    def zone_list(self) -> list[str]:
        return sorted({z.strip().lower().rstrip(".") for z in self.zones.split(",") if z.strip()})

    def missing(self) -> list[str]:
        """What must be configured before anything is written, by variable name."""
        missing = []
        if self.providers:
            if not self.zone_list():
                missing.append("DNS_WRITER_ZONES")
            for i, entry in enumerate(self.providers):
                if not entry.tsig_secret_file.is_file():
                    missing.append(
                        f"DNS_WRITER_PROVIDERS[{i}].tsig_secret_file "
                        f"({entry.tsig_secret_file} not readable)"
                    )
            return missing
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
