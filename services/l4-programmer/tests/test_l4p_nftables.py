"""The nftables dataplane on this machine's kernel, with real TCP between namespaces the test
creates: client -> L4 namespace (our table DNATs the VIP) -> two L7 namespaces."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator

import pytest
import structlog
from ingress_events import catalogue as c
from ingress_events.bus import Bus
from ingress_l4_programmer.app import L4ProgrammerApp, choose_dataplane
from ingress_l4_programmer.domain.model import CurrentDest, CurrentVs, Real, VsKey
from ingress_l4_programmer.domain.nft import parse_table, render_table
from ingress_l4_programmer.settings import L4ProgrammerSettings
from ingress_runtime import Readiness, ServiceContext
from ingress_testkit.capture import Captured, EventCapture
from l4p_factories import endpoints, pool
from l4p_netns import Persistent, connect_many, link, namespaces, sh, start_echo, suffix

pytestmark = pytest.mark.integration

VIP = "198.51.100.10"
L7 = {"l7a": "172.31.3.2", "l7b": "172.31.4.2"}
TARGET = 8080


@pytest.fixture
def topology() -> Iterator[dict[str, str]]:
    with namespaces("client", "l4", "l7a", "l7b") as ns:
        link(ns["client"], "172.31.1.2", ns["l4"], "172.31.1.1")
        link(ns["l7a"], L7["l7a"], ns["l4"], "172.31.3.1")
        link(ns["l7b"], L7["l7b"], ns["l4"], "172.31.4.1")
        sh("ip", "route", "add", "default", "via", "172.31.1.1", ns=ns["client"])
        sh("ip", "route", "add", "default", "via", "172.31.3.1", ns=ns["l7a"])
        sh("ip", "route", "add", "default", "via", "172.31.4.1", ns=ns["l7b"])
        sh("sysctl", "-q", "-w", "net.ipv4.ip_forward=1", ns=ns["l4"])
        servers = [start_echo(ns[role], role, TARGET) for role in ("l7a", "l7b")]
        try:
            yield ns
        finally:
            for proc in servers:
                proc.kill()
                proc.wait()


def _app(bus: Bus, netns: str) -> L4ProgrammerApp:
    settings = L4ProgrammerSettings(
        node_name="node-n",
        dataplane="nftables",
        scheduler="numgen",
        netns=netns,
        vip_interface=f"l4pv{suffix()}",
        resync_seconds=0.3,
    )
    ctx = ServiceContext(
        name="l4-programmer",
        settings=settings,
        bus=bus,
        readiness=Readiness(),
        log=structlog.get_logger("l4-programmer"),
    )
    return L4ProgrammerApp(ctx, dataplane=choose_dataplane(settings))


def _svc(addresses: list[str], gen: int) -> c.BackendEndpoints:
    return endpoints("team-a", "web", 80, addresses, gen=gen, target_port=TARGET)


def _programmed(ready: int):  # type: ignore[no-untyped-def]
    def match(cap: Captured) -> bool:
        e = cap.envelope.event
        return isinstance(e, c.L4Programmed) and e.services[0].ready_real_servers == ready

    return match


async def test_nftables_dnat_real_traffic_drain_and_release(
    topology: dict[str, str], bus: Bus, event_capture: EventCapture
) -> None:
    await bus.publish(pool())
    await bus.publish(_svc(list(L7.values()), gen=5))
    await bus.publish(
        c.VipAssigned(
            generation=10,
            owner=c.VipOwner(kind="service", namespace="team-a", service="web"),
            addresses=[VIP],
            pool="public",
            ports=[c.PortSpec(port=80)],
            observed_generation=3,
        )
    )
    app = _app(bus, topology["l4"])
    await app.start()
    try:
        [out] = await event_capture.wait_for(_programmed(2))
        assert isinstance(out.envelope.event, c.L4Programmed)
        assert out.envelope.event.dataplane == "nftables"
        answers = await asyncio.to_thread(connect_many, topology["client"], VIP, 80, 12)
        assert set(answers) == {"l7a", "l7b"}, answers
        assert await app.reconcile() == 0

        conn = Persistent(topology["client"], VIP, 80)
        try:
            holder = (await asyncio.to_thread(conn.ask)).split()[0]
            other = "l7b" if holder == "l7a" else "l7a"
            await bus.publish(_svc([L7[other]], gen=6))
            await event_capture.wait_for(_programmed(1))
            # Conntrack keeps the established flow on its server: no reset.
            assert (await asyncio.to_thread(conn.ask)).split()[0] == holder
            fresh = await asyncio.to_thread(connect_many, topology["client"], VIP, 80, 6)
            assert set(fresh) == {other}
        finally:
            await asyncio.to_thread(conn.close)

        await bus.publish(
            c.VipReleased(
                generation=20,
                owner=c.VipOwner(kind="service", namespace="team-a", service="web"),
                addresses=[VIP],
            )
        )
        await event_capture.wait_for(lambda cap: isinstance(cap.envelope.event, c.L4Removed))
        doc = json.loads(sh("nft", "-j", "list", "table", "ip", "ingress_l4", ns=topology["l4"]))
        assert parse_table(doc) == {}
    finally:
        await app.stop()


def test_rendered_table_reads_back_identically(topology: dict[str, str]) -> None:
    """What we render is what nft -j shows us, drained slots included: the read-back that keeps
    a converged node at zero writes."""
    services = {
        VsKey(VIP, "TCP", 80): CurrentVs(
            "numgen",
            {
                Real("10.0.1.1", 80): CurrentDest(2, "nat"),
                Real("10.0.1.2", 80): CurrentDest(0, "nat"),
            },
        ),
        VsKey(VIP, "UDP", 53): CurrentVs("jhash", {Real("10.0.1.3", 53): CurrentDest(1, "nat")}),
        VsKey("198.51.100.11", "TCP", 443): CurrentVs("numgen", {}),
        VsKey("198.51.100.12", "TCP", 443): CurrentVs(
            "numgen", {Real("10.0.1.2", 443): CurrentDest(0, "nat")}
        ),
    }
    ns = topology["l4"]
    sh("nft", "add", "table", "ip", "someone_else", ns=ns)
    subprocess_input = render_table("ingress_l4", services)
    import subprocess

    subprocess.run(
        ["ip", "netns", "exec", ns, "nft", "-f", "-"], input=subprocess_input, text=True, check=True
    )
    doc = json.loads(sh("nft", "-j", "list", "table", "ip", "ingress_l4", ns=ns))
    assert parse_table(doc) == services
    # Re-applying replaces only our table, atomically; the other table is still there.
    subprocess.run(
        ["ip", "netns", "exec", ns, "nft", "-f", "-"], input=subprocess_input, text=True, check=True
    )
    assert "someone_else" in sh("nft", "list", "tables", ns=ns)
