"""l7-config benchmark: a real Envoy fed by the ADS server, changes arriving as bus events.

Loads DOMAINS domains (3 routes each, one cluster per domain), then measures
* new route live: domain.desired published -> first 200 from the new route through Envoy;
* endpoint change live: backend.endpoints published -> first answer from the new endpoint.
Prints p50/p99 and writes report.md next to this file.

    .venv/bin/python bench/l7-config/run.py [DOMAINS] [SAMPLES]
"""

from __future__ import annotations

import asyncio
import shutil
import statistics
import sys
import tempfile
import time
import uuid
from pathlib import Path

import structlog
from ingress_events import catalogue as c
from ingress_events.bus import Bus, BusSettings
from ingress_l7_config.app import L7ConfigApp
from ingress_l7_config.settings import L7ConfigSettings
from ingress_l7_config.testing import EchoServer, EnvoyProcess, wait_for_reply
from ingress_runtime import Readiness, ServiceContext
from ingress_testkit import NatsServer, find_nats_server, free_port

NS = "bench"


def _route(path: str, service: str) -> c.Route:
    return c.Route(
        path=path,
        path_type="Prefix",
        backends=[c.WeightedBackend(backend=c.BackendRef(namespace=NS, service=service, port=80))],
        source=c.ObjectRef(kind="Ingress", namespace=NS, name=service),
    )


def _domain(i: int, generation: int) -> c.DomainDesired:
    svc = f"svc-{i}"
    return c.DomainDesired(
        generation=generation,
        host=f"d{i}.bench.example.com",
        owner_namespace=NS,
        ingress_class="ingress-domain",
        sources=[c.ObjectRef(kind="Ingress", namespace=NS, name=svc)],
        routes=[_route(p, svc) for p in ("/", "/api", "/static")],
    )


def _endpoints(i: int, port: int, generation: int) -> c.BackendEndpoints:
    return c.BackendEndpoints(
        generation=generation,
        namespace=NS,
        service=f"svc-{i}",
        port=80,
        endpoints=[c.Endpoint(address="127.0.0.1", port=port, ready=True)],
    )


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))] * 1000


async def main(domains: int, samples: int) -> str:
    binary = find_nats_server()
    assert binary, "nats-server missing"
    nats = NatsServer(binary).start()
    secrets = Path(tempfile.mkdtemp(prefix="l7-config-bench-"))
    echo_a, echo_b = await EchoServer("svc-a").start(), await EchoServer("svc-b").start()
    bus = await Bus.connect(BusSettings(servers=[nats.url], source="//ingress-domain/bench/l7"))
    await bus.ensure_streams()
    http = free_port()
    settings = L7ConfigSettings(
        xds_port=0,
        listen_address="127.0.0.1",
        http_port=http,
        https_port=free_port(),
        secrets_dir=secrets,
        access_log=False,
        instance=f"bench-{uuid.uuid4().hex[:6]}",
    )
    ctx = ServiceContext("l7-config", settings, bus, Readiness(), structlog.stdlib.get_logger())
    app = L7ConfigApp(ctx)
    envoy: EnvoyProcess | None = None
    generation = 10
    try:
        await app.start()
        envoy = EnvoyProcess(node=f"l7-bench-{uuid.uuid4().hex[:6]}", xds_port=app.xds_port).start()
        started = time.monotonic()
        events: list[c.Event] = []
        for i in range(domains):
            generation += 1
            events += [_endpoints(i, echo_a.port, generation), _domain(i, generation)]
        await bus.publish_many(events)
        await wait_for_reply(
            http, f"d{domains - 1}.bench.example.com", "/api", "svc-a", timeout=120
        )
        load_s = time.monotonic() - started

        route_live: list[float] = []
        for n in range(samples):
            i = domains + n
            generation += 1
            await bus.publish(_endpoints(i, echo_a.port, generation))
            t0 = time.monotonic()
            await bus.publish(_domain(i, generation))
            await wait_for_reply(http, f"d{i}.bench.example.com", "/api", "svc-a", timeout=30)
            route_live.append(time.monotonic() - t0)

        endpoint_live: list[float] = []
        for n in range(samples):
            target = echo_b if n % 2 == 0 else echo_a
            generation += 1
            t0 = time.monotonic()
            await bus.publish(_endpoints(0, target.port, generation))
            await wait_for_reply(http, "d0.bench.example.com", "/", target.service, timeout=30)
            endpoint_live.append(time.monotonic() - t0)
    finally:
        if envoy is not None:
            envoy.cleanup()
        await app.stop()
        await bus.close()
        await echo_a.stop()
        await echo_b.stop()
        nats.cleanup()
        shutil.rmtree(secrets, ignore_errors=True)
    return (
        f"| domains loaded | routes | clusters | initial load to last route live | samples |\n"
        f"|---|---|---|---|---|\n"
        f"| {domains} | {3 * domains} | {domains} | {load_s:.2f} s | {samples} |\n\n"
        f"| measure (event published -> first answer through Envoy) | p50 | p99 | max |\n"
        f"|---|---|---|---|\n"
        f"| new route live | {pct(route_live, 0.5):.1f} ms | {pct(route_live, 0.99):.1f} ms "
        f"| {max(route_live) * 1000:.1f} ms |\n"
        f"| endpoint change live | {pct(endpoint_live, 0.5):.1f} ms "
        f"| {pct(endpoint_live, 0.99):.1f} ms | {max(endpoint_live) * 1000:.1f} ms |\n"
        f"\nmean route live {statistics.mean(route_live) * 1000:.1f} ms\n"
    )


if __name__ == "__main__":
    n = int(sys.argv[1]) if len(sys.argv) > 1 else 500
    k = int(sys.argv[2]) if len(sys.argv) > 2 else 30
    table = asyncio.run(main(n, k))
    print(table)
    (Path(__file__).parent / "report.md").write_text(
        "# l7-config benchmark\n\n"
        f"`.venv/bin/python bench/l7-config/run.py {n} {k}` on the 2-core shared dev machine, one "
        "real Envoy 1.40 (concurrency 1), nats-server 2.9 with JetStream.\n\n" + table
    )
