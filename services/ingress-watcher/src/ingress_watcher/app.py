"""Wiring: a source fills the object store; every change is normalized, planned against what the
bus holds, and the difference is published."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable

from ingress_events import catalogue as c
from ingress_runtime import ServiceContext

from .adapters.manifests import ManifestSource
from .adapters.publisher import BusPublisher, EventPublisher
from .adapters.source import ObjectSource
from .domain.normalize import StateKey, key_of_event, normalize
from .domain.plan import plan, suspicious_emptiness
from .domain.store import ObjectStore
from .settings import WatcherSettings

COMPONENT = "ingress-watcher"


def _now_us() -> int:
    return time.time_ns() // 1000


def default_source(settings: WatcherSettings) -> ObjectSource:
    if settings.source == "kubernetes":
        from .adapters.kube import KubeSource, kube_config

        return KubeSource(kube_config(settings), settings)
    return ManifestSource(settings.manifests_dir, settings.poll_interval_seconds)


class WatcherApp:
    def __init__(
        self,
        ctx: ServiceContext[WatcherSettings],
        *,
        source: ObjectSource | None = None,
        publisher: EventPublisher | None = None,
        now_us: Callable[[], int] = _now_us,
    ) -> None:
        self._ctx = ctx
        self._settings = ctx.settings
        self._policy = ctx.settings.policy()
        self._source = source or default_source(ctx.settings)
        self._publisher = publisher or BusPublisher(ctx.bus, COMPONENT)
        self._now_us = now_us
        self.store = ObjectStore()
        self.published: dict[StateKey, c.Event] = {}
        self.synced = asyncio.Event()
        self.reconciles = 0
        self._dirty = asyncio.Event()
        self._full = False
        self._tasks: list[asyncio.Task[None]] = []

    async def start(self) -> None:
        self._ctx.readiness.require("initial-sync")
        self.published = await self._publisher.current()
        self._tasks = [
            asyncio.create_task(self._run_source(), name="watcher-source"),
            asyncio.create_task(self._reconcile_loop(), name="watcher-reconcile"),
            asyncio.create_task(self._resync_loop(), name="watcher-resync"),
        ]

    async def stop(self) -> None:
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._tasks = []

    async def _notify(self, full: bool) -> None:
        self._full = self._full or full
        self._dirty.set()

    async def _run_source(self) -> None:
        delay = 1.0
        while True:
            try:
                await self._source.run(self.store, self._notify)
                return
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                self._ctx.log.error("source failed; restarting", error=repr(exc), retry_in_s=delay)
                await asyncio.sleep(delay)
                delay = min(delay * 2, 30.0)

    async def _reconcile_loop(self) -> None:
        while True:
            await self._dirty.wait()
            if self._settings.debounce_seconds:
                await asyncio.sleep(self._settings.debounce_seconds)
            self._dirty.clear()
            full, self._full = self._full, False
            try:
                await self.reconcile(full)
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                # The store still holds the truth: try again, from scratch, a little later.
                self._ctx.log.error("reconcile failed; will retry", error=repr(exc))
                self._full = self._full or full
                await asyncio.sleep(1.0)
                self._dirty.set()

    async def _resync_loop(self) -> None:
        while True:
            await asyncio.sleep(self._settings.resync_seconds)
            # Compare with what the bus really holds: a lost or rebuilt bus is repaired here.
            self.published = await self._publisher.current()
            self._dirty.set()

    async def reconcile(self, full: bool) -> int:
        desired = normalize(self.store.objects, self._policy)
        protect = suspicious_emptiness(desired, self.published) if full else frozenset()
        result = plan(desired, self.published, self._now_us(), protect)
        await self._publisher.publish(result.publish)
        for event in result.publish:
            self.published[key_of_event(event)] = event
            if isinstance(event, c.AdmissionRejected):
                self._ctx.log.warning(
                    "object rejected",
                    kind=event.object.kind,
                    namespace=event.object.namespace,
                    name=event.object.name,
                    problems=[f"{p.reason}: {p.message}" for p in event.problems],
                )
        if result.held_deletes:
            self._ctx.log.warning(
                "a whole family vanished at once; its deletes are held (bad relist or wrong "
                "manifest directory?)",
                held=len(result.held_deletes),
            )
        self.reconciles += 1
        if full and not self.synced.is_set():
            self.synced.set()
            self._ctx.readiness.set("initial-sync")
            self._ctx.log.info(
                "initial sync published", objects=self.store.count(), events=len(result.publish)
            )
        return len(result.publish)
