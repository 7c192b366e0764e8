"""Configuration from environment variables, one prefix per service (``IPAM_NATS_URL``, ...)."""

from __future__ import annotations

import socket
from typing import Literal

from ingress_events.bus import BusSettings, StreamSettings
from ingress_events.subjects import Subjects
from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict


class ServiceSettings(BaseSettings):
    """Settings every service has. A service subclasses this and sets its own ``env_prefix``."""

    model_config = SettingsConfigDict(env_prefix="INGRESS_", extra="ignore", frozen=True)

    nats_url: str = Field(
        default="nats://127.0.0.1:4222", description="Comma-separated server URLs"
    )
    nats_credentials: str | None = Field(
        default=None, description="NATS .creds file of this service"
    )
    subject_root: str = "ingress"
    stream_replicas: int = Field(default=1, ge=1, le=5, description="3 in a cluster")
    stream_storage: Literal["file", "memory"] = "file"
    duplicate_window_seconds: float = Field(default=120.0, gt=0)
    cluster: str = Field(default="local", pattern=r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
    instance: str = Field(default_factory=socket.gethostname)
    admin_host: str = "127.0.0.1"
    admin_port: int = Field(default=0, ge=0, le=65535, description="0 picks a free port")
    log_level: Literal["debug", "info", "warning", "error"] = "info"
    log_format: Literal["json", "console"] = "json"
    otlp_endpoint: str | None = Field(
        default=None, description="OTLP/gRPC collector; none = no export"
    )
    shutdown_grace_seconds: float = Field(default=25.0, gt=0)

    def bus_settings(self, service: str) -> BusSettings:
        return BusSettings(
            servers=[u.strip() for u in self.nats_url.split(",") if u.strip()],
            source=f"//ingress-domain/{self.cluster}/{service}/{self.instance}",
            subjects=Subjects(self.subject_root),
            streams=StreamSettings(
                replicas=self.stream_replicas,
                storage=self.stream_storage,
                duplicate_window_seconds=self.duplicate_window_seconds,
            ),
            credentials_file=self.nats_credentials,
            connect_name=f"{service}@{self.instance}",
        )
