"""Session state, BFD, graceful restart and IPv6 against real BIRDs (a ToR and L4 nodes, each
in its own network namespace): session.status events and /metrics as the ToR comes and goes."""

from __future__ import annotations

import asyncio
import re
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from birdlab import BirdLab
from helpers import context, peer, pool, programmed, vip, wait_until
from ingress_bgp_speaker.adapters.bird import BirdSocket
from ingress_bgp_speaker.adapters.files import MemorySecrets
from ingress_bgp_speaker.app import BgpSpeakerApp
from ingress_events import catalogue as c
from ingress_events.bus import Bus
from ingress_runtime.admin import AdminServer, Readiness
from ingress_testkit import EventCapture

pytestmark = pytest.mark.integration

PASSWORD = "s3cret-Md5"


@pytest.fixture
def lab_factory(tmp_path: Path) -> Iterator[Callable[..., BirdLab]]:
    labs: list[BirdLab] = []

    def make(
        nodes: list[str], passwords: dict[str, str | None] | None = None, **kw: Any
    ) -> BirdLab:
        lab = BirdLab(tmp_path / f"lab{len(labs)}", nodes, passwords or {}, **kw)
        labs.append(lab)
        return lab.start()

    try:
        yield make
    finally:
        for lab in labs:
            lab.close()


@pytest.fixture
async def apps(bus: Bus) -> AsyncIterator[list[BgpSpeakerApp]]:
    started: list[BgpSpeakerApp] = []
    try:
        yield started
    finally:
        for app in started:
            await app.stop()


async def _start(
    apps: list[BgpSpeakerApp], bus: Bus, lab: BirdLab, index: int, secrets: MemorySecrets, **kw: Any
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


def _status(node: str, peer_name: str, after: int = 0, **fields: object) -> Callable[[Any], bool]:
    """A session.status of this node and peer, newer than generation ``after``."""

    def match(captured: Any) -> bool:
        event = captured.envelope.event
        return (
            isinstance(event, c.SessionStatus)
            and event.node == node
            and event.peer == peer_name
            and event.generation > after
            and all(getattr(event, k) == v for k, v in fields.items())
        )

    return match


async def _scrape(admin: AdminServer) -> str:
    reader, writer = await asyncio.open_connection("127.0.0.1", admin.port)
    writer.write(b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n")
    await writer.drain()
    body = (await reader.read()).decode()
    writer.close()
    return body


def _gauge(text: str, name: str, **labels: str) -> float | None:
    want = ",".join(f'{k}="{v}"' for k, v in labels.items())
    m = re.search(rf"^{name}\{{{re.escape(want)}\}} (\S+)$", text, re.M)
    return float(m.group(1)) if m else None


async def test_session_status_established_tor_down_wrong_md5_and_removed(
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
    for i, password in ((0, PASSWORD), (1, "not-it")):
        await bus.publish(
            peer(
                f"tor-{i}",
                lab.nodes[i].tor_address,
                password=password,
                nodes=[lab.nodes[i].name],
                hold_time_seconds=6,
                keepalive_seconds=2,
            )
        )
    # A long report period: every event below is a change, not the periodic resend.
    a = await _start(apps, bus, lab, 0, secrets, session_report_seconds=600)
    await _start(apps, bus, lab, 1, secrets, session_report_seconds=600)
    admin = await AdminServer(Readiness()).start()  # /metrics: the process's registry
    try:
        # Established -> session.status, with BIRD's time of the change.
        [up] = await event_capture.wait_for(
            _status("node-a", "tor-0", established=True, state="Established"), timeout=20
        )
        assert up.envelope.event.since is not None  # type: ignore[attr-defined]
        assert "established" in up.envelope.event.message  # type: ignore[attr-defined]

        # Wrong MD5 on node-b: never established; the status says why it may be.
        [md5] = await event_capture.wait_for(_status("node-b", "tor-1"), timeout=20)
        md5_event = md5.envelope.event
        assert isinstance(md5_event, c.SessionStatus)
        assert not md5_event.established and md5_event.state != "Established"
        assert "not established" in md5_event.message and "MD5" in md5_event.message
        await asyncio.sleep(3)  # several connect attempts (the ToR retries every second)
        assert not any(
            _status("node-b", "tor-1", established=True)(e) for e in event_capture.events
        )

        metrics = await _scrape(admin)
        assert _gauge(metrics, "bgp_speaker_session_established", peer="tor-0") == 1.0
        assert _gauge(metrics, "bgp_speaker_session_established", peer="tor-1") == 0.0
        assert (
            _gauge(metrics, "bgp_speaker_session_state", peer="tor-0", state="Established") == 1.0
        )

        # The ToR goes down: a status with the state BIRD now shows and its last error.
        lab.stop_tor()
        [down] = await event_capture.wait_for(
            _status("node-a", "tor-0", up.envelope.event.generation, established=False),
            timeout=15,
        )
        down_event = down.envelope.event
        assert isinstance(down_event, c.SessionStatus)
        assert down_event.state not in ("Established", "Unknown", "Absent")
        assert "not established" in down_event.message
        metrics = await _scrape(admin)
        assert _gauge(metrics, "bgp_speaker_session_established", peer="tor-0") == 0.0
        assert (
            _gauge(metrics, "bgp_speaker_session_state", peer="tor-0", state="Established") == 0.0
        )
        assert (
            _gauge(metrics, "bgp_speaker_session_state", peer="tor-0", state=down_event.state)
            == 1.0
        )

        # Back up: Established again.
        lab.start_tor()
        await event_capture.wait_for(
            _status("node-a", "tor-0", down_event.generation, established=True), timeout=20
        )

        # The peer is deleted: a last status says the session is gone.
        await bus.publish(c.PeerDeleted(generation=10**15, peer="tor-0"))
        [gone] = await event_capture.wait_for(_status("node-a", "tor-0", state="Removed"))
        assert gone.envelope.event.established is False  # type: ignore[attr-defined]
        await wait_until(lambda: a.session_status("tor-0") is None)
        metrics = await _scrape(admin)
        assert _gauge(metrics, "bgp_speaker_session_established", peer="tor-0") is None
        # node-b never reported an established session at any point.
        assert not any(
            _status("node-b", "tor-1", established=True)(e) for e in event_capture.events
        )
    finally:
        await admin.stop()


async def test_session_status_is_resent_periodically(
    bus: Bus,
    event_capture: EventCapture,
    apps: list[BgpSpeakerApp],
    lab_factory: Callable[..., BirdLab],
) -> None:
    lab = lab_factory(["node-a"])
    await bus.publish(peer("tor-0", lab.nodes[0].tor_address, hold_time_seconds=6))
    await _start(apps, bus, lab, 0, MemorySecrets(), session_report_seconds=1.0)
    first = await event_capture.wait_for(
        _status("node-a", "tor-0", established=True), count=3, timeout=20
    )
    generations = [e.envelope.event.generation for e in first]
    assert generations == sorted(generations) and len(set(generations)) == 3


async def _bfd(socket: str) -> dict[str, str]:
    return await BirdSocket(socket).bfd_sessions()


async def test_bfd_up_on_both_sides_and_a_silent_failure_is_seen_within_a_second(
    bus: Bus,
    event_capture: EventCapture,
    apps: list[BgpSpeakerApp],
    lab_factory: Callable[..., BirdLab],
) -> None:
    lab = lab_factory(["node-a"], tor_bfd="on")
    node = lab.nodes[0]
    await bus.publish(pool())
    await bus.publish(
        peer("tor-0", node.tor_address, hold_time_seconds=6, keepalive_seconds=2, bfd=True)
    )
    app = await _start(apps, bus, lab, 0, MemorySecrets())
    await wait_until(lambda: (s := app.session_status("tor-0")) is not None and s.established, 20)
    status = app.session_status("tor-0")
    assert status is not None and status.bfd == "Up"
    [up] = await event_capture.wait_for(_status("node-a", "tor-0", established=True))
    up_generation = up.envelope.event.generation
    assert (await _bfd(node.socket)) == {node.tor_address: "Up"}
    assert (await _bfd(lab.tor_socket)) == {node.address: "Up"}

    await bus.publish(vip("shop.example.com", "10.100.0.10"))
    await bus.publish(programmed("node-a", "10.100.0.10"))
    await wait_until(lambda: lab.tor_kernel_route("10.100.0.10/32") == [node.address])

    # The node goes silent (no link event): BFD (100 ms x 5) ends the session long before the
    # 6 s hold time would, and the ToR withdraws the route.
    loop = asyncio.get_running_loop()
    started = loop.time()
    lab.drop_from_node(0)
    await wait_until(lambda: lab.tor_kernel_route("10.100.0.10/32") == [], timeout=6)
    detected = loop.time() - started
    print(f"silent node withdrawn at the ToR after {detected:.3f} s (hold time 6 s)")
    assert detected < 2.0, f"withdrawn after {detected:.2f} s"
    out = lab.birdc(lab.tor_socket, "show", "protocols", "node_a")
    assert "BFD session down" in out
    [down] = await event_capture.wait_for(
        _status("node-a", "tor-0", up_generation, established=False), timeout=10
    )
    assert "BFD" in down.envelope.event.message  # type: ignore[attr-defined]


async def _announce_through_gr_peer(
    bus: Bus, lab: BirdLab, apps: list[BgpSpeakerApp], **peer_kw: Any
) -> BgpSpeakerApp:
    node = lab.nodes[0]
    await bus.publish(pool())
    await bus.publish(
        peer("tor-0", node.tor_address, hold_time_seconds=6, keepalive_seconds=2, **peer_kw)
    )
    app = await _start(apps, bus, lab, 0, MemorySecrets(), on_shutdown="keep")
    await bus.publish(vip("shop.example.com", "10.100.0.10"))
    await bus.publish(programmed("node-a", "10.100.0.10"))
    await wait_until(lambda: lab.tor_kernel_route("10.100.0.10/32") == [node.address], 20)
    return app


@pytest.mark.parametrize(
    ("tor_bfd", "how"),
    [("off", "birdc"), ("graceful", "birdc"), ("off", "kill")],
    ids=["birdc-graceful-restart", "bfd-graceful-at-the-tor", "bird-killed"],
)
async def test_graceful_restart_tor_keeps_the_route_while_our_bird_restarts(
    tor_bfd: str,
    how: str,
    bus: Bus,
    event_capture: EventCapture,
    apps: list[BgpSpeakerApp],
    lab_factory: Callable[..., BirdLab],
) -> None:
    lab = lab_factory(["node-a"], tor_bfd=tor_bfd)
    node = lab.nodes[0]
    app = await _announce_through_gr_peer(
        bus, lab, apps, graceful_restart=True, bfd=tor_bfd != "off"
    )

    if how == "kill":
        assert node.process is not None
        node.process.kill()  # a crash: no Cease, the kernel closes the TCP session
        node.process.wait()
    else:
        lab.node_graceful_restart(0)
    # Our BIRD is gone: the app reports the session as unreadable...
    await event_capture.wait_for(_status("node-a", "tor-0", state="Unknown"), timeout=10)
    # ...and the ToR, a graceful-restart helper, keeps the route (stale) in its kernel table.
    for _ in range(10):
        assert lab.tor_kernel_route("10.100.0.10/32") == [node.address]
        await asyncio.sleep(0.2)
    tor = lab.birdc(lab.tor_socket, "show", "protocols", "all", "node_a")
    assert "Neighbor graceful restart active" in tor

    lab.start_node(0)
    await wait_until(lambda: (s := app.session_status("tor-0")) is not None and s.established, 20)
    await wait_until(
        lambda: (
            "graceful restart active"
            not in lab.birdc(lab.tor_socket, "show", "protocols", "all", "node_a")
        )
    )
    assert lab.tor_kernel_route("10.100.0.10/32") == [node.address]


@pytest.mark.parametrize(
    ("tor_bfd", "peer_kw"),
    [("off", {"graceful_restart": False}), ("on", {"graceful_restart": True, "bfd": True})],
    ids=["gr-off", "gr-on-but-bfd-on-at-the-tor"],
)
async def test_without_graceful_restart_the_tor_drops_the_route(
    tor_bfd: str,
    peer_kw: dict[str, Any],
    bus: Bus,
    apps: list[BgpSpeakerApp],
    lab_factory: Callable[..., BirdLab],
) -> None:
    """The control for the test above: the same restart without GR, and with GR but plain
    ``bfd on`` at the ToR (BIRD's BFD ends with BIRD, the ToR sees a forwarding failure)."""
    lab = lab_factory(["node-a"], tor_bfd=tor_bfd)
    await _announce_through_gr_peer(bus, lab, apps, **peer_kw)
    lab.node_graceful_restart(0)
    await wait_until(lambda: lab.tor_kernel_route("10.100.0.10/32") == [], timeout=10)


async def test_ipv6_vip_over_an_ipv6_session_reaches_the_tor_kernel(
    bus: Bus,
    event_capture: EventCapture,
    apps: list[BgpSpeakerApp],
    lab_factory: Callable[..., BirdLab],
) -> None:
    lab = lab_factory(["node-a", "node-b"], ipv6=True)
    await bus.publish(pool(cidrs=("10.100.0.0/24", "fd00:100::/64")))
    for i, node in enumerate(lab.nodes):
        await bus.publish(
            peer(
                f"tor6-{i}",
                node.tor_address6,
                nodes=[node.name],
                hold_time_seconds=6,
                keepalive_seconds=2,
            )
        )
    a = await _start(apps, bus, lab, 0, MemorySecrets())
    b = await _start(apps, bus, lab, 1, MemorySecrets())
    await wait_until(lambda: (s := a.session_status("tor6-0")) is not None and s.established, 20)
    await wait_until(lambda: (s := b.session_status("tor6-1")) is not None and s.established, 20)

    address = "fd00:100::10"
    await bus.publish(vip("shop.example.com", address))
    await bus.publish(programmed("node-a", address))
    await bus.publish(programmed("node-b", address))
    both = sorted(n.address6 for n in lab.nodes)
    await wait_until(lambda: lab.tor_kernel_route(f"{address}/128") == both, timeout=15)
    announced = await event_capture.wait_for(
        lambda e: isinstance(e.envelope.event, c.RouteAnnounced) and bool(e.envelope.event.peers),
        count=2,
    )
    assert {
        (e.envelope.event.node, e.envelope.event.prefix, tuple(e.envelope.event.peers))  # type: ignore[attr-defined]
        for e in announced
    } == {("node-a", f"{address}/128", ("tor6-0",)), ("node-b", f"{address}/128", ("tor6-1",))}

    await bus.publish(
        c.VipReleased(
            generation=10**15,
            owner=c.VipOwner(kind="domain", host="shop.example.com"),
            addresses=[address],
        )
    )
    await wait_until(lambda: lab.tor_kernel_route(f"{address}/128") == [], timeout=10)
