"""deploy/ validated offline: every manifest against the Kubernetes schemas, every overlay rendered
and validated, custom resources against their CRDs, and service settings against the services."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest

from .kustomize import build, load_documents

pytestmark = pytest.mark.unit

DEPLOY = Path(__file__).resolve().parents[2] / "deploy"
K8S_VERSION = "1.30.0"
OVERLAYS = sorted(p.parent for p in DEPLOY.glob("overlays/*/kustomization.yaml"))
SERVICES = ("ingress-watcher", "ipam", "l4-programmer", "l7-config", "dns-writer", "bgp-speaker")


def _manifest_files() -> list[Path]:
    return sorted(p for p in DEPLOY.rglob("*.yaml") if p.name != "kustomization.yaml")


def _validate(obj: dict[str, Any]) -> None:
    if obj["apiVersion"].startswith("ingress-domain.io/"):
        return  # checked against its CRD below
    kubernetes_validate.validate(obj, K8S_VERSION, strict=True)


@pytest.mark.parametrize("path", _manifest_files(), ids=lambda p: str(p.relative_to(DEPLOY)))
def test_every_manifest_is_valid_kubernetes(path: Path) -> None:
    documents = load_documents(path)
    assert documents, f"{path} holds no objects"
    for obj in documents:
        _validate(obj)


@pytest.mark.parametrize("overlay", OVERLAYS, ids=lambda p: p.name)
def test_every_overlay_renders_to_valid_objects_in_our_namespace(overlay: Path) -> None:
    objects = build(overlay)
    names = {(o["kind"], o["metadata"]["name"]) for o in objects}
    assert len(names) == len(objects), "duplicate objects"
    for obj in objects:
        _validate(obj)
        if obj["kind"] not in {
            "Namespace",
            "ClusterRole",
            "ClusterRoleBinding",
            "CustomResourceDefinition",
        }:
            assert obj["metadata"].get("namespace") == "ingress-domain", obj["metadata"]
    for service in SERVICES:
        assert any(
            o["metadata"]["name"] == service and o["kind"] in {"Deployment", "DaemonSet"}
            for o in objects
        ), service


def test_production_runs_three_of_everything_and_local_one() -> None:
    prod = {(o["kind"], o["metadata"]["name"]): o for o in build(DEPLOY / "overlays/production")}
    local = {(o["kind"], o["metadata"]["name"]): o for o in build(DEPLOY / "overlays/local")}
    assert prod[("StatefulSet", "nats")]["spec"]["replicas"] == 3
    assert prod[("Deployment", "ipam")]["spec"]["replicas"] == 3
    assert prod[("ConfigMap", "ipam-config")]["data"]["IPAM_STREAM_REPLICAS"] == "3"
    assert local[("StatefulSet", "nats")]["spec"]["replicas"] == 1
    assert local[("ConfigMap", "ipam-config")]["data"]["IPAM_STREAM_REPLICAS"] == "1"
    assert "cluster {" not in local[("ConfigMap", "nats-config")]["data"]["nats.conf"]


def test_only_the_watcher_and_l7_config_may_use_the_api_and_only_l7_config_reads_secrets() -> None:
    objects = build(DEPLOY / "overlays" / "production")
    bound = {
        s["name"]
        for o in objects
        if o["kind"] in {"RoleBinding", "ClusterRoleBinding"}
        for s in o["subjects"]
    }
    assert bound == {"ingress-watcher", "l7-config"}
    roles = {o["metadata"]["name"]: o for o in objects if o["kind"] in {"Role", "ClusterRole"}}
    readers = {
        name
        for name, role in roles.items()
        for rule in role["rules"]
        if "secrets" in rule.get("resources", [])
    }
    assert readers == {"ingress-domain-l7-config"}
    for obj in objects:
        if obj["kind"] in {"Deployment", "DaemonSet"} and obj["metadata"]["name"] in SERVICES:
            mounts_token = obj["spec"]["template"]["spec"].get("automountServiceAccountToken", True)
            assert mounts_token == (obj["metadata"]["name"] in bound), obj["metadata"]["name"]


def test_each_service_gets_its_own_nats_user() -> None:
    objects = build(DEPLOY / "overlays" / "production")
    nats_config = next(o for o in objects if o["metadata"]["name"] == "nats-config")
    auth = nats_config["data"]["authorization.conf"]
    for service in SERVICES:
        workload = next(
            o
            for o in objects
            if o["metadata"]["name"] == service and o["kind"] in {"Deployment", "DaemonSet"}
        )
        [container] = [
            c for c in workload["spec"]["template"]["spec"]["containers"] if c["name"] == service
        ]
        env = {e["name"]: e for e in container["env"]}
        url = next(e["value"] for n, e in env.items() if n.endswith("_NATS_URL"))
        assert url.startswith(f"nats://{service}:$(NATS_PASSWORD)@")
        secret_key = env["NATS_PASSWORD"]["valueFrom"]["secretKeyRef"]["key"]
        assert f'user: "{service}", password: ${secret_key}' in auth


def _settings_fields(service: str) -> set[str]:
    import importlib
    import inspect

    from ingress_runtime import ServiceSettings

    package = "ingress_" + service.removeprefix("ingress-").replace("-", "_")
    module = importlib.import_module(f"{package}.settings")
    [cls] = [
        c
        for _, c in inspect.getmembers(module, inspect.isclass)
        if issubclass(c, ServiceSettings) and c.__module__ == module.__name__
    ]
    prefix = cls.model_config.get("env_prefix", "")
    return {prefix + name.upper() for name in cls.model_fields}


BUILT = [s for s in SERVICES if (DEPLOY.parent / "services" / s / "pyproject.toml").exists()]


@pytest.mark.parametrize("service", BUILT)
def test_every_configured_variable_is_a_real_setting_of_the_service(service: str) -> None:
    objects = build(DEPLOY / "overlays" / "production")
    config = next(o for o in objects if o["metadata"]["name"] == f"{service}-config")
    workload = next(
        o
        for o in objects
        if o["metadata"]["name"] == service and o["kind"] in {"Deployment", "DaemonSet"}
    )
    [container] = [
        c for c in workload["spec"]["template"]["spec"]["containers"] if c["name"] == service
    ]
    configured = set(config["data"]) | {e["name"] for e in container["env"]} - {"NATS_PASSWORD"}
    unknown = configured - _settings_fields(service)
    assert not unknown, f"{service}: not settings of the service: {sorted(unknown)}"
