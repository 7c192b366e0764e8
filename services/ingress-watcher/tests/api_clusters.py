"""Two API servers behind one small interface, so that the same watcher tests run against both:
the local API server (kube_apiserver.py), and k3s in a container through testcontainers where a
Docker engine answers. Tests change objects and read status and Events through the API, over
kubernetes-asyncio, as an operator's tooling would."""

from __future__ import annotations

import asyncio
import subprocess
from pathlib import Path
from typing import Any, Protocol

import yaml
from ingress_runtime.kubeclient import ApiClient, ApiException, Configuration
from ingress_watcher.adapters.kube import call_json
from kube_apiserver import CLUSTER_SCOPED, LocalApiServer

REPO = Path(__file__).resolve().parents[3]
CRD_FILES = (
    REPO / "deploy/ingress-watcher/crds.yaml",
    REPO / "deploy/ipam/vippool-crd.yaml",
    REPO / "deploy/bgp-speaker/bgppeer-crd.yaml",
)
# The namespaces the tests' objects live in, and the one the watcher's Lease lives in.
NAMESPACES = ("team-a", "team-b", "ingress-domain")
K3S_IMAGE = "rancher/k3s:v1.31.4-k3s1"

API_VERSIONS = {
    "Ingress": "networking.k8s.io/v1",
    "IngressClass": "networking.k8s.io/v1",
    "Service": "v1",
    "EndpointSlice": "discovery.k8s.io/v1",
    "Secret": "v1",
    "Namespace": "v1",
    "Zone": "ingress-domain.io/v1alpha1",
    "Domain": "ingress-domain.io/v1alpha1",
    "PathClaim": "ingress-domain.io/v1alpha1",
    "VipPool": "ingress-domain.io/v1alpha1",
    "BgpPeer": "ingress-domain.io/v1alpha1",
    "CustomResourceDefinition": "apiextensions.k8s.io/v1",
    "Lease": "coordination.k8s.io/v1",
}
PLURALS = {
    "Ingress": "ingresses",
    "IngressClass": "ingressclasses",
    "EndpointSlice": "endpointslices",
    "PathClaim": "pathclaims",
    "BgpPeer": "bgppeers",
    "VipPool": "vippools",
}
NOT_NAMESPACED = CLUSTER_SCOPED | {"Namespace", "CustomResourceDefinition"}


def object_path(kind: str, namespace: str = "", name: str = "") -> str:
    version = API_VERSIONS[kind]
    prefix = "/api/v1" if version == "v1" else f"/apis/{version}"
    scope = "" if kind in NOT_NAMESPACED else f"/namespaces/{namespace}"
    path = f"{prefix}{scope}/{PLURALS.get(kind, kind.lower() + 's')}"
    return f"{path}/{name}" if name else path


class ApiObjects:
    """Create-or-replace, delete and read objects over the API with kubernetes-asyncio."""

    def __init__(self, configuration: Configuration) -> None:
        self._api = ApiClient(configuration)

    async def close(self) -> None:
        await self._api.close()

    async def _call(self, path: str, method: str, body: Any = None) -> dict[str, Any]:
        return await call_json(self._api, method, path, body, timeout=30)

    async def get(self, kind: str, namespace: str, name: str) -> dict[str, Any]:
        return await self._call(object_path(kind, namespace, name), "GET")

    async def put(self, obj: dict[str, Any]) -> None:
        kind, meta = obj["kind"], obj["metadata"]
        namespace = meta.get("namespace", "")
        # What the API server owns is not sent: it sets uid and creation time on create.
        body = {
            **obj,
            "apiVersion": API_VERSIONS[kind],
            "metadata": {k: v for k, v in meta.items() if k not in ("uid", "resourceVersion")},
        }
        try:
            await self._call(object_path(kind, namespace), "POST", body)
        except ApiException as exc:
            if exc.status != 409:
                raise
            current = await self.get(kind, namespace, meta["name"])
            body["metadata"]["resourceVersion"] = current["metadata"]["resourceVersion"]
            await self._call(object_path(kind, namespace, meta["name"]), "PUT", body)

    async def delete(self, kind: str, namespace: str, name: str) -> None:
        await self._call(object_path(kind, namespace, name), "DELETE")

    async def status_of(self, kind: str, namespace: str, name: str) -> dict[str, Any]:
        return dict((await self.get(kind, namespace, name)).get("status") or {})

    async def events(self, namespace: str) -> list[dict[str, Any]]:
        found = await self._call(f"/api/v1/namespaces/{namespace}/events", "GET")
        return list(found.get("items") or [])


class Cluster(Protocol):
    """An API server the watcher can be pointed at, driven through its API."""

    objects: ApiObjects

    def watcher_settings(self) -> dict[str, object]:
        """What the watcher's settings need to reach this API server."""
        ...

    async def stop(self) -> None: ...


class LocalCluster:
    def __init__(self, server: LocalApiServer) -> None:
        self.server = server
        self.objects = ApiObjects(Configuration(host=server.url))

    @classmethod
    async def start(cls) -> LocalCluster:
        return cls(await LocalApiServer(bookmark_interval=0.1).start())

    def watcher_settings(self) -> dict[str, object]:
        return {"kube_api_url": self.server.url}

    async def stop(self) -> None:
        await self.objects.close()
        await self.server.stop()


def docker_engine_answers() -> bool:
    """True where a Docker engine serves this machine (the client alone is not enough)."""
    try:
        done = subprocess.run(["docker", "info"], capture_output=True, timeout=20, check=False)
    except (OSError, subprocess.TimeoutExpired):
        return False
    return done.returncode == 0


class K3sCluster:
    """k3s in a container (traefik and servicelb off: the watcher is the only controller that
    writes Ingress and LoadBalancer status), with the project's CRDs and the tests' namespaces."""

    def __init__(self, container: Any, kubeconfig: Path, objects: ApiObjects) -> None:
        self.container = container
        self.kubeconfig = kubeconfig
        self.objects = objects

    @classmethod
    async def start(cls, workdir: Path) -> K3sCluster:
        from kubernetes_asyncio import config as kube_config
        from testcontainers.community.k3s import K3SContainer

        container = K3SContainer(image=K3S_IMAGE)
        host = container.get_container_host_ip()
        container.with_command(f"server --disable traefik --disable servicelb --tls-san={host}")
        await asyncio.to_thread(container.start)
        kubeconfig = workdir / "k3s.yaml"
        kubeconfig.write_text(container.config_yaml())
        configuration = Configuration()
        await kube_config.load_kube_config(
            config_file=str(kubeconfig), client_configuration=configuration
        )
        cluster = cls(container, kubeconfig, ApiObjects(configuration))
        try:
            await cluster._prepare()
        except BaseException:
            await cluster.stop()
            raise
        return cluster

    async def _prepare(self) -> None:
        for name in NAMESPACES:
            await self.objects.put({"kind": "Namespace", "metadata": {"name": name}})
        names = []
        for path in CRD_FILES:
            for crd in yaml.safe_load_all(path.read_text()):
                if crd and crd.get("kind") == "CustomResourceDefinition":
                    await self.objects.put(crd)
                    names.append(crd["metadata"]["name"])
        # Custom objects can be created once their definitions are Established.
        async with asyncio.timeout(60):
            for name in names:
                while True:
                    crd = await self.objects.get("CustomResourceDefinition", "", name)
                    conditions = (crd.get("status") or {}).get("conditions") or []
                    if any(
                        c["type"] == "Established" and c["status"] == "True" for c in conditions
                    ):
                        break
                    await asyncio.sleep(0.2)

    def watcher_settings(self) -> dict[str, object]:
        # No URL: the watcher discovers its API server as it does outside a cluster, from the
        # kubeconfig that KUBECONFIG names (the test sets it to self.kubeconfig).
        return {"kube_api_url": None}

    async def stop(self) -> None:
        await self.objects.close()
        await asyncio.to_thread(self.container.stop)
