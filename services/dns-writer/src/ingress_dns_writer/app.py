"""Wiring: vip / domain / route events -> desired names -> plan against the zone -> batched
RFC 2136 updates -> verification through a resolver -> dns.published / dns.rejected / dns.removed.

Consumers only record the newest state per key and mark names dirty; one reconcile loop turns
dirty names into writes, at every configured provider (each with its region: see
domain/plan.py). A provider failure keeps the names dirty and backs off, so an outage or a bad key
delays publication but never loses it. A periodic serial check per provider catches changes made
by anyone else (drift, or a peer cluster that changed its readiness) and re-reads the whole zone.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import defaultdict
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from ingress_events import catalogue as c
from ingress_events.bus import Consumer, ConsumerSpec
from ingress_events.envelope import Envelope
from ingress_events.generation import GenerationClock
from ingress_events.state import LatestByKey
from ingress_runtime import ServiceContext, cancel_and_wait

from .adapters.provider import DnsProvider, PrerequisiteFailed, ProviderError
from .adapters.rfc2136 import Rfc2136Provider
from .domain import (
    Desired,
    NamePlan,
    NameState,
    Rejection,
    ZoneView,
    apply_to_state,
    check_name,
    healthy_vips,
    next_withdrawn_since,
    pending_vips,
    plan_publish,
    plan_remove,
    record_type,
    withdrawn_everywhere,
)
from .settings import DnsWriterSettings

SERVICE = "dns-writer"
_UPDATES_IN_FLIGHT = 4


@dataclass(frozen=True)
class Target:
    """A provider and the region it answers for (None: every region's VIPs)."""

    provider: DnsProvider
    region: str | None = None


def targets_from_settings(settings: DnsWriterSettings) -> list[Target]:
    targets = []
    for entry in settings.provider_list():
        provider = Rfc2136Provider(
            server=entry.server,
            port=entry.port,
            key_name=entry.tsig_key_name,
            algorithm=entry.tsig_algorithm,
            secret=entry.tsig_secret_file.read_text().strip(),
            registry_prefix=settings.registry_prefix,
            timeout=settings.timeout_seconds,
            name=entry.name,
        )
        targets.append(Target(provider, entry.region))
    return targets


@dataclass(frozen=True)
class _Emission:
    """An event about one name and the token that says what it said (to skip repeats)."""

    host: str
    event: c.DnsPublished | c.DnsRemoved | c.DnsRejected
    token: Any


@dataclass
class _Result:
    """What one pass did for one name at one provider."""

    target: int
    desired: Desired | None
    plan: NamePlan


class DnsWriterApp:
    def __init__(
        self,
        ctx: ServiceContext[DnsWriterSettings],
        provider: DnsProvider | None = None,
        clock: Callable[[], float] = time.monotonic,
        targets: Sequence[Target] | None = None,
    ) -> None:
        self._ctx = ctx
        self._settings = ctx.settings
        self._log = ctx.log
        self._targets: list[Target] = list(targets or [])
        if provider is not None:
            self._targets.append(Target(provider))
        self._clock = clock
        self._zones = self._settings.zone_list()
        self._owner = self._settings.owner
        self._state: LatestByKey[c.Event] = LatestByKey()
        self._routes: dict[str, dict[str, bool]] = defaultdict(dict)
        """Per VIP and node: announced (True) or withdrawn (False). By VIP first: each route
        event looks at its VIP's nodes, and a scan of every (node, VIP) per event made the
        start-up replay of 10,000 routes quadratic."""
        self._withdrawn_since: dict[str, float] = {}
        self._assigned_at: dict[str, float] = {}
        """When each VIP was first seen assigned (a pending VIP waits from there)."""
        self._routed: set[str] = set()
        """VIPs no longer pending: announced to an established peer, or withdrawn."""
        self._hosts_by_vip: dict[str, set[str]] = defaultdict(set)
        self._dirty: set[str] = set()
        self._full_sync: set[tuple[int, str]] = set()
        """(provider index, zone) pairs to read whole at the next pass."""
        self._wake = asyncio.Event()
        self._consumers: list[Consumer] = []
        self._tasks: list[asyncio.Task[None]] = []
        self._generations = GenerationClock()
        self._emitted: dict[str, tuple[int, Any]] = {}
        self._serials: dict[tuple[int, str], int] = {}
        self._fully_planned: dict[tuple[int, str], dict[str, NameState]] = {}
        """Per (provider index, zone): the names as read by the last whole-zone pass that
        completed, with what we wrote since. A later whole-zone pass plans only the names that
        differ from it (and its own events' names): at 10,000 names, planning all of them
        after each of our own writes held up every change that came meanwhile."""
        self._timers: dict[str, float] = {}
        self.reconciles = 0
        """Completed reconcile passes (tests wait on it)."""
        self.writes = 0
        """Updates sent to the provider (a converged reconcile adds none)."""
        self.verified = 0
        """Whole-zone reads (start-up and drift checks) that found nothing to change."""
        self.planned = 0
        """Names the last pass looked at (a whole-zone pass: only those that changed)."""

    # ------------------------------------------------------------------ lifecycle

    async def start(self) -> None:
        readiness = self._ctx.readiness
        readiness.require("dns-provider")
        if not self._targets:
            missing = self._settings.missing()
            if missing:
                self._log.error(
                    "dns-writer is not configured; staying not ready and writing nothing",
                    missing=missing,
                )
                return
            self._targets = targets_from_settings(self._settings)
        self._log.info(
            "dns-writer starting",
            providers=[f"{t.provider.name} region={t.region or '*'}" for t in self._targets],
            region=self._settings.home_region,
            zones=self._zones,
            owner_id=self._owner,
            upsert_only=self._settings.upsert_only,
        )
        # Bind the consumers first, then replay: an event published in between is seen twice at
        # worst, and LatestByKey makes the second sighting a no-op. The consumers deliver only
        # what arrives after they were created ("new"): the replay already gives the current
        # state, and a consumer starting from the last event per subject would decode the whole
        # state a second time, concurrently (half of a 10,000-name start-up). The durable names
        # end in "-live" because a durable's delivery policy cannot change in place.
        for family in (c.Family.DOMAIN, c.Family.VIP, c.Family.ROUTE):
            spec = ConsumerSpec(
                f"{SERVICE}-{self._owner}-{family.value}-live",
                family,
                batch=512,
                fetch_timeout_seconds=0.5,
                deliver_from="new",
            )
            self._consumers.append(await self._ctx.bus.consume(spec, self._handle))
        for family in (c.Family.DOMAIN, c.Family.VIP, c.Family.ROUTE):
            for envelope in (await self._ctx.bus.replay(family)).values():
                self._offer(envelope)
        self._full_sync.update((i, zone) for i in range(len(self._targets)) for zone in self._zones)
        self._wake.set()
        self._tasks.append(asyncio.create_task(self._reconcile_loop(), name="dns-reconcile"))
        self._tasks.append(asyncio.create_task(self._verify_loop(), name="dns-verify"))

    async def stop(self) -> None:
        for consumer in self._consumers:
            await consumer.stop()
        await cancel_and_wait(self._tasks)
        for target in self._targets:
            await target.provider.close()

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
                    self._assigned_at.setdefault(vip, self._clock())
            elif isinstance(event, c.VipReleased):
                # Reassigned later, the address waits for its route again.
                for vip in event.addresses:
                    self._assigned_at.pop(vip, None)
                    self._routed.discard(vip)
            self._dirty.add(host)
        elif isinstance(event, c.DomainDesired | c.DomainDeleted):
            self._dirty.add(event.host)
        elif isinstance(event, c.RouteAnnounced | c.RouteWithdrawn):
            self._routes[event.vip][event.node] = isinstance(event, c.RouteAnnounced)
            # A route in no router yet (its BGP sessions still coming up) leaves a new VIP
            # waiting. A published VIP whose sessions drop stays: that is a session's state,
            # not the VIP's, and withdrawing every name at a ToR's reboot would be worse.
            if isinstance(event, c.RouteWithdrawn) or event.reaches_a_router():
                self._routed.add(event.vip)
            self._route_changed(event.vip)
        return True

    def _route_changed(self, vip: str) -> None:
        states = list(self._routes.get(vip, {}).values())
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
            started = time.perf_counter()
            try:
                await self._reconcile(hosts, full)
            except ProviderError as exc:
                self._dirty |= hosts
                self._full_sync |= full
                self._ctx.readiness.set("dns-provider", False)
                self._log.warning(
                    "backing off after a provider failure",
                    reason=exc.reason,
                    retry_in_s=backoff,
                    names=len(hosts),
                )
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, self._settings.max_backoff_seconds)
                self._wake.set()
                continue
            except Exception:
                # Anything else (the bus away while dns.published goes out, say) is retried the
                # same way: a loop that ended here would never publish a name again.
                self._dirty |= hosts
                self._full_sync |= full
                self._log.exception("reconcile failed; retrying", retry_in_s=backoff)
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, self._settings.max_backoff_seconds)
                self._wake.set()
                continue
            backoff = 0.2
            if full:
                self._log.info(
                    "zones read whole",
                    zones=sorted({zone for _, zone in full}),
                    names=self.planned,
                    s=round(time.perf_counter() - started, 4),
                )
            self._ctx.readiness.set("dns-provider", True)
            self.reconciles += 1
            if self._dirty:
                self._wake.set()

    async def _verify_loop(self) -> None:
        while True:
            await asyncio.sleep(self._settings.verify_interval_seconds)
            for i, target in enumerate(self._targets):
                for zone in self._zones:
                    try:
                        serial = await target.provider.serial(zone)
                    except ProviderError as exc:
                        self._log.warning(
                            "serial check failed",
                            provider=target.provider.name,
                            zone=zone,
                            error=exc.message,
                        )
                        continue
                    if self._serials.get((i, zone)) != serial:
                        # Someone changed the zone (us or a peer included): read it whole,
                        # repair drift and follow peers' readiness (regional fallback).
                        self._full_sync.add((i, zone))
                        self._wake.set()

    def _schedule(self, host: str, at: float) -> None:
        """Look at ``host`` again at ``at`` (a hold-down expiring, a retry)."""
        known = self._timers.get(host)
        if known is None or at < known:
            self._timers[host] = at

    async def _reconcile(self, hosts: set[str], full: set[tuple[int, str]]) -> None:
        now = self._clock()
        full_zones = {zone for _, zone in full}
        by_zone: dict[str, dict[str, Desired | None]] = defaultdict(dict)
        all_hosts = set(hosts)
        views: dict[tuple[int, str], ZoneView] = {}
        if full:
            views, changed = await self._read_whole(full)
            all_hosts |= self._known_hosts() if changed is None else changed
        self.planned = len(all_hosts)
        rejected: list[_Emission] = []
        for host in sorted(all_hosts):
            vip = self._state.get(c.Family.VIP, ("domain", host))
            domain = self._state.get(c.Family.DOMAIN, (host,))
            zone, rejection = check_name(host, self._zones, self._settings.registry_prefix)
            if isinstance(vip, c.VipAssigned) and not isinstance(domain, c.DomainDeleted):
                if rejection is not None:
                    rejected.extend(self._rejected(rejection, vip.generation))
                    continue
                if full and host not in hosts and zone not in full_zones:
                    continue
                pending, ready_at = pending_vips(
                    vip.addresses,
                    self._routed,
                    self._assigned_at,
                    now,
                    self._settings.announce_wait_seconds,
                )
                if ready_at is not None:
                    self._schedule(host, ready_at)
                if pending and pending >= set(vip.addresses):
                    continue  # not routable yet: nothing to publish for it
                healthy, wake = healthy_vips(
                    [a for a in vip.addresses if a not in pending],
                    self._withdrawn_since,
                    now,
                    self._settings.hold_down_seconds,
                )
                if wake is not None:
                    self._schedule(host, wake)
                ttl = self._settings.default_ttl_seconds
                weight = None
                if isinstance(domain, c.DomainDesired):
                    ttl = domain.dns.ttl_seconds or ttl
                    weight = domain.dns.weight
                by_zone[zone][host] = Desired(
                    fqdn=host,
                    zone=zone,
                    resource=f"domain/{host}",
                    assigned=frozenset(vip.addresses),
                    healthy=healthy,
                    ttl=ttl,
                    generation=vip.generation,
                    region=self._settings.pool_regions.get(vip.pool, self._settings.home_region),
                    weight=weight,
                )
            elif (isinstance(vip, c.VipReleased) or isinstance(domain, c.DomainDeleted)) and (
                rejection is None and host in hosts
            ):
                # Only an explicit delete event, and only for this pass's names, removes anything.
                by_zone[zone][host] = None
        await self._publish(rejected)
        results: dict[str, list[_Result]] = defaultdict(list)
        rejections: dict[str, tuple[Rejection, int]] = {}
        unfinished: set[str] = set()
        failure: ProviderError | None = None
        for i, target in enumerate(self._targets):
            for zone in sorted(set(by_zone) | {z for t, z in full if t == i}):
                wanted = by_zone.get(zone, {})
                try:
                    await self._reconcile_zone(
                        i,
                        zone,
                        wanted,
                        (i, zone) in full,
                        results,
                        rejections,
                        unfinished,
                        views.get((i, zone)),
                    )
                except ProviderError as exc:
                    # This provider's names stay dirty; the other providers go on.
                    unfinished.update(wanted)
                    self._dirty.update(h for h in wanted if h in hosts)
                    self._full_sync.update((i, z) for t, z in full if t == i and z == zone)
                    self._log.error(
                        "dns provider failed; will retry",
                        provider=target.provider.name,
                        zone=zone,
                        reason=exc.reason,
                        error=exc.message,
                        names=len(wanted),
                    )
                    failure = failure or exc
        events: list[_Emission] = []
        for zone, wanted in by_zone.items():
            for host, desired in wanted.items():
                if host in unfinished:
                    continue  # reported once every provider holds it
                if host in rejections:
                    rejection, observed = rejections[host]
                    events.extend(self._rejected(rejection, observed))
                elif len(results[host]) == len(self._targets):
                    events.extend(self._outcome(host, zone, desired, results[host]))
        await self._publish(events)
        if failure is not None:
            raise failure

    async def _read_whole(
        self, full: set[tuple[int, str]]
    ) -> tuple[dict[tuple[int, str], ZoneView], set[str] | None]:
        """Each zone of ``full`` read whole, and the names that differ from the last completed
        whole-zone pass of each: None when every known name must be planned (no such pass yet,
        or a zone that could not be read now; its own pass reads it again and reports why)."""
        views: dict[tuple[int, str], ZoneView] = {}
        changed: set[str] | None = set()
        for i, zone in sorted(full):
            try:
                view = await self._targets[i].provider.read(zone, None)
            except ProviderError:
                changed = None
                continue
            views[(i, zone)] = view
            before = self._fully_planned.get((i, zone))
            if before is None or changed is None:
                changed = None
                continue
            for name, state in view.names.items():
                # Unchanged names keep their state object from read to read.
                old = before.get(name)
                if old is not state and old != state:
                    changed.add(name)
            changed.update(name for name in before if name not in view.names)
        return views, changed

    def _known_hosts(self) -> set[str]:
        return {
            e.owner.host
            for e in self._state.live(c.Family.VIP)
            if isinstance(e, c.VipAssigned) and e.owner.host is not None
        }

    async def _reconcile_zone(
        self,
        index: int,
        zone: str,
        wanted: dict[str, Desired | None],
        full: bool,
        results: dict[str, list[_Result]],
        rejections: dict[str, tuple[Rejection, int]],
        unfinished: set[str],
        whole: ZoneView | None = None,
    ) -> None:
        """``whole``: the zone as already read whole for this pass."""
        target = self._targets[index]
        provider = target.provider
        names = list(wanted)
        if whole is not None:
            view = whole
        elif full or len(names) > self._settings.read_by_transfer_above:
            view = await provider.read(zone, None)
        else:
            view = await provider.read(zone, names)
        plans: list[NamePlan] = []
        done: list[tuple[str, Desired | None, NamePlan]] = []
        prefix = self._settings.registry_prefix
        for host, desired in wanted.items():
            current = view.get(host)
            if desired is None:
                plan = plan_remove(
                    host, zone, current, self._owner, prefix, upsert_only=self._settings.upsert_only
                )
            else:
                planned = plan_publish(desired, current, self._owner, prefix, target.region)
                if isinstance(planned, Rejection):
                    rejections[host] = (planned, desired.generation)
                    continue
                plan = planned
            done.append((host, desired, plan))
            if not plan.empty:
                plans.append(plan)
        applied = await self._apply(provider, zone, plans)
        changed = [p for p in plans if p.fqdn in applied]
        await self._verify(provider, changed)
        for host, desired, plan in done:
            if plan.empty or host in applied:
                results[host].append(_Result(index, desired, plan))
            else:
                unfinished.add(host)
        baseline = self._fully_planned.get((index, zone))
        if full:
            baseline = self._fully_planned[(index, zone)] = dict(view.names)
        if baseline is not None:
            # What we wrote is no news to the next whole-zone pass: it starts from what each
            # written name holds as our plan says. A name someone else touched too reads
            # differently then, and is planned again.
            for plan in changed:
                written = apply_to_state(view.get(plan.fqdn), plan)
                if written.addresses or written.registry_texts or written.cname:
                    baseline[plan.fqdn] = written
                else:
                    baseline.pop(plan.fqdn, None)
        if full and view.serial is not None and not plans:
            self._serials[(index, zone)] = view.serial
            self.verified += 1

    async def _apply(self, provider: DnsProvider, zone: str, plans: list[NamePlan]) -> set[str]:
        """Apply in batches, a few in flight at once (the server then commits the queued updates
        together); a batch that fails a prerequisite is split so that one name whose zone
        content changed under us does not hold back the others."""
        applied: set[str] = set()
        size = self._settings.batch_size
        gate = asyncio.Semaphore(_UPDATES_IN_FLIGHT)

        async def batch(plans: list[NamePlan]) -> None:
            async with gate:
                try:
                    await provider.apply(zone, plans)
                    self.writes += 1
                    applied.update(p.fqdn for p in plans)
                    return
                except PrerequisiteFailed:
                    pass
                for plan in plans:
                    try:
                        await provider.apply(zone, [plan])
                        self.writes += 1
                        applied.add(plan.fqdn)
                    except PrerequisiteFailed as exc:
                        self._log.warning(
                            "name changed while we wrote it; re-reading",
                            provider=provider.name,
                            fqdn=plan.fqdn,
                            error=exc.message,
                        )
                        self._dirty.add(plan.fqdn)
                        self._schedule(plan.fqdn, self._clock() + 1.0)

        results = await asyncio.gather(
            *(batch(plans[i : i + size]) for i in range(0, len(plans), size)),
            return_exceptions=True,
        )
        for result in results:
            if isinstance(result, BaseException):
                raise result
        return applied

    async def _verify(self, provider: DnsProvider, plans: list[NamePlan]) -> None:
        if not plans:
            return
        seen = await provider.resolve_many([p.fqdn for p in plans])
        for plan in plans:
            if not plan.published <= seen[plan.fqdn]:
                self._log.warning(
                    "written but not resolvable yet; will check again",
                    provider=provider.name,
                    fqdn=plan.fqdn,
                    expected=sorted(plan.published),
                    resolved=sorted(seen[plan.fqdn]),
                )
                self._dirty.add(plan.fqdn)
                self._schedule(plan.fqdn, self._clock() + 1.0)

    # ------------------------------------------------------------------ events out

    def _next_generation(self, host: str) -> int:
        last = self._emitted.get(host, (0, None))[0]
        return self._generations.next(last)

    async def _publish(self, emissions: list[_Emission]) -> None:
        """Publish, and only then remember what was said: an event the bus did not take (NATS
        restarting) must go out again on the retry, not be skipped as already said."""
        if not emissions:
            return
        await self._ctx.bus.publish_many([e.event for e in emissions])
        for emission in emissions:
            self._emitted[emission.host] = (emission.event.generation, emission.token)
            event = emission.event
            if isinstance(event, c.DnsPublished):
                values = sorted(v for r in event.records for v in r.values)
                self._log.info(
                    "dns published",
                    fqdn=event.fqdn,
                    values=values,
                    zone=event.zone,
                    providers=event.providers,
                )
            elif isinstance(event, c.DnsRemoved):
                self._log.info("dns values removed", fqdn=event.fqdn)
            else:
                self._log.warning(
                    "name rejected", fqdn=event.fqdn, reason=event.reason, message=event.message
                )

    def _rejected(self, rejection: Rejection, observed: int) -> list[_Emission]:
        token = ("rejected", rejection.reason, observed)
        if self._emitted.get(rejection.fqdn, (0, None))[1] == token:
            return []
        event = c.DnsRejected(
            generation=self._next_generation(rejection.fqdn),
            fqdn=rejection.fqdn,
            reason=rejection.reason,
            message=rejection.message,
            observed_generation=observed,
        )
        return [_Emission(rejection.fqdn, event, token)]

    def _outcome(
        self, host: str, zone: str, desired: Desired | None, results: list[_Result]
    ) -> list[_Emission]:
        published = frozenset(v for r in results for v in r.plan.published)
        providers = [self._targets[r.target].provider.name for r in results if r.plan.published]
        if desired is None or not published:
            token: Any = ("removed",)
            if self._emitted.get(host, (0, None))[1] == token:
                return []
            removed = c.DnsRemoved(generation=self._next_generation(host), fqdn=host)
            return [_Emission(host, removed, token)]
        records = []
        for rtype in ("A", "AAAA"):
            values = sorted(v for v in published if record_type(v) == rtype)
            if values:
                records.append(
                    c.DnsRecord(record_type=rtype, values=values, ttl_seconds=desired.ttl)
                )
        token = ("published", desired.generation, tuple(records), tuple(providers))
        if self._emitted.get(host, (0, None))[1] == token:
            return []
        event = c.DnsPublished(
            generation=self._next_generation(host),
            fqdn=host,
            zone=zone,
            owner_id=self._owner,
            records=records,
            providers=providers,
            observed_generation=desired.generation,
        )
        return [_Emission(host, event, token)]
