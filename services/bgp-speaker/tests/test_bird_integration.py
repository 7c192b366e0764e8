"""bgp-speaker against real BIRDs: a ToR and L4 nodes, each in its own network namespace."""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path

import pytest
from birdlab import NODE_ASN, TOR_ROUTE, BirdLab
from helpers import context, not_ready, peer, pool, programmed, vip, wait_until
from ingress_bgp_speaker.adapters.applier import Applier
from ingress_bgp_speaker.adapters.bird import BirdError, BirdSocket
from ingress_bgp_speaker.adapters.files import ConfigFile, MemorySecrets
from ingress_bgp_speaker.app import BgpSpeakerApp
from ingress_bgp_speaker.domain.model import BirdDesired, PeerConfig, PoolConfig
from ingress_bgp_speaker.domain.plan import BirdTarget
from ingress_bgp_speaker.domain.render import host_prefix, peer_protocol_name, render
from ingress_events import catalogue as c
from ingress_events.bus import Bus
from ingress_testkit import EventCapture

pytestmark = pytest.mark.integration

PASSWORD = "s3cret-Md5"


@pytest.fixture
def lab_factory(tmp_path: Path) -> Iterator[Callable[..., BirdLab]]:
    labs: list[BirdLab] = []

    def make(nodes: list[str], passwords: dict[str, str | None] | None = None) -> BirdLab:
        lab = BirdLab(tmp_path / f"lab{len(labs)}", nodes, passwords or {})
        labs.append(lab)
        return lab.start()

    try:
        yield make
    finally:
        for lab in labs:
            lab.close()


def _peer_config(lab: BirdLab, index: int, password: str | None = PASSWORD) -> PeerConfig:
    node = lab.nodes[index]
    return PeerConfig(
        name="tor",
        address=node.tor_address,
        peer_asn=64500,
        local_asn=NODE_ASN,
        password=password,
        hold_time_seconds=6,
        keepalive_seconds=2,
        graceful_restart=True,
        bfd=False,
        max_prefixes=100,
        generation=1,
    )


def _target(lab: BirdLab, routes: set[str], peers: list[PeerConfig]) -> BirdTarget:
    import ipaddress

    pools = (
        PoolConfig("public", (ipaddress.ip_network("10.100.0.0/24"),), communities=((65000, 7),)),
    )
    desired = BirdDesired(
        node=lab.nodes[0].name,
        router_id=lab.nodes[0].address,
        peers=tuple(peers),
        pools=pools,
        routes=frozenset(routes),
    )
    return BirdTarget(
        render(desired),
        frozenset(host_prefix(r) for r in routes),
        frozenset(peer_protocol_name(p.name) for p in peers),
    )


async def test_applier_announces_converges_refuses_and_rejects_imports(
    lab_factory: Callable[..., BirdLab],
) -> None:
    lab = lab_factory(["node-a"], {"node-a": PASSWORD})
    node = lab.nodes[0]
    bird = BirdSocket(node.socket)
    applier = Applier(bird, ConfigFile(node.config), confirm_timeout_seconds=30)
    peers = [_peer_config(lab, 0)]

    # 10.200.0.9 lies outside the pool: in BIRD's table but the export filter keeps it in.
    first = await applier.apply(_target(lab, {"10.100.0.5", "10.200.0.9"}, peers))
    assert first.outcome == "applied", first.message
    await wait_until(lambda: lab.tor_kernel_route("10.100.0.5/32") == [node.address])
    assert "10.200.0.9/32" not in lab.tor_kernel_routes()
    assert os.stat(node.config).st_mode & 0o777 == 0o600

    # Converged: nothing written, BIRD not reconfigured.
    mtime = os.stat(node.config).st_mtime_ns
    again = await applier.apply(_target(lab, {"10.100.0.5", "10.200.0.9"}, peers))
    assert again.outcome == "unchanged"
    assert os.stat(node.config).st_mtime_ns == mtime

    # The route the ToR sends is received and dropped by "import none".
    with pytest.raises(BirdError, match="Network not found"):
        await bird.command(f"show route {TOR_ROUTE}")
    stats = await bird.command(f"show protocols all {peer_protocol_name('tor')}")
    import_line = next(t for _, t in stats if "Import updates:" in t)
    received, rejected, filtered = (int(x) for x in import_line.split()[2:5])
    assert received >= 1 and filtered == received and rejected == 0

    # A config BIRD refuses: reported, and the previous one keeps running and announcing.
    bad = _target(lab, {"10.100.0.6"}, peers)
    bad = BirdTarget(
        bad.config_text + "protocol bgp broken {\n", bad.static_routes, bad.bgp_protocols
    )
    refused = await applier.apply(bad)
    assert refused.outcome == "refused" and "syntax error" in refused.message
    assert os.stat(node.config).st_mtime_ns == mtime
    assert await bird.static_routes() == {"10.100.0.5/32", "10.200.0.9/32"}
    assert lab.tor_kernel_route("10.100.0.5/32") == [node.address]

    # The short read-back's questions, answered by the real BIRD (IPv6 too: vips6 is empty).
    assert await bird.static_route_count() == 2
    held = await bird.static_routes_among(["10.100.0.5/32", "10.100.0.6/32", "fd00::5/128"])
    assert held == {"10.100.0.5/32"}

    # A change read back the short way (one route more): BIRD runs it, the ToR learns it.
    more = await applier.apply(_target(lab, {"10.100.0.5", "10.100.0.7", "10.200.0.9"}, peers))
    assert more.outcome == "applied", more.message
    assert await bird.static_routes() == {"10.100.0.5/32", "10.100.0.7/32", "10.200.0.9/32"}
    await wait_until(lambda: lab.tor_kernel_route("10.100.0.7/32") == [node.address])

    # Withdrawal reaches the ToR.
    gone = await applier.apply(_target(lab, set(), peers))
    assert gone.outcome == "applied"
    await wait_until(lambda: lab.tor_kernel_route("10.100.0.5/32") == [])


@pytest.fixture
async def apps(bus: Bus) -> AsyncIterator[list[BgpSpeakerApp]]:
    started: list[BgpSpeakerApp] = []
    try:
        yield started
    finally:
        for app in started:
            await app.stop()


async def _start(
    apps: list[BgpSpeakerApp],
    bus: Bus,
    lab: BirdLab,
    index: int,
    secrets: MemorySecrets,
    **kw: object,
) -> BgpSpeakerApp:
    node = lab.nodes[index]
    app = BgpSpeakerApp(
        context(
            bus,
            node=node.name,
            bird_socket=node.socket,
            bird_config=node.config,
            router_id=node.address,
            **kw,
        ),
        secrets=secrets,
    )
    await app.start()
    apps.append(app)
    return app


async def test_two_nodes_ecmp_withdraw_and_hold_down(
    bus: Bus,
    event_capture: EventCapture,
    apps: list[BgpSpeakerApp],
    lab_factory: Callable[..., BirdLab],
) -> None:
    lab = lab_factory(["node-a", "node-b"], {"node-a": PASSWORD, "node-b": PASSWORD})
    secrets = MemorySecrets()
    for i in range(2):
        secrets.values[("net", f"tor-{i}-md5", "password")] = PASSWORD
    await bus.publish(pool())
    for i, node in enumerate(lab.nodes):
        await bus.publish(
            peer(
                f"tor-{i}",
                node.tor_address,
                password=PASSWORD,
                nodes=[node.name],
                hold_time_seconds=6,
                keepalive_seconds=2,
            )
        )
    a = await _start(apps, bus, lab, 0, secrets, hold_down_seconds=1.5)
    b = await _start(apps, bus, lab, 1, secrets, hold_down_seconds=1.5)
    await wait_until(lambda: (s := a.session_status("tor-0")) is not None and s.established, 15)
    await wait_until(lambda: (s := b.session_status("tor-1")) is not None and s.established, 15)

    vip_address = "10.100.0.10"
    await bus.publish(vip("shop.example.com", vip_address))
    await bus.publish(programmed("node-a", vip_address))
    await bus.publish(programmed("node-b", vip_address))
    both = sorted(n.address for n in lab.nodes)
    await wait_until(lambda: lab.tor_kernel_route(f"{vip_address}/32") == both)
    announced = await event_capture.wait_for(
        lambda e: isinstance(e.envelope.event, c.RouteAnnounced) and bool(e.envelope.event.peers),
        count=2,
    )
    assert {(e.envelope.event.node, tuple(e.envelope.event.peers)) for e in announced} == {  # type: ignore[attr-defined]
        ("node-a", ("tor-0",)),
        ("node-b", ("tor-1",)),
    }

    # node-b loses its backends: withdrawn there at once, the ToR keeps only node-a.
    await bus.publish(not_ready("node-b", vip_address))
    await wait_until(lambda: lab.tor_kernel_route(f"{vip_address}/32") == [lab.nodes[0].address])
    [withdrawn] = await event_capture.wait_for(
        lambda e: isinstance(e.envelope.event, c.RouteWithdrawn)
    )
    assert withdrawn.envelope.event.node == "node-b"  # type: ignore[attr-defined]
    assert withdrawn.envelope.event.reason == "L4NotReady"  # type: ignore[attr-defined]

    # Ready again at once: the hold-down keeps the route out for 1.5 s, then it returns.
    loop = asyncio.get_running_loop()
    ready_at = loop.time()
    await bus.publish(programmed("node-b", vip_address))
    await asyncio.sleep(0.8)
    assert lab.tor_kernel_route(f"{vip_address}/32") == [lab.nodes[0].address]
    await wait_until(lambda: lab.tor_kernel_route(f"{vip_address}/32") == both)
    assert loop.time() - ready_at >= 1.2


async def test_wrong_md5_bad_peer_and_foreign_vip_leave_sessions_alone(
    bus: Bus,
    event_capture: EventCapture,
    apps: list[BgpSpeakerApp],
    lab_factory: Callable[..., BirdLab],
) -> None:
    lab = lab_factory(["node-a", "node-b"], {"node-a": PASSWORD, "node-b": PASSWORD})
    secrets = MemorySecrets(
        {("net", "tor-0-md5", "password"): PASSWORD, ("net", "tor-1-md5", "password"): "not-it"}
    )
    await bus.publish(pool())
    await bus.publish(
        peer(
            "tor-0",
            lab.nodes[0].tor_address,
            password=PASSWORD,
            nodes=["node-a"],
            hold_time_seconds=6,
            keepalive_seconds=2,
        )
    )
    await bus.publish(
        peer(
            "tor-1",
            lab.nodes[1].tor_address,
            password="not-it",
            nodes=["node-b"],
            hold_time_seconds=6,
            keepalive_seconds=2,
        )
    )
    a = await _start(apps, bus, lab, 0, secrets)
    b = await _start(apps, bus, lab, 1, secrets)
    await wait_until(lambda: (s := a.session_status("tor-0")) is not None and s.established, 15)
    await bus.publish(vip("shop.example.com", "10.100.0.10"))
    await bus.publish(programmed("node-a", "10.100.0.10"))
    await bus.publish(programmed("node-b", "10.100.0.10"))
    await wait_until(lambda: lab.tor_kernel_route("10.100.0.10/32") == [lab.nodes[0].address])

    # Wrong MD5 on node-b: no session after several connect attempts, a status that says so,
    # and nothing from node-b at the ToR.
    await asyncio.sleep(4)
    status = b.session_status("tor-1")
    assert status is not None and not status.established
    assert "not established" in status.message and "MD5" in status.message
    assert lab.tor_kernel_route("10.100.0.10/32") == [lab.nodes[0].address]

    since = await _since(lab.nodes[0].socket, "tor-0")
    # A bad peer (reserved ASN), a peer whose Secret is missing, and a VIP outside every pool.
    await bus.publish(peer("bad-asn", "10.255.1.9", nodes=["node-a"], peer_asn=23456))
    await bus.publish(
        c.PeerDesired(
            generation=10**6,
            peer="no-secret",
            address="10.255.1.8",
            peer_asn=64500,
            local_asn=64512,
            nodes=["node-a"],
            password=c.SecretKeyRef(namespace="net", name="absent", key="password"),
        )
    )
    await bus.publish(vip("rogue.example.com", "192.0.2.77"))
    await bus.publish(programmed("node-a", "192.0.2.77"))
    rejected = await event_capture.wait_for(
        lambda e: isinstance(e.envelope.event, c.AdmissionRejected), count=2
    )
    reasons = {
        e.envelope.event.object.name: e.envelope.event.problems[0].reason  # type: ignore[attr-defined]
        for e in rejected
    }
    assert reasons == {"bad-asn": "AsnOutOfRange", "no-secret": "PasswordSecretMissing"}
    [outside] = await event_capture.wait_for(
        lambda e: (
            isinstance(e.envelope.event, c.RouteWithdrawn)
            and e.envelope.event.vip == "192.0.2.77"  # type: ignore[attr-defined]
            and e.envelope.event.node == "node-a"
        )  # type: ignore[attr-defined]
    )
    assert outside.envelope.event.reason == "VipOutsidePools"  # type: ignore[attr-defined]
    assert "192.0.2.77/32" not in lab.tor_kernel_routes()
    # The good session was never restarted and still carries the VIP.
    assert await _since(lab.nodes[0].socket, "tor-0") == since
    assert lab.tor_kernel_route("10.100.0.10/32") == [lab.nodes[0].address]


async def _since(socket: str, peer_name: str) -> str:
    [proto] = [
        p for p in await BirdSocket(socket).protocols() if p.name == peer_protocol_name(peer_name)
    ]
    assert proto.established
    return proto.since
