"""l7-config settings: environment variables prefixed ``L7_CONFIG_``."""

from __future__ import annotations

from pathlib import Path

from ingress_runtime import ServiceSettings
from pydantic import Field
from pydantic_settings import SettingsConfigDict


class L7ConfigSettings(ServiceSettings):
    model_config = SettingsConfigDict(env_prefix="L7_CONFIG_", extra="ignore", frozen=True)

    xds_host: str = Field(
        default="127.0.0.1", description="Address the ADS gRPC server binds (the Envoys dial it)"
    )
    xds_port: int = Field(default=18000, ge=0, le=65535, description="0 picks a free port")
    listen_address: str = Field(
        default="0.0.0.0", description="Address the Envoys' HTTP and HTTPS listeners bind"
    )
    http_port: int = Field(default=8080, ge=1, le=65535)
    https_port: int = Field(default=8443, ge=1, le=65535)
    https_redirect_port: int = Field(
        default=443,
        ge=1,
        le=65535,
        description="Port clients reach HTTPS on (the VIP's port), used in HTTP -> HTTPS redirects",
    )
    secrets_dir: Path = Field(
        default=Path("secrets"),
        description="Local key material: <dir>/<namespace>/<name>/tls.crt and tls.key",
    )
    min_envoys: int = Field(
        default=1,
        ge=0,
        description="l7.applied needs at least this many connected Envoys to have ACKed",
    )
    debounce_seconds: float = Field(
        default=0.02, ge=0, le=5, description="Changes arriving within this window build once"
    )
    access_log: bool = True
