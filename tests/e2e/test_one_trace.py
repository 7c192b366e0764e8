"""One trace per Ingress change, across every service.

The six services run in-process against a real nats-server, each on its own bus connection (as
six processes would), with in-memory stand-ins for their side effects (Envoy over a fake xDS
server, the dataplane, the DNS provider, BIRD). Spans go to OpenTelemetry's InMemorySpanExporter.
A new Ingress is written to the watcher's manifest directory; every span that handled it (the
watcher's publish, each service's processing of its input and publishing of its output, the
watcher's processing of the reports) must carry one trace id, and a second change must be a
trace of its own.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest
import structlog
import yaml
from ingress_bgp_speaker.adapters.bird import FakeBird
from ingress_bgp_speaker.adapters.files import MemoryConfigStore, MemorySecrets
from ingress_bgp_speaker.app import BgpSpeakerApp
from ingress_bgp_speaker.domain.render import peer_protocol_name
from ingress_bgp_speaker.settings import BgpSpeakerSettings
from ingress_dns_writer.adapters.provider import FakeProvider
from ingress_dns_writer.app import DnsWriterApp
from ingress_dns_writer.settings import DnsWriterSettings
from ingress_events import catalogue as c
from ingress_events.bus import Bus, BusSettings
from ingress_ipam.app import IpamApp
from ingress_ipam.settings import IpamSettings
from ingress_l4_programmer.adapters.base import FakeDataplane
from ingress_l4_programmer.app import L4ProgrammerApp
from ingress_l4_programmer.settings import L4ProgrammerSettings
from ingress_l7_config.adapters.secrets import MemorySecretStore
from ingress_l7_config.adapters.xds import FakeEnvoy, FakeXdsServer, XdsObserver
from ingress_l7_config.app import L7ConfigApp
from ingress_l7_config.settings import L7ConfigSettings
from ingress_local.topology.overlay import L7Pool, l7_pool_manifests
from ingress_local.topology.system import wait_for
from ingress_runtime import Readiness, ServiceContext
from ingress_runtime.tracing import setup_tracing
from ingress_watcher.app import WatcherApp
from ingress_watcher.settings import WatcherSettings
from opentelemetry import trace
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

pytestmark = pytest.mark.e2e

NODE = "l4-a"
SERVICES = ("ingress-watcher", "ipam", "l4-programmer", "l7-config", "dns-writer", "bgp-speaker")


def _cluster() -> list[dict[str, Any]]:
    return [
        {
            "apiVersion": "networking.k8s.io/v1",
            "kind": "IngressClass",
            "metadata": {
                "name": "ingress-domain",
                "annotations": {"ingressclass.kubernetes.io/is-default-class": "true"},
            },
            "spec": {"controller": "ingress-domain.io/ingress-controller"},
        },
        {
            "apiVersion": "ingress-domain.io/v1alpha1",
            "kind": "Zone",
            "metadata": {"name": "example-com", "creationTimestamp": "2026-01-01T00:00:00Z"},
            "spec": {"zone": "example.com", "namespaces": ["blog"]},
        },
        {
            "apiVersion": "ingress-domain.io/v1alpha1",
            "kind": "VipPool",
            "metadata": {"name": "public"},
            "spec": {"cidrs": ["10.100.0.0/28"], "default": True, "autoAssign": True},
        },
        {
            "apiVersion": "ingress-domain.io/v1alpha1",
            "kind": "BgpPeer",
            "metadata": {"name": "tor-a"},
            "spec": {"address": "10.0.0.1", "peerASN": 65000, "localASN": 65001},
        },
        {
            "apiVersion": "v1",
            "kind": "Service",
            "metadata": {"name": "blog", "namespace": "blog"},
            "spec": {"ports": [{"port": 80, "targetPort": 18081, "protocol": "TCP"}]},
        },
        {
            "apiVersion": "discovery.k8s.io/v1",
            "kind": "EndpointSlice",
            "metadata": {
                "name": "blog-1",
                "namespace": "blog",
                "labels": {"kubernetes.io/service-name": "blog"},
            },
            "addressType": "IPv4",
            "ports": [{"port": 18081, "protocol": "TCP"}],
            "endpoints": [{"addresses": ["10.1.0.21"], "conditions": {"ready": True}}],
        },
    ]


def _ingress(name: str, host: str) -> str:
    meta = {"name": name, "namespace": "blog", "creationTimestamp": "2026-02-01T00:00:00Z"}
    path = {
        "path": "/",
        "pathType": "Prefix",
        "backend": {"service": {"name": "blog", "port": {"number": 80}}},
    }
    return yaml.safe_dump_all(
        [
            {
                "apiVersion": "ingress-domain.io/v1alpha1",
                "kind": "Domain",
                "metadata": meta,
                "spec": {"host": host},
            },
            {
                "apiVersion": "networking.k8s.io/v1",
                "kind": "Ingress",
                "metadata": meta,
                "spec": {"rules": [{"host": host, "http": {"paths": [path]}}]},
            },
        ],
        sort_keys=False,
    )


@pytest.fixture(scope="module")
def spans() -> InMemorySpanExporter:
    """The global tracer provider, as ingress_runtime sets it up, exporting to memory."""
    exporter = InMemorySpanExporter()
    provider = trace.get_tracer_provider()
    if not isinstance(provider, TracerProvider):
        provider = setup_tracing("ingress-domain-e2e", "test", None)
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    return exporter


def _ctx(name: str, bus: Bus, settings: Any) -> ServiceContext[Any]:
    return ServiceContext(
        name=name,
        settings=settings,
        bus=bus,
        readiness=Readiness(),
        log=structlog.stdlib.get_logger(name),
    )


async def _bus(nats_url: str, name: str) -> Bus:
    return await Bus.connect(
        BusSettings(servers=[nats_url], source=f"//ingress-domain/test/{name}")
    )


@pytest.fixture
async def system(
    nats_url: str, tmp_path: Path, spans: InMemorySpanExporter
) -> AsyncIterator[tuple[Path, Bus]]:
    manifests = tmp_path / "manifests"
    manifests.mkdir()
    (manifests / "cluster.yaml").write_text(yaml.safe_dump_all(_cluster(), sort_keys=False))
    (manifests / "pool.yaml").write_text(l7_pool_manifests(L7Pool("10.1.0.1", 18080, 18443)))
    buses = {name: await _bus(nats_url, name) for name in SERVICES}
    await buses["ipam"].ensure_streams()
    xds: list[FakeXdsServer] = []

    def make_xds(observer: XdsObserver) -> FakeXdsServer:
        xds.append(FakeXdsServer(observer))
        return xds[-1]

    bird_files: dict[str, str] = {}
    bird = FakeBird(bird_files)
    bird.established.add(peer_protocol_name("tor-a"))
    apps: list[Any] = [
        IpamApp(
            _ctx("ipam", buses["ipam"], IpamSettings(nats_url=nats_url, default_pool_cidrs=[]))
        ),
        L4ProgrammerApp(
            _ctx(
                "l4-programmer",
                buses["l4-programmer"],
                L4ProgrammerSettings(
                    nats_url=nats_url, node_name=NODE, resync_seconds=0.5, drain_poll_seconds=0.1
                ),
            ),
            dataplane=FakeDataplane("nftables"),
        ),
        L7ConfigApp(
            _ctx(
                "l7-config",
                buses["l7-config"],
                L7ConfigSettings(nats_url=nats_url, debounce_seconds=0.01, instance="trace"),
            ),
            xds=make_xds,
            secrets=MemorySecretStore(),
        ),
        DnsWriterApp(
            _ctx(
                "dns-writer",
                buses["dns-writer"],
                DnsWriterSettings(
                    nats_url=nats_url,
                    zones="example.com",
                    hold_down_seconds=0.1,
                    verify_interval_seconds=0.5,
                ),
            ),
            provider=FakeProvider(),
        ),
        BgpSpeakerApp(
            _ctx(
                "bgp-speaker",
                buses["bgp-speaker"],
                BgpSpeakerSettings(
                    nats_url=nats_url, node=NODE, session_poll_seconds=0.2, hold_down_seconds=0.0
                ),
            ),
            bird=bird,
            store=MemoryConfigStore("/run/bird/bird.conf", bird_files),
            secrets=MemorySecrets(),
        ),
        WatcherApp(
            _ctx(
                "ingress-watcher",
                buses["ingress-watcher"],
                WatcherSettings(
                    nats_url=nats_url,
                    manifests_dir=manifests,
                    status_dir=tmp_path / "status",
                    poll_interval_seconds=0.05,
                    debounce_seconds=0.01,
                ),
            )
        ),
    ]
    started: list[Any] = []
    try:
        for app in apps:
            await app.start()
            started.append(app)
        xds[0].connect(FakeEnvoy("envoy-1"))
        yield manifests, buses["ipam"]
    finally:
        for app in reversed(started):
            await app.stop()
        for bus in buses.values():
            await bus.close()


def _trace_of(found: list[ReadableSpan], match: Callable[[ReadableSpan], bool]) -> int | None:
    for span in found:
        if match(span):
            assert span.context is not None
            return int(span.context.trace_id)
    return None


def _publishes(span: ReadableSpan, event_type: str, host_or_vip: str) -> bool:
    attrs = span.attributes or {}
    key = str(attrs.get("ingress.key", ""))
    return span.name == f"publish {event_type}" and key.split("/")[-1] == host_or_vip


async def test_one_ingress_change_is_one_trace_across_every_service(
    system: tuple[Path, Bus], spans: InMemorySpanExporter
) -> None:
    manifests, bus = system
    # Warm-up: a first Ingress all the way to its route, so that every service has taken in
    # the pools and peers of the initial sync before the change under test.
    (manifests / "warm.yaml").write_text(_ingress("warm", "warm.example.com"))

    def warm() -> bool:
        return any(s.name == "publish route.announced" for s in spans.get_finished_spans())

    await wait_for("the warm-up Ingress announced", warm, 90, 0.2)
    spans.clear()
    host = "trace.example.com"
    (manifests / "trace.yaml").write_text(_ingress("trace", host))
    want = [
        ("domain.desired", host),
        ("vip.assigned", host),
        ("l7.applied", host),
        ("dns.published", host),
    ]

    async def assigned() -> str | None:
        for event in (await bus.replay(c.Family.VIP)).values():
            if isinstance(event.event, c.VipAssigned) and event.event.owner.host == host:
                return event.event.addresses[0]
        return None

    try:
        vip: str = await wait_for(f"a VIP for {host}", assigned, 60, 0.1)
    except TimeoutError as exc:
        state = {f: list((await bus.replay(f)).values()) for f in c.Family}
        raise AssertionError({f.value: [e.event for e in v] for f, v in state.items()}) from exc

    def missing() -> list[tuple[str, str]]:
        found = list(spans.get_finished_spans())
        needed = [*want, ("l4.programmed", vip), ("route.announced", vip)]
        return [(t, k) for t, k in needed if not any(_publishes(s, t, k) for s in found)]

    try:
        await wait_for(f"every stage published for {host}", lambda: not missing(), 90, 0.2)
    except TimeoutError as exc:
        raise AssertionError(f"no publish span for {missing()}") from exc
    await asyncio.sleep(1.0)  # the watcher's status consumers take their reports in
    found = list(spans.get_finished_spans())
    root = _trace_of(found, lambda s: _publishes(s, "domain.desired", host))
    assert root is not None
    in_trace = [s for s in found if s.context is not None and s.context.trace_id == root]

    # Every stage's output is in the trace, published by the service that owns the stage.
    for event_type, key, producer in [
        ("domain.desired", host, "ingress-watcher"),
        ("vip.assigned", host, "ipam"),
        ("l7.applied", host, "l7-config"),
        ("dns.published", host, "dns-writer"),
        ("l4.programmed", vip, "l4-programmer"),
        ("route.announced", vip, "bgp-speaker"),
    ]:
        mine = [s for s in found if _publishes(s, event_type, key)]
        assert mine, f"no span publishing {event_type} {key}"
        assert all(s.context is not None and s.context.trace_id == root for s in mine), (
            f"{event_type} {key} published in another trace"
        )
        assert {str((s.attributes or {}).get("ingress.source")) for s in mine} == {
            f"//ingress-domain/test/{producer}"
        }
    # Every service handled it within the trace: a "process" span per consuming service.
    consumers = {
        str((s.attributes or {}).get("messaging.consumer"))
        for s in in_trace
        if s.name.startswith("process ")
    }
    for prefix in ("ipam", "l4-programmer", "l7-config", "dns-writer", "bgp-speaker", "ingress"):
        assert any(d.startswith(prefix) for d in consumers), (prefix, sorted(consumers))
    # The trace is connected: every span's parent is in the trace (the root has none).
    ids = {s.context.span_id for s in in_trace if s.context is not None}
    orphans = [s.name for s in in_trace if s.parent is not None and s.parent.span_id not in ids]
    assert not orphans, orphans
    roots = [s.name for s in in_trace if s.parent is None]
    assert roots == ["publish domain.desired"], roots

    # A second, unrelated change is a trace of its own.
    other = "other.example.com"
    (manifests / "other.yaml").write_text(_ingress("other", other))

    def other_published() -> bool:
        return any(_publishes(s, "l7.applied", other) for s in spans.get_finished_spans())

    await wait_for(f"{other} applied", other_published, 60, 0.2)
    found = list(spans.get_finished_spans())
    second = _trace_of(found, lambda s: _publishes(s, "domain.desired", other))
    assert second is not None and second != root
    assert _trace_of(found, lambda s: _publishes(s, "l7.applied", other)) == second
