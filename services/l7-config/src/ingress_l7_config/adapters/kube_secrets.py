"""TLS key material read from the Kubernetes API (never from the bus): an informer over Secrets.

A paginated list gives every Secret and a resourceVersion; a watch from there (bookmarks,
server-side timeout) keeps the cache current, resumes where it stopped, and relists on
``410 Gone``. Only ``tls.crt`` / ``tls.key`` of Secrets that hold both are kept (decoded); of any
other Secret only the fact that it exists, so a domain pointing at it is rejected as
``SecretNotTls`` rather than ``SecretNotFound``. ``read`` answers from the cache, synchronously,
like the directory store; ``on_change`` tells the app which Secret changed so the domains using it
are checked again (a rotation, or a Secret created after the Ingress that names it).
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import contextlib
import json
import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

import aiohttp
from ingress_runtime.kubeclient import ApiClient, Configuration

from ..domain.model import SecretLookup, SecretMaterial, SecretMissing
from .secrets import MAX_SECRET_BYTES

log = logging.getLogger("ingress_l7_config.kube_secrets")

SecretKey = tuple[str, str]
_NOT_TLS = SecretMissing("SecretNotTls", "")


class Gone(Exception):
    """The resourceVersion asked for is older than the API server keeps."""


def kube_configuration(
    url: str | None, token_file: Path | None = None, ca_file: Path | None = None
) -> Configuration | None:
    """An explicit API URL (with optional token and CA files); None = discover at start."""
    if url is None:
        return None
    config = Configuration(host=url)
    if token_file is not None:
        config.api_key = {"authorization": token_file.read_text().strip()}
        config.api_key_prefix = {"authorization": "Bearer"}
    if ca_file is not None:
        config.ssl_ca_cert = str(ca_file)
    return config


async def _discover() -> Configuration:
    from kubernetes_asyncio import config as kconfig

    configuration = Configuration()
    try:
        kconfig.load_incluster_config(client_configuration=configuration)  # type: ignore[no-untyped-call]
    except kconfig.ConfigException:
        await kconfig.load_kube_config(client_configuration=configuration)
    return configuration


def _entry(obj: dict[str, Any]) -> SecretMaterial | SecretMissing:
    data = obj.get("data") or {}
    crt, key = data.get("tls.crt"), data.get("tls.key")
    if not isinstance(crt, str) or not isinstance(key, str):
        return _NOT_TLS
    if len(crt) + len(key) > 2 * MAX_SECRET_BYTES:
        return SecretMissing("SecretTooLarge", "")
    try:
        return SecretMaterial(
            base64.b64decode(crt, validate=True), base64.b64decode(key, validate=True)
        )
    except (binascii.Error, ValueError):
        return _NOT_TLS


def _key(obj: dict[str, Any]) -> SecretKey:
    meta = obj.get("metadata") or {}
    return (str(meta.get("namespace", "")), str(meta.get("name", "")))


class KubernetesSecretStore:
    def __init__(
        self,
        config: Configuration | None,
        *,
        page_size: int = 500,
        watch_timeout_seconds: int = 300,
        read_timeout_seconds: float = 330.0,
    ) -> None:
        self._config = config
        self._page_size = page_size
        self._watch_timeout = watch_timeout_seconds
        self._read_timeout = read_timeout_seconds
        self._cache: dict[SecretKey, SecretMaterial | SecretMissing] = {}
        self._api: ApiClient | None = None
        self._task: asyncio.Task[None] | None = None
        self.on_change: Callable[[str, str], None] | None = None
        self.lists = 0
        self.watches = 0

    # ------------------------------------------------------------------ SecretStore

    def read(self, namespace: str, name: str) -> SecretLookup:
        entry = self._cache.get((namespace, name))
        if entry is None:
            return SecretMissing("SecretNotFound", f"Secret {namespace}/{name} does not exist")
        if isinstance(entry, SecretMaterial):
            return entry
        if entry.reason == "SecretTooLarge":
            return SecretMissing("SecretTooLarge", f"Secret {namespace}/{name} exceeds 1 MiB")
        return SecretMissing(
            "SecretNotTls",
            f"Secret {namespace}/{name} is not a TLS Secret (it needs tls.crt and tls.key)",
        )

    # ------------------------------------------------------------------ lifecycle

    async def start(self) -> None:
        """List every Secret (the cache is complete when this returns), then watch."""
        self._api = ApiClient(self._config or await _discover())
        version = await self._list()
        self._task = asyncio.create_task(self._watch_forever(version), name="l7-secrets-watch")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        if self._api is not None:
            await self._api.close()
            self._api = None

    # ------------------------------------------------------------------ list / watch

    def _timeout(self) -> aiohttp.ClientTimeout:
        return aiohttp.ClientTimeout(total=None, sock_connect=10.0, sock_read=self._read_timeout)

    async def _get(self, query: list[tuple[str, Any]]) -> Any:
        assert self._api is not None
        response = await self._api.call_api(
            "/api/v1/secrets",
            "GET",
            query_params=query,
            header_params={"Accept": "application/json"},
            _preload_content=False,
            _request_timeout=self._timeout(),
        )
        if response.status == 410:
            response.release()
            raise Gone("list or watch expired")
        if not 200 <= response.status <= 299:
            body = await response.read()
            response.release()
            raise RuntimeError(f"Secrets: HTTP {response.status}: {body[:300]!r}")
        return response

    def _set(self, key: SecretKey, entry: SecretMaterial | SecretMissing | None) -> None:
        old = self._cache.get(key)
        if entry is None:
            self._cache.pop(key, None)
        else:
            self._cache[key] = entry
        if old != entry and self.on_change is not None:
            self.on_change(*key)

    async def _list(self) -> str:
        fresh: dict[SecretKey, SecretMaterial | SecretMissing] = {}
        token: str | None = None
        while True:
            query: list[tuple[str, Any]] = [("limit", self._page_size)]
            if token:
                query.append(("continue", token))
            try:
                response = await self._get(query)
            except Gone:
                if not token:
                    raise
                fresh, token = {}, None  # the continue token outlived its snapshot
                continue
            body = json.loads(await response.read())
            for item in body.get("items") or []:
                fresh[_key(item)] = _entry(item)
            meta = body.get("metadata") or {}
            token = meta.get("continue") or None
            if not token:
                version = str(meta.get("resourceVersion") or "")
                break
        for key in set(self._cache) - set(fresh):
            self._set(key, None)
        for key, entry in fresh.items():
            self._set(key, entry)
        self.lists += 1
        return version

    async def _watch_forever(self, version: str) -> None:
        delay = 0.1
        while True:
            try:
                version = await self._watch(version)
                delay = 0.1
                continue
            except Gone:
                log.info("Secrets resourceVersion expired; relisting")
            except (TimeoutError, aiohttp.ClientError, ValueError, RuntimeError) as exc:
                log.warning("Secrets watch broke; resuming", extra={"error": repr(exc)})
                await asyncio.sleep(delay)
                delay = min(delay * 2, 10.0)
                continue
            try:
                version = await self._list()
            except (TimeoutError, aiohttp.ClientError, ValueError, RuntimeError, Gone) as exc:
                log.warning("Secrets relist failed", extra={"error": repr(exc)})
                await asyncio.sleep(delay)
                delay = min(delay * 2, 10.0)

    async def _watch(self, version: str) -> str:
        self.watches += 1
        response = await self._get(
            [
                ("watch", "true"),
                ("resourceVersion", version),
                ("allowWatchBookmarks", "true"),
                ("timeoutSeconds", self._watch_timeout),
            ]
        )
        try:
            while True:
                line = await response.content.readline()
                if not line:
                    return version
                if not line.strip():
                    continue
                event = json.loads(line)
                kind = event.get("type")
                obj = event.get("object") or {}
                if kind == "ERROR":
                    if obj.get("code") == 410:
                        raise Gone(str(obj.get("message")))
                    raise ValueError(f"watch error: {obj.get('message')}")
                new_version = (obj.get("metadata") or {}).get("resourceVersion")
                if new_version:
                    version = str(new_version)
                if kind in ("ADDED", "MODIFIED"):
                    self._set(_key(obj), _entry(obj))
                elif kind == "DELETED":
                    self._set(_key(obj), None)
        finally:
            response.release()
