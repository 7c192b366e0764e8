"""The nftables dataplane on this machine's kernel, with real TCP between namespaces the test
creates: client -> L4 namespace (our table DNATs the VIP) -> two L7 namespaces."""

from __future__ import annotations

import asyncio
import json
import subprocess
from collections.abc import Iterator

import pytest
import structlog
from hypothesis import given, settings
from hypothesis import strategies as st
from ingress_events import catalogue as c
from ingress_events.bus import Bus
from ingress_l4_programmer.adapters.addresses import DummyVips
from ingress_l4_programmer.adapters.nftables import NftDataplane
from ingress_l4_programmer.app import L4ProgrammerApp, choose_dataplane
from ingress_l4_programmer.domain.model import (
    AddDest,
    AddService,
    CurrentDest,
    CurrentVs,
    DelDest,
    DelService,
    KernelState,
    Real,
    SetDest,
    VsKey,
)
from ingress_l4_programmer.domain.nft import parse_table, render_changes, render_table
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
    script = render_table("ingress_l4", services)
    apply_nft(ns, script)
    doc = json.loads(sh("nft", "-j", "list", "table", "ip", "ingress_l4", ns=ns))
    assert parse_table(doc) == services
    # Re-applying replaces only our table, atomically; the other table is still there.
    apply_nft(ns, script)
    assert "someone_else" in sh("nft", "list", "tables", ns=ns)


def test_a_change_is_applied_alone_and_reads_back(topology: dict[str, str]) -> None:
    ns = topology["l4"]
    plane = NftDataplane("ingress_l4", DummyVips(f"l4pv{suffix()}", ns), ns)
    web, api, dns = VsKey(VIP, "TCP", 80), VsKey(VIP, "TCP", 443), VsKey(VIP, "UDP", 53)
    a, b = Real(L7["l7a"], TARGET), Real(L7["l7b"], TARGET)

    first = plane.read()
    assert plane.rewrite and first.services == {}
    plane.apply(
        first,
        [
            *(AddService(k, "numgen") for k in (web, api, dns)),
            *(AddDest(k, r, 1, "nat") for k in (web, api) for r in (a, b)),
            AddDest(dns, a, 1, "nat"),
        ],
    )
    assert not plane.rewrite and plane.transactions == 1
    whole = plane.read().services
    assert set(whole) == {web, api, dns}
    assert plane.read_services([web, api, dns]) == whole

    # Drain b from web (its modulus goes 2 -> 1, so it moves to another picker): web reads back
    # drained, the others as they were, and new connections reach a only.
    part = plane.read_services([web])
    plane.apply(KernelState(part, frozenset()), [SetDest(web, b, 0, "nat")])
    after = plane.read().services
    assert after[web].dests[b].weight == 0 and after[web].dests[a].weight == 1
    assert {k: v for k, v in after.items() if k != web} == {
        k: v for k, v in whole.items() if k != web
    }
    assert plane.read_services([web]) == {web: after[web]}
    answers = connect_many(topology["client"], VIP, 80, 6)
    assert set(answers) == {"l7a"}, answers

    # Weights within one picker: a slot changes hands, nothing else moves.
    part = plane.read_services([api])
    plane.apply(KernelState(part, frozenset()), [SetDest(api, a, 3, "nat")])
    assert plane.read_services([api])[api].dests[a].weight == 3

    # Removing a service removes its elements, in one transaction.
    part = plane.read_services([dns])
    plane.apply(KernelState(part, frozenset()), [DelDest(dns, a), DelService(dns)])
    assert set(plane.read().services) == {web, api}
    assert plane.read_services([dns]) == {}
    assert plane.transactions == 4

    # Somebody deletes our hook chain: the full read notices, and the next apply rewrites the
    # whole table, from a whole read even when it was planned from part of the table.
    sh("nft", "delete", "chain", "ip", "ingress_l4", "prerouting", ns=ns)
    plane.read()
    assert plane.rewrite
    part = plane.read_services([web])
    plane.apply(KernelState(part, frozenset()), [SetDest(web, b, 1, "nat")])
    repaired = plane.read()
    assert not plane.rewrite and set(repaired.services) == {web, api}
    assert repaired.services[web].dests[b].weight == 1
    assert set(connect_many(topology["client"], VIP, 80, 12)) == {"l7a", "l7b"}


_reals = st.builds(
    Real, st.sampled_from(["10.0.1.1", "10.0.1.2", "10.0.1.3", "10.0.1.4"]), st.just(TARGET)
)
_services = st.dictionaries(
    st.builds(
        VsKey,
        st.sampled_from(["198.51.100.1", "198.51.100.2", "198.51.100.3"]),
        st.sampled_from(["TCP", "UDP"]),
        st.sampled_from([80, 443]),
    ),
    st.builds(
        CurrentVs,
        st.sampled_from(["numgen", "jhash"]),
        st.dictionaries(_reals, st.builds(CurrentDest, st.integers(0, 3), st.just("nat"))),
    ),
    max_size=6,
)


def test_any_change_applied_to_any_table_reads_back_as_the_new_state() -> None:
    """Whatever the services before and after (pickers appearing and emptying, slots moving,
    services coming and going, drains), one change transaction on the real kernel leaves
    exactly the new state, as the whole listing and as the by-key netlink read see it."""
    with namespaces("l4") as ns:
        plane = NftDataplane("ingress_l4", DummyVips(f"l4pv{suffix()}", ns["l4"]), ns["l4"])

        @settings(max_examples=40, deadline=None)
        @given(before=_services, after=_services)
        def check(before: dict[VsKey, CurrentVs], after: dict[VsKey, CurrentVs]) -> None:
            apply_nft(ns["l4"], render_table("ingress_l4", before))
            assert parse_table(listing(ns["l4"])) == before
            change = render_changes("ingress_l4", before, after)
            if change:
                apply_nft(ns["l4"], change)
            assert parse_table(listing(ns["l4"])) == after
            keys = set(before) | set(after)
            assert plane.read_services(keys) == after
            assert plane.read().services == after and not plane.rewrite

        check()


def apply_nft(ns: str, script: str) -> None:
    subprocess.run(
        ["ip", "netns", "exec", ns, "nft", "-f", "-"], input=script, text=True, check=True
    )


def listing(ns: str) -> dict[str, object]:
    doc: dict[str, object] = json.loads(sh("nft", "-j", "list", "table", "ip", "ingress_l4", ns=ns))
    return doc


def test_bound_vips_are_read_back_by_route_lookup() -> None:
    """``DummyVips.bound`` (what a scoped pass reads after a bind) agrees with the whole list:
    bound on our interface, never bound, unbound again, and local only through another
    device (not ours, settled by the list)."""
    with namespaces("addr") as ns:
        vips = DummyVips(f"l4pv{suffix()}", ns["addr"])
        ours, gone, never, elsewhere = "100.64.9.1", "100.64.9.2", "100.64.9.3", "100.64.9.4"
        vips.add_many([ours, gone])
        vips.delete_many([gone])
        sh("ip", "link", "add", "other0", "type", "bridge", ns=ns["addr"])
        sh("ip", "link", "set", "other0", "up", ns=ns["addr"])
        sh("ip", "addr", "add", f"{elsewhere}/32", "dev", "other0", ns=ns["addr"])
        asked = [ours, gone, never, elsewhere]
        assert vips.bound(asked) == {ours} == vips.list() & set(asked)
        assert vips.bound([ours]) == {ours}
        assert vips.bound([never]) == frozenset()
        # The same address on both devices: the local route names one of them; ours holds it.
        vips.add_many([elsewhere])
        assert vips.bound([elsewhere]) == {elsewhere}
