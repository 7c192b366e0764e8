"""The Kubernetes Secret store against the local API server double (the real kubernetes-asyncio
client on the real list/watch wire protocol): TLS material, non-TLS and missing Secrets,
rotation and deletion seen through the watch, and a relist after 410 Gone."""

from __future__ import annotations

import asyncio
import base64
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio
from ingress_l7_config.adapters.kube_secrets import KubernetesSecretStore, kube_configuration
from ingress_l7_config.domain.model import SecretMaterial, SecretMissing

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "ingress-watcher/tests"))
from kube_apiserver import LocalApiServer

pytestmark = [pytest.mark.integration, pytest.mark.asyncio]


def secret(
    namespace: str, name: str, data: dict[str, bytes], kind: str = "kubernetes.io/tls"
) -> dict[str, Any]:
    return {
        "kind": "Secret",
        "apiVersion": "v1",
        "metadata": {"namespace": namespace, "name": name},
        "type": kind,
        "data": {k: base64.b64encode(v).decode() for k, v in data.items()},
    }


@pytest_asyncio.fixture
async def api() -> AsyncIterator[LocalApiServer]:
    server = await LocalApiServer(bookmark_interval=0.1).start()
    try:
        yield server
    finally:
        await server.stop()


async def _until(check: Any, timeout: float = 5.0) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not check():
        assert loop.time() < deadline, "condition not reached"
        await asyncio.sleep(0.02)


async def test_secrets_from_the_api_follow_the_watch(api: LocalApiServer) -> None:
    await api.put(secret("shop", "web-tls", {"tls.crt": b"CERT1", "tls.key": b"KEY1"}))
    await api.put(secret("shop", "db", {"password": b"hunter2"}, kind="Opaque"))
    store = KubernetesSecretStore(kube_configuration(api.url), page_size=1)
    changed: list[tuple[str, str]] = []
    store.on_change = lambda ns, name: changed.append((ns, name))
    await store.start()
    try:
        # Complete after start (paginated list, one Secret a page).
        assert store.read("shop", "web-tls") == SecretMaterial(b"CERT1", b"KEY1")
        not_tls = store.read("shop", "db")
        assert isinstance(not_tls, SecretMissing) and not_tls.reason == "SecretNotTls"
        missing = store.read("shop", "nope")
        assert isinstance(missing, SecretMissing) and missing.reason == "SecretNotFound"

        changed.clear()
        await api.put(secret("shop", "web-tls", {"tls.crt": b"CERT2", "tls.key": b"KEY2"}))
        await _until(lambda: store.read("shop", "web-tls") == SecretMaterial(b"CERT2", b"KEY2"))
        assert changed == [("shop", "web-tls")]
        await api.put(secret("shop", "late-tls", {"tls.crt": b"C", "tls.key": b"K"}))
        await _until(lambda: isinstance(store.read("shop", "late-tls"), SecretMaterial))
        await api.delete("Secret", "shop", "web-tls")
        await _until(lambda: isinstance(store.read("shop", "web-tls"), SecretMissing))

        # History compacted and the watch cut: 410 Gone -> relist, which also sees a Secret
        # deleted while nobody watched.
        await api.delete("Secret", "shop", "late-tls", quietly=True)
        api.compact()
        await api.drop_watches()
        await _until(lambda: store.lists >= 2)
        await _until(lambda: isinstance(store.read("shop", "late-tls"), SecretMissing))
        assert ("shop", "late-tls") in changed
    finally:
        await store.stop()
