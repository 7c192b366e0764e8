"""Where status goes: the Kubernetes API (status subresource, JSON merge patch, and core/v1
Events), a directory of files (the manifest source), or memory (unit tests)."""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Protocol

from ingress_runtime.kubeclient import ApiClient, ApiException

from ..domain.objects import Obj, meta
from ..domain.status import Json, Target, Warning
from .kube import checked

log = logging.getLogger("ingress_watcher.status")

STATUS_PATHS = {
    "Ingress": "/apis/networking.k8s.io/v1/namespaces/{namespace}/ingresses/{name}/status",
    "Service": "/api/v1/namespaces/{namespace}/services/{name}/status",
}
API_VERSIONS = {"Ingress": "networking.k8s.io/v1", "Service": "v1"}


class StatusWriter(Protocol):
    def current(self, target: Target, obj: Obj | None) -> Mapping[str, Any] | None:
        """The status the object shows now (``obj`` is the watcher's copy of it)."""
        ...

    async def patch(self, target: Target, status: Json, obj: Obj | None = None) -> None:
        """Merge ``status`` into the object's status (``obj``: the copy it was computed from)."""
        ...

    async def event(self, warning: Warning, now: str) -> None: ...

    async def forget(self, targets: set[Target]) -> None:
        """These objects are no longer ours (or gone)."""
        ...


def kube_event(warning: Warning, now: str, instance: str) -> Json:
    target = warning.target
    involved: Json = {
        "apiVersion": API_VERSIONS[target.kind],
        "kind": target.kind,
        "namespace": target.namespace,
        "name": target.name,
    }
    if warning.uid:
        involved["uid"] = warning.uid
    return {
        "apiVersion": "v1",
        "kind": "Event",
        "metadata": {"generateName": f"{target.name}.", "namespace": target.namespace},
        "involvedObject": involved,
        "type": "Warning",
        "reason": warning.reason,
        "message": warning.message,
        "source": {"component": "ingress-watcher"},
        "reportingComponent": "ingress-domain.io/ingress-watcher",
        "reportingInstance": instance[:128],
        "firstTimestamp": now,
        "lastTimestamp": now,
        "count": 1,
    }


class KubeStatusWriter:
    def __init__(self, api: ApiClient, instance: str, *, timeout_seconds: float = 10.0) -> None:
        self._api = api
        self._instance = instance
        self._timeout = timeout_seconds
        self._written: dict[Target, tuple[frozenset[str], Json]] = {}
        """What we patched last, with the resourceVersions our copy may show meanwhile: the one
        the patch was computed from (the watch has not delivered the result yet) and the one
        the API server answered with (it has)."""
        self.patches = 0
        self.events = 0

    def current(self, target: Target, obj: Obj | None) -> Mapping[str, Any] | None:
        if obj is None:
            return None
        written = self._written.get(target)
        if written is not None and str(meta(obj).get("resourceVersion")) in written[0]:
            # Our patch is the latest change: before its watch event arrives, our copy still
            # shows the old status, and comparing with it would patch the same thing again.
            return written[1]
        status = obj.get("status")
        return status if isinstance(status, Mapping) else None

    async def patch(self, target: Target, status: Json, obj: Obj | None = None) -> None:
        path = STATUS_PATHS[target.kind].format(namespace=target.namespace, name=target.name)
        try:
            response = await self._api.call_api(
                path,
                "PATCH",
                body={"status": status},
                header_params={
                    "Accept": "application/json",
                    "Content-Type": "application/merge-patch+json",
                },
                _preload_content=False,
                _request_timeout=self._timeout,
            )
            response = await checked(response)
        except ApiException as exc:
            if exc.status == 404:
                return  # deleted meanwhile
            raise
        body = json.loads(await response.read())
        self.patches += 1
        versions = {str((body.get("metadata") or {}).get("resourceVersion"))}
        if obj is not None:
            versions.add(str(meta(obj).get("resourceVersion")))
        self._written[target] = (frozenset(versions), status)

    async def event(self, warning: Warning, now: str) -> None:
        response = await self._api.call_api(
            f"/api/v1/namespaces/{warning.target.namespace}/events",
            "POST",
            body=kube_event(warning, now, self._instance),
            header_params={"Accept": "application/json", "Content-Type": "application/json"},
            _preload_content=False,
            _request_timeout=self._timeout,
        )
        await checked(response)
        response.release()
        self.events += 1

    async def forget(self, targets: set[Target]) -> None:
        for target in targets:
            self._written.pop(target, None)


class InMemoryStatusWriter:
    def __init__(self) -> None:
        self.status: dict[Target, Json] = {}
        self.patches: list[tuple[Target, Json]] = []
        self.events: list[Json] = []

    def current(self, target: Target, obj: Obj | None) -> Mapping[str, Any] | None:
        return self.status.get(target)

    async def patch(self, target: Target, status: Json, obj: Obj | None = None) -> None:
        self.patches.append((target, status))
        self.status[target] = status

    async def event(self, warning: Warning, now: str) -> None:
        self.events.append(kube_event(warning, now, "in-memory"))

    async def forget(self, targets: set[Target]) -> None:
        for target in targets:
            self.status.pop(target, None)


def _replace_file(path: Path, text: str) -> None:
    """Readers see the old file or the new one, never half of it."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(text)
    tmp.replace(path)


class FileStatusWriter:
    """``<dir>/<Kind>/<namespace>/<name>.json`` holds each object's status; Events are appended
    to ``<dir>/events.jsonl``. The local default shows them."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self._written: dict[Target, Json] = {}
        """What this writer put in each file: the files are ours alone, and rereading 10,000
        of them per round was a fifth of the watcher's time."""

    def path(self, target: Target) -> Path:
        return self.directory / target.kind / target.namespace / f"{target.name}.json"

    def current(self, target: Target, obj: Obj | None) -> Mapping[str, Any] | None:
        if target in self._written:
            return self._written[target]
        try:
            data = json.loads(self.path(target).read_text())
        except (OSError, ValueError):
            return None
        status = data.get("status") if isinstance(data, Mapping) else None
        return status if isinstance(status, Mapping) else None

    async def patch(self, target: Target, status: Json, obj: Obj | None = None) -> None:
        document = {
            "kind": target.kind,
            "namespace": target.namespace,
            "name": target.name,
            "status": status,
        }
        text = json.dumps(document, indent=1, sort_keys=True) + "\n"
        # Off the event loop: the first round after a cold start writes 10,000 files, and done
        # inline (mkdir, write, rename) that held up the publishing of new domains by ~1 s for
        # the ~10 s the round took (py-spy, bench/e2e at 10,000 present).
        await asyncio.to_thread(_replace_file, self.path(target), text)
        self._written[target] = status

    async def event(self, warning: Warning, now: str) -> None:
        self.directory.mkdir(parents=True, exist_ok=True)
        with (self.directory / "events.jsonl").open("a") as out:
            out.write(json.dumps(kube_event(warning, now, "local"), sort_keys=True) + "\n")

    async def forget(self, targets: set[Target]) -> None:
        for target in targets:
            self._written.pop(target, None)
            self.path(target).unlink(missing_ok=True)
