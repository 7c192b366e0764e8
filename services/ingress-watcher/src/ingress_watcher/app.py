"""Wiring: a source fills the object store; every change is normalized, planned against what the
bus holds, and the difference is published. The leader (a Lease with the kubernetes source; the
only instance with manifests) also follows what the other services report and writes status."""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
import time
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from typing import Any

from ingress_events import Consumer, ConsumerSpec, Envelope, LatestByKey
from ingress_events import catalogue as c
from ingress_events.catalogue import Family
from ingress_runtime import ServiceContext, cancel_and_wait

from .adapters.lease import AlwaysLeader, Leadership, LeaseElector
from .adapters.manifests import ManifestSource
from .adapters.publisher import BusPublisher, EventPublisher
from .adapters.source import ObjectSource
from .adapters.status import FileStatusWriter, KubeStatusWriter, StatusWriter
from .domain.normalize import (
    IngressIndex,
    ServiceKey,
    StateKey,
    backend_index,
    key_of_event,
    normalize_all_but_backends,
    normalize_backend_refs,
    normalize_backends,
    normalize_ingresses,
)
from .domain.plan import Plan, Published, is_live, kept, plan, suspicious_emptiness
from .domain.status import StatusIndex, Target, compute_targets, status_patch
from .domain.store import ObjectStore
from .settings import WatcherSettings

COMPONENT = "ingress-watcher"
STATUS_FAMILIES = (Family.VIP, Family.DNS, Family.L7, Family.L4, Family.ROUTE, Family.ADMISSION)
"""What status is made of: every component's reports (and admission verdicts)."""
BACKENDS_PER_PART = 250
"""Backends normalized and published at a time in a full reconcile: ~2,500 endpoint models
(~4 MB) at 10 endpoints a Service, and a part is one publish batch. In bench/ingress-watcher
(10,000 Services) parts of 1,000 peaked at 300 MB, parts of 250 at 281 MB, in the same time."""


def _stamp_generation(kept_event: Published | None) -> int | None:
    """The generation of a live published event, or None (absent or a tombstone)."""
    if kept_event is None or not is_live(kept_event):
        return None
    return kept_event.generation


def _rfc3339(now_us: int) -> str:
    return datetime.fromtimestamp(now_us / 1e6, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _now_us() -> int:
    return time.time_ns() // 1000


def default_source(settings: WatcherSettings) -> ObjectSource:
    if settings.source == "kubernetes":
        from .adapters.kube import KubeSource, kube_config

        return KubeSource(kube_config(settings), settings)
    return ManifestSource(settings.manifests_dir, settings.poll_interval_seconds)


async def _wait_set(event: asyncio.Event, seconds: float) -> bool:
    """Wait up to ``seconds`` for ``event``; True when it is set. Always yields to the loop
    (``Event.wait`` on a set event returns without yielding, and a loop around it would starve
    every other task).

    Not ``asyncio.wait_for``: on Python 3.11 it returns normally when a cancellation arrives in
    the same loop turn as the wake-up (CPython gh-86296), and the caller's loop would run on
    after stop() cancelled it. ``asyncio.timeout`` lets the cancellation through.
    """
    if event.is_set():
        await asyncio.sleep(0)
        return True
    with contextlib.suppress(TimeoutError):
        async with asyncio.timeout(seconds):
            await event.wait()
    return event.is_set()


class WatcherApp:
    def __init__(
        self,
        ctx: ServiceContext[WatcherSettings],
        *,
        source: ObjectSource | None = None,
        publisher: EventPublisher | None = None,
        status_writer: StatusWriter | None = None,
        leadership: Leadership | None = None,
        now_us: Callable[[], int] = _now_us,
    ) -> None:
        self._ctx = ctx
        self._settings = ctx.settings
        self._policy = ctx.settings.policy()
        self._source = source or default_source(ctx.settings)
        self._publisher = publisher or BusPublisher(ctx.bus, COMPONENT)
        self._now_us = now_us
        self.store = ObjectStore()
        self.published: dict[StateKey, Published] = {}
        self.domains: dict[str, c.DomainDesired] = {}
        """The domains as published (with their real generations), which the leader's status is
        made of; ``published`` holds only their stamps."""
        self.synced = asyncio.Event()
        self.reconciles = 0
        self.events_published = 0
        """Events this instance published (a converged restart adds none)."""
        self._dirty = asyncio.Event()
        self._full = False
        self._tasks: list[asyncio.Task[None]] = []
        self.identity = ctx.settings.identity or f"{socket.gethostname()}-{os.getpid()}"
        self.status_writer = status_writer
        self.leadership = leadership
        self.reports: LatestByKey[c.Event] = LatestByKey()
        self.status_writes = 0
        self.status_rounds = 0
        self._status_dirty = asyncio.Event()
        self._status_targets: set[Target] = set()
        """Every object whose status we computed last (what a deletion must forget)."""
        self.status_index = StatusIndex()
        self._status_pending: set[Target] = set()
        """Whose status the reports and domains received since the last round may change."""
        self._status_full = True
        """The next round recomputes every object (the first, after a take-over or a failure)."""
        self._warned: set[tuple[Target, tuple[str, ...]]] = set()
        self._consumers: list[Consumer] = []
        self._api: Any = None
        self._backend_keys: dict[ServiceKey, tuple[StateKey, ...]] | None = None
        """The backends that exist (what endpoint-only changes may touch)."""
        self._ingress_index: IngressIndex | None = None
        """Who names which host (what an Ingress-only change may touch)."""

    async def _default_status(self) -> None:
        settings = self._settings
        if not settings.write_status:
            return
        if settings.source == "kubernetes":
            from ingress_runtime.kubeclient import ApiClient

            from .adapters.kube import discover, kube_config

            if self.status_writer is None or (self.leadership is None and settings.leader_election):
                self._api = ApiClient(kube_config(settings) or await discover())
            if self.status_writer is None:
                self.status_writer = KubeStatusWriter(
                    self._api, self.identity, timeout_seconds=settings.api_timeout_seconds
                )
            if self.leadership is None:
                self.leadership = (
                    LeaseElector(
                        self._api,
                        settings.lease_namespace or settings.system_namespace,
                        settings.lease_name,
                        self.identity,
                        duration_seconds=settings.lease_duration_seconds,
                        renew_seconds=settings.lease_renew_seconds,
                    )
                    if settings.leader_election
                    else AlwaysLeader()
                )
        elif self.status_writer is None and settings.status_dir is not None:
            self.status_writer = FileStatusWriter(settings.status_dir)
        if self.status_writer is not None and self.leadership is None:
            self.leadership = AlwaysLeader()

    async def start(self) -> None:
        self._ctx.readiness.require("initial-sync")
        self.published = await self._publisher.current()
        await self._default_status()
        self._tasks = [
            asyncio.create_task(self._run_source(), name="watcher-source"),
            asyncio.create_task(self._reconcile_loop(), name="watcher-reconcile"),
            asyncio.create_task(self._resync_loop(), name="watcher-resync"),
        ]
        if self.status_writer is not None and self.leadership is not None:
            self._tasks += [
                asyncio.create_task(self.leadership.run(), name="watcher-leadership"),
                asyncio.create_task(self._status_loop(), name="watcher-status"),
            ]

    async def stop(self) -> None:
        tasks, self._tasks = self._tasks, []
        await cancel_and_wait(tasks, self._ctx.log)
        await self._stop_reports()
        if self.leadership is not None:
            await self.leadership.release()
        if self._api is not None:
            await self._api.close()
            self._api = None

    # ------------------------------------------------------------------ status (the leader)

    async def _on_report(self, envelope: Envelope[c.Event]) -> None:
        if self.reports.offer(envelope):
            self._status_pending |= self.status_index.report(envelope.event)
            self._status_dirty.set()

    async def _start_reports(self) -> None:
        bus = self._ctx.bus
        for family in STATUS_FAMILIES:
            for envelope in (await bus.replay(family)).values():
                self.reports.offer(envelope)
        self.status_index = StatusIndex.of(self._domain_view(), self.reports.live())
        self._status_full = True
        for family in STATUS_FAMILIES:
            spec = ConsumerSpec(durable=f"{COMPONENT}-status-{family.value}", family=family)
            self._consumers.append(await bus.consume(spec, self._on_report))

    async def _stop_reports(self) -> None:
        consumers, self._consumers = self._consumers, []
        # Each stop waits for its pending fetch: stop them together.
        await asyncio.gather(*(c.stop() for c in consumers), return_exceptions=True)

    async def _status_loop(self) -> None:
        assert self.leadership is not None
        leading = self.leadership.leading
        while True:
            await leading.wait()
            self._ctx.log.info("leading: writing status", identity=self.identity)
            try:
                await self._start_reports()
                self._status_dirty.set()
                while leading.is_set():
                    # Leadership is re-checked at least every 0.2 s; nothing is written before
                    # the initial sync (status computed from a partial store would be wrong).
                    if not await _wait_set(self.synced, 0.2):
                        continue
                    if not await _wait_set(self._status_dirty, 0.2):
                        continue
                    if self._settings.status_debounce_seconds:
                        await asyncio.sleep(self._settings.status_debounce_seconds)
                    self._status_dirty.clear()
                    try:
                        await self.write_status()
                    except asyncio.CancelledError:
                        raise
                    except Exception as exc:
                        self._ctx.log.error("status write failed; will retry", error=repr(exc))
                        await asyncio.sleep(1.0)
                        self._status_dirty.set()
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                self._ctx.log.error("status feed failed; retrying", error=repr(exc))
                await asyncio.sleep(1.0)
            finally:
                await self._stop_reports()
            self._ctx.log.info("not leading: status writing stopped", identity=self.identity)

    async def write_status(self) -> int:
        """Compute the status of every object whose objects, domains or reports changed since
        the last round (of every object in the first round) and write what differs; returns the
        number of writes."""
        everything, touched = self.store.take_status_changes()
        full = everything or self._status_full
        pending, self._status_pending, self._status_full = self._status_pending, set(), False
        targets = None if full else pending | {Target(k, *key) for k, key in touched}
        try:
            return await self._write_status(targets)
        except BaseException:
            # Nothing of this round is known to be written: the next one does all of it again.
            self._status_full = True
            raise

    async def _write_status(self, targets: set[Target] | None) -> int:
        writer = self.status_writer
        assert writer is not None
        computed = compute_targets(self.store.objects, self._policy, self.status_index, targets)
        now = _rfc3339(self._now_us())
        writes = 0
        for target, desired in sorted(computed.status.items()):
            obj = self.store.objects.get(target.kind, {}).get((target.namespace, target.name))
            patch = status_patch(desired, writer.current(target, obj), now)
            if patch is None:
                continue
            await writer.patch(target, patch, obj)
            writes += 1
        for warning in computed.warnings:
            slot = (warning.target, warning.key)
            if slot in self._warned:
                continue
            await writer.event(warning, now)
            self._warned.add(slot)
        considered = self._status_targets if targets is None else targets & self._status_targets
        gone = considered - set(computed.status)
        if gone:
            await writer.forget(gone)
        if targets is None:
            self._status_targets = set(computed.status)
        else:
            self._status_targets = (self._status_targets - gone) | set(computed.status)
        self.status_writes += writes
        self.status_rounds += 1
        return writes

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
            # A domain the bus no longer holds as published is gone for status too, until the
            # reconcile that follows publishes it again.
            self.domains = {
                host: event
                for host, event in self.domains.items()
                if _stamp_generation(self.published.get((Family.DOMAIN, (host,))))
                == event.generation
            }
            self._status_pending |= self.status_index.reset_domains(self._domain_view())
            self._dirty.set()

    def _update_backend_keys(
        self, scope: set[StateKey], desired: Mapping[StateKey, c.Event]
    ) -> None:
        """Keep the slice fast path's view of which backends exist in step with an Ingress
        change that added or removed some."""
        assert self._backend_keys is not None
        touched: dict[ServiceKey, set[StateKey]] = {}
        for key in scope:
            if key[0] is c.Family.BACKEND:
                service = (key[1][0], key[1][1])
                keys = touched.setdefault(service, set(self._backend_keys.get(service, ())))
                if key in desired:
                    keys.add(key)
                else:
                    keys.discard(key)
        for service, keys in touched.items():
            if keys:
                self._backend_keys[service] = tuple(sorted(keys))
            else:
                self._backend_keys.pop(service, None)

    async def reconcile(self, full: bool) -> int:
        changes = self.store.take_changes()
        if not full and changes.endpoint_slices_only and self._backend_keys is not None:
            # Endpoint churn: only the backends of the Services of the changed slices can differ,
            # and a full normalize of 10,000 Ingresses would cost seconds per change.
            desired = normalize_backends(
                self.store.objects,
                self._policy,
                changes.slice_services,
                self._backend_keys,
                self.store.slices,
            )
            current = {k: self.published[k] for k in desired if k in self.published}
            count = await self._publish(plan(desired, current, self._now_us()))
        elif not full and changes.ingresses_only and self._ingress_index is not None:
            # Ingresses created, edited or deleted: only the hosts they name (and every
            # Ingress sharing those hosts) can differ, and their backends.
            desired, scope = normalize_ingresses(
                self.store.objects,
                self._policy,
                changes.ingresses,
                self._ingress_index,
                self.store.slices,
            )
            current = {k: self.published[k] for k in scope if k in self.published}
            count = await self._publish(plan(desired, current, self._now_us()))
            self._adopt_domains(desired)
            self._update_backend_keys(scope, desired)
        else:
            count = await self._reconcile_everything(full)
        self.reconciles += 1
        self._status_dirty.set()
        if full and not self.synced.is_set():
            self.synced.set()
            self._ctx.readiness.set("initial-sync")
            self._ctx.log.info("initial sync published", objects=self.store.count(), events=count)
        return count

    async def _reconcile_everything(self, full: bool) -> int:
        """Normalize and plan everything: all but the backends at once, then the backends a
        part at a time, each published and dropped before the next is made (at 10,000
        Services their 100,000 endpoint models took ~170 MB at once). Changes that arrive
        meanwhile are recorded in the store and handled by the next reconcile."""
        objects = self.store.objects
        front, self._ingress_index, refs = normalize_all_but_backends(objects, self._policy)
        known = {k: e for k, e in self.published.items() if k[0] is not Family.BACKEND}
        protect = suspicious_emptiness(front, known) if full else frozenset()
        count = await self._publish(plan(front, known, self._now_us(), protect))
        self._adopt_domains(front)
        del front, known
        wanted: set[StateKey] = set()
        ordered = sorted(refs)
        for start in range(0, len(ordered), BACKENDS_PER_PART):
            part = ordered[start : start + BACKENDS_PER_PART]
            desired = normalize_backend_refs(objects, self._policy, part, self.store.slices)
            wanted.update(desired)
            current = {k: self.published[k] for k in desired if k in self.published}
            count += await self._publish(plan(desired, current, self._now_us()))
        stale = {
            k: e for k, e in self.published.items() if k[0] is Family.BACKEND and k not in wanted
        }
        protect = suspicious_emptiness(wanted, stale) if full else frozenset()
        count += await self._publish(plan({}, stale, self._now_us(), protect))
        self._backend_keys = backend_index(wanted)
        return count

    def _domain_view(self) -> dict[StateKey, c.Event]:
        return {(Family.DOMAIN, (host,)): event for host, event in self.domains.items()}

    def _set_domain(self, event: c.Event) -> None:
        if isinstance(event, c.DomainDesired):
            self.domains[event.host] = event
        elif isinstance(event, c.DomainDeleted):
            self.domains.pop(event.host, None)
        self._status_pending |= self.status_index.domain(event)

    def _adopt_domains(self, desired: Mapping[StateKey, c.Event]) -> None:
        """The desired domains the plan left alone are as published: with the published
        generation, they are what status is made of (after a start against a full bus,
        ``domains`` is empty until here, and the events read back were never kept)."""
        for (family, _), want in desired.items():
            if family is not Family.DOMAIN or not isinstance(want, c.DomainDesired):
                continue
            known = self.domains.get(want.host)
            generation = _stamp_generation(self.published.get((Family.DOMAIN, (want.host,))))
            if generation is None or (known is not None and known.generation == generation):
                continue
            self._set_domain(want.model_copy(update={"generation": generation}))

    async def _publish(self, result: Plan) -> int:
        await self._publisher.publish(result.publish)
        self.events_published += len(result.publish)
        for event in result.publish:
            self.published[key_of_event(event)] = kept(event)
            if event.family is Family.DOMAIN:
                self._set_domain(event)
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
        return len(result.publish)
