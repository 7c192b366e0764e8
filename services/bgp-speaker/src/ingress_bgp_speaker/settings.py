"""bgp-speaker settings (environment variables prefixed ``BGP_SPEAKER_``)."""

from __future__ import annotations

import socket
from typing import Literal

from ingress_runtime import ServiceSettings
from pydantic import Field
from pydantic_settings import SettingsConfigDict


class BgpSpeakerSettings(ServiceSettings):
    model_config = SettingsConfigDict(env_prefix="BGP_SPEAKER_", extra="ignore", frozen=True)

    node: str = Field(
        default_factory=lambda: socket.gethostname().lower(),
        pattern=r"^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$",
        description="This L4 node's Kubernetes name (the downward API's spec.nodeName)",
    )
    bird_socket: str = Field(default="/run/bird/bird.ctl", description="BIRD's control socket")
    bird_config: str = Field(
        default="/run/bird/bird.conf",
        description="The config file BIRD was started with (-c); this service owns it",
    )
    router_id: str | None = Field(
        default=None, description="BGP router id (an IPv4 address); BIRD picks one if unset"
    )
    secrets_dir: str = Field(
        default="/var/run/secrets/ingress-domain/bgp",
        description="Mounted Secrets: <dir>/<namespace>/<name>/<key> holds an MD5 password",
    )
    hold_down_seconds: float = Field(
        default=10.0, ge=0, description="Wait after a withdrawal before announcing again"
    )
    confirm_timeout_seconds: int = Field(
        default=30, ge=5, le=3600, description="BIRD undoes a configure not confirmed in time"
    )
    resync_seconds: float = Field(
        default=30.0,
        gt=0,
        description="Read back every route from BIRD this often (between, a pass asks BIRD "
        "for its count of routes and for the routes that changed)",
    )
    session_poll_seconds: float = Field(
        default=2.0, gt=0, description="Poll BGP session states this often"
    )
    session_report_seconds: float = Field(
        default=60.0,
        gt=0,
        description="Re-emit every session.status this often (level-triggered state; a node "
        "that stops reporting is visible), and at most this often for moves between the "
        "connecting states (Connect, Active, ...) of a session that does not come up",
    )
    on_shutdown: Literal["withdraw", "keep"] = Field(
        default="withdraw",
        description="withdraw: remove every route before exiting; keep: leave BIRD announcing "
        "(a restart of this service alone then does not move traffic)",
    )
