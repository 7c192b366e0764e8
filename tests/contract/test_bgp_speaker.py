"""bgp-speaker in-process against a real nats-server (BIRD replaced by its in-memory fake):
events in, route and admission events out, every one checked against the committed schemas."""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path

import pytest
from ingress_bgp_speaker.adapters.bird import FakeBird
from ingress_bgp_speaker.adapters.files import MemoryConfigStore, MemorySecrets
from ingress_bgp_speaker.app import BgpSpeakerApp
from ingress_bgp_speaker.domain.render import peer_protocol_name
from ingress_events import catalogue as c
from ingress_events.bus import Bus
from ingress_testkit import EventCapture

sys.path.insert(0, str(Path(__file__).parents[2] / "services" / "bgp-speaker" / "tests"))
from helpers import context, peer, pool, programmed, vip, wait_until

pytestmark = pytest.mark.contract


def _is(cls: type[c.Event], **fields: object):  # type: ignore[no-untyped-def]
    def match(captured) -> bool:  # type: ignore[no-untyped-def]
        event = captured.envelope.event
        return isinstance(event, cls) and all(getattr(event, k) == v for k, v in fields.items())

    return match


async def test_ready_vip_is_announced_bad_input_rejected_release_withdraws(
    bus: Bus, event_capture: EventCapture
) -> None:
    files: dict[str, str] = {}
    bird = FakeBird(files)
    bird.established.add(peer_protocol_name("tor-1"))
    app = BgpSpeakerApp(
        context(bus, node="l4-a"),
        bird=bird,
        store=MemoryConfigStore("/run/bird/bird.conf", files),
        secrets=MemorySecrets({("net", "tor-1-md5", "password"): "pw-1"}),
    )
    await bus.publish(pool(announce=c.PoolAnnouncement(communities=["65000:1"])))
    await bus.publish(peer("tor-1", "10.0.0.1", password="pw-1"))
    await app.start()
    try:
        [accepted] = await event_capture.wait_for(
            _is(
                c.AdmissionAccepted,
                component="bgp-speaker",
                object=c.ObjectRef(kind="BgpPeer", namespace="-", name="tor-1"),
            )
        )
        await bus.publish(vip("shop.example.com", "10.100.0.10"))
        # Assigned but not programmed on this node: nothing announced yet.
        await bus.publish(programmed("l4-b", "10.100.0.10"))
        await bus.publish(programmed("l4-a", "10.100.0.10"))
        [announced] = await event_capture.wait_for(_is(c.RouteAnnounced, vip="10.100.0.10"))
        assert announced.envelope.event == c.RouteAnnounced(
            generation=announced.envelope.event.generation,
            node="l4-a",
            vip="10.100.0.10",
            prefix="10.100.0.10/32",
            peers=["tor-1"],
        )
        assert "route 10.100.0.10/32 blackhole;" in bird.running
        assert "bgp_community.add((65000,1));" in bird.running

        # Bad input: a peer with a reserved ASN and a VIP outside every pool.
        await bus.publish(peer("bad", "10.0.0.2", local_asn=65535))
        await bus.publish(vip("rogue.example.com", "192.0.2.7"))
        await bus.publish(programmed("l4-a", "192.0.2.7"))
        [rejected] = await event_capture.wait_for(_is(c.AdmissionRejected, component="bgp-speaker"))
        assert rejected.envelope.event.object.name == "bad"  # type: ignore[attr-defined]
        assert rejected.envelope.event.problems[0].reason == "AsnOutOfRange"  # type: ignore[attr-defined]
        await event_capture.wait_for(
            _is(c.RouteWithdrawn, vip="192.0.2.7", reason="VipOutsidePools")
        )
        assert "192.0.2.7" not in bird.running and "BgpPeer bad" not in bird.running

        # The owner lets the VIP go: withdrawn with the reason.
        await bus.publish(
            c.VipReleased(
                generation=10**15,
                owner=c.VipOwner(kind="domain", host="shop.example.com"),
                addresses=["10.100.0.10"],
            )
        )
        await event_capture.wait_for(_is(c.RouteWithdrawn, vip="10.100.0.10", reason="VipReleased"))
        assert "10.100.0.10/32" not in bird.running

        # Converged: more reconciles, no reconfiguration, no new events.
        configures, events = bird.configures, len(event_capture.events)
        seen = app.reconciles
        await wait_until(lambda: app.reconciles >= seen + 3)
        assert bird.configures == configures and len(event_capture.events) == events
        assert accepted.envelope.event.observed_generation > 0  # type: ignore[attr-defined]
    finally:
        await app.stop()


async def test_restart_replays_and_reemits_nothing(bus: Bus, event_capture: EventCapture) -> None:
    files: dict[str, str] = {}
    bird = FakeBird(files)
    store = MemoryConfigStore("/run/bird/bird.conf", files)
    await bus.publish(pool())
    await bus.publish(peer("tor-1", "10.0.0.1"))
    await bus.publish(vip("shop.example.com", "10.100.0.10"))
    await bus.publish(programmed("l4-a", "10.100.0.10"))
    first = BgpSpeakerApp(
        context(bus, node="l4-a", on_shutdown="keep"),
        bird=bird,
        store=store,
        secrets=MemorySecrets(),
    )
    await first.start()
    await event_capture.wait_for(_is(c.RouteAnnounced, vip="10.100.0.10"))
    await first.stop()
    configures, events = bird.configures, len(event_capture.events)

    second = BgpSpeakerApp(
        context(bus, node="l4-a"), bird=bird, store=store, secrets=MemorySecrets()
    )
    await second.start()
    try:
        await wait_until(lambda: second.reconciles >= 2)
        assert bird.configures == configures
        assert len(event_capture.events) == events
    finally:
        await second.stop()
    # on_shutdown=withdraw (the default): the route goes before the process does.
    [gone] = await event_capture.wait_for(_is(c.RouteWithdrawn, vip="10.100.0.10"))
    assert gone.envelope.event.reason == "Shutdown"  # type: ignore[attr-defined]
    assert "10.100.0.10/32" not in bird.running


async def test_session_status_on_change_quiet_while_connecting_removed_on_delete(
    bus: Bus, event_capture: EventCapture
) -> None:
    files: dict[str, str] = {}
    bird = FakeBird(files)
    proto = peer_protocol_name("tor-1")
    bird.info[proto] = "Active        Socket: Connection refused"
    app = BgpSpeakerApp(
        context(bus, node="l4-a", session_report_seconds=600),
        bird=bird,
        store=MemoryConfigStore("/run/bird/bird.conf", files),
        secrets=MemorySecrets(),
    )
    await bus.publish(peer("tor-1", "10.0.0.1"))
    await app.start()
    try:
        [first] = await event_capture.wait_for(_is(c.SessionStatus, peer="tor-1"))
        event = first.envelope.event
        assert isinstance(event, c.SessionStatus)
        assert (event.node, event.state, event.established) == ("l4-a", "Active", False)
        assert "Socket: Connection refused" in event.message
        # BIRD's local "since" as RFC 3339 UTC.
        assert event.since is not None and event.since.startswith("20") and event.since[-1] == "Z"

        # Connect <-> Active while the session cannot open: not news (the report carries it).
        bird.info[proto] = "Connect"
        seen = app.reconciles
        await wait_until(lambda: app.reconciles >= seen + 3)
        assert app.session_status("tor-1").state == "Connect"  # type: ignore[union-attr]
        assert len(event_capture.of_type(c.SessionStatus)) == 1

        # Up: at once.
        bird.established.add(proto)
        [up] = await event_capture.wait_for(_is(c.SessionStatus, established=True))
        assert up.envelope.event.state == "Established"  # type: ignore[attr-defined]
        assert up.envelope.event.generation > event.generation

        # The peer goes: a last status says so.
        await bus.publish(c.PeerDeleted(generation=10**15, peer="tor-1"))
        [gone] = await event_capture.wait_for(_is(c.SessionStatus, state="Removed"))
        assert gone.envelope.event.established is False  # type: ignore[attr-defined]
        seen = app.reconciles
        await wait_until(lambda: app.reconciles >= seen + 3)
        assert len(event_capture.of_type(c.SessionStatus)) == 3
    finally:
        await app.stop()


async def test_session_unknown_while_bird_is_down_and_no_removed_after_a_restart(
    bus: Bus, event_capture: EventCapture
) -> None:
    files: dict[str, str] = {}
    bird = FakeBird(files)
    bird.established.add(peer_protocol_name("tor-1"))
    store = MemoryConfigStore("/run/bird/bird.conf", files)
    await bus.publish(peer("tor-1", "10.0.0.1"))

    def app() -> BgpSpeakerApp:
        settings = context(bus, node="l4-a", session_report_seconds=600, on_shutdown="keep")
        return BgpSpeakerApp(settings, bird=bird, store=store, secrets=MemorySecrets())

    first = app()
    await first.start()
    await event_capture.wait_for(_is(c.SessionStatus, state="Established"))
    bird.unavailable = True
    [unknown] = await event_capture.wait_for(_is(c.SessionStatus, state="Unknown"))
    assert "does not answer" in unknown.envelope.event.message  # type: ignore[attr-defined]
    await first.stop()

    # Restarted while BIRD is still down: the peer is wanted, so it is not "Removed"; and once
    # BIRD answers, the session is reported again.
    second = app()
    await second.start()
    try:
        seen = second.reconciles
        await wait_until(lambda: second.reconciles >= seen + 3)
        assert len(event_capture.of_type(c.SessionStatus)) == 2
        bird.unavailable = False
        await event_capture.wait_for(_is(c.SessionStatus, state="Established"), count=2)
        states = [e.state for e in event_capture.of_type(c.SessionStatus)]  # type: ignore[attr-defined]
        assert states == ["Established", "Unknown", "Established"]
    finally:
        await second.stop()


async def test_a_route_event_the_bus_refused_goes_out_once_it_is_back(bus: Bus) -> None:
    """BIRD announces the VIP but route.announced is refused (its stream is gone, as while
    nats-server restarts). The next pass finds BIRD already running the plan; it must still
    send the event, or the VIP's route stage never shows (and dns-writer never publishes)."""
    files: dict[str, str] = {}
    bird = FakeBird(files)
    app = BgpSpeakerApp(
        context(bus, node="l4-a", session_poll_seconds=0.1),
        bird=bird,
        store=MemoryConfigStore("/run/bird/bird.conf", files),
        secrets=MemorySecrets(),
    )
    await bus.publish(pool())
    await bus.publish(peer("tor-1", "10.0.0.1"))
    await app.start()
    stream = bus.subjects.stream(c.Family.ROUTE)
    try:
        await bus.nats.jetstream().delete_stream(stream)
        await bus.publish(vip("shop.example.com", "10.100.0.10"))
        await bus.publish(programmed("l4-a", "10.100.0.10"))
        await wait_until(lambda: "route 10.100.0.10/32 blackhole;" in bird.running)
        await asyncio.sleep(0.5)  # a few passes (every 0.1 s) with BIRD already as planned
        await bus.ensure_streams([c.Family.ROUTE])

        announced = c.RouteAnnounced(
            generation=1, node="l4-a", vip="10.100.0.10", prefix="10.100.0.10/32", peers=[]
        )
        for _ in range(200):
            envelope = await bus.latest(c.Family.ROUTE, announced.key())
            if envelope is not None:
                break
            await asyncio.sleep(0.05)
        assert envelope is not None and isinstance(envelope.event, c.RouteAnnounced)
    finally:
        await app.stop()


async def test_shared_moved_and_repooled_vips_are_planned_from_what_changed(
    bus: Bus, event_capture: EventCapture
) -> None:
    """Each pass plans only the VIPs an event touched: a VIP two owners share stays out while
    either holds it, an owner moving to another address leaves the old one to the other owner,
    and a change of pools looks at every VIP again."""
    files: dict[str, str] = {}
    bird = FakeBird(files)
    bird.established.add(peer_protocol_name("tor-1"))
    app = BgpSpeakerApp(
        context(bus, node="l4-a"),
        bird=bird,
        store=MemoryConfigStore("/run/bird/bird.conf", files),
        secrets=MemorySecrets(),
    )
    await bus.publish(pool())
    await bus.publish(peer("tor-1", "10.0.0.1"))
    await app.start()
    try:
        await bus.publish(vip("a.example.com", "10.100.0.20"))
        await bus.publish(vip("b.example.com", "10.100.0.20"))
        await bus.publish(programmed("l4-a", "10.100.0.20"))
        await bus.publish(programmed("l4-a", "10.100.0.21"))
        await event_capture.wait_for(_is(c.RouteAnnounced, vip="10.100.0.20"))

        # a.example.com moves to .21: .20 is still b's, .21 is now assigned and programmed.
        await bus.publish(vip("a.example.com", "10.100.0.21"))
        await event_capture.wait_for(_is(c.RouteAnnounced, vip="10.100.0.21"))
        assert "route 10.100.0.20/32 blackhole;" in bird.running

        await bus.publish(
            c.VipReleased(
                generation=10**15,
                owner=c.VipOwner(kind="domain", host="b.example.com"),
                addresses=["10.100.0.20"],
            )
        )
        await event_capture.wait_for(_is(c.RouteWithdrawn, vip="10.100.0.20", reason="VipReleased"))
        assert "10.100.0.20/32" not in bird.running
        assert "route 10.100.0.21/32 blackhole;" in bird.running

        # The pool shrinks past .21 (no event names the VIP), then grows back.
        await bus.publish(pool(cidrs=("10.100.0.0/28",)))
        await event_capture.wait_for(
            _is(c.RouteWithdrawn, vip="10.100.0.21", reason="VipOutsidePools")
        )
        assert "10.100.0.21/32" not in bird.running
        is_announced = _is(c.RouteAnnounced, vip="10.100.0.21")

        def announcements() -> int:
            return sum(1 for captured in event_capture.events if is_announced(captured))

        before = announcements()
        await bus.publish(pool())
        await wait_until(lambda: announcements() > before)
        assert "route 10.100.0.21/32 blackhole;" in bird.running
    finally:
        await app.stop()
