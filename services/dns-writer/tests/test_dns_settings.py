"""Settings: several providers with a region each, from the environment as operators write it."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from ingress_dns_writer.settings import DnsWriterSettings

pytestmark = pytest.mark.unit


def test_providers_with_regions_from_environment(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    secret = tmp_path / "secret"
    secret.write_text("c2VjcmV0\n")
    entries = [
        {"name": "edge-eu", "region": "eu", "server": "192.0.2.53", "tsig_key_name": "k.",
         "tsig_secret_file": str(secret)},
        {"server": "192.0.2.54", "port": 5353, "region": "us", "tsig_key_name": "k.",
         "tsig_secret_file": str(tmp_path / "missing")},
    ]  # fmt: skip
    monkeypatch.setenv("DNS_WRITER_PROVIDERS", json.dumps(entries))
    monkeypatch.setenv("DNS_WRITER_POOL_REGIONS", '{"edge-us-pool": "us"}')
    monkeypatch.setenv("DNS_WRITER_ZONES", "example.com")
    monkeypatch.setenv("DNS_WRITER_CLUSTER", "cluster-eu")
    settings = DnsWriterSettings()
    assert [(p.name, p.region, p.port) for p in settings.provider_list()] == [
        ("edge-eu", "eu", 53),
        (None, "us", 5353),
    ]
    assert settings.home_region == "cluster-eu"
    assert settings.pool_regions == {"edge-us-pool": "us"}
    assert settings.missing() == [
        f"DNS_WRITER_PROVIDERS[1].tsig_secret_file ({tmp_path / 'missing'} not readable)"
    ]


def test_single_server_settings_are_one_provider_without_region(tmp_path: Path) -> None:
    secret = tmp_path / "secret"
    secret.write_text("c2VjcmV0\n")
    settings = DnsWriterSettings(
        server="192.0.2.53",
        zones="example.com",
        tsig_key_name="k.",
        tsig_secret_file=secret,
        region="eu",
    )
    [provider] = settings.provider_list()
    assert provider.region is None and provider.server == "192.0.2.53"
    assert settings.home_region == "eu" and settings.missing() == []
