"""Wiring: pool / domain / lbservice events -> allocator (JetStream KV) -> vip and admission
events out. State is rebuilt at start from the KV bucket and the streams, then every owner is
reconciled once: a converged system makes no write and publishes nothing."""

from __future__ import annotations

import asyncio
import time
from collections import defaultdict
from collections.abc import Callable, Iterable
from datetime import UTC, datetime
from typing import Any

from ingress_events import catalogue as c
from ingress_events.bus import Consumer, ConsumerSpec
from ingress_events.envelope import Envelope
from ingress_events.generation import GenerationClock
from ingress_events.state import LatestByKey
from ingress_runtime import ServiceContext, cancel_and_wait

from . import metrics
from .adapters.store import AllocationStore, NatsAllocationStore
from .domain.model import OwnerKey, Reject, owner_label
from .domain.pools import Pool, parse_pool, resolve_pools
from .domain.requests import domain_request, owner_of, service_request
from .engine import Allocator, Held
from .settings import IpamSettings

COMPONENT = "ipam"
POOL_KIND = "VipPool"


def _rfc3339(epoch: float | None) -> str | None:
    if epoch is None:
        return None
    return datetime.fromtimestamp(epoch, UTC).isoformat(timespec="seconds").replace("+00:00", "Z")


def _same(a: c.Event | None, b: c.Event) -> bool:
    """Equal but for the generation: republishing it would be a write with no news."""
    if a is None or type(a) is not type(b):
        return False
    return a.model_dump(exclude={"generation"}) == b.model_dump(exclude={"generation"})


class IpamApp:
    def __init__(
        self,
        ctx: ServiceContext[IpamSettings],
        store: AllocationStore | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._ctx = ctx
        self._settings = ctx.settings
        self._log = ctx.log
        self._store = store
        self._clock = clock
        self._generations = GenerationClock()
        self._desired: LatestByKey[c.Event] = LatestByKey()
        self._published: dict[tuple[str, ...], c.Event] = {}
        self._pools: dict[str, Pool] = {}
        self._pending: set[OwnerKey] = set()
        self._locks: defaultdict[OwnerKey, asyncio.Lock] = defaultdict(asyncio.Lock)
        self._consumers: list[Consumer] = []
        self._sweeper: asyncio.Task[None] | None = None
        self._metrics_at = 0.0
        self._outside_logged: dict[str, int] = {}
        self._pool_warnings: dict[str, list[c.Problem]] = {}
        self._accepted_live: list[str] = []
        self._conflicts_counted = 0
        self.allocator: Allocator | None = None

    # ------------------------------------------------------------------ lifecycle

    async def start(self) -> None:
        readiness = self._ctx.readiness
        readiness.require("state-rebuilt")
        readiness.require("consumers-bound")
        bus = self._ctx.bus
        if self._store is None:
            self._store = NatsAllocationStore(await bus.kv(self._settings.bucket()))
        self.allocator = Allocator(self._store, self._clock, self._settings.cooldown_seconds)
        began = time.perf_counter()
        await self.allocator.load()
        for family in (c.Family.POOL, c.Family.DOMAIN, c.Family.LBSERVICE):
            for envelope in (await bus.replay(family)).values():
                self._desired.offer(envelope)
        for envelope in (await bus.replay(c.Family.VIP)).values():
            self._published[envelope.event.key()] = envelope.event
        admissions = await bus.replay(c.Family.ADMISSION, (COMPONENT,))
        for envelope in admissions.values():
            self._published[envelope.event.key()] = envelope.event
        self._log.info(
            "state rebuilt",
            addresses=len(self.allocator.records),
            owners=len(self.allocator.owners),
            seconds=round(time.perf_counter() - began, 3),
        )
        await self._recompute_pools()
        await self._reconcile_many(self._owners())
        self._refresh_metrics(force=True)
        readiness.set("state-rebuilt")
        # One owner after another, a cold start of 10,000 domains took ~55 s (a compare-and-set
        # and a publish, each a round trip, per owner); owners are independent (the store's
        # compare-and-set settles two that want one address), so a backlog runs side by side.
        in_flight = self._settings.allocations_in_flight
        specs = [
            (ConsumerSpec("ipam-pool", c.Family.POOL, fetch_timeout_seconds=0.5), self._on_pool),
            (
                ConsumerSpec(
                    "ipam-domain", c.Family.DOMAIN, fetch_timeout_seconds=0.5, concurrency=in_flight
                ),
                self._on_owner,
            ),
            (
                ConsumerSpec(
                    "ipam-lbservice",
                    c.Family.LBSERVICE,
                    fetch_timeout_seconds=0.5,
                    concurrency=in_flight,
                ),
                self._on_owner,
            ),
        ]
        for spec, handler in specs:
            self._consumers.append(await bus.consume(spec, handler))
        readiness.set("consumers-bound")
        self._sweeper = asyncio.create_task(self._sweep_forever(), name="ipam-sweeper")

    async def stop(self) -> None:
        if self._sweeper is not None:
            await cancel_and_wait([self._sweeper], self._ctx.log)
        for consumer in self._consumers:
            await consumer.stop()

    # ------------------------------------------------------------------ handlers

    async def _on_pool(self, envelope: Envelope[c.Event]) -> None:
        if self._desired.offer(envelope):
            await self._recompute_pools()
            await self._retry_pending()

    async def _on_owner(self, envelope: Envelope[c.Event]) -> None:
        if self._desired.offer(envelope):
            event = envelope.event
            owner: OwnerKey = (
                ("domain", *event.key())
                if event.family == c.Family.DOMAIN
                else ("service", *event.key())
            )
            await self._reconcile(owner)
            if self._refresh_metrics():
                await self._publish_pool_verdicts()

    async def _sweep_forever(self) -> None:
        assert self.allocator is not None
        while True:
            await asyncio.sleep(self._settings.sweep_interval_seconds)
            try:
                swept = await self.allocator.sweep()
                if swept:
                    self._log.info("cooled-down addresses freed", count=swept)
                await self._retry_pending()
                self._refresh_metrics(force=True)
                await self._publish_pool_verdicts()
            except Exception:
                self._log.exception("sweep failed; next round retries")

    # ------------------------------------------------------------------ pools

    def _live_pools(self) -> list[c.PoolDesired]:
        return [e for e in self._desired.live(c.Family.POOL) if isinstance(e, c.PoolDesired)]

    async def _recompute_pools(self) -> None:
        live = self._live_pools()
        previously = frozenset(
            e.object.name
            for e in self._published.values()
            if isinstance(e, c.AdmissionAccepted) and e.object.kind == POOL_KIND
        )
        verdict = resolve_pools(live, previously)
        pools = dict(verdict.accepted)
        if not live and self._settings.default_pool_cidrs:
            # No VipPool at all (a fresh cluster, the local runner): the configured default.
            default = parse_pool(
                c.PoolDesired(
                    generation=1,
                    pool=self._settings.default_pool_name,
                    cidrs=self._settings.default_pool_cidrs,
                    default=True,
                )
            )
            assert isinstance(default, Pool), "settings validated the default CIDRs"
            pools[default.name] = default
        if not pools:
            self._log.warning("no usable VipPool: every allocation is rejected until one exists")
        self._pools = pools
        for desired in live:
            ref = c.ObjectRef(kind=POOL_KIND, namespace=c.CLUSTER_SCOPE, name=desired.pool)
            problems = verdict.rejected.get(desired.pool)
            if problems:
                self._log.warning(
                    "VipPool rejected",
                    pool=desired.pool,
                    problems=[f"{p.reason}: {p.message}" for p in problems],
                )
                event = c.AdmissionRejected(
                    generation=1,
                    component=COMPONENT,
                    object=ref,
                    observed_generation=0,
                    problems=list(problems),
                )
                await self._publish(event)
        self._accepted_live = [d.pool for d in live if d.pool not in verdict.rejected]
        self._refresh_metrics(force=True)
        await self._publish_pool_verdicts()

    async def _publish_pool_verdicts(self) -> None:
        """Each accepted VipPool's verdict, with a warning while it is exhausted or holds
        allocations outside its current definition (shrunk under them: they are kept)."""
        for name in self._accepted_live:
            ref = c.ObjectRef(kind=POOL_KIND, namespace=c.CLUSTER_SCOPE, name=name)
            await self._publish(
                c.AdmissionAccepted(
                    generation=1,
                    component=COMPONENT,
                    object=ref,
                    observed_generation=0,
                    warnings=self._pool_warnings.get(name, []),
                )
            )

    # ------------------------------------------------------------------ owners

    def _owners(self) -> Iterable[OwnerKey]:
        seen: set[OwnerKey] = set()
        for family, kind in ((c.Family.DOMAIN, "domain"), (c.Family.LBSERVICE, "service")):
            for key in self._desired_keys(family):
                seen.add((kind, *key))
        return sorted(seen)

    def _desired_keys(self, family: c.Family) -> list[tuple[str, ...]]:
        # LatestByKey exposes live events only; tombstones are reached through get().
        keys = [e.key() for e in self._desired.live(family)]
        owners = self.allocator.owners if self.allocator else {}
        kind = "domain" if family == c.Family.DOMAIN else "service"
        keys += [o[1:] for o in owners if o[0] == kind]
        return keys

    async def _retry_pending(self) -> None:
        await self._reconcile_many(sorted(self._pending))

    async def _reconcile_many(self, owners: Iterable[OwnerKey]) -> None:
        gate = asyncio.Semaphore(self._settings.allocations_in_flight)

        async def one(owner: OwnerKey) -> None:
            async with gate:
                await self._reconcile(owner)

        await asyncio.gather(*(one(owner) for owner in owners))

    async def _reconcile(self, owner: OwnerKey) -> None:
        async with self._locks[owner]:
            family = c.Family.DOMAIN if owner[0] == "domain" else c.Family.LBSERVICE
            event = self._desired.get(family, owner[1:])
            if event is None:
                return
            if isinstance(event, c.DomainDeleted | c.LoadBalancerServiceDeleted):
                await self._release(owner)
                return
            await self._allocate(owner, event)

    async def _release(self, owner: OwnerKey) -> None:
        assert self.allocator is not None
        self._pending.discard(owner)
        released = await self.allocator.release(owner)
        last = self._published.get(owner)
        if not released.addresses and (last is None or isinstance(last, c.VipReleased)):
            return
        self._log.info(
            "VIP released",
            owner=owner_label(owner),
            addresses=list(released.addresses),
            reusable_after=_rfc3339(released.reusable_after),
        )
        await self._publish(
            c.VipReleased(
                generation=1,
                owner=owner_of(owner),
                addresses=list(released.addresses),
                reusable_after=_rfc3339(released.reusable_after),
            )
        )

    async def _allocate(self, owner: OwnerKey, event: c.Event) -> None:
        assert self.allocator is not None
        indexed = self.allocator.owners.get(owner)
        addrs = indexed.addresses if indexed else ()
        if isinstance(event, c.DomainDesired):
            request = domain_request(event, self._settings.domain_ip_family, addrs)
            ports = [c.PortSpec(port=80), c.PortSpec(port=443)]
        else:
            assert isinstance(event, c.LoadBalancerServiceDesired)
            request = service_request(event, addrs)
            unique = dict.fromkeys((p.port, p.protocol) for p in event.ports)
            ports = [c.PortSpec(port=p, protocol=proto) for p, proto in unique]
        outcome: Held | Reject
        if isinstance(request, Reject):
            outcome = request
        else:
            outcome = await self.allocator.ensure(request, self._pools, event.generation)
            if isinstance(outcome, Held) and outcome.writes == 0:
                assigned = self._assigned(owner, outcome, ports, request.sharing_key, event)
                if not _same(self._published.get(owner), assigned):
                    outcome = await self.allocator.ensure(
                        request, self._pools, event.generation, confirm=True
                    )
        metrics.DECISIONS.labels("assigned" if isinstance(outcome, Held) else "rejected").inc()
        if isinstance(outcome, Reject):
            await self._rejected(owner, event, outcome)
            return
        self._pending.discard(owner)
        sharing = None if isinstance(request, Reject) else request.sharing_key
        assigned = self._assigned(owner, outcome, ports, sharing, event)
        if not _same(self._published.get(owner), assigned):
            self._log.info(
                "VIP assigned",
                owner=owner_label(owner),
                addresses=list(outcome.addresses),
                pool=outcome.pool,
            )
        await self._publish(assigned)
        await self._clear_admission(owner, event)

    def _assigned(
        self,
        owner: OwnerKey,
        held: Held,
        ports: list[c.PortSpec],
        sharing_key: str | None,
        event: c.Event,
    ) -> c.VipAssigned:
        return c.VipAssigned(
            generation=1,
            owner=owner_of(owner),
            addresses=list(held.addresses),
            pool=held.pool,
            ports=ports,
            sharing_key=sharing_key,
            observed_generation=event.generation,
        )

    def _objects(self, owner: OwnerKey, event: c.Event) -> list[c.ObjectRef]:
        if isinstance(event, c.DomainDesired):
            return list(event.sources)
        return [c.ObjectRef(kind="Service", namespace=owner[1], name=owner[2])]

    async def _rejected(self, owner: OwnerKey, event: c.Event, reject: Reject) -> None:
        assert self.allocator is not None
        self._pending.add(owner)
        if reject.reason == "PoolExhausted":
            self._metrics_at = 0.0  # count now: the pool's status warns of its exhaustion
        said = False
        if self.allocator.held_by(owner):
            # The owner keeps what it holds (and its vip.assigned stays the current state of its
            # subject); the refused change is reported on the objects that asked for it.
            for ref in self._objects(owner, event):
                said |= await self._publish(
                    c.AdmissionRejected(
                        generation=1,
                        component=COMPONENT,
                        object=ref,
                        observed_generation=0,
                        problems=[
                            c.Problem(reason=reject.reason, field="vip", message=reject.message)
                        ],
                    )
                )
        else:
            said = await self._publish(
                c.VipRejected(
                    generation=1,
                    owner=owner_of(owner),
                    reason=reject.reason,
                    message=reject.message,
                    observed_generation=event.generation,
                )
            )
        if said:  # once per change, not at every retry of a pending owner
            self._log.warning(
                "VIP rejected",
                owner=owner_label(owner),
                reason=reject.reason,
                message=reject.message,
            )

    async def _clear_admission(self, owner: OwnerKey, event: c.Event) -> None:
        for ref in self._objects(owner, event):
            key = (COMPONENT, ref.kind, ref.namespace, ref.name)
            if isinstance(self._published.get(key), c.AdmissionRejected):
                await self._publish(
                    c.AdmissionAccepted(
                        generation=1, component=COMPONENT, object=ref, observed_generation=0
                    )
                )

    # ------------------------------------------------------------------ output

    async def _publish(self, event: c.Event) -> bool:
        """Publish unless the subject already says exactly this (a converged reconcile sends
        nothing); generations continue above whatever the subject last carried. True when it
        was published."""
        key = event.key()
        last = self._published.get(key)
        if _same(last, event):
            return False
        fields: dict[str, Any] = {
            "generation": self._generations.next(last.generation if last else None)
        }
        stamped = event.model_copy(update=fields)
        await self._ctx.bus.publish(stamped)
        self._published[key] = stamped
        return True

    def _refresh_metrics(self, *, force: bool = False) -> bool:
        """Count per pool (metrics and pool warnings); False when skipped. Counting is linear
        in the allocations: at most once a second unless forced."""
        now = time.monotonic()
        if self.allocator is None or (not force and now - self._metrics_at < 1.0):
            return False
        self._metrics_at = now
        used: defaultdict[str, int] = defaultdict(int)
        cooling: defaultdict[str, int] = defaultdict(int)
        outside: defaultdict[str, int] = defaultdict(int)
        for record in self.allocator.records.values():
            pool = self._pools.get(record.pool)
            if pool is None or not pool.contains(record.address):
                if record.holders:
                    outside[record.pool] += 1
                continue
            (used if record.holders else cooling)[record.pool] += 1
        warnings: dict[str, list[c.Problem]] = defaultdict(list)
        for name, pool in self._pools.items():
            total = pool.size()
            free = total - used[name] - cooling[name]
            metrics.POOL_TOTAL.labels(name).set(total)
            metrics.POOL_USED.labels(name).set(used[name])
            metrics.POOL_COOLING.labels(name).set(cooling[name])
            metrics.POOL_FREE.labels(name).set(free)
            if free <= 0:
                warnings[name].append(
                    c.Problem(
                        reason="PoolExhausted",
                        field="spec",
                        message=f"no free address: {total} total, {used[name]} held, "
                        f"{cooling[name]} cooling down; new owners are rejected",
                    )
                )
            if outside[name]:
                warnings[name].append(
                    c.Problem(
                        reason="AllocationsOutsidePool",
                        field="spec",
                        message=f"{outside[name]} allocation(s) lie outside the pool's current "
                        "addresses and are kept until their owners release them",
                    )
                )
        self._pool_warnings = dict(warnings)
        for name in set(outside) | set(self._pools) | set(self._outside_logged):
            if outside[name] != self._outside_logged.get(name, 0) and outside[name]:
                self._log.warning(
                    "allocations outside their pool's current definition are kept",
                    pool=name,
                    count=outside[name],
                )
            self._outside_logged[name] = outside[name]
            metrics.POOL_OUTSIDE.labels(name).set(outside[name])
        metrics.CAS_CONFLICTS.inc(self.allocator.conflicts - self._conflicts_counted)
        self._conflicts_counted = self.allocator.conflicts
        return True
