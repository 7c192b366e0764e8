"""Builders shared by the l7-config tests (events, an in-process app on a real nats-server)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import structlog
from ingress_events import catalogue as c
from ingress_events.bus import Bus
from ingress_l7_config.settings import L7ConfigSettings
from ingress_runtime import Readiness, ServiceContext

NS = "shop"
_gen = [1000]


def gen() -> int:
    _gen[0] += 1
    return _gen[0]


def ref(kind: str = "Ingress", name: str = "web") -> c.ObjectRef:
    return c.ObjectRef(kind=kind, namespace=NS, name=name)


def wb(service: str, weight: int = 100, port: int = 80) -> c.WeightedBackend:
    return c.WeightedBackend(
        backend=c.BackendRef(namespace=NS, service=service, port=port), weight=weight
    )


def route(path: str, path_type: str, *services: str, **extra: object) -> c.Route:
    return c.Route.model_validate(
        {
            "path": path,
            "path_type": path_type,
            "backends": [wb(s) for s in services],
            "source": ref(),
            **extra,
        }
    )


def domain(host: str, routes: list[c.Route], **extra: object) -> c.DomainDesired:
    return c.DomainDesired.model_validate(
        {
            "generation": gen(),
            "host": host,
            "owner_namespace": NS,
            "ingress_class": "ingress-domain",
            "sources": [ref()],
            "routes": routes,
            **extra,
        }
    )


def app_settings(
    http: int, https: int, secrets: Path, instance: str, **extra: Any
) -> L7ConfigSettings:
    """The settings of an app under test: on loopback, its listeners on ``http`` / ``https``
    (redirects to ``https``), a short debounce."""
    return L7ConfigSettings(
        listen_address="127.0.0.1",
        http_port=http,
        https_port=https,
        https_redirect_port=https,
        secrets_dir=secrets,
        debounce_seconds=0.005,
        instance=instance,
        **extra,
    )


def tls(secret: str, content_hash: str) -> c.TlsConfig:
    return c.TlsConfig(secret=ref("Secret", secret), content_hash=content_hash)


def endpoints(service: str, *ports: int, ready: bool = True) -> c.BackendEndpoints:
    return c.BackendEndpoints(
        generation=gen(),
        namespace=NS,
        service=service,
        port=80,
        endpoints=[c.Endpoint(address="127.0.0.1", port=p, ready=ready) for p in ports],
    )


def context(bus: Bus, settings: L7ConfigSettings) -> ServiceContext[L7ConfigSettings]:
    return ServiceContext(
        name="l7-config",
        settings=settings,
        bus=bus,
        readiness=Readiness(),
        log=structlog.stdlib.get_logger("l7-config"),
    )
