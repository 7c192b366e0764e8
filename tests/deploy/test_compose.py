"""compose.yaml stays consistent with the services and with deploy/: every service is there,
started by its own command, on the one image, configured only with settings it really has."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from .test_manifests import BUILT, SERVICES, _settings_fields

pytestmark = pytest.mark.unit

ROOT = Path(__file__).resolve().parents[2]


def _compose() -> dict[str, dict[str, object]]:
    services: dict[str, dict[str, object]] = yaml.safe_load((ROOT / "compose.yaml").read_text())[
        "services"
    ]
    return services


def test_every_service_runs_on_the_one_image_with_nats() -> None:
    compose = _compose()
    nats = compose["nats"]["command"]
    assert isinstance(nats, list) and "-js" in nats
    for service in SERVICES:
        entry = compose[service]
        assert entry["image"] == "ingress-domain/services:0.1.0"
        command = entry["command"]
        assert isinstance(command, list)
        assert any(
            f"ingress-{service.removeprefix('ingress-')}" in part or service in part
            for part in command
        ), command


@pytest.mark.parametrize("service", BUILT)
def test_compose_sets_only_real_settings(service: str) -> None:
    environment = _compose()[service].get("environment", {})
    assert isinstance(environment, dict)
    unknown = set(environment) - _settings_fields(service)
    assert not unknown, f"{service}: {sorted(unknown)}"


def test_the_envoy_bootstrap_points_at_l7_config_and_exposes_no_admin() -> None:
    bootstrap = yaml.safe_load((ROOT / "compose" / "envoy.yaml").read_text())
    assert "admin" not in bootstrap
    [cluster] = bootstrap["static_resources"]["clusters"]
    address = cluster["load_assignment"]["endpoints"][0]["lb_endpoints"][0]["endpoint"]["address"]
    assert address["socket_address"] == {"address": "l7-config", "port_value": 18000}
