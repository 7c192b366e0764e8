"""l7-config settings: environment variables prefixed ``L7_CONFIG_``."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from ingress_runtime import ServiceSettings
from pydantic import Field
from pydantic_settings import SettingsConfigDict


class L7ConfigSettings(ServiceSettings):
    model_config = SettingsConfigDict(env_prefix="L7_CONFIG_", extra="ignore", frozen=True)

    mode: Literal["ads", "file"] = Field(
        default="ads",
        description="ads: serve Envoys over gRPC; file: write path-based xDS files for Envoys "
        "that cannot reach a control plane",
    )
    files_dir: Path = Field(
        default=Path("xds-files"), description="File mode: where the file set is written"
    )
    files_envoy_root: str | None = Field(
        default=None,
        description="File mode: the file set's root as Envoy sees it (its mount point); "
        "default: files_dir made absolute",
    )
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
    secrets_source: Literal["directory", "kubernetes"] = Field(
        default="directory",
        description="Where TLS key material comes from: secrets_dir, or the Kubernetes API "
        "(an informer over Secrets; needs get/list/watch on secrets)",
    )
    kube_api_url: str | None = Field(
        default=None, description="Kubernetes API URL; none = in-cluster or kubeconfig"
    )
    kube_token_file: Path | None = None
    kube_ca_file: Path | None = None
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
        default=0.02,
        ge=0,
        le=5,
        description="At most one build per this window while changes keep coming; an isolated "
        "change builds at once (after a 2 ms gather)",
    )
    access_log: bool = True
    local_locality_weight: int = Field(
        default=100,
        ge=1,
        le=10_000,
        description="Locality weight per ready local endpoint in clusters of a domain with "
        "remote_backends; a remote's weight at the same priority is measured against it",
    )
    http_scopes: int = Field(
        default=64,
        ge=0,
        le=4096,
        description="Plain-HTTP route tables (scoped RDS): a change re-sends one table of about "
        "1/http_scopes of the domains; 0: one table of all of them (file mode always has one)",
    )
