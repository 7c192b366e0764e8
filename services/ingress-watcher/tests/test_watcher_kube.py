"""The real kubernetes-asyncio client against a local API server speaking the list/watch wire
protocol, wired into the watcher and a real nats-server."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable

import pytest
import structlog
from ingress_events import catalogue as c
from ingress_events.bus import Bus
from ingress_runtime import Readiness, ServiceContext
from ingress_testkit.capture import Captured, EventCapture
from ingress_watcher.adapters.kube import KubeSource, kube_config
from ingress_watcher.app import WatcherApp
from ingress_watcher.settings import WatcherSettings
from kube_apiserver import LocalApiServer
from watcher_objects import CLASS, ZONE, domain, ingress, service

pytestmark = pytest.mark.integration


@pytest.fixture
async def apiserver() -> AsyncIterator[LocalApiServer]:
    server = await LocalApiServer(bookmark_interval=0.1).start()
    for obj in (
        CLASS,
        ZONE,
        domain("team-a", "shop.example.com"),
        service("team-a", "web"),
        domain("team-a", "blog.example.com"),
        service("team-a", "blog"),
    ):
        await server.put(dict(obj))
    for i in range(5):
        await server.put(ingress("team-a", f"web-{i}", "shop.example.com", f"/p{i}"))
    await server.put(ingress("team-a", "blog", "blog.example.com", service_name="blog"))
    try:
        yield server
    finally:
        await server.stop()


def _settings(url: str, **extra: object) -> WatcherSettings:
    values: dict[str, object] = {
        "source": "kubernetes",
        "kube_api_url": url,
        "list_page_size": 2,
        "watch_timeout_seconds": 30,
        "read_timeout_seconds": 5.0,
        "debounce_seconds": 0.005,
        "write_status": False,  # status and the Lease: test_watcher_leader.py
        **extra,
    }
    return WatcherSettings.model_validate(values)


@pytest.fixture
async def watcher(
    bus: Bus, apiserver: LocalApiServer, request: pytest.FixtureRequest
) -> AsyncIterator[tuple[WatcherApp, KubeSource, Readiness]]:
    extra = getattr(request, "param", {})
    settings = _settings(apiserver.url, **extra)
    source = KubeSource(kube_config(settings), settings)
    readiness = Readiness()
    ctx = ServiceContext(
        "ingress-watcher", settings, bus, readiness, structlog.get_logger("ingress-watcher")
    )
    app = WatcherApp(ctx, source=source)
    await app.start()
    try:
        yield app, source, readiness
    finally:
        await app.stop()


def routes_of(host: str, paths: set[str]) -> Callable[[Captured], bool]:
    def match(cap: Captured) -> bool:
        event = cap.envelope.event
        return (
            isinstance(event, c.DomainDesired)
            and event.host == host
            and {r.path for r in event.routes} == paths
        )

    return match


async def until(check: Callable[[], bool], timeout: float = 10.0) -> None:
    # The stats are plain counters of the source: polling them keeps the source free of hooks.
    async with asyncio.timeout(timeout):
        while not check():  # noqa: ASYNC110
            await asyncio.sleep(0.02)


async def test_paginated_initial_sync_then_ready(
    watcher: tuple[WatcherApp, KubeSource, Readiness],
    event_capture: EventCapture,
    apiserver: LocalApiServer,
) -> None:
    app, _, readiness = watcher
    assert "initial-sync" in readiness.unmet() or app.synced.is_set()
    await asyncio.wait_for(app.synced.wait(), 10)
    assert readiness.unmet() == []
    await event_capture.wait_for(routes_of("shop.example.com", {f"/p{i}" for i in range(5)}))
    # 5 + 1 Ingresses in pages of 2: the continue token was followed to the end.
    assert sum(1 for r in apiserver.requests if r.startswith("Ingress ") and "continue=" in r) == 2


async def test_watch_events_and_bookmarks(
    watcher: tuple[WatcherApp, KubeSource, Readiness],
    event_capture: EventCapture,
    apiserver: LocalApiServer,
) -> None:
    app, source, _ = watcher
    await asyncio.wait_for(app.synced.wait(), 10)
    await apiserver.put(ingress("team-a", "new", "shop.example.com", "/new"))
    await event_capture.wait_for(
        routes_of("shop.example.com", {*(f"/p{i}" for i in range(5)), "/new"})
    )
    await apiserver.delete("Ingress", "team-a", "blog")
    await event_capture.wait_for(lambda cap: isinstance(cap.envelope.event, c.DomainDeleted))
    # Bookmarks move every kind's resourceVersion forward without any change of that kind.
    await apiserver.put(service("team-a", "unrelated"))
    latest = str(apiserver.rv)
    await until(lambda: source.stats.resource_versions.get("BgpPeer") == latest)


async def test_410_inside_a_200_stream_relists_and_synthesizes_deletes(
    watcher: tuple[WatcherApp, KubeSource, Readiness],
    event_capture: EventCapture,
    apiserver: LocalApiServer,
) -> None:
    app, source, _ = watcher
    await asyncio.wait_for(app.synced.wait(), 10)
    await event_capture.wait_for(routes_of("blog.example.com", {"/"}))
    lists_before = source.stats.lists["Ingress"]
    apiserver.stall = True  # no bookmarks: the watcher's resourceVersion stays old
    await asyncio.sleep(0.2)
    # While no watch can see it, blog's Ingress goes and one shop path goes; then compaction.
    await apiserver.delete("Ingress", "team-a", "blog", quietly=True)
    await apiserver.delete("Ingress", "team-a", "web-4", quietly=True)
    apiserver.compact()
    apiserver.stall = False
    await apiserver.drop_watches()
    await event_capture.wait_for(
        lambda cap: (
            isinstance(cap.envelope.event, c.DomainDeleted)
            and cap.envelope.event.host == "blog.example.com"
        )
    )
    await event_capture.wait_for(routes_of("shop.example.com", {f"/p{i}" for i in range(4)}))
    assert source.stats.gone >= 1
    assert source.stats.lists["Ingress"] > lists_before


@pytest.mark.parametrize("watcher", [{"watch_timeout_seconds": 1}], indirect=True)
async def test_server_side_timeout_resumes_without_relisting(
    watcher: tuple[WatcherApp, KubeSource, Readiness],
    event_capture: EventCapture,
    apiserver: LocalApiServer,
) -> None:
    app, source, _ = watcher
    await asyncio.wait_for(app.synced.wait(), 10)
    await until(lambda: source.stats.watches.get("Ingress", 0) >= 3, timeout=8)
    assert source.stats.lists["Ingress"] == 1
    await apiserver.put(
        ingress("team-a", "later", "blog.example.com", "/later", service_name="blog")
    )
    await event_capture.wait_for(routes_of("blog.example.com", {"/", "/later"}))


@pytest.mark.parametrize("watcher", [{"read_timeout_seconds": 0.5}], indirect=True)
async def test_a_silent_connection_is_noticed_by_the_client_timeout(
    watcher: tuple[WatcherApp, KubeSource, Readiness],
    event_capture: EventCapture,
    apiserver: LocalApiServer,
) -> None:
    app, source, _ = watcher
    await asyncio.wait_for(app.synced.wait(), 10)
    apiserver.stall = True
    await until(lambda: source.stats.timeouts >= 1, timeout=8)
    apiserver.stall = False
    await apiserver.put(
        ingress("team-a", "after", "blog.example.com", "/after", service_name="blog")
    )
    await event_capture.wait_for(routes_of("blog.example.com", {"/", "/after"}))


async def test_a_dropped_connection_resumes_from_the_last_version(
    watcher: tuple[WatcherApp, KubeSource, Readiness],
    event_capture: EventCapture,
    apiserver: LocalApiServer,
) -> None:
    app, source, _ = watcher
    await asyncio.wait_for(app.synced.wait(), 10)
    await apiserver.drop_watches()
    await apiserver.put(ingress("team-a", "x", "blog.example.com", "/x", service_name="blog"))
    await event_capture.wait_for(routes_of("blog.example.com", {"/", "/x"}))
    assert source.stats.lists["Ingress"] == 1  # resumed, not relisted
