"""Wiring: vip / domain / route events -> desired names -> plan against the zone -> batched
RFC 2136 updates -> verification through a resolver -> dns.published / dns.rejected / dns.removed.

Consumers only record the newest state per key and mark names dirty; one reconcile loop turns
dirty names into writes. A provider failure keeps the names dirty and backs off, so an outage or
a bad key delays publication but never loses it. A periodic serial check catches changes made by
anyone else (drift) and re-reads the whole zone.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import defaultdict
from collections.abc import Callable
from typing import Any

from ingress_events import catalogue as c
from ingress_events.bus import Consumer, ConsumerSpec
from ingress_events.envelope import Envelope
from ingress_events.generation import GenerationClock
from ingress_events.state import LatestByKey
from ingress_runtime import ServiceContext

from .adapters.provider import DnsProvider, PrerequisiteFailed, ProviderError
from .adapters.rfc2136 import Rfc2136Provider
from .domain import (
    Desired,
    NamePlan,
    Rejection,
    check_name,
    healthy_vips,
    next_withdrawn_since,
    plan_publish,
    plan_remove,
    record_type,
    withdrawn_everywhere,
)
from .settings import DnsWriterSettings

SERVICE = "dns-writer"


def provider_from_settings(settings: DnsWriterSettings) -> DnsProvider:
    assert settings.server is not None and settings.tsig_secret_file is not None
    return Rfc2136Provider(
        server=settings.server,
        port=settings.port,
        key_name=settings.tsig_key_name,
        algorithm=settings.tsig_algorithm,
        secret=settings.tsig_secret_file.read_text().strip(),
        registry_prefix=settings.registry_prefix,
        timeout=settings.timeout_seconds,
    )


class DnsWriterApp:
    def __init__(
        self,
        ctx: ServiceContext[DnsWriterSettings],
        provider: DnsProvider | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._ctx = ctx
        self._settings = ctx.settings
        self._log = ctx.log
        self._provider = provider
        self._clock = clock
        self._zones = self._settings.zone_list()
        self._owner = self._settings.owner
        self._state: LatestByKey[c.Event] = LatestByKey()
        self._routes: dict[tuple[str, str], bool] = {}
        """Per node and VIP: announced (True) or withdrawn (False)."""
        self._withdrawn_since: dict[str, float] = {}
        self._hosts_by_vip: dict[str, set[str]] = defaultdict(set)
        self._dirty: set[str] = set()
        self._full_sync: set[str] = set()
        self._wake = asyncio.Event()
        self._consumers: list[Consumer] = []
        self._tasks: list[asyncio.Task[None]] = []
        self._generations = GenerationClock()
        self._emitted: dict[str, tuple[int, Any]] = {}
        self._serials: dict[str, int] = {}
        self._timers: dict[str, float] = {}
        self.reconciles = 0
        """Completed reconcile passes (tests wait on it)."""
        self.writes = 0
        """Updates sent to the provider (a converged reconcile adds none)."""
        self.verified = 0
        """Whole-zone reads (start-up and drift checks) that found nothing to change."""

    # ------------------------------------------------------------------ lifecycle

    async def start(self) -> None:
        readiness = self._ctx.readiness
        readiness.require("dns-provider")
        if self._provider is None:
            missing = self._settings.missing()
            if missing:
                self._log.error(
                    "dns-writer is not configured; staying not ready and writing nothing",
                    missing=missing,
                )
                return
            self._provider = provider_from_settings(self._settings)
        self._log.info(
            "dns-writer starting",
            provider=self._provider.name,
            zones=self._zones,
            owner_id=self._owner,
            upsert_only=self._settings.upsert_only,
        )
        # Bind the consumers first, then replay: an event published in between is seen twice at
        # worst, and LatestByKey makes the second sighting a no-op.
        for family in (c.Family.DOMAIN, c.Family.VIP, c.Family.ROUTE):
            spec = ConsumerSpec(
                f"{SERVICE}-{self._owner}-{family.value}",
                family,
                batch=512,
                fetch_timeout_seconds=0.5,
            )
            self._consumers.append(await self._ctx.bus.consume(spec, self._handle))
        for family in (c.Family.DOMAIN, c.Family.VIP, c.Family.ROUTE):
            for envelope in (await self._ctx.bus.replay(family)).values():
                self._offer(envelope)
        self._full_sync.update(self._zones)
        self._wake.set()
        self._tasks.append(asyncio.create_task(self._reconcile_loop(), name="dns-reconcile"))
        self._tasks.append(asyncio.create_task(self._verify_loop(), name="dns-verify"))

    async def stop(self) -> None:
        for consumer in self._consumers:
            await consumer.stop()
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        if self._provider is not None:
            await self._provider.close()

    # ------------------------------------------------------------------ events in

    async def _handle(self, envelope: Envelope[c.Event]) -> None:
        if self._offer(envelope):
            self._wake.set()

    def _offer(self, envelope: Envelope[c.Event]) -> bool:
        if not self._state.offer(envelope):
            return False
        event = envelope.event
        if isinstance(event, c.VipAssigned | c.VipReleased | c.VipRejected):
            if event.owner.kind != "domain" or event.owner.host is None:
                return False
            host = event.owner.host
            if isinstance(event, c.VipAssigned):
                for vip in event.addresses:
                    self._hosts_by_vip[vip].add(host)
            self._dirty.add(host)
        elif isinstance(event, c.DomainDesired | c.DomainDeleted):
            self._dirty.add(event.host)
        elif isinstance(event, c.RouteAnnounced | c.RouteWithdrawn):
            self._routes[(event.node, event.vip)] = isinstance(event, c.RouteAnnounced)
            self._route_changed(event.vip)
        return True

    def _route_changed(self, vip: str) -> None:
        states = [announced for (_, v), announced in self._routes.items() if v == vip]
        since = next_withdrawn_since(
            self._withdrawn_since.get(vip), withdrawn_everywhere(states), self._clock()
        )
        if since is None:
            self._withdrawn_since.pop(vip, None)
        else:
            self._withdrawn_since[vip] = since
        self._dirty.update(self._hosts_by_vip.get(vip, ()))

    # ------------------------------------------------------------------ reconcile loop

    async def _reconcile_loop(self) -> None:
        backoff = 0.2
        while True:
            timeout = None
            if self._timers:
                timeout = max(0.0, min(self._timers.values()) - self._clock())
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), timeout=timeout)
            self._wake.clear()
            # A bulk arrival (start-up, relist) comes in hundreds of messages: let it settle so
            # it becomes a few large batches and one zone read, not a pass per fetch.
            settled = -1
            while len(self._dirty) > self._settings.read_by_transfer_above and (
                len(self._dirty) != settled
            ):
                settled = len(self._dirty)
                await asyncio.sleep(0.05)
            now = self._clock()
            for host, at in list(self._timers.items()):
                if at <= now:
                    del self._timers[host]
                    self._dirty.add(host)
            hosts, self._dirty = self._dirty, set()
            full, self._full_sync = self._full_sync, set()
            try:
                await self._reconcile(hosts, full)
            except ProviderError as exc:
                self._dirty |= hosts
                self._full_sync |= full
                self._ctx.readiness.set("dns-provider", False)
                self._log.error(
                    "dns provider failed; will retry",
                    reason=exc.reason,
                    error=exc.message,
                    retry_in_s=backoff,
                    names=len(hosts),
                )
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, self._settings.max_backoff_seconds)
                self._wake.set()
                continue
            backoff = 0.2
            self._ctx.readiness.set("dns-provider", True)
            self.reconciles += 1
            if self._dirty:
                self._wake.set()

    async def _verify_loop(self) -> None:
        assert self._provider is not None
        while True:
            await asyncio.sleep(self._settings.verify_interval_seconds)
            for zone in self._zones:
                try:
                    serial = await self._provider.serial(zone)
                except ProviderError as exc:
                    self._log.warning("serial check failed", zone=zone, error=exc.message)
                    continue
                if self._serials.get(zone) != serial:
                    # Someone changed the zone (us included): read it whole and repair drift.
                    self._full_sync.add(zone)
                    self._wake.set()

    def _schedule(self, host: str, at: float) -> None:
        """Look at ``host`` again at ``at`` (a hold-down expiring, a retry)."""
        known = self._timers.get(host)
        if known is None or at < known:
            self._timers[host] = at

    async def _reconcile(self, hosts: set[str], full_zones: set[str]) -> None:
        assert self._provider is not None
        now = self._clock()
        by_zone: dict[str, dict[str, Desired | None]] = defaultdict(dict)
        for zone in full_zones:
            by_zone[zone]
        all_hosts = set(hosts)
        if full_zones:
            all_hosts |= self._known_hosts()
        rejected: list[c.Event] = []
        for host in sorted(all_hosts):
            vip = self._state.get(c.Family.VIP, ("domain", host))
            domain = self._state.get(c.Family.DOMAIN, (host,))
            zone, rejection = check_name(host, self._zones, self._settings.registry_prefix)
            if isinstance(vip, c.VipAssigned) and not isinstance(domain, c.DomainDeleted):
                if rejection is not None:
                    rejected.extend(self._rejected(rejection, vip.generation))
                    continue
                if full_zones and host not in hosts and zone not in full_zones:
                    continue
                healthy, wake = healthy_vips(
                    vip.addresses, self._withdrawn_since, now, self._settings.hold_down_seconds
                )
                if wake is not None:
                    self._schedule(host, wake)
                ttl = self._settings.default_ttl_seconds
                if isinstance(domain, c.DomainDesired) and domain.dns.ttl_seconds:
                    ttl = domain.dns.ttl_seconds
                by_zone[zone][host] = Desired(
                    fqdn=host,
                    zone=zone,
                    resource=f"domain/{host}",
                    assigned=frozenset(vip.addresses),
                    healthy=healthy,
                    ttl=ttl,
                    generation=vip.generation,
                )
            elif (isinstance(vip, c.VipReleased) or isinstance(domain, c.DomainDeleted)) and (
                rejection is None and host in hosts
            ):
                # Only an explicit delete event, and only for this pass's names, removes anything.
                by_zone[zone][host] = None
        if rejected:
            await self._ctx.bus.publish_many(rejected)
        for zone, wanted in by_zone.items():
            await self._reconcile_zone(zone, wanted, full=zone in full_zones)

    def _known_hosts(self) -> set[str]:
        return {
            e.owner.host
            for e in self._state.live(c.Family.VIP)
            if isinstance(e, c.VipAssigned) and e.owner.host is not None
        }

    async def _reconcile_zone(
        self, zone: str, wanted: dict[str, Desired | None], *, full: bool
    ) -> None:
        assert self._provider is not None
        names = list(wanted)
        if full or len(names) > self._settings.read_by_transfer_above:
            view = await self._provider.read(zone, None)
        else:
            view = await self._provider.read(zone, names)
        plans: list[NamePlan] = []
        events: list[c.Event] = []
        done: list[tuple[str, Desired | None, NamePlan]] = []
        prefix = self._settings.registry_prefix
        for host, desired in wanted.items():
            current = view.get(host)
            if desired is None:
                plan = plan_remove(
                    host, zone, current, self._owner, prefix, upsert_only=self._settings.upsert_only
                )
            else:
                planned = plan_publish(desired, current, self._owner, prefix)
                if isinstance(planned, Rejection):
                    events.extend(self._rejected(planned, desired.generation))
                    continue
                plan = planned
            done.append((host, desired, plan))
            if not plan.empty:
                plans.append(plan)
        applied = await self._apply(zone, plans)
        changed = [p for p in plans if p.fqdn in applied]
        await self._verify(changed)
        for host, desired, plan in done:
            if plan.empty or host in applied:
                events.extend(self._outcome(host, zone, desired, plan))
        if events:
            await self._ctx.bus.publish_many(events)
        if full and view.serial is not None and not plans:
            self._serials[zone] = view.serial
            self.verified += 1

    async def _apply(self, zone: str, plans: list[NamePlan]) -> set[str]:
        """Apply in batches; a batch that fails a prerequisite is split so that one name whose
        zone content changed under us does not hold back the others."""
        assert self._provider is not None
        applied: set[str] = set()
        size = self._settings.batch_size
        for offset in range(0, len(plans), size):
            batch = plans[offset : offset + size]
            try:
                await self._provider.apply(zone, batch)
                self.writes += 1
                applied.update(p.fqdn for p in batch)
            except PrerequisiteFailed:
                for plan in batch:
                    try:
                        await self._provider.apply(zone, [plan])
                        self.writes += 1
                        applied.add(plan.fqdn)
                    except PrerequisiteFailed as exc:
                        self._log.warning(
                            "name changed while we wrote it; re-reading",
                            fqdn=plan.fqdn,
                            error=exc.message,
                        )
                        self._dirty.add(plan.fqdn)
                        self._schedule(plan.fqdn, self._clock() + 1.0)
        return applied

    async def _verify(self, plans: list[NamePlan]) -> None:
        assert self._provider is not None
        provider = self._provider
        gate = asyncio.Semaphore(32)

        async def one(plan: NamePlan) -> None:
            async with gate:
                seen = await provider.resolve(plan.fqdn)
            if not plan.published <= seen:
                self._log.warning(
                    "written but not resolvable yet; will check again",
                    fqdn=plan.fqdn,
                    expected=sorted(plan.published),
                    resolved=sorted(seen),
                )
                self._dirty.add(plan.fqdn)
                self._schedule(plan.fqdn, self._clock() + 1.0)

        await asyncio.gather(*(one(p) for p in plans))

    # ------------------------------------------------------------------ events out

    def _next_generation(self, host: str) -> int:
        last = self._emitted.get(host, (0, None))[0]
        return self._generations.next(last)

    def _rejected(self, rejection: Rejection, observed: int) -> list[c.Event]:
        token = ("rejected", rejection.reason, observed)
        if self._emitted.get(rejection.fqdn, (0, None))[1] == token:
            return []
        self._log.warning(
            "name rejected",
            fqdn=rejection.fqdn,
            reason=rejection.reason,
            message=rejection.message,
        )
        generation = self._next_generation(rejection.fqdn)
        self._emitted[rejection.fqdn] = (generation, token)
        return [
            c.DnsRejected(
                generation=generation,
                fqdn=rejection.fqdn,
                reason=rejection.reason,
                message=rejection.message,
                observed_generation=observed,
            )
        ]

    def _outcome(
        self, host: str, zone: str, desired: Desired | None, plan: NamePlan
    ) -> list[c.Event]:
        assert self._provider is not None
        if desired is None or not plan.published:
            token: Any = ("removed",)
            if self._emitted.get(host, (0, None))[1] == token:
                return []
            generation = self._next_generation(host)
            self._emitted[host] = (generation, token)
            self._log.info("dns values removed", fqdn=host, zone=zone)
            return [c.DnsRemoved(generation=generation, fqdn=host)]
        records = []
        for rtype in ("A", "AAAA"):
            values = sorted(v for v in plan.published if record_type(v) == rtype)
            if values:
                records.append(
                    c.DnsRecord(record_type=rtype, values=values, ttl_seconds=desired.ttl)
                )
        token = ("published", desired.generation, tuple(records))
        if self._emitted.get(host, (0, None))[1] == token:
            return []
        generation = self._next_generation(host)
        self._emitted[host] = (generation, token)
        self._log.info("dns published", fqdn=host, values=sorted(plan.published), zone=zone)
        return [
            c.DnsPublished(
                generation=generation,
                fqdn=host,
                zone=zone,
                owner_id=self._owner,
                records=records,
                providers=[self._provider.name],
                observed_generation=desired.generation,
            )
        ]
