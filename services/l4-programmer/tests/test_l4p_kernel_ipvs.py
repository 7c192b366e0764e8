"""IPVS + IP-in-IP in a real kernel (the virtme-ng VM of scripts/test-kernel).

The VM's root namespace is the L4 node; a router namespace joins it to a client and two L7
namespaces. Real TCP: client -> router -> VIP on the L4 node -> IPVS tunnel -> L7 decapsulates
(tunl0 with the VIP, rp_filter / arp sysctls) -> the server answers the client directly (DSR).
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Iterator

import pytest
import structlog
from ingress_events import catalogue as c
from ingress_events.bus import Bus
from ingress_l4_programmer.adapters.addresses import DummyVips
from ingress_l4_programmer.adapters.ipvs import IpvsDataplane
from ingress_l4_programmer.adapters.l7 import L7Decap
from ingress_l4_programmer.app import L4ProgrammerApp
from ingress_l4_programmer.domain.model import Real, VsKey
from ingress_l4_programmer.settings import L4ProgrammerSettings
from ingress_runtime import Readiness, ServiceContext
from ingress_testkit.capture import EventCapture
from l4p_factories import domain_vip, envoy_pool, pool
from l4p_netns import Persistent, connect_many, link, namespaces, sh, start_echo, suffix

pytestmark = pytest.mark.kernel

VIP = "198.51.100.10"
L7 = {"l7a": "172.31.3.2", "l7b": "172.31.4.2"}


@pytest.fixture
def topology() -> Iterator[dict[str, str]]:
    with namespaces("client", "router", "l7a", "l7b") as ns:
        links = [
            link(ns["client"], "172.31.1.2", ns["router"], "172.31.1.1"),
            link(None, "172.31.2.2", ns["router"], "172.31.2.1"),
            link(ns["l7a"], L7["l7a"], ns["router"], "172.31.3.1"),
            link(ns["l7b"], L7["l7b"], ns["router"], "172.31.4.1"),
        ]
        try:
            sh("ip", "route", "add", "default", "via", "172.31.1.1", ns=ns["client"])
            sh("ip", "route", "add", "default", "via", "172.31.3.1", ns=ns["l7a"])
            sh("ip", "route", "add", "default", "via", "172.31.4.1", ns=ns["l7b"])
            sh("ip", "route", "add", f"{VIP}/32", "via", "172.31.2.2", ns=ns["router"])
            sh("ip", "route", "add", "172.31.0.0/16", "via", "172.31.2.1")
            for key in ("net.ipv4.ip_forward=1", "net.ipv4.conf.all.rp_filter=0"):
                sh("sysctl", "-q", "-w", key, ns=ns["router"])
            servers = []
            for role in ("l7a", "l7b"):
                L7Decap(netns=ns[role]).ensure(frozenset({VIP}))
                servers.append(start_echo(ns[role], role, 80))
            yield ns
            for proc in servers:
                proc.kill()
                proc.wait()
        finally:
            sh("ip", "route", "del", "172.31.0.0/16", check=False)
            sh("ip", "link", "del", links[1][0], check=False)


@contextlib.asynccontextmanager
async def running(
    bus: Bus, dataplane: IpvsDataplane, **overrides: object
) -> AsyncIterator[L4ProgrammerApp]:
    settings = L4ProgrammerSettings(
        node_name="vm-node",
        pool_ports=[80],
        scheduler="rr",
        drain_poll_seconds=0.2,
        resync_seconds=0.5,
        **overrides,  # type: ignore[arg-type]
    )
    ctx = ServiceContext(
        name="l4-programmer",
        settings=settings,
        bus=bus,
        readiness=Readiness(),
        log=structlog.get_logger("l4-programmer"),
    )
    app = L4ProgrammerApp(ctx, dataplane=dataplane)
    await app.start()
    try:
        yield app
    finally:
        await app.stop()


def _programmed(ready: int):  # type: ignore[no-untyped-def]
    def match(cap) -> bool:  # type: ignore[no-untyped-def]
        e = cap.envelope.event
        return isinstance(e, c.L4Programmed) and e.services[0].ready_real_servers == ready

    return match


async def test_ipvs_tunnel_serves_real_tcp_and_drains_without_reset(
    topology: dict[str, str], bus: Bus, event_capture: EventCapture
) -> None:
    vips = DummyVips(f"l4pv{suffix()}")
    dataplane = IpvsDataplane(vips)
    try:
        await bus.publish(pool())
        for e in envoy_pool(list(L7.values()), ports=(80,)):
            await bus.publish(e)
        await bus.publish(domain_vip("shop.example.com", VIP, ports=(80,)))
        async with running(bus, dataplane) as app:
            [out] = await event_capture.wait_for(_programmed(2), timeout=20)
            assert out.envelope.event.dataplane == "ipvs"  # type: ignore[attr-defined]
            table = sh("ipvsadm", "-Ln", "-t", f"{VIP}:80")
            assert table.count("Tunnel") == 2, table
            answers = await asyncio.to_thread(connect_many, topology["client"], VIP, 80, 6)
            assert set(answers) == {"l7a", "l7b"}, answers

            # Converged: another pass makes zero writes.
            assert await app.reconcile() == 0

            # Drain: the server holding a live connection leaves the endpoints.
            conn = Persistent(topology["client"], VIP, 80)
            try:
                holder = (await asyncio.to_thread(conn.ask)).split()[0]
                other = "l7b" if holder == "l7a" else "l7a"
                key = VsKey(VIP, "TCP", 80)
                held = (await asyncio.to_thread(dataplane.read)).services[key].dests
                assert held[Real(L7[holder], 80)].active == 1, sh("ipvsadm", "-Lnc")
                for e in envoy_pool([L7[other]], gen=6, ports=(80,)):
                    await bus.publish(e)
                await event_capture.wait_for(_programmed(1), timeout=20)
                dests = (await asyncio.to_thread(dataplane.read)).services[key].dests
                assert dests[Real(L7[holder], 80)].weight == 0  # draining, not deleted
                assert (await asyncio.to_thread(conn.ask)).split()[0] == holder  # no reset
                assert set(
                    await asyncio.to_thread(connect_many, topology["client"], VIP, 80, 4)
                ) == {other}
            finally:
                await asyncio.to_thread(conn.close)
            # Once its connections are gone the drained server is deleted.
            deadline = time.monotonic() + 30
            while (
                Real(L7[holder], 80)
                in (await asyncio.to_thread(dataplane.read)).services[key].dests
            ):
                assert time.monotonic() < deadline, sh("ipvsadm", "-Ln")
                await asyncio.sleep(0.3)

            # Release: services and the address go, and l4.removed follows the read-back.
            await bus.publish(
                c.VipReleased(
                    generation=99,
                    owner=c.VipOwner(kind="domain", host="shop.example.com"),
                    addresses=[VIP],
                )
            )
            await event_capture.wait_for(
                lambda cap: isinstance(cap.envelope.event, c.L4Removed), timeout=20
            )
            state = await asyncio.to_thread(dataplane.read)
            assert VIP not in state.addresses and not any(k.vip == VIP for k in state.services)
    finally:
        sh("ip", "link", "del", vips.ifname, check=False)


async def test_foreign_ipvs_services_are_never_touched(
    bus: Bus, event_capture: EventCapture
) -> None:
    foreign = "192.0.2.77:8080"
    sh("ipvsadm", "-A", "-t", foreign, "-s", "wlc")
    sh("ipvsadm", "-a", "-t", foreign, "-r", "10.9.9.9:8080", "-i", "-w", "3")
    vips = DummyVips(f"l4pv{suffix()}")
    try:
        await bus.publish(pool())
        for e in envoy_pool(["10.0.1.1", "10.0.1.2"], ports=(80,)):
            await bus.publish(e)
        await bus.publish(domain_vip("a.example.com", "198.51.100.20", ports=(80,)))
        before = sh("ipvsadm", "-Ln", "-t", foreign)
        async with running(bus, IpvsDataplane(vips)) as app:
            await event_capture.wait_for(_programmed(2), timeout=20)
            assert await app.reconcile() == 0
        # A restart reads the same kernel and has nothing to do.
        async with running(bus, IpvsDataplane(vips)) as app:
            assert app.last_writes == 0
        assert sh("ipvsadm", "-Ln", "-t", foreign) == before
    finally:
        sh("ipvsadm", "-D", "-t", foreign, check=False)
        sh("ipvsadm", "-D", "-t", "198.51.100.20:80", check=False)
        sh("ip", "link", "del", vips.ifname, check=False)


async def test_drain_timeout_and_restart_mid_drain(
    topology: dict[str, str], bus: Bus, event_capture: EventCapture
) -> None:
    """A drained real server that still holds a connection is kept at weight 0 until the drain
    timeout, then deleted; a restart mid-drain keeps the drain (weight 0, no write) and the
    timeout runs from the restart, never shorter."""
    timeout = 4.0
    vips = DummyVips(f"l4pv{suffix()}")
    dataplane = IpvsDataplane(vips)
    key = VsKey(VIP, "TCP", 80)
    try:
        await bus.publish(pool())
        for e in envoy_pool(list(L7.values()), ports=(80,)):
            await bus.publish(e)
        await bus.publish(domain_vip("shop.example.com", VIP, ports=(80,)))
        conn = Persistent(topology["client"], VIP, 80)
        try:
            async with running(bus, dataplane, drain_timeout_seconds=timeout):
                await event_capture.wait_for(_programmed(2), timeout=20)
                holder = (await asyncio.to_thread(conn.ask)).split()[0]
                other = "l7b" if holder == "l7a" else "l7a"
                drained = Real(L7[holder], 80)
                for e in envoy_pool([L7[other]], gen=6, ports=(80,)):
                    await bus.publish(e)
                await event_capture.wait_for(_programmed(1), timeout=20)
            # Stopped mid-drain: the kernel keeps the drain.
            dests = (await asyncio.to_thread(dataplane.read)).services[key].dests
            assert dests[drained].weight == 0 and dests[drained].active == 1, dests

            restarted = time.monotonic()
            async with running(bus, dataplane, drain_timeout_seconds=timeout) as app:
                assert app.last_writes == 0  # the intent is read back from the kernel
                dests = (await asyncio.to_thread(dataplane.read)).services[key].dests
                assert dests[drained].weight == 0 and dests[Real(L7[other], 80)].weight == 1
                assert (await asyncio.to_thread(conn.ask)).split()[0] == holder  # no reset
                # Still connected, so only the timeout deletes it, and not before it passed.
                while drained in (await asyncio.to_thread(dataplane.read)).services[key].dests:
                    waited = time.monotonic() - restarted
                    assert waited < timeout + 20, sh("ipvsadm", "-Ln")
                    await asyncio.sleep(0.2)
                assert time.monotonic() - restarted >= timeout
                assert set(
                    await asyncio.to_thread(connect_many, topology["client"], VIP, 80, 3)
                ) == {other}
        finally:
            await asyncio.to_thread(conn.close)
    finally:
        sh("ipvsadm", "-D", "-t", f"{VIP}:80", check=False)
        sh("ip", "link", "del", vips.ifname, check=False)


def test_refused_writes_are_named_and_the_others_applied() -> None:
    """Writes go in batches with only the last one acknowledged: a refused write anywhere (mid
    batch, the acknowledged last one, the final batch) is reported by name, and every other
    write of every batch is in the kernel."""
    from ingress_l4_programmer.adapters import genl_ipvs
    from ingress_l4_programmer.adapters.ipvs import ApplyError
    from ingress_l4_programmer.domain.model import AddDest, AddService, DelService, Op, describe

    keys = [
        VsKey(f"198.18.{200 + i // 500}.{i // 2 % 250 + 1}", "TCP", 80 + i % 2) for i in range(600)
    ]
    ops: list[Op] = []
    for key in keys:
        ops += [AddService(key, "rr"), AddDest(key, Real("172.16.0.1", key.port), 1, "tunnel")]
    missing = VsKey("198.18.210.1", "TCP", 80)
    bad = [
        AddDest(missing, Real("172.16.0.1", 80), 1, "tunnel"),  # no such service
        AddService(keys[0], "rr"),  # exists already
        AddDest(missing, Real("172.16.0.2", 80), 1, "tunnel"),
    ]
    ops.insert(100, bad[0])
    ops.insert(genl_ipvs.BATCH - 1, bad[1])  # the last request of the first batch
    ops.append(bad[2])
    assert len(ops) > 2 * genl_ipvs.BATCH
    dp = IpvsDataplane(DummyVips(f"l4pe{suffix()}"))
    try:
        with pytest.raises(ApplyError) as refused:
            dp.apply(dp.read(), ops)
        message = str(refused.value)
        assert message.count(";") == len(bad) - 1, message
        for op in bad:
            assert describe(op) in message
        services = dp.read().services
        assert missing not in services
        ours = {k: v for k, v in services.items() if k in set(keys)}
        assert set(ours) == set(keys)
        assert all(set(v.dests) == {Real("172.16.0.1", k.port)} for k, v in ours.items())
    finally:
        left = [k for k in keys if k in dp.read().services]
        dp.apply(dp.read(), [DelService(k) for k in left])  # one batch, not 600 ipvsadm runs
        sh("ip", "link", "del", dp.vips.ifname, check=False)
