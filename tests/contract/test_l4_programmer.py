"""l4-programmer in-process against a real nats-server: vip / backend / pool events in, l4.* and
admission events out, each checked against the committed schemas by ``event_capture``. The
kernel is the in-memory fake here; the real ones are in services/l4-programmer/tests."""

from __future__ import annotations

import asyncio
import sys
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
import structlog
from ingress_events import catalogue as c
from ingress_events.bus import Bus
from ingress_l4_programmer.adapters.base import FakeDataplane
from ingress_l4_programmer.app import L4ProgrammerApp
from ingress_l4_programmer.domain.model import KernelState, Op
from ingress_l4_programmer.settings import L4ProgrammerSettings
from ingress_runtime import Readiness, ServiceContext
from ingress_testkit.capture import Captured, EventCapture

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "services/l4-programmer/tests"))
from l4p_factories import domain_vip, endpoints, envoy_pool, pool, service_vip

pytestmark = pytest.mark.contract


def _app(bus: Bus, dataplane: FakeDataplane, resync: float = 0.2) -> L4ProgrammerApp:
    settings = L4ProgrammerSettings(
        node_name="node-a", resync_seconds=resync, drain_poll_seconds=0.1
    )
    ctx = ServiceContext(
        name="l4-programmer",
        settings=settings,
        bus=bus,
        readiness=Readiness(),
        log=structlog.get_logger("l4-programmer"),
    )
    return L4ProgrammerApp(ctx, dataplane=dataplane)


async def _seed(bus: Bus, envoys: list[str], vips: int) -> None:
    """The pool, the Envoy pool's endpoints and ``vips`` domain VIPs 198.51.100.100 on."""
    await bus.publish(pool())
    for e in envoy_pool(envoys):
        await bus.publish(e)
    for i in range(vips):
        await bus.publish(domain_vip(f"d{i}.example.com", f"198.51.100.{100 + i}", gen=10 + i))


@pytest.fixture
def kernel() -> FakeDataplane:
    return FakeDataplane("ipvs")


def _is(cls: type[c.Event], vip: str | None = None):  # type: ignore[no-untyped-def]
    def match(cap: Captured) -> bool:
        e = cap.envelope.event
        return isinstance(e, cls) and (vip is None or getattr(e, "vip", None) == vip)

    return match


async def test_programs_vips_and_reports_bad_input_locally(
    bus: Bus, event_capture: EventCapture, kernel: FakeDataplane
) -> None:
    await bus.publish(pool())
    for e in envoy_pool(["10.0.1.1", "10.0.1.2"]):
        await bus.publish(e)
    app = _app(bus, kernel)
    await app.start()
    try:
        await bus.publish(domain_vip("shop.example.com", "198.51.100.10", gen=10))
        await bus.publish(domain_vip("stray.example.com", "203.0.113.9", gen=11))
        await bus.publish(service_vip("team-a", "db", "198.51.100.20", (5432,), gen=12))
        await bus.publish(endpoints("team-a", "db", 5432, ["10.0.2.1", "127.0.0.1"]))

        [ok] = await event_capture.wait_for(_is(c.L4Programmed, "198.51.100.10"))
        event = ok.envelope.event
        assert isinstance(event, c.L4Programmed)
        assert ok.subject == "ingress.v1.l4.node-a.198_51_100_10"
        assert event.dataplane == "ipvs" and event.observed_generation == 10
        assert [
            (s.port, s.scheduler, s.real_servers, s.ready_real_servers) for s in event.services
        ] == [
            (80, "mh", 2, 2),
            (443, "mh", 2, 2),
        ]
        [bad] = await event_capture.wait_for(_is(c.L4NotReady, "203.0.113.9"))
        assert isinstance(bad.envelope.event, c.L4NotReady)
        assert bad.envelope.event.reason == "VipOutsidePool"
        [rej] = await event_capture.wait_for(_is(c.AdmissionRejected))
        assert isinstance(rej.envelope.event, c.AdmissionRejected)
        assert rej.envelope.event.object.name == "db"
        assert rej.envelope.event.problems[0].reason == "InvalidRealServer"
        await event_capture.wait_for(_is(c.L4Programmed, "198.51.100.20"))
        assert "203.0.113.9" not in kernel.state.addresses

        # Converged: a reconcile writes nothing and publishes nothing new.
        published = len(event_capture.events)
        assert await app.reconcile() == 0
        assert len(event_capture.events) == published

        # The bad endpoint goes away: the rejection is lifted with an acceptance.
        await bus.publish(endpoints("team-a", "db", 5432, ["10.0.2.1"], gen=6))
        await event_capture.wait_for(_is(c.AdmissionAccepted))

        # Release: the kernel state goes, then l4.removed.
        await bus.publish(
            c.VipReleased(
                generation=50,
                owner=c.VipOwner(kind="domain", host="shop.example.com"),
                addresses=["198.51.100.10"],
            )
        )
        await event_capture.wait_for(_is(c.L4Removed, "198.51.100.10"))
        assert "198.51.100.10" not in kernel.state.addresses
        assert all(k.vip != "198.51.100.10" for k in kernel.state.services)
    finally:
        await app.stop()


async def test_restart_publishes_nothing_and_writes_nothing(
    bus: Bus, event_capture: EventCapture, kernel: FakeDataplane
) -> None:
    await bus.publish(pool())
    for e in envoy_pool(["10.0.1.1"]):
        await bus.publish(e)
    await bus.publish(domain_vip("shop.example.com", "198.51.100.10"))
    app = _app(bus, kernel)
    await app.start()
    await event_capture.wait_for(_is(c.L4Programmed))
    await app.stop()
    before = len(event_capture.events)
    writes = len(kernel.writes)
    again = _app(bus, kernel)
    await again.start()
    try:
        assert again.last_writes == 0 and len(kernel.writes) == writes
        assert len(event_capture.events) == before
    finally:
        await again.stop()


async def test_missing_kernel_module_is_a_clear_not_ready(
    bus: Bus, event_capture: EventCapture
) -> None:
    await bus.publish(pool())
    await bus.publish(domain_vip("shop.example.com", "198.51.100.10"))
    app = _app(bus, FakeDataplane("ipvs", missing="the ip_vs kernel module is not loaded"))
    await app.start()
    try:
        [out] = await event_capture.wait_for(_is(c.L4NotReady))
        assert isinstance(out.envelope.event, c.L4NotReady)
        assert out.envelope.event.reason == "DataplaneUnavailable"
        assert "ip_vs" in out.envelope.event.message
    finally:
        await app.stop()


async def test_an_event_reads_and_writes_only_its_vip(
    bus: Bus, event_capture: EventCapture, kernel: FakeDataplane
) -> None:
    """Between full resyncs an event touches its own VIP: no whole-table read, and the number
    of virtual services read and planned does not grow with the table."""
    await _seed(bus, ["10.0.1.1", "10.0.1.2"], vips=20)
    app = _app(bus, kernel, resync=3600)
    await app.start()
    try:
        assert app.last_keys is None  # the start is a full pass: read, apply, read back
        full_reads = kernel.reads
        vip = "198.51.100.20"
        await bus.publish(service_vip("team-a", "db", vip, (5432,), gen=40))
        await bus.publish(endpoints("team-a", "db", 5432, ["10.0.2.1", "10.0.2.2"]))
        await event_capture.wait_for(
            lambda cap: (
                isinstance(e := cap.envelope.event, c.L4Programmed)
                and e.vip == vip
                and e.services[0].ready_real_servers == 2
            )
        )
        assert app.last_keys == 1

        # One endpoint leaves: drained to weight 0, then deleted (no active connection).
        await bus.publish(endpoints("team-a", "db", 5432, ["10.0.2.1"], gen=6))
        await event_capture.wait_for(
            lambda cap: (
                isinstance(e := cap.envelope.event, c.L4Programmed)
                and e.vip == vip
                and e.services[0].real_servers == 1
            )
        )
        assert app.last_keys is not None and app.last_keys <= 1

        # A release removes the services and the address of that VIP alone.
        await bus.publish(
            c.VipReleased(
                generation=50,
                owner=c.VipOwner(kind="service", namespace="team-a", service="db"),
                addresses=[vip],
            )
        )
        await event_capture.wait_for(_is(c.L4Removed, vip))
        assert vip not in kernel.state.addresses
        assert all(k.vip != vip for k in kernel.state.services)
        assert len(kernel.state.addresses) == 20 and len(kernel.state.services) == 40
        assert kernel.reads == full_reads  # no whole-table read after the start
    finally:
        await app.stop()


async def test_a_change_does_not_wait_for_a_resync_that_falls_due_with_it(
    bus: Bus, event_capture: EventCapture, kernel: FakeDataplane
) -> None:
    """Under a steady stream of changes the resync falls due on an event: that event's VIP is
    programmed by its own scoped pass, and the whole-table pass follows right after it."""
    import asyncio

    await bus.publish(pool())
    for e in envoy_pool(["10.0.1.1"]):
        await bus.publish(e)
    app = _app(bus, kernel, resync=1.0)
    passes: list[tuple[bool, set[str], frozenset[str]]] = []
    reconcile = app.reconcile

    async def recorded(full: bool = True, current: KernelState | None = None) -> int:
        known = {a for e in app._inputs.live(c.Family.VIP) for a in getattr(e, "addresses", [])}
        passes.append((full, known, frozenset(kernel.state.addresses)))
        return await reconcile(full, current)

    await app.start()
    app.reconcile = recorded  # type: ignore[method-assign]
    try:
        for i in range(6):  # one change every 0.4 s, so the resync falls due on one of them
            vip = f"198.51.100.{10 + i}"
            await bus.publish(domain_vip(f"d{i}.example.com", vip, gen=10 + i))
            await event_capture.wait_for(_is(c.L4Programmed, vip))
            await asyncio.sleep(0.4)
        assert any(full for full, _, _ in passes), passes  # the resync did run
        for full, known, bound in passes:
            if full:  # what had arrived was programmed by its own pass, before the resync
                assert known <= bound, passes
    finally:
        await app.stop()


async def test_the_l7_role_binds_domain_vips_and_unbinds_only_released_ones(bus: Bus) -> None:
    import asyncio

    from ingress_l4_programmer.adapters.l7 import FakeDecap
    from ingress_l4_programmer.app import L7RoleApp, build_app

    def role_app(decap: FakeDecap) -> L7RoleApp:
        settings = L4ProgrammerSettings(node_name="envoy-0", role="l7", resync_seconds=0.2)
        ctx = ServiceContext(
            name="l4-programmer",
            settings=settings,
            bus=bus,
            readiness=Readiness(),
            log=structlog.get_logger("l4-programmer"),
        )
        assert isinstance(build_app(ctx), L7RoleApp)
        return L7RoleApp(ctx, decap=decap)

    async def until(check) -> None:  # type: ignore[no-untyped-def]
        async with asyncio.timeout(10):
            while not check():  # noqa: ASYNC110
                await asyncio.sleep(0.02)

    decap = FakeDecap(bound=["10.99.0.1"])  # an address nobody told us about
    await bus.publish(domain_vip("a.example.com", "198.51.100.1"))
    app = role_app(decap)
    await app.start()
    try:
        assert decap.addresses == {"10.99.0.1", "198.51.100.1"}
        await bus.publish(domain_vip("b.example.com", "198.51.100.2"))
        await bus.publish(service_vip("shop", "db", "198.51.100.9", (5432,)))
        await until(lambda: "198.51.100.2" in decap.addresses)
        await bus.publish(
            c.VipReleased(
                generation=30,
                owner=c.VipOwner(kind="domain", host="a.example.com"),
                addresses=["198.51.100.1"],
            )
        )
        await until(lambda: "198.51.100.1" not in decap.addresses)
        assert decap.addresses == {"10.99.0.1", "198.51.100.2"}
    finally:
        await app.stop()
    # A restart on a bus that knows nothing of a bound VIP leaves it bound.
    decap.addresses.add("198.51.100.77")
    app = role_app(decap)
    await app.start()
    await app.stop()
    assert decap.addresses == {"10.99.0.1", "198.51.100.2", "198.51.100.77"}
    # No device to decapsulate with: not ready, and said so, instead of crashing.
    broken = role_app(FakeDecap(missing="no tunl0: the ipip kernel module is not loaded"))
    await broken.start()
    try:
        assert not broken._ctx.readiness.ready
    finally:
        await broken.stop()


async def test_a_change_of_much_of_the_table_takes_a_full_pass(
    bus: Bus, event_capture: EventCapture, kernel: FakeDataplane, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Reading thousands of services back by key costs more than one dump (a cold start's
    passes): past a sixth of the table a change is planned by a full pass, and still programs
    every VIP."""
    monkeypatch.setattr("ingress_l4_programmer.app.SCOPED_ALWAYS", 4)
    await _seed(bus, ["10.0.1.1"], vips=12)
    app = _app(bus, kernel, resync=3600)
    await app.start()
    try:
        reads = kernel.reads
        await bus.publish(domain_vip("one.example.com", "198.51.100.150", gen=40))
        await event_capture.wait_for(_is(c.L4Programmed, "198.51.100.150"))
        assert app.last_keys == 2 and kernel.reads == reads  # small: scoped, no dump
        await bus.publish_many(
            [
                domain_vip(f"n{i}.example.com", f"198.51.100.{160 + i}", gen=50 + i)
                for i in range(12)
            ]
        )
        await event_capture.wait_for(
            lambda cap: (
                isinstance(cap.envelope.event, c.L4Programmed)
                and int(cap.envelope.event.vip.rsplit(".", 1)[1]) >= 160
            ),
            count=12,
        )
        assert kernel.reads > reads  # a dump planned them (more than 4 keys, and 26 / 6)
        assert len(kernel.state.addresses) == 25
    finally:
        await app.stop()


class SlowDumps(FakeDataplane):
    """A kernel whose whole-table dump takes ``dump_seconds`` (as ~1 s at 10,000 VIPs)."""

    def __init__(self, dump_seconds: float) -> None:
        super().__init__("ipvs")
        self.dump_seconds = dump_seconds

    def read(self) -> KernelState:
        import time

        seen = self.state
        time.sleep(self.dump_seconds)
        self.reads += 1
        return seen


async def test_a_change_is_programmed_while_the_resync_dump_runs(
    bus: Bus, event_capture: EventCapture
) -> None:
    """The resync's dump runs beside the passes: a change that arrives meanwhile is programmed
    at once, and the dump, stale after that write, is not planned from (a new one is taken)."""
    import asyncio
    import time

    kernel = SlowDumps(dump_seconds=0.0)
    await bus.publish(pool())
    for e in envoy_pool(["10.0.1.1"]):
        await bus.publish(e)
    await bus.publish(domain_vip("a.example.com", "198.51.100.10", gen=10))
    app = _app(bus, kernel, resync=0.5)
    await app.start()
    try:
        kernel.dump_seconds = 1.5
        started = kernel.reads
        await asyncio.sleep(0.7)  # the resync fell due: its dump is running now
        assert kernel.reads == started
        planned: list[KernelState | None] = []
        reconcile = app.reconcile

        async def recorded(full: bool = True, current: KernelState | None = None) -> int:
            if full:
                planned.append(current)
            return await reconcile(full, current)

        app.reconcile = recorded  # type: ignore[method-assign]
        began = time.monotonic()
        await bus.publish(domain_vip("b.example.com", "198.51.100.11", gen=11))
        await event_capture.wait_for(_is(c.L4Programmed, "198.51.100.11"))
        assert time.monotonic() - began < 1.0  # did not wait for the 1.5 s dump
        kernel.dump_seconds = 0.0
        # The dump that ran during that write is stale: a later one is what gets planned from.
        for _ in range(40):
            if planned:
                break
            await asyncio.sleep(0.1)
        assert planned and all(p is None or "198.51.100.11" in p.addresses for p in planned)
    finally:
        await app.stop()


class StuckKernel(FakeDataplane):
    """A kernel that takes no writes (a module gone wrong): drift stays."""

    def apply(self, current: KernelState, ops: list[Op]) -> int:
        self.writes.extend(ops)
        return len(ops)


async def test_a_resync_reports_again_only_what_changed(
    bus: Bus, event_capture: EventCapture
) -> None:
    """Every full pass checks every VIP against the kernel; a VIP whose intent, specs and kernel
    state are what its report was made from is not reported (nor its report rebuilt) again,
    and one whose kernel state moved is."""
    kernel = StuckKernel("ipvs")
    await _seed(bus, ["10.0.1.1", "10.0.1.2"], vips=3)
    app = _app(bus, FakeDataplane("ipvs"), resync=0.1)
    # The start programs through a working kernel; then it gets stuck with that state.
    await app.start()
    try:
        for i in range(3):
            await event_capture.wait_for(_is(c.L4Programmed, f"198.51.100.{100 + i}"))
        working = app._dataplane
        assert isinstance(working, FakeDataplane)
        kernel.state = working.state
        app._dataplane = kernel
        verified: list[str] = []
        real = app._verify_and_emit

        async def counting(derived: Any, intent: Any, after: KernelState) -> None:
            verified.append(intent.vip)
            await real(derived, intent, after)

        app._verify_and_emit = counting  # type: ignore[method-assign]
        reads = kernel.reads
        while kernel.reads < reads + 3:  # noqa: ASYNC110 (three full passes, same state)
            await asyncio.sleep(0.05)
        assert verified == []

        # One real server of one VIP loses its weight behind the programmer's back.
        vip = "198.51.100.101"
        key = next(k for k in kernel.state.services if k.vip == vip)
        vs = kernel.state.services[key]
        real_server = next(iter(vs.dests))
        dests = {**vs.dests, real_server: replace(vs.dests[real_server], weight=7)}
        services = {**kernel.state.services, key: replace(vs, dests=dests)}
        kernel.state = replace(kernel.state, services=services)
        [out] = await event_capture.wait_for(_is(c.L4NotReady, vip))
        assert isinstance(out.envelope.event, c.L4NotReady)
        assert out.envelope.event.reason == "VerifyFailed"
        assert set(verified) == {vip}
    finally:
        await app.stop()
