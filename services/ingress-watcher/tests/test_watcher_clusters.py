"""The same watcher tests against the local API server and against k3s (testcontainers), each
driven only through the Kubernetes API: objects created, replaced and deleted over REST, status
and Events read back the same way. The k3s runs need a Docker engine: where none answers they
are deselected (conftest.py says so in the run's header); the local runs go everywhere."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
import structlog
from api_clusters import Cluster, K3sCluster, LocalCluster
from ingress_events import catalogue as c
from ingress_events.bus import Bus
from ingress_runtime import Readiness, ServiceContext
from ingress_testkit.capture import EventCapture
from ingress_watcher.app import WatcherApp
from ingress_watcher.settings import WatcherSettings
from test_watcher_kube import routes_of
from test_watcher_leader import HOST, report_everything
from watcher_objects import CLASS, ZONE, domain, ingress, service

pytestmark = pytest.mark.integration


@pytest.fixture(params=["local", pytest.param("k3s", marks=pytest.mark.k3s)])
async def cluster(
    request: pytest.FixtureRequest, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> AsyncIterator[Cluster]:
    started: Cluster
    if request.param == "k3s":
        k3s = await K3sCluster.start(tmp_path)
        monkeypatch.setenv("KUBECONFIG", str(k3s.kubeconfig))
        started = k3s
    else:
        started = await LocalCluster.start()
    try:
        yield started
    finally:
        await started.stop()


def _watcher(bus: Bus, cluster: Cluster, **extra: object) -> WatcherApp:
    settings = WatcherSettings.model_validate(
        {
            "source": "kubernetes",
            **cluster.watcher_settings(),
            "read_timeout_seconds": 10.0,
            "debounce_seconds": 0.005,
            "status_debounce_seconds": 0.01,
            "lease_duration_seconds": 4,
            "lease_renew_seconds": 0.2,
            **extra,
        }
    )
    ctx = ServiceContext(
        "ingress-watcher", settings, bus, Readiness(), structlog.get_logger("ingress-watcher")
    )
    return WatcherApp(ctx)


async def eventually(check: Callable[[], Awaitable[bool]], timeout: float = 30.0) -> None:
    async with asyncio.timeout(timeout):
        # The API is the only view of a k3s server's state: it is polled.
        while not await check():  # noqa: ASYNC110
            await asyncio.sleep(0.1)


def _ips(status: dict[str, Any]) -> list[str]:
    return [x["ip"] for x in (status.get("loadBalancer") or {}).get("ingress") or []]


async def test_sync_then_watched_changes_and_deletes(
    bus: Bus, cluster: Cluster, event_capture: EventCapture
) -> None:
    api = cluster.objects
    for obj in (CLASS, ZONE, domain("team-a", HOST), service("team-a", "web")):
        await api.put(dict(obj))
    for i in range(2):
        await api.put(ingress("team-a", f"web-{i}", HOST, f"/p{i}"))
    app = _watcher(bus, cluster, write_status=False)
    await app.start()
    try:
        await asyncio.wait_for(app.synced.wait(), 30)
        await event_capture.wait_for(routes_of(HOST, {"/p0", "/p1"}), timeout=30)
        # A new Ingress, then a replaced one (its path changed), arrive through the watch.
        await api.put(ingress("team-a", "web-2", HOST, "/p2"))
        await event_capture.wait_for(routes_of(HOST, {"/p0", "/p1", "/p2"}), timeout=30)
        await api.put(ingress("team-a", "web-2", HOST, "/changed"))
        await event_capture.wait_for(routes_of(HOST, {"/p0", "/p1", "/changed"}), timeout=30)
        for i in range(3):
            await api.delete("Ingress", "team-a", f"web-{i}")
        await event_capture.wait_for(
            lambda cap: (
                isinstance(cap.envelope.event, c.DomainDeleted) and cap.envelope.event.host == HOST
            ),
            timeout=30,
        )
    finally:
        await app.stop()


async def test_the_leader_writes_status_and_events(bus: Bus, cluster: Cluster) -> None:
    api = cluster.objects
    for obj in (
        CLASS,
        ZONE,
        domain("team-a", HOST),
        service("team-a", "web"),
        service("team-b", "web"),
        service("team-a", "lb", type="LoadBalancer"),
        ingress("team-a", "web", HOST, "/"),
        ingress("team-b", "intruder", HOST, "/x"),
    ):
        await api.put(dict(obj))
    app = _watcher(bus, cluster, identity="watcher-a")
    await app.start()
    try:
        await asyncio.wait_for(app.synced.wait(), 30)
        await report_everything(bus)

        async def addresses_written() -> bool:
            web = await api.status_of("Ingress", "team-a", "web")
            lb = await api.status_of("Service", "team-a", "lb")
            return _ips(web) == ["192.0.2.10"] and _ips(lb) == ["192.0.2.20"]

        await eventually(addresses_written)
        # The intruder (team-b on team-a's host) gets no address, and a Warning Event says why.
        assert _ips(await api.status_of("Ingress", "team-b", "intruder")) == []

        async def intruder_told() -> bool:
            return any(
                e["involvedObject"]["name"] == "intruder" and e["reason"] == "OwnershipDenied"
                for e in await api.events("team-b")
            )

        await eventually(intruder_told)
        lease = await api.get("Lease", "ingress-domain", "ingress-watcher")
        assert lease["spec"]["holderIdentity"] == "watcher-a"
    finally:
        await app.stop()
