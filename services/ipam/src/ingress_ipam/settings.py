"""ipam's configuration (environment variables prefixed IPAM_)."""

from __future__ import annotations

import ipaddress
from typing import Literal

from ingress_runtime import ServiceSettings
from pydantic import Field, field_validator
from pydantic_settings import SettingsConfigDict


class IpamSettings(ServiceSettings):
    model_config = SettingsConfigDict(env_prefix="IPAM_", extra="ignore", frozen=True)

    kv_bucket: str | None = Field(
        default=None,
        pattern=r"^[A-Za-z0-9_-]{1,64}$",
        description="KV bucket of the allocations; default '<subject root>-ipam'",
    )
    cooldown_seconds: float = Field(
        default=600.0,
        ge=0,
        description="How long a released VIP is held before reuse (longer than any DNS TTL)",
    )
    default_pool_name: str = Field(
        default="local-default", pattern=r"^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$"
    )
    default_pool_cidrs: list[str] = Field(
        default_factory=lambda: ["198.51.100.0/24"],
        description="Pool used while no VipPool exists (JSON list); [] disables it",
    )
    domain_ip_family: Literal["IPv4", "IPv6"] = "IPv4"
    sweep_interval_seconds: float = Field(default=15.0, gt=0)
    allocations_in_flight: int = Field(
        default=16,
        ge=1,
        le=256,
        description="Owners allocated at once (each waits on a compare-and-set, then a publish)",
    )

    @field_validator("default_pool_cidrs")
    @classmethod
    def _cidrs(cls, value: list[str]) -> list[str]:
        out = []
        for cidr in value:
            try:
                out.append(str(ipaddress.ip_network(cidr, strict=True)))
            except ValueError as exc:
                raise ValueError(f"{cidr!r} is not a network in CIDR form: {exc}") from exc
        return out

    def bucket(self) -> str:
        return self.kv_bucket or f"{self.subject_root}-ipam"
