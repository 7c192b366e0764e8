"""l7-config against a real Envoy: every Ingress matching rule checked by traffic, TLS with a
verifying client, HTTP -> HTTPS redirect, rewrites, weights, the endpoint-only fast path and an
Envoy NACK. One Envoy and one app for the module (start-up takes seconds); each test uses its own
hostnames, so the tests stay independent."""

from __future__ import annotations

import asyncio
import datetime as dt
import tempfile
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import pytest_asyncio
from ingress_events import catalogue as c
from ingress_events.bus import Bus, BusSettings
from ingress_l7_config.adapters.xds import EnvoyStream
from ingress_l7_config.app import L7ConfigApp
from ingress_l7_config.domain.resources import CLUSTER, LISTENER
from ingress_l7_config.testing import (
    CertAuthority,
    EchoServer,
    EnvoyProcess,
    http_get,
    issue,
    make_ca,
    wait_for_reply,
    write_secret,
)
from ingress_testkit import EventCapture, NatsServer, find_nats_server, free_port
from l7_fixtures import app_settings, context, domain, endpoints, route, tls, wb

pytestmark = [pytest.mark.integration, pytest.mark.asyncio(loop_scope="module")]

SERVICES = ("svc-a", "svc-b", "svc-c", "svc-d", "svc-e", "svc-f")


@dataclass
class Stack:
    bus: Bus
    capture: EventCapture
    app: L7ConfigApp
    envoy: EnvoyProcess
    echo: dict[str, EchoServer]
    http: int
    https: int
    secrets: Path
    ca: CertAuthority

    async def apply(self, event: c.DomainDesired, timeout: float = 15.0) -> c.L7Applied:
        await self.bus.publish(event)
        try:
            [hit] = await self.capture.wait_for(
                lambda x: (
                    isinstance(x.envelope.event, c.L7Applied)
                    and x.envelope.event.host == event.host
                    and x.envelope.event.observed_generation == event.generation
                ),
                timeout=timeout,
            )
        except TimeoutError:
            streams = [
                (
                    s.sent[-8:],
                    s.in_flight,
                    {t[-12:]: (st.subscribed, st.acked) for t, st in s.states.items()},
                )
                for s in self.app.xds.streams
            ]
            raise AssertionError(
                f"not applied; streams {streams}\nenvoy log:\n{self.envoy.log()[-3000:]}"
            ) from None
        assert isinstance(hit.envelope.event, c.L7Applied)
        return hit.envelope.event

    async def service(self, host: str, path: str) -> str | None:
        reply = await http_get(self.http, host, path)
        return reply.service if reply.status == 200 else str(reply.status)


@pytest_asyncio.fixture(scope="module", loop_scope="module", params=["delta", "sotw"])
async def stack(request: pytest.FixtureRequest) -> AsyncIterator[Stack]:
    """Every test runs against an Envoy on delta xDS (what deploy/ configures) and on state of
    the world (the other variant the server speaks)."""
    binary = find_nats_server()
    assert binary is not None, "nats-server is not installed (scripts/setup)"
    nats = NatsServer(binary).start()
    secrets = Path(tempfile.mkdtemp(prefix="l7-config-secrets-"))
    echo = {s: await EchoServer(s).start() for s in SERVICES}
    bus = await Bus.connect(BusSettings(servers=[nats.url], source="//ingress-domain/test/l7"))
    await bus.ensure_streams()
    capture = await EventCapture(bus).start()
    http, https = free_port(), free_port()
    settings = app_settings(http, https, secrets, f"it-{uuid.uuid4().hex[:6]}", xds_port=0)
    app = L7ConfigApp(context(bus, settings))
    envoy: EnvoyProcess | None = None
    try:
        await app.start()
        for name, server in echo.items():
            await bus.publish(endpoints(name, server.port))
        envoy = EnvoyProcess(
            node=f"l7-config-it-{uuid.uuid4().hex[:6]}",
            xds_port=app.xds_port,
            delta=request.param == "delta",
        )
        envoy.start()
        yield Stack(bus, capture, app, envoy, echo, http, https, secrets, make_ca())
    finally:
        if envoy is not None:
            envoy.cleanup()
        await app.stop()
        await capture.stop()
        await bus.close()
        for server in echo.values():
            await server.stop()
        nats.cleanup()
        import shutil

        shutil.rmtree(secrets, ignore_errors=True)
    capture.assert_clean()


async def test_the_envoy_speaks_the_variant_of_its_bootstrap(stack: Stack) -> None:
    await stack.apply(domain("variant.example.com", [route("/", "Prefix", "svc-a")]))
    [stream] = stack.app.xds.streams
    assert stream.delta is stack.envoy.delta
    assert await stack.service("variant.example.com", "/") == "svc-a"


async def test_a_host_is_routed_in_any_case_and_with_a_port(stack: Stack) -> None:
    """The plain-HTTP scope is chosen from the Host as routing sees it (lower case, no port),
    and the scope header never reaches the backend."""
    await stack.apply(domain("mixed.example.com", [route("/", "Prefix", "svc-b")]))
    for host in ("mixed.example.com", "MiXeD.Example.COM", "mixed.example.com:8080"):
        reply = await http_get(stack.http, host, "/")
        assert (reply.status, reply.service) == (200, "svc-b"), host
        names = (reply.field("header-names") or "").split(",")
        assert "host" in names and "x-ingress-domain-scope" not in names


async def test_ingress_path_rules_by_traffic(stack: Stack) -> None:
    host = "match.example.com"
    applied = await stack.apply(
        domain(
            host,
            [
                route("/", "Prefix", "svc-d"),
                route("/foo", "Prefix", "svc-b"),
                route("/foo", "Exact", "svc-a"),
                route("/foo/bar/", "Prefix", "svc-c"),
                route("/impl", "ImplementationSpecific", "svc-e"),
            ],
        )
    )
    assert applied.envoys == 1
    expected = {
        "/foo": "svc-a",  # Exact beats Prefix on the same path
        "/foo?x=1": "svc-a",  # the query string is not part of the path
        "/foo/": "svc-b",
        "/foo/x": "svc-b",
        "/foobar": "svc-d",  # element-wise: /foo never matches /foobar
        "/foo/bar": "svc-c",  # a trailing slash in the rule is ignored
        "/foo/bar/baz": "svc-c",  # the longest match wins
        "/foo/barbaz": "svc-b",
        "/FOO": "svc-d",  # case-sensitive
        "/impl/x": "svc-e",  # ImplementationSpecific is Prefix
        "/implx": "svc-d",
    }
    got = {path: await stack.service(host, path) for path in expected}
    assert got == expected
    assert await stack.service("unknown.example.com", "/foo") == "404"
    assert await stack.service(f"{host}:{stack.http}", "/foo") == "svc-a"


async def test_wildcard_host_matches_exactly_one_label(stack: Stack) -> None:
    await stack.apply(domain("*.wild.example.com", [route("/", "Prefix", "svc-a")]))
    assert await stack.service("a.wild.example.com", "/") == "svc-a"
    assert await stack.service("x.y.wild.example.com", "/") == "404"
    assert await stack.service("wild.example.com", "/") == "404"


async def test_default_backend_rewrites_and_weights(stack: Stack) -> None:
    host = "features.example.com"
    await stack.apply(
        domain(
            host,
            [
                route(
                    "/api",
                    "Prefix",
                    "svc-a",
                    rewrite={"prefix": "/v2", "host": "internal.svc.example.com"},
                ),
                route("/canary", "Prefix", "svc-a", "svc-b"),
                route("/strip/", "Prefix", "svc-d", rewrite={"prefix": "/"}),
            ],
            default_backend=wb("svc-c"),
        )
    )
    reply = await http_get(stack.http, host, "/api/items?q=1")
    assert (reply.service, reply.field("path"), reply.field("host")) == (
        "svc-a",
        "/v2/items?q=1",
        "internal.svc.example.com",
    )
    strip = {p: (await http_get(stack.http, host, p)).field("path") for p in ("/strip/x", "/strip")}
    assert strip == {"/strip/x": "/x", "/strip": "/"}
    assert await stack.service(host, "/elsewhere") == "svc-c"
    seen = {await stack.service(host, "/canary") for _ in range(40)}
    assert seen == {"svc-a", "svc-b"}


async def test_tls_sni_and_redirect(stack: Stack) -> None:
    host = "secure.example.com"
    cert, key = issue(stack.ca, [host])
    digest = write_secret(stack.secrets, "shop", "secure-tls", cert, key)
    await stack.apply(
        domain(
            host,
            [route("/", "Prefix", "svc-f")],
            tls=tls("secure-tls", digest),
            http_redirect_to_https=True,
        )
    )
    client = stack.ca.client_context()
    reply = await http_get(stack.https, host, "/hello", tls=client)
    assert (reply.status, reply.service) == (200, "svc-f")
    redirect = await http_get(stack.http, host, "/hello?x=1")
    assert redirect.status == 301
    assert redirect.headers["location"] == f"https://{host}:{stack.https}/hello?x=1"
    # Another SNI has no filter chain: the handshake fails rather than serving a wrong cert.
    with pytest.raises((OSError, ConnectionError)):
        await http_get(stack.https, "other.example.com", "/", tls=client)


async def test_endpoint_change_touches_only_eds(stack: Stack) -> None:
    host = "endpoints.example.com"
    spare = await EchoServer("svc-moved").start()
    try:
        await stack.apply(domain(host, [route("/", "Prefix", "svc-e")]))
        [stream] = stack.app.xds.streams
        before = len(stream.sent)
        await stack.bus.publish(endpoints("svc-e", spare.port))
        await wait_for_reply(stack.http, host, "/", "svc-moved")
        pushed = stream.sent[before:]
        assert pushed and {t for t, _ in pushed} == {"EDS"}
        assert all(names == ("shop/svc-e/80",) for _, names in pushed)
        # No endpoint ready: Envoy answers 503 instead of sending traffic to a pod not ready.
        await stack.bus.publish(endpoints("svc-e", spare.port, ready=False))
        await wait_for_reply(stack.http, host, "/", 503)
    finally:
        await stack.bus.publish(endpoints("svc-e", stack.echo["svc-e"].port))
        await spare.stop()


async def test_envoy_nack_keeps_the_last_good_config(stack: Stack) -> None:
    host = "nacked.example.com"
    good_cert, good_key = issue(stack.ca, [host])
    digest = write_secret(stack.secrets, "shop", "nacked-tls", good_cert, good_key)
    await stack.apply(domain(host, [route("/", "Prefix", "svc-a")], tls=tls("nacked-tls", digest)))
    client = stack.ca.client_context()
    assert (await http_get(stack.https, host, "/", tls=client)).service == "svc-a"

    # A 1024-bit RSA key passes our checks (it parses, matches, is in date) but Envoy refuses
    # RSA keys under 2048 bits: the update is NACKed.
    weak_cert, weak_key = issue(stack.ca, [host], rsa_bits=1024)
    weak_digest = write_secret(stack.secrets, "shop", "nacked-tls", weak_cert, weak_key)
    bad = domain(host, [route("/", "Prefix", "svc-b")], tls=tls("nacked-tls", weak_digest))
    await stack.bus.publish(bad)
    [hit] = await stack.capture.wait_for(
        lambda x: (
            isinstance(x.envelope.event, c.L7Rejected)
            and x.envelope.event.observed_generation == bad.generation
        ),
        timeout=15,
    )
    rejected = hit.envelope.event
    assert isinstance(rejected, c.L7Rejected)
    assert rejected.reason == "EnvoyRejected"
    assert "2048" in rejected.message or "RSA" in rejected.message, rejected.message
    # The last good configuration (svc-a, the good certificate) still serves...
    for _ in range(5):
        assert (await http_get(stack.https, host, "/", tls=client)).service == "svc-a"
    # ...and another domain still applies and serves.
    await stack.apply(domain("after-nack.example.com", [route("/", "Prefix", "svc-c")]))
    assert await stack.service("after-nack.example.com", "/") == "svc-c"
    # A fixed generation applies again.
    fixed_cert, fixed_key = issue(stack.ca, [host])
    fixed_digest = write_secret(stack.secrets, "shop", "nacked-tls", fixed_cert, fixed_key)
    await stack.apply(
        domain(host, [route("/", "Prefix", "svc-b")], tls=tls("nacked-tls", fixed_digest))
    )
    assert (await http_get(stack.https, host, "/", tls=client)).service == "svc-b"


async def test_delete_removes_the_domain(stack: Stack) -> None:
    host = "gone.example.com"
    await stack.apply(domain(host, [route("/", "Prefix", "svc-a")]))
    assert await stack.service(host, "/") == "svc-a"
    await stack.bus.publish(
        c.DomainDeleted(generation=dt.datetime.now().microsecond + 10**9, host=host)
    )
    await stack.capture.wait_for(
        lambda x: isinstance(x.envelope.event, c.L7Removed) and x.envelope.event.host == host
    )
    assert await stack.service(host, "/") == "404"
    await asyncio.sleep(0)


async def test_remote_backend_takes_over_when_local_endpoints_fail(stack: Stack) -> None:
    """Local-high / remote-low: a remote cluster's VIP at priority 1 gets nothing while the
    local endpoints are ready, everything when they are not ready or gone, and the traffic comes
    back when they return. The "remote VIP" is an echo server on loopback."""
    host = "fed.example.com"
    local = await EchoServer("fed-local").start()
    far = await EchoServer("cluster-b-vip").start()
    try:
        await stack.bus.publish(endpoints("fed-local", local.port))
        # A weight far above the local one: only the priority keeps the remote idle.
        remote = c.RemoteBackend(
            cluster="cluster-b", address="127.0.0.1", port=far.port, weight=10_000, priority=1
        )
        await stack.apply(
            domain(host, [route("/", "Prefix", "fed-local")], remote_backends=[remote])
        )
        await wait_for_reply(stack.http, host, "/", "fed-local")
        assert [await stack.service(host, "/") for _ in range(20)] == ["fed-local"] * 20
        assert far.requests == 0

        # Not ready: listed UNHEALTHY, so priority 0 has no healthy capacity left.
        await stack.bus.publish(endpoints("fed-local", local.port, ready=False))
        reply, _ = await wait_for_reply(stack.http, host, "/x", "cluster-b-vip")
        assert reply.field("host") == host  # the remote L7 routes on the same Host
        assert [await stack.service(host, "/") for _ in range(10)] == ["cluster-b-vip"] * 10

        await stack.bus.publish(endpoints("fed-local", local.port))
        await wait_for_reply(stack.http, host, "/", "fed-local")
        assert [await stack.service(host, "/") for _ in range(10)] == ["fed-local"] * 10

        # Gone altogether (the Service port was deleted): the remote serves.
        await stack.bus.publish(
            c.BackendDeleted(
                generation=dt.datetime.now().microsecond + 2 * 10**9,
                namespace="shop",
                service="fed-local",
                port=80,
            )
        )
        await wait_for_reply(stack.http, host, "/", "cluster-b-vip")
    finally:
        await local.stop()
        await far.stop()


async def test_remote_backend_at_the_local_priority_shares_by_locality_weight(
    stack: Stack,
) -> None:
    """Priority 0 puts the remote VIP next to the local endpoints: traffic splits by locality
    weight (100 per ready local endpoint against the remote's weight)."""
    host = "fedmix.example.com"
    local = await EchoServer("mix-local").start()
    far = await EchoServer("cluster-c-vip").start()
    try:
        await stack.bus.publish(endpoints("mix-local", local.port))
        remote = c.RemoteBackend(
            cluster="cluster-c", address="127.0.0.1", port=far.port, weight=100, priority=0
        )
        await stack.apply(
            domain(host, [route("/", "Prefix", "mix-local")], remote_backends=[remote])
        )
        await wait_for_reply(stack.http, host, "/", "mix-local")
        seen = [await stack.service(host, "/") for _ in range(60)]
        assert set(seen) == {"mix-local", "cluster-c-vip"}, seen
        assert 10 <= seen.count("cluster-c-vip") <= 50, seen
    finally:
        await local.stop()
        await far.stop()


async def test_remote_backend_takes_the_share_local_capacity_lost(stack: Stack) -> None:
    """Not-ready endpoints are listed UNHEALTHY, so Envoy knows the local side lost 3 of 4 pods:
    priority 0 keeps 25% x 1.4 = 35% of the traffic and the remote takes the other 65%, instead
    of one pod taking everything. The not-ready pods (closed ports) never get a request."""
    host = "fedspill.example.com"
    local = await EchoServer("spill-local").start()
    far = await EchoServer("cluster-d-vip").start()
    try:
        await stack.bus.publish(
            c.BackendEndpoints(
                generation=dt.datetime.now().microsecond + 4 * 10**9,
                namespace="shop",
                service="spill-local",
                port=80,
                endpoints=[c.Endpoint(address="127.0.0.1", port=local.port, ready=True)]
                + [c.Endpoint(address="127.0.0.1", port=p, ready=False) for p in (1, 2, 3)],
            )
        )
        remote = c.RemoteBackend(
            cluster="cluster-d", address="127.0.0.1", port=far.port, weight=1, priority=1
        )
        await stack.apply(
            domain(host, [route("/", "Prefix", "spill-local")], remote_backends=[remote])
        )
        await wait_for_reply(stack.http, host, "/", "spill-local")
        seen = [await stack.service(host, "/") for _ in range(80)]
        assert set(seen) == {"spill-local", "cluster-d-vip"}, seen  # no 503 from closed ports
        assert 12 <= seen.count("spill-local") <= 45, seen  # about 28 of 80 expected
    finally:
        await local.stop()
        await far.stop()


async def test_a_dropped_cluster_leaves_the_envoy_after_its_routes(stack: Stack) -> None:
    host = "lonely.example.com"
    cluster = "shop/svc-lonely/80"
    await stack.bus.publish(endpoints("svc-lonely", stack.echo["svc-c"].port))
    await stack.apply(domain(host, [route("/", "Prefix", "svc-lonely")]))
    [stream] = stack.app.xds.streams
    assert cluster in stream.states[CLUSTER].acked
    assert await stack.service(host, "/") == "svc-c"
    await stack.bus.publish(
        c.DomainDeleted(generation=dt.datetime.now().microsecond + 10**9, host=host)
    )
    await stack.capture.wait_for(
        lambda x: isinstance(x.envelope.event, c.L7Removed) and x.envelope.event.host == host
    )
    # The Envoy ACKed a response without the cluster: the delta removal, or a set without it.
    deadline = asyncio.get_running_loop().time() + 10
    while cluster in stream.states[CLUSTER].acked:
        assert asyncio.get_running_loop().time() < deadline, stream.sent[-6:]
        await asyncio.sleep(0.05)
    assert await stack.service(host, "/") == "404"
    assert await stack.service("variant.example.com", "/") == "svc-a"


async def test_a_restarted_server_sends_a_delta_envoy_only_what_changed(stack: Stack) -> None:
    """l7-config restarts under a running Envoy. Over delta the Envoy reconnects saying what it
    holds, and gets nothing it has; over state of the world every set is sent again."""
    host = "restart.example.com"
    await stack.apply(domain(host, [route("/", "Prefix", "svc-d")]))
    http, https, xds_port = free_port(), free_port(), free_port()
    instance = f"restart-{uuid.uuid4().hex[:6]}"
    settings = app_settings(http, https, stack.secrets, instance, xds_port=xds_port)
    first = L7ConfigApp(context(stack.bus, settings))
    await first.start()
    envoy = EnvoyProcess(node=f"restart-{instance}", xds_port=xds_port, delta=stack.envoy.delta)
    envoy.start()
    second: L7ConfigApp | None = None
    try:
        await wait_for_reply(http, host, "/", "svc-d")
        await first.stop()
        # The Envoy keeps serving what it holds while no control plane answers.
        assert (await http_get(http, host, "/")).service == "svc-d"
        second = L7ConfigApp(context(stack.bus, settings))
        await second.start()
        stream = await _settled_stream(second)
        kinds = {kind for kind, names in stream.sent if names}
        if envoy.delta:
            assert kinds == set(), stream.sent
        else:
            assert {"CDS", "LDS"} <= kinds, stream.sent
        # The new stream is live: a change goes through it.
        await stack.bus.publish(domain(host, [route("/", "Prefix", "svc-e")]))
        await wait_for_reply(http, host, "/", "svc-e")
    finally:
        envoy.cleanup()
        await (second or first).stop()


async def _settled_stream(app: L7ConfigApp, timeout: float = 15.0) -> EnvoyStream:
    """The app's one stream once listeners and clusters were asked for and nothing has been in
    flight for half a second."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while True:
        streams = app.xds.streams
        if (
            streams
            and streams[0].states[CLUSTER].requested
            and streams[0].states[LISTENER].requested
            and not streams[0].in_flight
        ):
            await asyncio.sleep(0.5)
            if not streams[0].in_flight:
                return streams[0]
        assert loop.time() < deadline, [s.sent for s in streams]
        await asyncio.sleep(0.05)
