"""dns-writer in-process against a real nats-server and a real knotd: events in, DNS written and
resolved through aiodns, schema-checked events out."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path

import pytest
import structlog
from ingress_dns_writer.adapters.knot_process import KnotServer, TsigKey
from ingress_dns_writer.adapters.rfc2136 import Rfc2136Provider
from ingress_dns_writer.app import DnsWriterApp
from ingress_dns_writer.domain import Change, NamePlan
from ingress_dns_writer.settings import DnsWriterSettings, ProviderSettings
from ingress_events import catalogue as c
from ingress_events.bus import Bus, BusSettings
from ingress_events.subjects import Subjects
from ingress_runtime import Readiness, ServiceContext
from ingress_testkit.capture import Captured, EventCapture

pytestmark = pytest.mark.contract

ZONE = "example.test"
SRC = [c.ObjectRef(kind="Ingress", namespace="shop", name="web")]


@pytest.fixture
def keys() -> list[TsigKey]:
    return [TsigKey.generate("writer-a."), TsigKey.generate("writer-b.")]


@pytest.fixture
def knot(keys: list[TsigKey]) -> Iterator[KnotServer]:
    server = KnotServer(
        zones=[ZONE],
        keys=keys,
        zone_extra={ZONE: ["legacy IN A 192.0.2.20", "alias IN CNAME elsewhere.example.net."]},
    )
    try:
        yield server.start()
    finally:
        server.cleanup()


def make_settings(
    bus_settings: BusSettings, knot: KnotServer, key: TsigKey, tmp_path: Path, **kw: object
) -> DnsWriterSettings:
    secret = tmp_path / f"{key.name}secret"
    secret.write_text(key.secret + "\n")
    values: dict[str, object] = {
        "nats_url": bus_settings.servers[0],
        "subject_root": bus_settings.subjects.root,
        "server": "127.0.0.1",
        "port": knot.port,
        "zones": ZONE,
        "tsig_key_name": key.name,
        "tsig_secret_file": secret,
        "hold_down_seconds": 0.3,
        # Publish without waiting for a route: these tests are about everything else
        # (test_a_new_vip_enters_dns_once_announced is about the wait).
        "announce_wait_seconds": 0,
        "verify_interval_seconds": 0.5,
        "timeout_seconds": 2.0,
        "max_backoff_seconds": 0.5,
        **kw,
    }
    return DnsWriterSettings(**values)  # type: ignore[arg-type]


def make_app(bus: Bus, settings: DnsWriterSettings) -> DnsWriterApp:
    ctx = ServiceContext(
        name="dns-writer",
        settings=settings,
        bus=bus,
        readiness=Readiness(),
        log=structlog.get_logger("dns-writer-test"),
    )
    return DnsWriterApp(ctx)


def reader(knot: KnotServer, key: TsigKey) -> Rfc2136Provider:
    return Rfc2136Provider(
        server="127.0.0.1",
        port=knot.port,
        key_name=key.name,
        algorithm=key.algorithm,
        secret=key.secret,
        registry_prefix="_ingress-owner",
    )


def assigned(host: str, *addresses: str, generation: int = 10) -> c.VipAssigned:
    return c.VipAssigned(
        generation=generation,
        owner=c.VipOwner(kind="domain", host=host),
        addresses=list(addresses),
        pool="default",
        ports=[c.PortSpec(port=443)],
        observed_generation=1,
    )


def is_(cls: type[c.Event], fqdn: str) -> object:
    def check(cap: Captured) -> bool:
        return isinstance(cap.envelope.event, cls) and cap.envelope.event.fqdn == fqdn

    return check


async def until(predicate: object, timeout: float = 10.0) -> None:
    async with asyncio.timeout(timeout):
        # Polled on purpose: the conditions are DNS answers and counters, not events to await.
        while not await predicate():  # type: ignore[operator]  # noqa: ASYNC110
            await asyncio.sleep(0.05)


async def test_a_whole_zone_pass_plans_only_the_names_that_changed(
    bus: Bus,
    event_capture: EventCapture,
    bus_settings: BusSettings,
    knot: KnotServer,
    keys: list[TsigKey],
    tmp_path: Path,
) -> None:
    """Our own write moves the zone's serial, and the serial check then reads the zone whole.
    That pass plans only the names that differ from the last whole pass and our writes since:
    not every known name, nor what we wrote ourselves; and it still repairs a name changed
    behind our back."""
    app = make_app(bus, make_settings(bus_settings, knot, keys[0], tmp_path))
    hosts = [f"n{i}.example.test" for i in range(30)]
    await app.start()
    dns = reader(knot, keys[1])
    try:
        await bus.publish_many([assigned(h, f"10.0.1.{i + 1}") for i, h in enumerate(hosts)])
        await event_capture.wait_for(
            lambda cap: isinstance(cap.envelope.event, c.DnsPublished), count=30
        )
        # The whole pass after those 30 writes (the one at start saw an empty zone).
        verified = app.verified
        await until(lambda: _true(app.verified > verified))
        verified = app.verified
        await bus.publish(assigned("late.example.test", "10.0.2.1"))
        await event_capture.wait_for(is_(c.DnsPublished, "late.example.test"))
        await until(lambda: _true(app.verified > verified))
        # The pass after our write: our own write is no news to it, and nothing else changed.
        assert app.planned == 0, app.planned
        # Someone removes one of our records: the next whole pass sees that name and repairs it.
        writes = app.writes
        await dns.apply(
            ZONE,
            [
                NamePlan(
                    "n7.example.test",
                    ZONE,
                    "_ingress-owner.n7.example.test",
                    (Change("delete", "A", "10.0.1.8"),),
                )
            ],
        )
        await until(lambda: _eq(dns.resolve("n7.example.test"), {"10.0.1.8"}))
        assert app.writes == writes + 1
    finally:
        await app.stop()
        await dns.close()


async def test_publish_resolve_ttl_remove(
    bus: Bus,
    event_capture: EventCapture,
    bus_settings: BusSettings,
    knot: KnotServer,
    keys: list[TsigKey],
    tmp_path: Path,
) -> None:
    app = make_app(bus, make_settings(bus_settings, knot, keys[0], tmp_path))
    await app.start()
    dns = reader(knot, keys[0])
    try:
        await bus.publish(
            c.DomainDesired(
                generation=5,
                host="app.example.test",
                owner_namespace="shop",
                ingress_class="ingress-domain",
                sources=SRC,
                dns=c.DnsOptions(ttl_seconds=45),
            )
        )
        await bus.publish(assigned("app.example.test", "10.0.0.1", "2001:db8::1"))
        [cap] = await event_capture.wait_for(is_(c.DnsPublished, "app.example.test"))
        out = cap.envelope.event
        assert isinstance(out, c.DnsPublished)
        assert out.zone == ZONE and out.owner_id == "local" and out.observed_generation == 10
        assert {(r.record_type, tuple(r.values), r.ttl_seconds) for r in out.records} == {
            ("A", ("10.0.0.1",), 45),
            ("AAAA", ("2001:db8::1",), 45),
        }
        assert out.providers == [dns.name]
        assert await dns.resolve("app.example.test") == {"10.0.0.1", "2001:db8::1"}
        # Converged: the serial check after our write reads the whole zone and writes nothing.
        writes = app.writes
        await until(lambda: _true(app.verified >= 2))
        assert app.writes == writes
        assert len(event_capture.of_type(c.DnsPublished)) == 1
        # Drift: someone removes our A record by hand; the serial check notices and repairs.
        await dns.apply(
            ZONE,
            [
                NamePlan(
                    "app.example.test",
                    ZONE,
                    "_ingress-owner.app.example.test",
                    (Change("delete", "A", "10.0.0.1"),),
                )
            ],
        )
        assert await dns.resolve("app.example.test") == {"2001:db8::1"}
        await until(lambda: _eq(dns.resolve("app.example.test"), {"10.0.0.1", "2001:db8::1"}))
        await bus.publish(
            c.VipReleased(
                generation=11,
                owner=c.VipOwner(kind="domain", host="app.example.test"),
                addresses=["10.0.0.1", "2001:db8::1"],
            )
        )
        await event_capture.wait_for(is_(c.DnsRemoved, "app.example.test"))
        assert await dns.resolve("app.example.test") == frozenset()
        state = (await dns.read(ZONE, ["app.example.test"])).get("app.example.test")
        assert state.owners == ()
    finally:
        await app.stop()


async def _true(value: bool) -> bool:
    return value


async def test_bad_names_rejected_without_blocking_others(
    bus: Bus,
    event_capture: EventCapture,
    bus_settings: BusSettings,
    knot: KnotServer,
    keys: list[TsigKey],
    tmp_path: Path,
) -> None:
    app = make_app(bus, make_settings(bus_settings, knot, keys[0], tmp_path))
    await app.start()
    dns = reader(knot, keys[0])
    try:
        await bus.publish_many(
            [
                assigned("app.example.org", "10.0.0.1"),
                assigned("legacy.example.test", "10.0.0.2"),
                assigned("alias.example.test", "10.0.0.3"),
                assigned("ok.example.test", "10.0.0.4"),
            ]
        )
        await event_capture.wait_for(is_(c.DnsPublished, "ok.example.test"))
        reasons = {}
        for fqdn in ("app.example.org", "legacy.example.test", "alias.example.test"):
            [cap] = await event_capture.wait_for(is_(c.DnsRejected, fqdn))
            assert isinstance(cap.envelope.event, c.DnsRejected)
            reasons[fqdn] = cap.envelope.event.reason
            assert cap.envelope.event.observed_generation == 10
        assert reasons == {
            "app.example.org": "OutsideManagedZones",
            "legacy.example.test": "NameHeldByForeignRecord",
            "alias.example.test": "CnameAtName",
        }
        assert await dns.resolve("legacy.example.test") == {"192.0.2.20"}
        assert await dns.resolve("ok.example.test") == {"10.0.0.4"}
    finally:
        await app.stop()


async def test_route_withdrawn_everywhere_leaves_after_hold_down_and_returns(
    bus: Bus,
    event_capture: EventCapture,
    bus_settings: BusSettings,
    knot: KnotServer,
    keys: list[TsigKey],
    tmp_path: Path,
) -> None:
    app = make_app(bus, make_settings(bus_settings, knot, keys[0], tmp_path))
    await app.start()
    dns = reader(knot, keys[0])
    try:
        await bus.publish(assigned("web.example.test", "10.0.0.1", "10.0.0.2"))
        await event_capture.wait_for(is_(c.DnsPublished, "web.example.test"))
        route = {"vip": "10.0.0.1", "prefix": "10.0.0.1/32"}
        await bus.publish_many(
            [
                c.RouteAnnounced(generation=1, node="l4-a", **route),
                c.RouteAnnounced(generation=1, node="l4-b", **route),
                c.RouteWithdrawn(generation=2, node="l4-a", reason="NotReady", **route),
            ]
        )
        await asyncio.sleep(0.6)
        assert await dns.resolve("web.example.test") == {"10.0.0.1", "10.0.0.2"}
        await bus.publish(c.RouteWithdrawn(generation=2, node="l4-b", reason="NotReady", **route))
        await until(lambda: _eq(dns.resolve("web.example.test"), {"10.0.0.2"}), timeout=5)
        await bus.publish(c.RouteAnnounced(generation=3, node="l4-b", **route))
        await until(lambda: _eq(dns.resolve("web.example.test"), {"10.0.0.1", "10.0.0.2"}))
        # The last value of a name is never withdrawn for health: nothing better to serve.
        other = {"vip": "10.0.0.2", "prefix": "10.0.0.2/32"}
        await bus.publish_many(
            [
                c.RouteWithdrawn(generation=4, node="l4-a", reason="NotReady", **route),
                c.RouteWithdrawn(generation=4, node="l4-b", reason="NotReady", **route),
                c.RouteWithdrawn(generation=4, node="l4-a", reason="NotReady", **other),
            ]
        )
        await asyncio.sleep(1.0)
        assert await dns.resolve("web.example.test")
    finally:
        await app.stop()


async def _eq(result: object, expected: set[str]) -> bool:
    return await result == expected  # type: ignore[misc]


async def test_server_down_and_bad_key_back_off_then_recover(
    bus: Bus,
    event_capture: EventCapture,
    bus_settings: BusSettings,
    knot: KnotServer,
    keys: list[TsigKey],
    tmp_path: Path,
) -> None:
    forged = TsigKey(keys[0].name, keys[0].algorithm, TsigKey.generate("x.").secret)
    bad = make_app(bus, make_settings(bus_settings, knot, forged, tmp_path))
    await bad.start()
    try:
        await bus.publish(assigned("app.example.test", "10.0.0.1"))
        await asyncio.sleep(1.0)
        assert "dns-provider" in bad._ctx.readiness.unmet()
        assert not event_capture.of_type(c.DnsPublished)
        assert await reader(knot, keys[0]).resolve("app.example.test") == frozenset()
    finally:
        await bad.stop()
    knot.stop()
    app = make_app(bus, make_settings(bus_settings, knot, keys[0], tmp_path))
    await app.start()
    try:
        await asyncio.sleep(1.0)
        assert "dns-provider" in app._ctx.readiness.unmet()
        knot.start()
        await event_capture.wait_for(is_(c.DnsPublished, "app.example.test"), timeout=10)
        await until(lambda: _true(app._ctx.readiness.ready))
        assert await reader(knot, keys[0]).resolve("app.example.test") == {"10.0.0.1"}
    finally:
        await app.stop()


async def test_federation_and_empty_bus_guard(
    bus: Bus,
    event_capture: EventCapture,
    bus_settings: BusSettings,
    knot: KnotServer,
    keys: list[TsigKey],
    tmp_path: Path,
    nats_url: str,
) -> None:
    a = make_app(bus, make_settings(bus_settings, knot, keys[0], tmp_path, owner_id="cluster-a"))
    # Cluster B has a bus of its own (another subject root stands in for another cluster).
    b_settings = BusSettings(
        servers=[nats_url],
        source="//ingress-domain/b/test",
        subjects=Subjects(bus_settings.subjects.root + "b"),
        streams=bus_settings.streams,
    )
    bus_b = await Bus.connect(b_settings)
    await bus_b.ensure_streams()
    b = make_app(bus_b, make_settings(b_settings, knot, keys[1], tmp_path, owner_id="cluster-b"))
    dns = reader(knot, keys[0])
    await a.start()
    await b.start()
    try:
        await bus.publish(assigned("shop.example.test", "10.0.0.1"))
        await bus_b.publish(assigned("shop.example.test", "10.0.1.1"))
        await until(lambda: _eq(dns.resolve("shop.example.test"), {"10.0.0.1", "10.0.1.1"}))
        [cap] = await event_capture.wait_for(is_(c.DnsPublished, "shop.example.test"))
        assert isinstance(cap.envelope.event, c.DnsPublished)
        assert cap.envelope.event.records[0].values == ["10.0.0.1"]
        await bus_b.publish(c.DomainDeleted(generation=20, host="shop.example.test"))
        await until(lambda: _eq(dns.resolve("shop.example.test"), {"10.0.0.1"}))
        # A writer restarted on an empty bus deletes nothing: deletes come only from events.
        await a.stop()
        fresh = BusSettings(
            servers=[nats_url],
            source="//ingress-domain/a/test",
            subjects=Subjects(bus_settings.subjects.root + "fresh"),
            streams=bus_settings.streams,
        )
        bus_fresh = await Bus.connect(fresh)
        await bus_fresh.ensure_streams()
        a = make_app(bus_fresh, make_settings(fresh, knot, keys[0], tmp_path, owner_id="cluster-a"))
        await a.start()
        await until(lambda: _true(a.verified >= 1))
        assert a.writes == 0
        assert await dns.resolve("shop.example.test") == {"10.0.0.1"}
        await bus_fresh.close()
    finally:
        await a.stop()
        await b.stop()
        await bus_b.close()


async def test_unconfigured_stays_up_not_ready(bus: Bus, bus_settings: BusSettings) -> None:
    settings = DnsWriterSettings(
        nats_url=bus_settings.servers[0], subject_root=bus_settings.subjects.root
    )
    assert settings.missing() == [
        "DNS_WRITER_SERVER",
        "DNS_WRITER_ZONES",
        "DNS_WRITER_TSIG_KEY_NAME",
        "DNS_WRITER_TSIG_SECRET_FILE",
    ]
    app = make_app(bus, settings)
    await app.start()
    assert app._ctx.readiness.unmet() == ["dns-provider"]
    await app.stop()


def region_settings(
    bus_settings: BusSettings,
    region: str,
    servers: dict[str, tuple[KnotServer, TsigKey]],
    tmp_path: Path,
) -> DnsWriterSettings:
    providers: list[ProviderSettings] = []
    for name, (server, key) in servers.items():
        secret = tmp_path / f"{region}-{name}.secret"
        secret.write_text(key.secret)
        providers.append(
            ProviderSettings(
                name=name,
                region=name,
                server="127.0.0.1",
                port=server.port,
                tsig_key_name=key.name,
                tsig_secret_file=secret,
            )
        )
    return DnsWriterSettings(
        nats_url=bus_settings.servers[0],
        subject_root=bus_settings.subjects.root,
        cluster=f"cluster-{region}",
        region=region,
        providers=providers,
        zones=ZONE,
        hold_down_seconds=0.3,
        announce_wait_seconds=0,
        verify_interval_seconds=0.5,
        max_backoff_seconds=0.5,
    )


async def test_each_region_answers_with_its_own_vips_and_falls_back(
    bus: Bus,
    event_capture: EventCapture,
    bus_settings: BusSettings,
    keys: list[TsigKey],
    tmp_path: Path,
    nats_url: str,
) -> None:
    """Two edge sites, each with its own Knot server and its own cluster: each site's server
    answers with its cluster's VIP while that VIP is up, and with the other site's VIP when
    its own routes are withdrawn everywhere."""
    eu_dns = KnotServer(zones=[ZONE], keys=keys)
    us_dns = KnotServer(zones=[ZONE], keys=keys)
    bus_us: Bus | None = None
    apps: list[DnsWriterApp] = []
    try:
        eu_dns.start()
        us_dns.start()
        servers = {"eu": (eu_dns, keys[0]), "us": (us_dns, keys[0])}
        us_bus_settings = BusSettings(
            servers=[nats_url],
            source="//ingress-domain/us/test",
            subjects=Subjects(bus_settings.subjects.root + "us"),
            streams=bus_settings.streams,
        )
        bus_us = await Bus.connect(us_bus_settings)
        await bus_us.ensure_streams()
        eu = make_app(bus, region_settings(bus_settings, "eu", servers, tmp_path))
        us = make_app(bus_us, region_settings(us_bus_settings, "us", servers, tmp_path))
        apps = [eu, us]
        await eu.start()
        await us.start()
        at_eu, at_us = reader(eu_dns, keys[0]), reader(us_dns, keys[0])
        host = "shop.example.test"
        await bus.publish(assigned(host, "10.0.1.1"))
        await bus_us.publish(assigned(host, "10.0.2.1"))
        await until(lambda: _eq(at_eu.resolve(host), {"10.0.1.1"}))
        await until(lambda: _eq(at_us.resolve(host), {"10.0.2.1"}))
        # The eu cluster reports its values at the eu provider only.
        await until(
            lambda: _true(
                any(
                    isinstance(e, c.DnsPublished) and e.providers == ["eu"]
                    for e in event_capture.of_type(c.DnsPublished)
                )
            )
        )
        # Registry records carry the region of the values.
        state = (await at_eu.read(ZONE, [host])).get(host)
        assert [(o.owner, o.region, o.ready) for o in state.owners] == [("cluster-eu", "eu", True)]
        # eu's VIP is withdrawn on every node: after the hold-down, eu's server falls back to us.
        route = {"vip": "10.0.1.1", "prefix": "10.0.1.1/32"}
        await bus.publish(c.RouteAnnounced(generation=1, node="eu-l4-a", **route))
        await bus.publish(
            c.RouteWithdrawn(generation=2, node="eu-l4-a", reason="NotReady", **route)
        )
        await until(lambda: _eq(at_eu.resolve(host), {"10.0.2.1"}))
        assert await at_us.resolve(host) == {"10.0.2.1"}
        state = (await at_eu.read(ZONE, [host])).get(host)
        assert [(o.owner, o.region) for o in state.owners] == [("cluster-us", "us")]
        # The route returns: eu's server answers with eu's VIP alone again.
        await bus.publish(c.RouteAnnounced(generation=3, node="eu-l4-a", **route))
        await until(lambda: _eq(at_eu.resolve(host), {"10.0.1.1"}))
        assert await at_us.resolve(host) == {"10.0.2.1"}
    finally:
        for app in apps:
            await app.stop()
        if bus_us is not None:
            await bus_us.close()
        eu_dns.cleanup()
        us_dns.cleanup()


async def test_weight_zero_drains_a_cluster_while_a_weighted_one_serves(
    bus: Bus,
    bus_settings: BusSettings,
    knot: KnotServer,
    keys: list[TsigKey],
    tmp_path: Path,
    nats_url: str,
) -> None:
    a = make_app(bus, make_settings(bus_settings, knot, keys[0], tmp_path, owner_id="cluster-a"))
    b_settings = BusSettings(
        servers=[nats_url],
        source="//ingress-domain/b/test",
        subjects=Subjects(bus_settings.subjects.root + "b"),
        streams=bus_settings.streams,
    )
    bus_b = await Bus.connect(b_settings)
    await bus_b.ensure_streams()
    b = make_app(bus_b, make_settings(b_settings, knot, keys[1], tmp_path, owner_id="cluster-b"))
    dns = reader(knot, keys[0])
    host = "shop.example.test"

    def desired(generation: int, weight: int) -> c.DomainDesired:
        return c.DomainDesired(
            generation=generation,
            host=host,
            owner_namespace="shop",
            ingress_class="ingress-domain",
            sources=SRC,
            dns=c.DnsOptions(weight=weight),
        )

    await a.start()
    await b.start()
    try:
        await bus.publish(desired(1, 2))
        await bus.publish(assigned(host, "10.0.0.1"))
        await bus_b.publish(desired(1, 1))
        await bus_b.publish(assigned(host, "10.0.1.1"))
        await until(lambda: _eq(dns.resolve(host), {"10.0.0.1", "10.0.1.1"}))
        weights = {o.owner: o.weight for o in (await dns.read(ZONE, [host])).get(host).owners}
        assert weights == {"cluster-a": 2, "cluster-b": 1}
        # Cluster b is drained (weight 0): its value leaves while cluster a serves...
        await bus_b.publish(desired(2, 0))
        await until(lambda: _eq(dns.resolve(host), {"10.0.0.1"}))
        # ...and comes back when a leaves, rather than leave the name empty.
        await bus.publish(c.DomainDeleted(generation=3, host=host))
        await until(lambda: _eq(dns.resolve(host), {"10.0.1.1"}))
    finally:
        await a.stop()
        await b.stop()
        await bus_b.close()


async def test_a_new_vip_enters_dns_once_announced(
    bus: Bus,
    bus_settings: BusSettings,
    knot: KnotServer,
    keys: list[TsigKey],
    tmp_path: Path,
) -> None:
    """A name that resolves before its VIP is routable sends a client's SYN into the void (TCP
    retries it only after a second): a new VIP is published once a node announces it to an
    established BGP peer, or after ANNOUNCE_WAIT_SECONDS without (no BGP). A route announced
    while no session is up is in no router yet: it does not count."""
    settings = make_settings(bus_settings, knot, keys[0], tmp_path, announce_wait_seconds=2.5)
    app = make_app(bus, settings)
    await app.start()
    dns = reader(knot, keys[0])

    def announced(vip: str, peers: list[str], generation: int = 1) -> c.RouteAnnounced:
        return c.RouteAnnounced(
            generation=generation, node="l4-a", vip=vip, prefix=f"{vip}/32", peers=peers
        )

    try:
        await bus.publish(assigned("routed.example.test", "10.0.0.7"))
        await bus.publish(assigned("nobgp.example.test", "10.0.0.8"))
        await bus.publish(announced("10.0.0.7", []))
        await asyncio.sleep(0.5)
        assert await dns.resolve("routed.example.test") == set()
        await bus.publish(announced("10.0.0.7", ["tor-a"], generation=2))
        await until(lambda: _eq(dns.resolve("routed.example.test"), {"10.0.0.7"}), timeout=5)
        assert await dns.resolve("nobgp.example.test") == set()  # still within the wait
        # The session drops: the published name stays (no hold-down, no removal).
        await bus.publish(announced("10.0.0.7", [], generation=3))
        await until(lambda: _eq(dns.resolve("nobgp.example.test"), {"10.0.0.8"}), timeout=5)
        assert await dns.resolve("routed.example.test") == {"10.0.0.7"}
    finally:
        await app.stop()
        await dns.close()


async def test_an_event_the_bus_refused_goes_out_once_it_is_back(
    bus: Bus,
    bus_settings: BusSettings,
    knot: KnotServer,
    keys: list[TsigKey],
    tmp_path: Path,
) -> None:
    """The record is written but dns.published is refused (here: its stream is gone, as while
    nats-server restarts). The retry finds the record in place and nothing to write; it must
    still send the event, or the name's DNS stage never shows."""
    app = make_app(bus, make_settings(bus_settings, knot, keys[0], tmp_path))
    await app.start()
    dns = reader(knot, keys[0])
    stream = bus_settings.subjects.stream(c.Family.DNS)
    try:
        await bus.nats.jetstream().delete_stream(stream)
        await bus.publish(assigned("outage.example.test", "10.0.0.9"))
        await until(lambda: _eq(dns.resolve("outage.example.test"), {"10.0.0.9"}))
        writes = app.writes
        await asyncio.sleep(1.0)  # a few refused publishes and retries
        assert await bus.latest(c.Family.DNS, ("outage.example.test",)) is None
        await bus.ensure_streams([c.Family.DNS])

        async def stored() -> bool:
            envelope = await bus.latest(c.Family.DNS, ("outage.example.test",))
            return envelope is not None and isinstance(envelope.event, c.DnsPublished)

        await until(stored, timeout=10)
        assert app.writes == writes  # the retries sent the event, not the record again
    finally:
        await app.stop()
        await dns.close()
