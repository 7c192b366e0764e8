"""ipam in-process against a real nats-server: events in, vip / admission events out, every
output checked against the committed schemas by ``event_capture``."""

from __future__ import annotations

import asyncio
import time

import pytest
import structlog
from ingress_events import catalogue as c
from ingress_events.bus import Bus, BusSettings
from ingress_ipam.app import IpamApp
from ingress_ipam.settings import IpamSettings
from ingress_runtime import Readiness, ServiceContext
from ingress_testkit.capture import Captured, EventCapture
from prometheus_client import REGISTRY

pytestmark = pytest.mark.contract

SRC = [c.ObjectRef(kind="Ingress", namespace="shop", name="web")]


def make_app(bus: Bus, settings: IpamSettings, **kw: object) -> IpamApp:
    ctx = ServiceContext(
        name="ipam",
        settings=settings,
        bus=bus,
        readiness=Readiness(),
        log=structlog.get_logger("ipam-test"),
    )
    return IpamApp(ctx, **kw)  # type: ignore[arg-type]


def settings(bus_settings: BusSettings, **kw: object) -> IpamSettings:
    return IpamSettings(
        nats_url=bus_settings.servers[0],
        subject_root=bus_settings.subjects.root,
        **kw,  # type: ignore[arg-type]
    )


def domain(host: str, gen: int, ns: str = "shop", **vip: object) -> c.DomainDesired:
    return c.DomainDesired(
        generation=gen,
        host=host,
        owner_namespace=ns,
        ingress_class="ingress-domain",
        sources=SRC,
        vip=c.VipRequest(**vip),  # type: ignore[arg-type]
    )


def is_(cls: type[c.Event], **fields: object):  # type: ignore[no-untyped-def]
    def match(cap: Captured) -> bool:
        ev = cap.envelope.event
        return isinstance(ev, cls) and all(getattr(ev, k) == v for k, v in fields.items())

    return match


def owner(host: str) -> c.VipOwner:
    return c.VipOwner(kind="domain", host=host)


async def test_domain_gets_a_vip_from_the_local_default_pool_and_releases_it(
    bus: Bus, event_capture: EventCapture, bus_settings: BusSettings
) -> None:
    app = make_app(bus, settings(bus_settings, cooldown_seconds=300))
    await app.start()
    try:
        await bus.publish(domain("shop.example.com", 10))
        [out] = await event_capture.wait_for(is_(c.VipAssigned, owner=owner("shop.example.com")))
        ev = out.envelope.event
        assert isinstance(ev, c.VipAssigned)
        assert ev.pool == "local-default" and ev.observed_generation == 10
        assert ev.addresses[0].startswith("198.51.100.")
        assert [(p.port, p.protocol) for p in ev.ports] == [(80, "TCP"), (443, "TCP")]
        before = time.time()
        await bus.publish(c.DomainDeleted(generation=11, host="shop.example.com"))
        [rel] = await event_capture.wait_for(is_(c.VipReleased, owner=owner("shop.example.com")))
        released = rel.envelope.event
        assert isinstance(released, c.VipReleased)
        assert released.addresses == ev.addresses
        assert released.reusable_after is not None and released.reusable_after.endswith("Z")
        # The address cools down: a newcomer asking for exactly it is told so.
        await bus.publish(domain("other.example.com", 12, addresses=ev.addresses))
        [rej] = await event_capture.wait_for(is_(c.VipRejected, owner=owner("other.example.com")))
        assert isinstance(rej.envelope.event, c.VipRejected)
        assert rej.envelope.event.reason == "AddressCoolingDown"
        assert time.time() - before < 10
    finally:
        await app.stop()


async def test_lbservice_dual_stack_and_ports(
    bus: Bus, event_capture: EventCapture, bus_settings: BusSettings
) -> None:
    app = make_app(bus, settings(bus_settings))
    await app.start()
    try:
        await bus.publish(
            c.PoolDesired(
                generation=5, pool="dual", cidrs=["10.20.0.0/30", "fd00:20::/126"], default=True
            )
        )
        await event_capture.wait_for(is_(c.AdmissionAccepted, component="ipam"))
        await bus.publish(
            c.LoadBalancerServiceDesired(
                generation=3,
                namespace="db",
                service="pg",
                ports=[c.ServicePort(port=5432), c.ServicePort(port=5432, protocol="UDP")],
                ip_families=["IPv4", "IPv6"],
                ip_family_policy="RequireDualStack",
            )
        )
        [out] = await event_capture.wait_for(lambda x: isinstance(x.envelope.event, c.VipAssigned))
        ev = out.envelope.event
        assert isinstance(ev, c.VipAssigned)
        assert ev.pool == "dual" and len(ev.addresses) == 2
        assert ev.addresses[0].startswith("10.20.0.") and ev.addresses[1].startswith("fd00:20::")
        assert {(p.port, p.protocol) for p in ev.ports} == {(5432, "TCP"), (5432, "UDP")}
        assert out.subject.endswith(".vip.service.db.pg")
    finally:
        await app.stop()


async def test_overlapping_and_bad_pools_are_rejected_without_touching_the_good_one(
    bus: Bus, event_capture: EventCapture, bus_settings: BusSettings
) -> None:
    app = make_app(bus, settings(bus_settings))
    await app.start()
    try:
        await bus.publish(c.PoolDesired(generation=1, pool="first", cidrs=["10.30.0.0/24"]))
        await event_capture.wait_for(is_(c.AdmissionAccepted, component="ipam"))
        await bus.publish(c.PoolDesired(generation=2, pool="second", cidrs=["10.30.0.128/25"]))
        await bus.publish(
            c.PoolDesired(
                generation=3,
                pool="backwards",
                ranges=[c.AddressRange(first="10.40.0.9", last="10.40.0.1")],
            )
        )
        rejected = await event_capture.wait_for(is_(c.AdmissionRejected, component="ipam"), count=2)
        reasons = {
            r.envelope.event.object.name: r.envelope.event.problems[0].reason  # type: ignore[attr-defined]
            for r in rejected
        }
        assert reasons == {"second": "PoolOverlap", "backwards": "InvalidRange"}
        [second] = [r for r in rejected if r.envelope.event.object.name == "second"]  # type: ignore[attr-defined]
        assert "VipPool 'first'" in second.envelope.event.problems[0].message  # type: ignore[attr-defined]
        # The accepted pool still serves (and the rejected overlapping one is not used).
        await bus.publish(domain("a.example.com", 7))
        [out] = await event_capture.wait_for(is_(c.VipAssigned, owner=owner("a.example.com")))
        assert out.envelope.event.pool == "first"  # type: ignore[attr-defined]
    finally:
        await app.stop()


async def test_exhausted_pool_rejects_then_assigns_when_the_pool_grows(
    bus: Bus, event_capture: EventCapture, bus_settings: BusSettings
) -> None:
    app = make_app(bus, settings(bus_settings))
    await app.start()
    try:
        await bus.publish(c.PoolDesired(generation=1, pool="tiny", cidrs=["10.50.0.0/32"]))
        await bus.publish(domain("one.example.com", 1))
        await event_capture.wait_for(is_(c.VipAssigned, owner=owner("one.example.com")))
        await bus.publish(domain("two.example.com", 1))
        [rej] = await event_capture.wait_for(is_(c.VipRejected, owner=owner("two.example.com")))
        assert rej.envelope.event.reason == "PoolExhausted"  # type: ignore[attr-defined]
        assert "tiny: 1 total, 1 held" in rej.envelope.event.message  # type: ignore[attr-defined]
        await bus.publish(c.PoolDesired(generation=2, pool="tiny", cidrs=["10.50.0.0/31"]))
        [out] = await event_capture.wait_for(is_(c.VipAssigned, owner=owner("two.example.com")))
        assert out.envelope.event.addresses == ["10.50.0.1"]  # type: ignore[attr-defined]
        # Shrinking the pool under both allocations keeps them: nothing is re-published.
        published = len(event_capture.events)
        await bus.publish(c.PoolDesired(generation=3, pool="tiny", cidrs=["10.50.0.0/32"]))
        await asyncio.sleep(1.0)
        vip_events = [
            e for e in event_capture.events[published:] if e.envelope.event.family == c.Family.VIP
        ]
        assert vip_events == []
    finally:
        await app.stop()


async def test_restart_rebuilds_state_and_a_converged_reconcile_publishes_nothing(
    bus: Bus, event_capture: EventCapture, bus_settings: BusSettings
) -> None:
    s = settings(bus_settings)
    app = make_app(bus, s)
    await app.start()
    hosts = [f"h{i}.example.com" for i in range(20)]
    try:
        await bus.publish_many([domain(h, 1) for h in hosts])
        first = await event_capture.wait_for(is_(c.VipAssigned), count=20)
    finally:
        await app.stop()
    before = {o.envelope.event.owner.host: o.envelope.event.addresses for o in first}  # type: ignore[attr-defined]
    assert len({a[0] for a in before.values()}) == 20
    published = len(event_capture.events)
    again = make_app(bus, s)
    await again.start()
    try:
        assert again.allocator is not None
        assert {o[1]: r.addresses for o, r in again.allocator.owners.items()} == {
            h: tuple(a) for h, a in before.items()
        }
        await asyncio.sleep(0.5)
        assert event_capture.events[published:] == []
    finally:
        await again.stop()


async def test_bad_request_is_rejected_and_other_owners_are_unaffected(
    bus: Bus, event_capture: EventCapture, bus_settings: BusSettings
) -> None:
    app = make_app(bus, settings(bus_settings))
    await app.start()
    try:
        await bus.publish(domain("bad.example.com", 1, addresses=["203.0.113.9"]))
        await bus.publish(domain("good.example.com", 1))
        [rej] = await event_capture.wait_for(is_(c.VipRejected, owner=owner("bad.example.com")))
        assert rej.envelope.event.reason == "AddressNotInPool"  # type: ignore[attr-defined]
        await event_capture.wait_for(is_(c.VipAssigned, owner=owner("good.example.com")))
        # A change that cannot be honoured keeps the VIP the owner already has.
        [held] = await event_capture.wait_for(is_(c.VipAssigned, owner=owner("good.example.com")))
        await bus.publish(domain("good.example.com", 2, pool="nope"))
        [adm] = await event_capture.wait_for(is_(c.AdmissionRejected, component="ipam"))
        assert adm.envelope.event.object == SRC[0]  # type: ignore[attr-defined]
        assert adm.envelope.event.problems[0].reason == "PoolNotFound"  # type: ignore[attr-defined]
        assert [type(e) for e in event_capture.of_type(c.VipRejected)] == [c.VipRejected]
        assert held.envelope.event.addresses  # type: ignore[attr-defined]
    finally:
        await app.stop()


def pool_series(name: str) -> dict[str, float | None]:
    """The pool's gauges as /metrics serves them (ipam_pool_addresses_{total,used,free,cooling})."""
    return {
        kind: REGISTRY.get_sample_value(f"ipam_pool_addresses_{kind}", {"pool": name})
        for kind in ("total", "used", "free", "cooling")
    }


def pool_verdict(name: str, *reasons: str):  # type: ignore[no-untyped-def]
    """The VipPool's admission.accepted carrying exactly these warning reasons."""

    def match(cap: Captured) -> bool:
        ev = cap.envelope.event
        return (
            isinstance(ev, c.AdmissionAccepted)
            and ev.object.kind == "VipPool"
            and ev.object.name == name
            and sorted(w.reason for w in ev.warnings) == sorted(reasons)
        )

    return match


async def test_pool_status_warns_while_exhausted_and_while_shrunk_under_allocations(
    bus: Bus, event_capture: EventCapture, bus_settings: BusSettings
) -> None:
    app = make_app(bus, settings(bus_settings))
    await app.start()
    try:
        await bus.publish(c.PoolDesired(generation=1, pool="small", cidrs=["10.60.0.0/31"]))
        await event_capture.wait_for(pool_verdict("small"))
        for host in ("a.example.com", "b.example.com"):
            await bus.publish(domain(host, 1))
            await event_capture.wait_for(is_(c.VipAssigned, owner=owner(host)))
        await bus.publish(domain("c.example.com", 1))
        await event_capture.wait_for(is_(c.VipRejected, owner=owner("c.example.com")))
        [full] = await event_capture.wait_for(pool_verdict("small", "PoolExhausted"))
        [warning] = full.envelope.event.warnings  # type: ignore[attr-defined]
        assert "2 total, 2 held, 0 cooling down" in warning.message
        assert pool_series("small") == {"total": 2, "used": 2, "free": 0, "cooling": 0}
        # Grown: the warning clears, the rejected owner is served.
        await bus.publish(c.PoolDesired(generation=2, pool="small", cidrs=["10.60.0.0/30"]))
        await event_capture.wait_for(is_(c.VipAssigned, owner=owner("c.example.com")))
        cleared = [
            cap for cap in event_capture.events if pool_verdict("small")(cap)
        ]  # the first verdict, and the one after growing
        assert len(cleared) >= 2
        # Shrunk to one address under three allocations: all are kept, with a warning.
        published = len(event_capture.events)
        await bus.publish(c.PoolDesired(generation=3, pool="small", cidrs=["10.60.0.0/32"]))
        [shrunk] = await event_capture.wait_for(
            lambda cap: (
                pool_verdict("small", "AllocationsOutsidePool")(cap)
                or pool_verdict("small", "AllocationsOutsidePool", "PoolExhausted")(cap)
            )
        )
        outside = [
            w
            for w in shrunk.envelope.event.warnings  # type: ignore[attr-defined]
            if w.reason == "AllocationsOutsidePool"
        ]
        assert "are kept" in outside[0].message
        verdict = shrunk.envelope.event
        assert isinstance(verdict, c.AdmissionAccepted)
        held_inside = 1 if "PoolExhausted" in {w.reason for w in verdict.warnings} else 0
        assert pool_series("small") == {
            "total": 1,
            "used": held_inside,
            "free": 1 - held_inside,
            "cooling": 0,
        }
        assert (
            REGISTRY.get_sample_value("ipam_pool_allocations_outside", {"pool": "small"})
            == 3 - held_inside
        )
        vip_events = [
            e for e in event_capture.events[published:] if e.envelope.event.family == c.Family.VIP
        ]
        assert vip_events == []
    finally:
        await app.stop()


async def test_a_backlog_allocated_side_by_side_fills_a_pool_with_unique_addresses(
    bus: Bus, event_capture: EventCapture, bus_settings: BusSettings
) -> None:
    # 16 owners at once race for the last free addresses of a pool they fill exactly: the
    # store's compare-and-set must leave every address with one owner and one owner per address.
    app = make_app(bus, settings(bus_settings, allocations_in_flight=16))
    await app.start()
    try:
        await bus.publish(c.PoolDesired(generation=1, pool="exact", cidrs=["10.60.0.0/26"]))
        await event_capture.wait_for(is_(c.AdmissionAccepted))
        hosts = [f"b{i}.example.com" for i in range(64)]
        await bus.publish_many([domain(h, 1) for h in hosts])
        assigned = await event_capture.wait_for(is_(c.VipAssigned), count=64, timeout=30)
        held = {o.envelope.event.owner.host: o.envelope.event.addresses for o in assigned}  # type: ignore[attr-defined]
        assert set(held) == set(hosts)
        assert len({tuple(a) for a in held.values()}) == 64
        assert app.allocator is not None
        assert len(app.allocator.records) == 64
        await bus.publish(domain("late.example.com", 1))
        [rej] = await event_capture.wait_for(is_(c.VipRejected, owner=owner("late.example.com")))
        assert rej.envelope.event.reason == "PoolExhausted"  # type: ignore[attr-defined]
    finally:
        await app.stop()
