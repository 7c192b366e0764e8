"""Wiring: vip / backend / pool events -> derive -> read kernel -> plan -> apply -> verify -> l4.*.

Every reconcile is level-triggered: it derives the desired state from the newest event of every
key, reads the kernel, applies the fewest writes and reads the kernel back. l4.programmed is
published only for what the read-back shows; nothing is published again unless it changed.

A full pass (at start, every ``RESYNC_SECONDS``, after a failure, or for a change of much of the
table) dumps the whole table. Between them, an event only reads, plans, writes and reads back
the VIPs whose derived state changed (and the draining ones), so one change costs work and
netlink messages in proportion to the change, not to the table. After a VIP is bound or
unbound, only that VIP's address is read back.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
import time
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass

from ingress_events import catalogue as c
from ingress_events.bus import Consumer, ConsumerSpec
from ingress_events.envelope import Envelope
from ingress_events.generation import GenerationClock
from ingress_events.state import LatestByKey
from ingress_runtime import ServiceContext, cancel_and_wait

from .adapters.addresses import DummyVips
from .adapters.base import Dataplane
from .adapters.ipvs import IpvsDataplane
from .adapters.l7 import Decap, L7Decap
from .adapters.nftables import NftDataplane
from .domain.desired import (
    BackendKey,
    DeriveConfig,
    Derived,
    Deriver,
    ObjectProblem,
    OwnerKey,
    VipIntent,
)
from .domain.l7 import L7Plan, plan_l7
from .domain.model import (
    AddAddress,
    DelAddress,
    DesiredState,
    KernelState,
    Real,
    VsKey,
    VsSpec,
    describe,
)
from .domain.plan import DrainKey, plan, scope
from .settings import L4ProgrammerSettings

COMPONENT = "l4-programmer"
MAX_STALE_AUDITS = 3
"""Background resync dumps that may go stale (a pass wrote while one ran) before the resync
runs in line, between passes, as it did before."""
SCOPED_ALWAYS = 256
"""A change of up to this many virtual services is always read and planned alone."""
DUMP_PER_KEY_READS = 6
"""Reading one service back by key costs about as much as dumping six (nftables, measured in
the e2e cold start: ~0.35 ms a key, ~0.055 ms a service of a dump): a change larger than a sixth
of the table takes a full pass. In a cold start the passes grew to thousands of VIPs each, and
reading those by key was a third of the programmer's time."""


def choose_dataplane(settings: L4ProgrammerSettings) -> Dataplane:
    vips = DummyVips(settings.vip_interface, settings.netns)
    nft = NftDataplane(settings.nft_table, vips, settings.netns)
    if settings.dataplane == "nftables":
        return nft
    ipvs = IpvsDataplane(vips)
    if settings.dataplane == "ipvs":
        return ipvs
    return ipvs if settings.netns is None and ipvs.unavailable() is None else nft


def durable_name(node: str, family: c.Family) -> str:
    return f"{COMPONENT}-{re.sub(r'[^A-Za-z0-9_-]', '-', node)}-{family.value}"


_Seen = tuple[str, frozenset[tuple[Real, int, str]]] | None


def _seen(kernel: KernelState, key: VsKey) -> _Seen:
    """What the report reads of a virtual service: its scheduler and each real server's weight
    and forwarding (not the connection counts, which move with every connection)."""
    vs = kernel.services.get(key)
    if vs is None:
        return None
    return vs.scheduler, frozenset((r, d.weight, d.forward) for r, d in vs.dests.items())


@dataclass(frozen=True)
class _Basis:
    """What a VIP's l4.* report is made of: its intent (the same object while the Deriver left
    the VIP alone), whether it is bound, and each service's spec and what the kernel has."""

    intent: VipIntent
    bound: bool
    services: tuple[tuple[VsSpec | None, _Seen], ...]

    def same(self, other: _Basis) -> bool:
        return (
            self.intent is other.intent
            and self.bound == other.bound
            and self.services == other.services
        )


class L4ProgrammerApp:
    def __init__(
        self,
        ctx: ServiceContext[L4ProgrammerSettings],
        dataplane: Dataplane | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._ctx = ctx
        self._settings = ctx.settings
        self._log = ctx.log.bind(node=ctx.settings.node_name)
        self._dataplane = dataplane
        self._clock = clock
        self._inputs: LatestByKey[c.Event] = LatestByKey()
        # The newest input of each kind, kept as they arrive, so that a pass reads the one
        # change instead of scanning every input.
        self._assigned: dict[OwnerKey, c.VipAssigned] = {}
        self._released: dict[OwnerKey, c.VipReleased] = {}
        self._endpoints: dict[BackendKey, c.BackendEndpoints] = {}
        self._pools: dict[str, c.PoolDesired] = {}
        self._changed_owners: set[OwnerKey] = set()
        """Owners whose assignment changed since the last derive."""
        self._published: dict[tuple[str, ...], c.Event] = {}
        self._verified: dict[str, tuple[_Basis, c.Event | None]] = {}
        """Per VIP: what its last l4.* report was made from, and the event it left in place."""
        self._rejections: dict[tuple[str, ...], c.AdmissionRejected] = {}
        """The admission slots whose last word is a rejection (a subset of ``_published``)."""
        self._generations = GenerationClock()
        self._drains: dict[DrainKey, float] = {}
        self._consumers: list[Consumer] = []
        self._dirty = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._unavailable: str | None = None
        self._kernel: KernelState | None = None
        """The kernel as last read back (full pass, then merged with each incremental one)."""
        self._kernel_keys: dict[str, set[VsKey]] = {}
        """The virtual services of ``_kernel``, by VIP."""
        self._last_full = 0.0
        self._passes_written = 0
        """Passes that wrote to the kernel (an audit's dump is used only if none did meanwhile)."""
        self._deriver = Deriver()
        self.reconciles = 0
        self.last_writes = -1
        self.last_keys: int | None = None
        """Virtual services the last pass read and planned (None: the whole table)."""

    # ------------------------------------------------------------------ lifecycle

    async def start(self) -> None:
        s = self._settings
        readiness = self._ctx.readiness
        readiness.require("dataplane")
        readiness.require("replayed")
        if self._dataplane is None:
            self._dataplane = await asyncio.to_thread(choose_dataplane, s)
        self._unavailable = await asyncio.to_thread(self._dataplane.unavailable)
        self._log.info("dataplane", dataplane=self._dataplane.name, unavailable=self._unavailable)
        bus = self._ctx.bus
        for family in (c.Family.POOL, c.Family.VIP, c.Family.BACKEND):
            for envelope in (await bus.replay(family)).values():
                self._offer(envelope)
        # What this node said last (events and admissions), so a restart repeats nothing.
        for family, prefix in ((c.Family.L4, (s.node_name,)), (c.Family.ADMISSION, (COMPONENT,))):
            for envelope in (await bus.replay(family, prefix)).values():
                self._remember(envelope.event)
        await self.reconcile()
        readiness.set("replayed")
        for family in (c.Family.POOL, c.Family.VIP, c.Family.BACKEND):
            self._consumers.append(
                await bus.consume(
                    ConsumerSpec(durable_name(s.node_name, family), family), self._handle
                )
            )
        self._task = asyncio.create_task(self._loop(), name="l4-reconcile")

    async def stop(self) -> None:
        for consumer in self._consumers:
            await consumer.stop()
        if self._task is not None:
            await cancel_and_wait([self._task], self._ctx.log)

    async def _handle(self, envelope: Envelope[c.Event]) -> None:
        if self._offer(envelope):
            self._dirty.set()

    async def _loop(self) -> None:
        s = self._settings
        audit: asyncio.Task[KernelState] | None = None
        audit_base = 0
        stale = 0
        try:
            while True:
                due = time.monotonic() - self._last_full >= s.resync_seconds
                if due and audit is None and self._kernel is not None and stale < MAX_STALE_AUDITS:
                    # The resync's dump runs beside the passes (about a second at 10,000 VIPs,
                    # which a change used to wait for); it is planned only if no pass wrote
                    # while it ran, so it is a consistent picture of the kernel.
                    assert self._dataplane is not None
                    audit = asyncio.create_task(asyncio.to_thread(self._dataplane.read))
                    audit_base = self._passes_written
                timeout = s.drain_poll_seconds if self._drains else s.resync_seconds
                wake = asyncio.ensure_future(self._dirty.wait())
                await asyncio.wait(
                    {wake, audit} if audit is not None else {wake},
                    timeout=timeout,
                    return_when=asyncio.FIRST_COMPLETED,
                )
                wake.cancel()
                self._dirty.clear()
                try:
                    if due and audit is None:
                        await self.reconcile(
                            full=True
                        )  # after a failure, or audits kept going stale
                        stale = 0
                    else:
                        await self.reconcile(full=False)
                    if audit is not None and audit.done():
                        dump, audit = audit.result(), None
                        if self._passes_written == audit_base:
                            await self.reconcile(full=True, current=dump)
                            stale = 0
                        else:
                            stale += 1  # a pass wrote meanwhile: dump again
                except Exception:
                    audit = None
                    self._kernel = None  # the next pass reads the whole table again
                    self._log.exception("reconcile failed; retrying at the next tick")
        finally:
            if audit is not None:
                audit.cancel()

    # ------------------------------------------------------------------ reconcile

    def _derive(self) -> Derived:
        s = self._settings
        assert self._dataplane is not None
        changed, self._changed_owners = self._changed_owners, set()
        return self._deriver.update(
            assigned=self._assigned,
            released=self._released.values(),
            endpoints=self._endpoints,
            pools=self._pools.values(),
            config=DeriveConfig(
                pool_namespace=s.pool_namespace,
                pool_service=s.pool_service,
                pool_ports=frozenset(s.pool_ports),
                scheduler=s.scheduler,
                weight=s.weight if self._dataplane.name == "ipvs" else 1,
                tunnel=self._dataplane.forward == "tunnel",
            ),
            changed=changed,
        )

    def _offer(self, envelope: Envelope[c.Event]) -> bool:
        if not self._inputs.offer(envelope):
            return False
        event = envelope.event
        key = event.key()
        if event.family == c.Family.VIP:
            self._changed_owners.add(key)
            self._assigned.pop(key, None)
            self._released.pop(key, None)
            if isinstance(event, c.VipAssigned):
                self._assigned[key] = event
            elif isinstance(event, c.VipReleased):
                self._released[key] = event
        elif isinstance(event, c.BackendEndpoints):
            self._endpoints[(event.namespace, event.service, event.port)] = event
        elif isinstance(event, c.BackendDeleted):
            self._endpoints.pop((event.namespace, event.service, event.port), None)
        elif isinstance(event, c.PoolDesired):
            self._pools[event.pool] = event
        elif isinstance(event, c.PoolDeleted):
            self._pools.pop(event.pool, None)
        return True

    async def reconcile(self, full: bool = True, current: KernelState | None = None) -> int:
        """One pass; returns the kernel writes it made (0 on a converged node). ``full=False``
        covers only what changed since the last pass, when the dataplane allows it. A full
        pass plans against ``current`` when given (a dump no pass has written after)."""
        assert self._dataplane is not None
        self.reconciles += 1
        derived = self._derive()
        if self._unavailable is not None:
            self._unavailable = await asyncio.to_thread(self._dataplane.unavailable)
        if self._unavailable is not None:
            self._ctx.readiness.set("dataplane", False)
            self._log.error("dataplane unavailable", reason=self._unavailable)
            for vip, intent in sorted(derived.vips.items()):
                await self._emit_not_ready(
                    vip, "DataplaneUnavailable", self._unavailable, intent.observed_generation
                )
            await self._emit_problems(derived.problems)
            self._kernel = None  # what changed meanwhile is planned by a full pass
            self.last_writes = 0
            return 0
        self._ctx.readiness.set("dataplane")
        changed = None if full else self._changed(derived)
        self.last_keys = None if changed is None else len(changed[1])
        if changed is None:
            writes, after = await self._full_pass(derived.desired, current)
            self._kernel_keys = defaultdict(set)
            for key in after.services:
                self._kernel_keys[key.vip].add(key)
            await self._publish(derived, after)
        else:
            vips, keys = changed
            writes, after = await self._scoped_pass(derived.desired, vips, keys)
            for vip in vips:
                self._kernel_keys.pop(vip, None)
            for key in keys:
                if key in after.services:
                    self._kernel_keys.setdefault(key.vip, set()).add(key)
            await self._publish(derived, after, only=vips)
        self._kernel = after
        self.last_writes = writes
        return writes

    async def _full_pass(
        self, desired: DesiredState, current: KernelState | None
    ) -> tuple[int, KernelState]:
        assert self._dataplane is not None
        self._last_full = time.monotonic()
        if current is None:
            current = await asyncio.to_thread(self._dataplane.read)
        p = plan(
            desired,
            current,
            forward=self._dataplane.forward,
            now=self._clock(),
            drains=self._drains,
            drain_timeout=self._settings.drain_timeout_seconds,
        )
        writes = 0
        after = current
        if p.ops:
            self._log.info("applying", writes=len(p.ops), ops=[describe(op) for op in p.ops[:50]])
            self._passes_written += 1  # before the writes: an audit's dump running now is stale
            writes = await asyncio.to_thread(self._dataplane.apply, current, p.ops)
            after = await asyncio.to_thread(self._dataplane.read)
        self._drains = dict(p.drains)
        return writes, after

    def _changed(self, derived: Derived) -> tuple[set[str], set[VsKey]] | None:
        """The VIPs whose part of the derived state changed since the last pass (their
        services, binding, release or intent) or that have a draining real server, and every
        virtual service of theirs (desired or in the kernel); None when only a full pass will
        do (the first pass, after a failure, or when pools or config changed everything)."""
        assert self._dataplane is not None
        if derived.changed is None or self._kernel is None or not self._dataplane.incremental:
            return None
        vips = set(derived.changed)
        vips.update(k.vip for k, _ in self._drains)
        keys: set[VsKey] = set()
        for vip in vips:
            intent = derived.vips.get(vip)
            if intent is not None:
                keys.update(intent.services)
            keys.update(self._kernel_keys.get(vip, ()))
        if len(keys) > SCOPED_ALWAYS and len(keys) * DUMP_PER_KEY_READS > len(
            self._kernel.services
        ):
            return None  # a dump of the whole table reads this many keys for less
        return vips, keys

    async def _scoped_pass(
        self, desired: DesiredState, vips: set[str], keys: set[VsKey]
    ) -> tuple[int, KernelState]:
        assert self._dataplane is not None and self._kernel is not None
        kernel = self._kernel
        if not vips:
            return 0, kernel
        fresh = await asyncio.to_thread(self._dataplane.read_services, keys)
        want, current = scope(
            desired, KernelState(services=fresh, addresses=kernel.addresses), keys, vips
        )
        p = plan(
            want,
            current,
            forward=self._dataplane.forward,
            now=self._clock(),
            drains={k: t for k, t in self._drains.items() if k[0] in keys},
            drain_timeout=self._settings.drain_timeout_seconds,
        )
        writes = 0
        services = dict(kernel.services)
        services.update(fresh)
        addresses = kernel.addresses
        if p.ops:
            self._log.info("applying", writes=len(p.ops), ops=[describe(op) for op in p.ops[:50]])
            self._passes_written += 1  # before the writes: an audit's dump running now is stale
            writes = await asyncio.to_thread(self._dataplane.apply, current, p.ops)
            back = await asyncio.to_thread(self._dataplane.read_services, keys)
            for key in keys:
                services.pop(key, None)
            services.update(back)
            bound = {op.vip for op in p.ops if isinstance(op, AddAddress | DelAddress)}
            if bound:
                seen = await asyncio.to_thread(self._dataplane.read_addresses, bound)
                addresses = (kernel.addresses - bound) | seen
        self._drains = {k: t for k, t in self._drains.items() if k[0] not in keys}
        self._drains.update(p.drains)
        return writes, KernelState(services=services, addresses=addresses)

    # ------------------------------------------------------------------ events out

    async def _publish(
        self, derived: Derived, after: KernelState, only: set[str] | None = None
    ) -> None:
        """l4.* for every VIP, or for the VIPs ``only`` (an incremental pass)."""
        node = self._settings.node_name
        assert self._dataplane is not None
        vips = derived.vips
        for vip in sorted(vips if only is None else only & vips.keys()):
            intent = vips[vip]
            if intent.problem is not None:
                problem = intent.problem
                said = await self._emit_not_ready(
                    vip, problem.reason, problem.message, intent.observed_generation
                )
                if said:  # once per change, not once per resync
                    self._log.warning(
                        "VIP refused", vip=vip, reason=problem.reason, message=problem.message
                    )
                continue
            await self._emit_programmed(derived, intent, after)
        if only is None:
            self._verified = {v: known for v, known in self._verified.items() if v in vips}
        released = derived.desired.released
        for vip in sorted(released if only is None else released & only):
            gone = vip not in after.addresses and not any(k.vip == vip for k in after.services)
            last = self._published.get((c.Family.L4.value, node, vip))
            if gone and last is not None and not isinstance(last, c.L4Removed):
                await self._emit(c.L4Removed(generation=self._gen(last), node=node, vip=vip))
        await self._emit_problems(derived.problems)

    async def _emit_programmed(
        self, derived: Derived, intent: VipIntent, after: KernelState
    ) -> None:
        """Verify a VIP against the kernel and report it, unless its report was made from the
        same intent, specs and kernel state and is still the one in place: a full pass checks
        every VIP, and at 10,000 VIPs building and comparing the reports took ~0.2 s of the loop
        every 30 s for nothing."""
        vip = intent.vip
        slot = (c.Family.L4.value, self._settings.node_name, vip)
        basis = _Basis(
            intent,
            vip in after.addresses,
            tuple((derived.desired.services.get(k), _seen(after, k)) for k in intent.services),
        )
        known = self._verified.get(vip)
        if known is not None and known[0].same(basis) and self._published.get(slot) is known[1]:
            return
        await self._verify_and_emit(derived, intent, after)
        self._verified[vip] = (basis, self._published.get(slot))

    async def _verify_and_emit(
        self, derived: Derived, intent: VipIntent, after: KernelState
    ) -> None:
        assert self._dataplane is not None
        services: list[c.VirtualService] = []
        wrong: list[str] = []
        vip = intent.vip
        if vip not in after.addresses:
            wrong.append(f"{vip} is not bound on {self._settings.vip_interface}")
        for key in intent.services:
            spec = derived.desired.services[key]
            have = after.services.get(key)
            if have is None:
                wrong.append(f"{key} is missing")
                continue
            if have.scheduler != spec.scheduler:
                wrong.append(f"{key} has scheduler {have.scheduler}, not {spec.scheduler}")
            for real, weight in spec.reals.items():
                dest = have.dests.get(real)
                if dest is None or dest.weight != weight or dest.forward != self._dataplane.forward:
                    wrong.append(f"{key} -> {real} is {dest}, not weight {weight}")
            services.append(
                c.VirtualService(
                    port=key.port,
                    protocol=key.protocol,
                    scheduler=have.scheduler,
                    real_servers=len(have.dests),
                    ready_real_servers=sum(1 for d in have.dests.values() if d.weight > 0),
                )
            )
        if wrong:
            await self._emit_not_ready(
                vip, "VerifyFailed", "; ".join(wrong)[:4000], intent.observed_generation
            )
            return
        if not any(s.ready_real_servers for s in services):
            await self._emit_not_ready(
                vip,
                "NoReadyRealServers",
                f"programmed, but no ready real server behind {vip} on any port",
                intent.observed_generation,
            )
            return
        node = self._settings.node_name
        last = self._published.get((c.Family.L4.value, node, vip))
        await self._emit(
            c.L4Programmed(
                generation=self._gen(last),
                node=node,
                vip=vip,
                dataplane=self._dataplane.name,
                services=services,
                observed_generation=intent.observed_generation,
            )
        )

    async def _emit_not_ready(
        self, vip: str, reason: str, message: str, observed: int | None
    ) -> bool:
        node = self._settings.node_name
        last = self._published.get((c.Family.L4.value, node, vip))
        return await self._emit(
            c.L4NotReady(
                generation=self._gen(last),
                node=node,
                vip=vip,
                reason=reason,
                message=message[:4000],
                observed_generation=observed,
            )
        )

    async def _emit_problems(self, problems: list[ObjectProblem]) -> None:
        by_object: dict[tuple[str, str, str], list[ObjectProblem]] = defaultdict(list)
        for p in problems:
            by_object[(p.kind, p.namespace, p.name)].append(p)
        for (kind, ns, name), items in sorted(by_object.items()):
            ref = c.ObjectRef(kind=kind, namespace=ns, name=name)
            last = self._published.get((c.Family.ADMISSION.value, COMPONENT, kind, ns, name))
            said = await self._emit(
                c.AdmissionRejected(
                    generation=self._gen(last),
                    component=COMPONENT,
                    object=ref,
                    observed_generation=0,
                    problems=[
                        c.Problem(reason=p.reason, field=p.field, message=p.message) for p in items
                    ],
                )
            )
            for p in items if said else ():  # once per change, not once per resync
                self._log.warning(
                    "rejected", object=f"{kind}/{ns}/{name}", reason=p.reason, message=p.message
                )
        # An object whose problems are gone is accepted again, so its rejection does not linger.
        for last in list(self._rejections.values()):
            obj = last.object
            if (obj.kind, obj.namespace, obj.name) not in by_object:
                await self._emit(
                    c.AdmissionAccepted(
                        generation=self._gen(last),
                        component=COMPONENT,
                        object=obj,
                        observed_generation=0,
                    )
                )

    def _gen(self, last: c.Event | None) -> int:
        return self._generations.next(last.generation if last else None)

    @staticmethod
    def _slot(event: c.Event) -> tuple[str, ...]:
        return (event.family.value, *event.key())

    async def _emit(self, event: c.Event) -> bool:
        """Publish unless the slot already says this; True when it was published."""
        slot = self._slot(event)
        last = self._published.get(slot)
        if (
            last is not None
            and type(last) is type(event)
            and last.model_dump(exclude={"generation"}) == event.model_dump(exclude={"generation"})
        ):
            return False
        await self._ctx.bus.publish(event)
        self._remember(event)
        return True

    def _remember(self, event: c.Event) -> None:
        slot = self._slot(event)
        self._published[slot] = event
        if isinstance(event, c.AdmissionRejected):
            self._rejections[slot] = event
        else:
            self._rejections.pop(slot, None)


class L7RoleApp:
    """``L4_PROGRAMMER_ROLE=l7``: the other end of the IP-in-IP tunnels, in each L7 pod.

    Keeps the ingress-domain VIPs bound on the pod's decapsulating device: every assigned VIP
    bound, a released one unbound, nothing unbound for lack of news (see ``domain/l7.py``).
    Ready once the device is prepared and the VIPs replayed are bound."""

    def __init__(self, ctx: ServiceContext[L4ProgrammerSettings], decap: Decap | None = None):
        self._ctx = ctx
        self._settings = ctx.settings
        self._log = ctx.log.bind(node=ctx.settings.node_name, role="l7")
        self._decap: Decap = decap or L7Decap(ctx.settings.netns)
        self._vips: dict[tuple[str, ...], c.Event] = {}
        """The newest vip.* event of each owner, released ones included."""
        self._consumer: Consumer | None = None
        self._dirty = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self.reconciles = 0

    async def start(self) -> None:
        self._ctx.readiness.require("decap")
        for envelope in (await self._ctx.bus.replay(c.Family.VIP)).values():
            self._offer(envelope.event)
        await self._reconcile_logged()
        self._consumer = await self._ctx.bus.consume(
            ConsumerSpec(
                durable_name(f"l7-{self._settings.node_name}", c.Family.VIP), c.Family.VIP
            ),
            self._handle,
        )
        self._task = asyncio.create_task(self._loop(), name="l7-decap")

    async def stop(self) -> None:
        if self._consumer is not None:
            await self._consumer.stop()
        if self._task is not None:
            await cancel_and_wait([self._task], self._ctx.log)

    def _offer(self, event: c.Event) -> bool:
        known = self._vips.get(event.key())
        if known is not None and known.generation >= event.generation:
            return False
        self._vips[event.key()] = event
        return True

    async def _handle(self, envelope: Envelope[c.Event]) -> None:
        if self._offer(envelope.event):
            self._dirty.set()

    async def _loop(self) -> None:
        while True:
            # Also on a timer: a VIP unbound by hand comes back.
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._dirty.wait(), self._settings.resync_seconds)
            self._dirty.clear()
            await self._reconcile_logged()

    async def _reconcile_logged(self) -> None:
        try:
            await asyncio.to_thread(self.reconcile)
        except (OSError, RuntimeError) as exc:
            self._ctx.readiness.set("decap", False)
            self._log.error("cannot decapsulate IP-in-IP here; retrying", error=str(exc))

    def reconcile(self) -> L7Plan:
        self.reconciles += 1
        self._decap.prepare()
        events = list(self._vips.values())
        plan = plan_l7(
            self._decap.bound(),
            [e for e in events if isinstance(e, c.VipAssigned)],
            [e for e in events if isinstance(e, c.VipReleased)],
        )
        if not plan.empty:
            self._log.info("tunl0 VIPs", bind=list(plan.bind), unbind=list(plan.unbind))
            self._decap.bind(plan.bind)
            self._decap.unbind(plan.unbind)
        self._ctx.readiness.set("decap")
        return plan


def build_app(ctx: ServiceContext[L4ProgrammerSettings]) -> L4ProgrammerApp | L7RoleApp:
    """The app of the configured role."""
    return L7RoleApp(ctx) if ctx.settings.role == "l7" else L4ProgrammerApp(ctx)
