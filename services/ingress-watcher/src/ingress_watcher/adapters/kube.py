"""The Kubernetes source: list + watch with informer semantics, on kubernetes-asyncio's ApiClient.

The ApiClient brings configuration, authentication and TLS; responses are read raw
(``_preload_content=False``) and kept as JSON dicts, because building typed models for 10,000
Ingresses costs more than everything else the watcher does.

Per kind: a paginated list (``limit`` / ``continue``) gives the complete state and a
resourceVersion; a watch from there (``allowWatchBookmarks``, server-side ``timeoutSeconds``)
applies ADDED / MODIFIED / DELETED and follows BOOKMARKs. A watch that ends (server timeout,
dropped connection, or silence longer than the client-side read timeout) is resumed from the last
resourceVersion; ``410 Gone`` (as an HTTP status, or as an ERROR event inside a 200 stream) means
that version is compacted away: relist, which also synthesizes deletes for what vanished.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import aiohttp
from ingress_runtime.kubeclient import ApiClient, ApiException, Configuration

from ..domain.objects import KINDS, Obj, key_of, stored, summarize_secret
from ..domain.store import ObjectStore
from ..settings import WatcherSettings
from .source import Notify

log = logging.getLogger("ingress_watcher.kube")

_CRD = "/apis/ingress-domain.io/v1alpha1"
RESOURCES: dict[str, tuple[str, str]] = {
    "Ingress": ("/apis/networking.k8s.io/v1", "ingresses"),
    "IngressClass": ("/apis/networking.k8s.io/v1", "ingressclasses"),
    "Service": ("/api/v1", "services"),
    "EndpointSlice": ("/apis/discovery.k8s.io/v1", "endpointslices"),
    "Secret": ("/api/v1", "secrets"),
    "Zone": (_CRD, "zones"),
    "Domain": (_CRD, "domains"),
    "PathClaim": (_CRD, "pathclaims"),
    "VipPool": (_CRD, "vippools"),
    "BgpPeer": (_CRD, "bgppeers"),
}
assert set(RESOURCES) == set(KINDS)


async def checked(response: Any) -> Any:
    """kubernetes-asyncio raises ApiException for a non-2xx status only when it preloads the
    body; with ``_preload_content=False`` (raw JSON, streams) the caller must check."""
    if not 200 <= response.status <= 299:
        body = await response.read()
        response.release()
        error = ApiException(status=response.status, reason=response.reason)
        error.body = body
        raise error
    return response


async def call_json(
    api: ApiClient, method: str, path: str, body: Any = None, *, timeout: float
) -> dict[str, Any]:
    """One JSON request and its parsed answer; a non-2xx status raises ApiException."""
    response = await api.call_api(
        path,
        method,
        body=body,
        header_params={"Accept": "application/json", "Content-Type": "application/json"},
        _preload_content=False,
        _request_timeout=timeout,
    )
    response = await checked(response)
    data: dict[str, Any] = json.loads(await response.read())
    return data


class Gone(Exception):
    """The resourceVersion we asked for is older than the API server keeps."""


def kube_config(settings: WatcherSettings) -> Configuration | None:
    """An explicit API URL (with optional token and CA files); None = discover at start."""
    if settings.kube_api_url is None:
        return None
    config = Configuration(host=settings.kube_api_url)
    if settings.kube_token_file is not None:
        config.api_key = {"authorization": settings.kube_token_file.read_text().strip()}
        config.api_key_prefix = {"authorization": "Bearer"}
    if settings.kube_ca_file is not None:
        config.ssl_ca_cert = str(settings.kube_ca_file)
    return config


async def discover() -> Configuration:
    from kubernetes_asyncio import config as kconfig

    configuration = Configuration()
    try:
        kconfig.load_incluster_config(client_configuration=configuration)  # type: ignore[no-untyped-call]
    except kconfig.ConfigException:
        await kconfig.load_kube_config(client_configuration=configuration)
    return configuration


def _prepare(kind: str, obj: Mapping[str, Any]) -> Obj:
    # List items carry no kind; Secrets lose their data before they are stored anywhere. The
    # stored form is made per page: a relist holds every item of a kind until it is complete,
    # and 10,000 EndpointSlices as the API's dicts were ~110 MB.
    if kind == "Secret":
        return summarize_secret(obj)
    return stored(kind, {**obj, "kind": kind})


@dataclass
class KubeStats:
    lists: dict[str, int] = field(default_factory=dict)
    watches: dict[str, int] = field(default_factory=dict)
    gone: int = 0
    timeouts: int = 0
    resource_versions: dict[str, str] = field(default_factory=dict)


class KubeSource:
    def __init__(self, config: Configuration | None, settings: WatcherSettings) -> None:
        self._config = config
        self._settings = settings
        self.stats = KubeStats()

    async def run(self, store: ObjectStore, notify: Notify) -> None:
        config = self._config or await discover()
        async with ApiClient(config) as api:
            versions: dict[str, str] = {}
            for kind in KINDS:
                versions[kind] = await self._list(api, kind, store)
            await notify(True)
            await asyncio.gather(
                *(self._watch_forever(api, kind, versions[kind], store, notify) for kind in KINDS)
            )

    def _timeout(self) -> aiohttp.ClientTimeout:
        return aiohttp.ClientTimeout(
            total=None, sock_connect=10.0, sock_read=self._settings.read_timeout_seconds
        )

    async def _list(self, api: ApiClient, kind: str, store: ObjectStore) -> str:
        prefix, plural = RESOURCES[kind]
        items: list[Obj] = []
        token: str | None = None
        while True:
            query: list[tuple[str, Any]] = [("limit", self._settings.list_page_size)]
            if token:
                query.append(("continue", token))
            try:
                response = await checked(
                    await api.call_api(
                        f"{prefix}/{plural}",
                        "GET",
                        query_params=query,
                        header_params={"Accept": "application/json"},
                        _preload_content=False,
                        _request_timeout=self._timeout(),
                    )
                )
            except ApiException as exc:
                if exc.status != 410 or not token:
                    raise
                # The continue token outlived its snapshot: the list starts over.
                items, token = [], None
                continue
            body = json.loads(await response.read())
            items.extend(_prepare(kind, item) for item in body.get("items") or [])
            meta = body.get("metadata") or {}
            token = meta.get("continue") or None
            if not token:
                version = str(meta.get("resourceVersion") or "")
                break
        gone = store.replace(kind, items)
        self.stats.lists[kind] = self.stats.lists.get(kind, 0) + 1
        self.stats.resource_versions[kind] = version
        if gone:
            log.info("relist removed objects", extra={"kind": kind, "removed": len(gone)})
        return version

    async def _watch_forever(
        self, api: ApiClient, kind: str, version: str, store: ObjectStore, notify: Notify
    ) -> None:
        delay = 0.1
        relist = False
        while True:
            try:
                if relist:
                    version = await self._relist(api, kind, store, notify)
                    relist = False
                version = await self._watch(api, kind, version, store, notify)
                delay = 0.1
                continue
            except Gone:
                relist = True
            except ApiException as exc:
                relist = relist or exc.status == 410
                if exc.status != 410:
                    log.warning("watch refused", extra={"kind": kind, "status": exc.status})
            except (TimeoutError, aiohttp.ClientError, ValueError) as exc:
                if isinstance(exc, TimeoutError | aiohttp.ServerTimeoutError):
                    self.stats.timeouts += 1
                log.warning(
                    "watch broke; resuming",
                    extra={"kind": kind, "error": repr(exc), "retry_in_s": delay},
                )
            if relist:
                self.stats.gone += 1
                log.info("resourceVersion expired (410 Gone); relisting", extra={"kind": kind})
                continue
            await asyncio.sleep(delay)
            delay = min(delay * 2, 10.0)

    async def _relist(self, api: ApiClient, kind: str, store: ObjectStore, notify: Notify) -> str:
        version = await self._list(api, kind, store)
        await notify(True)
        return version

    async def _watch(
        self, api: ApiClient, kind: str, version: str, store: ObjectStore, notify: Notify
    ) -> str:
        prefix, plural = RESOURCES[kind]
        self.stats.watches[kind] = self.stats.watches.get(kind, 0) + 1
        response = await api.call_api(
            f"{prefix}/{plural}",
            "GET",
            query_params=[
                ("watch", "true"),
                ("resourceVersion", version),
                ("allowWatchBookmarks", "true"),
                ("timeoutSeconds", self._settings.watch_timeout_seconds),
            ],
            header_params={"Accept": "application/json"},
            _preload_content=False,
            _request_timeout=self._timeout(),
        )
        response = await checked(response)
        try:
            while True:
                line = await response.content.readline()
                if not line:
                    return version  # the server ended the watch (its timeout): resume
                if not line.strip():
                    continue
                event = json.loads(line)
                kind_of_event = event.get("type")
                obj = event.get("object") or {}
                if kind_of_event == "ERROR":
                    if obj.get("code") == 410:
                        raise Gone(str(obj.get("message")))
                    raise ValueError(f"watch error: {obj.get('message')}")
                new_version = (obj.get("metadata") or {}).get("resourceVersion")
                if new_version:
                    version = str(new_version)
                    self.stats.resource_versions[kind] = version
                if kind_of_event == "BOOKMARK":
                    continue
                if kind_of_event in ("ADDED", "MODIFIED"):
                    store.upsert(kind, _prepare(kind, obj))
                elif kind_of_event == "DELETED":
                    store.delete(kind, key_of(obj, kind))
                else:
                    continue
                await notify(False)
        finally:
            response.release()
