"""stop() returns whatever the watcher's tasks were doing when it came.

The leader-election module once hung in CI inside stop(): the status loop waited for work with
``asyncio.wait_for(event.wait(), 0.2)``, and on Python 3.11 ``wait_for`` returns normally when a
cancellation arrives in the same loop turn as the wake-up (CPython gh-86296). The loop ran on and
stop() waited for it forever. These tests put the cancellation at every position around a
wake-up (libs/runtime tests a task that swallows its cancellation).
"""

from __future__ import annotations

import asyncio
from typing import Any, cast

import pytest
import structlog
from ingress_events import ConsumerSpec
from ingress_events.bus import Bus
from ingress_events.catalogue import Family
from ingress_runtime import Readiness, ServiceContext
from ingress_watcher.adapters.lease import AlwaysLeader
from ingress_watcher.adapters.publisher import InMemoryPublisher
from ingress_watcher.adapters.source import Notify
from ingress_watcher.adapters.status import InMemoryStatusWriter
from ingress_watcher.app import WatcherApp
from ingress_watcher.domain.store import ObjectStore
from ingress_watcher.settings import WatcherSettings
from watcher_objects import CLASS, ingress, service

pytestmark = pytest.mark.unit

LOG = structlog.get_logger("test")


class ListSource:
    """Installs fixed lists once, then waits to be cancelled."""

    async def run(self, store: ObjectStore, notify: Notify) -> None:
        store.replace("IngressClass", [dict(CLASS)])
        store.replace("Service", [service("team-a", "web")])
        store.replace("Ingress", [ingress("team-a", "web", "shop.example.com", "/")])
        await notify(True)
        await asyncio.Event().wait()


class LateSource(ListSource):
    """The initial sync completes only after a while (a large cluster)."""

    async def run(self, store: ObjectStore, notify: Notify) -> None:
        await asyncio.sleep(0.3)
        await super().run(store, notify)


class QuietConsumer:
    async def stop(self) -> None:
        await asyncio.sleep(0)


class QuietBus:
    """The status loop's feed with nothing to report (the loop's own waits are under test)."""

    def __init__(self) -> None:
        self.consumers = 0

    async def replay(self, family: Family, key_prefix: tuple[str, ...] = ()) -> dict[str, Any]:
        return {}

    async def consume(self, spec: ConsumerSpec, handler: Any) -> QuietConsumer:
        self.consumers += 1
        return QuietConsumer()


def _app(source: ListSource | None = None) -> WatcherApp:
    settings = WatcherSettings.model_validate(
        {"debounce_seconds": 0, "status_debounce_seconds": 0, "identity": "stop-test"}
    )
    ctx = ServiceContext("ingress-watcher", settings, cast(Bus, QuietBus()), Readiness(), LOG)
    return WatcherApp(
        ctx,
        source=source or ListSource(),
        publisher=InMemoryPublisher(),
        status_writer=InMemoryStatusWriter(),
        leadership=AlwaysLeader(),
    )


@pytest.mark.parametrize("own_task", [False, True], ids=["awaited", "in-a-task"])
async def test_stop_returns_when_a_status_wakeup_is_under_way(own_task: bool) -> None:
    # Before the fix, the first positions left the status loop running: stop() in a task of
    # its own never returned, and an awaited stop() returned only when its caller's timeout
    # cancelled it (and swallowed that cancellation as well).
    loop = asyncio.get_running_loop()
    for turns in range(6):
        app = _app()
        await app.start()
        async with asyncio.timeout(5):
            await app.synced.wait()
            while app.status_rounds == 0:  # noqa: ASYNC110
                await asyncio.sleep(0.005)
        app._status_dirty.set()
        for _ in range(turns):
            await asyncio.sleep(0)
        started = loop.time()
        if own_task:
            stopping = asyncio.create_task(app.stop())
            done, _ = await asyncio.wait([stopping], timeout=3)
            assert done == {stopping}, f"stop() hung ({turns} turns after the wake-up)"
        else:
            async with asyncio.timeout(3):
                await app.stop()
        assert loop.time() - started < 2.5, f"stop() took long ({turns} turns after the wake-up)"
        assert app._tasks == []


@pytest.mark.timeout(30)
async def test_leading_before_the_initial_sync_leaves_the_loop_to_the_others() -> None:
    # The status loop waits for the sync without spinning: a loop around an Event.wait() that
    # returns at once (status work pending, sync not done) would never yield, and the sync it
    # waits for would never come (pytest-timeout ends this test then).
    app = _app(LateSource())
    await app.start()
    try:
        async with asyncio.timeout(5):
            await app.synced.wait()
            while app.status_rounds == 0:  # noqa: ASYNC110
                await asyncio.sleep(0.005)
    finally:
        await app.stop()
