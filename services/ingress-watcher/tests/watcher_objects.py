"""Small builders of Kubernetes objects for the unit tests."""

from __future__ import annotations

from typing import Any

from ingress_watcher.domain.objects import summarize_secret
from ingress_watcher.domain.store import ObjectStore

CLASS = {
    "kind": "IngressClass",
    "metadata": {
        "name": "ours",
        "annotations": {"ingressclass.kubernetes.io/is-default-class": "true"},
    },
    "spec": {"controller": "ingress-domain.io/ingress-controller"},
}
ZONE = {
    "kind": "Zone",
    "metadata": {"name": "example", "creationTimestamp": "2026-01-01T00:00:00Z"},
    "spec": {"zone": "example.com", "namespaces": ["team-*"]},
}


def domain(
    ns: str,
    host: str,
    *,
    name: str | None = None,
    grantee: str | None = None,
    created: str = "2026-01-02T00:00:00Z",
) -> dict[str, Any]:
    body: dict[str, Any] = {"host": host}
    if grantee:
        body["namespace"] = grantee
    return {
        "kind": "Domain",
        "metadata": {
            "name": name or host.replace(".", "-"),
            "namespace": ns,
            "creationTimestamp": created,
        },
        "spec": body,
    }


def path_claim(
    ns: str,
    host: str,
    path: str,
    grantee: str,
    *,
    name: str = "pc",
    created: str = "2026-01-02T00:00:00Z",
) -> dict[str, Any]:
    return {
        "kind": "PathClaim",
        "metadata": {"name": name, "namespace": ns, "creationTimestamp": created},
        "spec": {"host": host, "path": path, "namespace": grantee},
    }


def service(
    ns: str, name: str, port: int = 80, port_name: str | None = "http", **extra: Any
) -> dict[str, Any]:
    entry: dict[str, Any] = {"port": port, "protocol": "TCP"}
    if port_name:
        entry["name"] = port_name
    return {
        "kind": "Service",
        "metadata": {"name": name, "namespace": ns},
        "spec": {"ports": [entry], **extra},
    }


def endpoint_slice(
    ns: str,
    svc: str,
    endpoints: list[Any],
    *,
    name: str | None = None,
    port: int = 8080,
    address_type: str = "IPv4",
    **metadata: Any,
) -> dict[str, Any]:
    """An EndpointSlice of Service ``svc`` with the given endpoints (as the API sends them)."""
    return {
        "kind": "EndpointSlice",
        "addressType": address_type,
        "metadata": {
            "name": name or f"{svc}-x",
            "namespace": ns,
            "labels": {"kubernetes.io/service-name": svc},
            **metadata,
        },
        "ports": [{"name": "http", "port": port, "protocol": "TCP"}],
        "endpoints": endpoints,
    }


def ingress(
    ns: str,
    name: str,
    host: str,
    path: str = "/",
    *,
    service_name: str = "web",
    port: Any = None,
    path_type: str = "Prefix",
    created: str = "2026-01-03T00:00:00Z",
    annotations: dict[str, str] | None = None,
    tls: list[Any] | None = None,
    class_name: str | None = None,
) -> dict[str, Any]:
    body: dict[str, Any] = {
        "rules": [
            {
                "host": host,
                "http": {
                    "paths": [
                        {
                            "path": path,
                            "pathType": path_type,
                            "backend": {
                                "service": {"name": service_name, "port": port or {"number": 80}}
                            },
                        }
                    ]
                },
            }
        ],
    }
    if tls is not None:
        body["tls"] = tls
    if class_name is not None:
        body["ingressClassName"] = class_name
    return {
        "kind": "Ingress",
        "metadata": {
            "name": name,
            "namespace": ns,
            "creationTimestamp": created,
            "annotations": annotations or {},
            "generation": 3,
        },
        "spec": body,
    }


def tls_secret(ns: str, name: str, crt: str = "CERT", key: str = "KEY") -> dict[str, Any]:
    return summarize_secret(
        {
            "kind": "Secret",
            "type": "kubernetes.io/tls",
            "metadata": {"name": name, "namespace": ns},
            "stringData": {"tls.crt": crt, "tls.key": key},
        }
    )


def store(*objects: dict[str, Any]) -> ObjectStore:
    s = ObjectStore()
    for obj in objects:
        s.upsert(obj["kind"], obj)
    return s


def base(*objects: dict[str, Any]) -> ObjectStore:
    """Our class, the zone example.com open to team-*, and team-a owning shop.example.com."""
    return store(
        CLASS,
        ZONE,
        domain("team-a", "shop.example.com"),
        service("team-a", "web"),
        service("team-b", "web"),
        *objects,
    )
