"""Configuration of one L4 node's programmer (environment prefix ``L4_PROGRAMMER_``)."""

from __future__ import annotations

import re
import socket
from typing import Literal

from ingress_runtime import ServiceSettings
from pydantic import Field, field_validator
from pydantic_settings import SettingsConfigDict


def _node_name() -> str:
    # Kubernetes node names are DNS subdomains; a bare hostname usually is one already.
    name = re.sub(r"[^a-z0-9.-]", "-", socket.gethostname().lower()).strip("-.")
    return name or "node"


class L4ProgrammerSettings(ServiceSettings):
    model_config = SettingsConfigDict(env_prefix="L4_PROGRAMMER_", extra="ignore", frozen=True)

    node_name: str = Field(
        default_factory=_node_name,
        pattern=r"^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$",
        max_length=253,
        description="This node (the DaemonSet sets it from spec.nodeName)",
    )
    role: Literal["l4", "l7"] = Field(
        default="l4",
        description="l4: serve VIPs on this node (IPVS or nftables); l7: in an L7 (Envoy) pod, "
        "bind the ingress-domain VIPs on tunl0 to take IPVS's IP-in-IP (docs/l4-programmer.md)",
    )
    dataplane: Literal["ipvs", "nftables", "auto"] = Field(
        default="auto", description="auto: IPVS when the ip_vs module loads, else nftables"
    )
    scheduler: str = Field(
        default="mh",
        pattern=r"^[a-z]{1,16}$",
        description="IPVS scheduler (mh = Maglev hashing, wlc, rr...) or nftables numgen | jhash",
    )
    pool_namespace: str = Field(default="ingress-domain", description="Namespace of the L7 pool")
    pool_service: str = Field(default="envoy", description="Service of the L7 (Envoy) pool")
    pool_ports: list[int] = Field(default=[80, 443], description="Ports of ingress-domain VIPs")
    weight: int = Field(default=1, ge=1, le=65535, description="Weight of a ready real server")
    vip_interface: str = Field(default="ingress-vip0", min_length=1, max_length=15)
    nft_table: str = Field(default="ingress_l4", pattern=r"^[a-z][a-z0-9_]{0,31}$")
    netns: str | None = Field(default=None, description="Network namespace to program (tests)")
    drain_timeout_seconds: float = Field(default=300.0, ge=0)
    resync_seconds: float = Field(default=30.0, gt=0, description="Read the kernel again")
    drain_poll_seconds: float = Field(default=2.0, gt=0)

    @field_validator("pool_ports")
    @classmethod
    def _ports(cls, value: list[int]) -> list[int]:
        bad = [p for p in value if not 1 <= p <= 65535]
        if bad:
            raise ValueError(f"not TCP/UDP ports: {bad}")
        return value
