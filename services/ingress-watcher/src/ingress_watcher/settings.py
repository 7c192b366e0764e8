"""Configuration of ingress-watcher, from INGRESS_WATCHER_* environment variables."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from ingress_runtime import ServiceSettings
from pydantic import Field
from pydantic_settings import SettingsConfigDict

from .domain.normalize import Policy


class WatcherSettings(ServiceSettings):
    model_config = SettingsConfigDict(env_prefix="INGRESS_WATCHER_", extra="ignore", frozen=True)

    source: Literal["manifests", "kubernetes"] = Field(
        default="manifests",
        description="manifests: a directory of YAML (the local default); kubernetes: the API",
    )
    manifests_dir: Path = Field(default=Path("examples"), description="Read by source=manifests")
    poll_interval_seconds: float = Field(default=1.0, gt=0, le=60)
    resync_seconds: float = Field(
        default=300.0, gt=0, description="Relist and compare with the bus; repairs a lost bus"
    )
    debounce_seconds: float = Field(
        default=0.002, ge=0, le=5, description="Batch changes arriving together into one plan"
    )
    controller: str = "ingress-domain.io/ingress-controller"
    lb_class: str = "ingress-domain.io/lb"
    lb_without_class: bool = True
    system_namespace: str = "ingress-domain"
    kube_api_url: str | None = Field(
        default=None, description="API server URL; none = in-cluster config, then kubeconfig"
    )
    kube_token_file: Path | None = None
    kube_ca_file: Path | None = None
    watch_timeout_seconds: int = Field(
        default=300, ge=1, description="Server-side timeoutSeconds of each watch"
    )
    read_timeout_seconds: float = Field(
        default=90.0,
        gt=0,
        description="A watch silent this long (no event, no bookmark) is treated as broken",
    )
    api_timeout_seconds: float = Field(
        default=10.0, gt=0, le=300, description="Status patches and Events: give up after this long"
    )
    list_page_size: int = Field(default=500, ge=1, le=10000)
    write_status: bool = Field(
        default=True, description="Write status and Events (the leader only, with kubernetes)"
    )
    status_dir: Path | None = Field(
        default=None,
        description="source=manifests: write each object's status to <dir>/<Kind>/<ns>/<name>.json",
    )
    status_debounce_seconds: float = Field(default=0.02, ge=0, le=5)
    leader_election: bool = Field(
        default=True, description="source=kubernetes: only the holder of the Lease writes status"
    )
    lease_name: str = "ingress-watcher"
    lease_namespace: str | None = Field(default=None, description="Default: system_namespace")
    lease_duration_seconds: int = Field(default=15, ge=1, le=3600)
    lease_renew_seconds: float = Field(default=5.0, gt=0, le=600)
    identity: str | None = Field(
        default=None, description="This replica in the Lease; default: hostname and pid"
    )

    def policy(self) -> Policy:
        return Policy(
            controller=self.controller,
            lb_class=self.lb_class,
            lb_without_class=self.lb_without_class,
            system_namespace=self.system_namespace,
        )
