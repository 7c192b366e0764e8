"""Status writing and leader election with the real kubernetes-asyncio client against the local
API server (Lease, status subresource merge patches, Events), and a real nats-server."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest
import structlog
from ingress_events import catalogue as c
from ingress_events.bus import Bus
from ingress_runtime import Readiness, ServiceContext
from ingress_watcher.app import WatcherApp
from ingress_watcher.settings import WatcherSettings
from kube_apiserver import LocalApiServer
from watcher_objects import CLASS, ZONE, domain, ingress, service

pytestmark = pytest.mark.integration

HOST = "shop.example.com"


@pytest.fixture
async def apiserver() -> AsyncIterator[LocalApiServer]:
    server = await LocalApiServer(bookmark_interval=0.1).start()
    for obj in (
        CLASS,
        ZONE,
        domain("team-a", HOST),
        service("team-a", "web"),
        service("team-b", "web"),
        service("team-a", "lb", type="LoadBalancer"),
        service("team-a", "other-lb", type="LoadBalancer", loadBalancerClass="someone/else"),
        ingress("team-a", "web", HOST, "/"),
        ingress("team-a", "api", HOST, "/api"),
        ingress("team-a", "foreign", HOST, "/foreign", class_name="nginx"),
        ingress("team-b", "intruder", HOST, "/x"),
    ):
        await server.put(dict(obj))
    try:
        yield server
    finally:
        await server.stop()


def _app(bus: Bus, url: str, identity: str) -> WatcherApp:
    settings = WatcherSettings.model_validate(
        {
            "source": "kubernetes",
            "kube_api_url": url,
            "read_timeout_seconds": 5.0,
            "debounce_seconds": 0.005,
            "status_debounce_seconds": 0.01,
            # Long enough that a renewal delayed by a loaded CI machine does not flip the
            # leader in the middle of a test (seen at load 13 on 2 cores with 2 s).
            "lease_duration_seconds": 4,
            "lease_renew_seconds": 0.2,
            "identity": identity,
        }
    )
    ctx = ServiceContext(
        "ingress-watcher", settings, bus, Readiness(), structlog.get_logger("ingress-watcher")
    )
    return WatcherApp(ctx)


async def until(check: Callable[[], bool], timeout: float = 20.0) -> None:
    async with asyncio.timeout(timeout):
        while not check():  # noqa: ASYNC110
            await asyncio.sleep(0.02)


def _conditions(status: dict[str, Any]) -> dict[str, str]:
    return {x["type"]: x["status"] for x in status.get("conditions") or []}


def _ips(status: dict[str, Any]) -> list[str]:
    return [x["ip"] for x in (status.get("loadBalancer") or {}).get("ingress") or []]


async def report_everything(bus: Bus) -> None:
    gen = 10**15
    await bus.publish_many(
        [
            c.VipAssigned(
                generation=gen,
                owner=c.VipOwner(kind="domain", host=HOST),
                addresses=["192.0.2.10"],
                pool="local",
                ports=[c.PortSpec(port=80)],
                observed_generation=1,
            ),
            c.VipAssigned(
                generation=gen,
                owner=c.VipOwner(kind="service", namespace="team-a", service="lb"),
                addresses=["192.0.2.20"],
                pool="local",
                ports=[c.PortSpec(port=80)],
                observed_generation=1,
            ),
            c.DnsPublished(
                generation=gen,
                fqdn=HOST,
                zone="example.com",
                owner_id="test",
                records=[c.DnsRecord(record_type="A", values=["192.0.2.10"], ttl_seconds=60)],
                providers=["knot"],
                observed_generation=gen,
            ),
            c.L7Applied(
                generation=gen,
                host=HOST,
                observed_generation=2**62,
                envoys=2,
                config_version="v1",
            ),
            *(
                c.L4Programmed(
                    generation=gen,
                    node="node-a",
                    vip=vip,
                    dataplane="ipvs",
                    services=[
                        c.VirtualService(
                            port=80, scheduler="mh", real_servers=1, ready_real_servers=1
                        )
                    ],
                    observed_generation=gen,
                )
                for vip in ("192.0.2.10", "192.0.2.20")
            ),
            *(
                c.RouteAnnounced(
                    generation=gen, node="node-a", vip=vip, prefix=f"{vip}/32", peers=["tor-a"]
                )
                for vip in ("192.0.2.10", "192.0.2.20")
            ),
        ]
    )


async def test_two_watchers_one_leader_status_events_and_failover(
    bus: Bus, apiserver: LocalApiServer
) -> None:
    first = _app(bus, apiserver.url, "watcher-a")
    await first.start()
    await until(lambda: first.leadership is not None and first.leadership.leading.is_set())
    second = _app(bus, apiserver.url, "watcher-b")
    await second.start()
    try:
        await asyncio.wait_for(second.synced.wait(), 10)
        await report_everything(bus)

        def ready() -> bool:
            web = _conditions(apiserver.status_of("Ingress", "team-a", "web"))
            lb = _conditions(apiserver.status_of("Service", "team-a", "lb"))
            return web.get("Ready") == "True" and lb.get("Ready") == "True"

        await until(ready)
        web = apiserver.status_of("Ingress", "team-a", "web")
        assert _ips(web) == ["192.0.2.10"]
        assert _ips(apiserver.status_of("Ingress", "team-a", "api")) == ["192.0.2.10"]
        assert _ips(apiserver.status_of("Service", "team-a", "lb")) == ["192.0.2.20"]
        accepted = next(x for x in web["conditions"] if x["type"] == "Accepted")
        assert accepted["observedGeneration"] == 3 and accepted["lastTransitionTime"]
        # Another class, another loadBalancerClass: never written.
        assert apiserver.status_of("Ingress", "team-a", "foreign") == {}
        assert apiserver.status_of("Service", "team-a", "other-lb") == {}
        # The intruder (team-b on team-a's host): Accepted False, no VIP, and an Event.
        intruder = apiserver.status_of("Ingress", "team-b", "intruder")
        assert _ips(intruder) == []
        assert _conditions(intruder)["Accepted"] == "False"
        # Events go out right after the round's patches.
        await until(
            lambda: any(e["involvedObject"]["name"] == "intruder" for e in apiserver.events)
        )
        [event] = [e for e in apiserver.events if e["involvedObject"]["name"] == "intruder"]
        assert event["reason"] == "OwnershipDenied" and event["type"] == "Warning"
        # Only the leader wrote.
        await until(lambda: first.status_writes >= 4)
        assert second.status_writes == 0
        lease = apiserver.leases[("ingress-domain", "ingress-watcher")]
        assert lease["spec"]["holderIdentity"] == "watcher-a"

        # Converged: more rounds, zero patches.
        patches = len(apiserver.status_patches)
        rounds = first.status_rounds
        await apiserver.put(service("team-a", "unrelated"))
        await until(lambda: first.status_rounds > rounds)
        await asyncio.sleep(0.3)
        assert len(apiserver.status_patches) == patches

        # The leader stops (releasing the Lease); the other takes over and keeps status current.
        await first.stop()
        assert second.leadership is not None
        await until(second.leadership.leading.is_set, timeout=10)
        assert apiserver.leases[("ingress-domain", "ingress-watcher")]["spec"][
            "holderIdentity"
        ] == ("watcher-b")
        await bus.publish(
            c.VipRejected(
                generation=10**15 + 1,
                owner=c.VipOwner(kind="domain", host=HOST),
                reason="PoolExhausted",
                message="pool local has no free address",
                observed_generation=1,
            )
        )
        await until(
            lambda: (
                _ips(apiserver.status_of("Ingress", "team-a", "web")) == []
                and _conditions(apiserver.status_of("Ingress", "team-a", "web"))["VipAssigned"]
                == "False"
            )
        )
        await until(
            lambda: any(
                e["reason"] == "PoolExhausted" and e["involvedObject"]["name"] == "web"
                for e in apiserver.events
            )
        )
        # The counter moves after the patch returns: wait for it rather than race it.
        await until(lambda: second.status_writes >= 2)
    finally:
        await first.stop()
        await second.stop()


async def test_a_crashed_leader_is_taken_over_after_the_lease_expires(
    bus: Bus, apiserver: LocalApiServer
) -> None:
    first = _app(bus, apiserver.url, "watcher-a")
    await first.start()
    await until(lambda: first.leadership is not None and first.leadership.leading.is_set())
    second = _app(bus, apiserver.url, "watcher-b")
    await second.start()
    try:
        # A crash: the leader's tasks stop without releasing the Lease.
        for task in first._tasks:
            task.cancel()
        await asyncio.sleep(0.5)
        assert second.leadership is not None and not second.leadership.leading.is_set()
        await until(second.leadership.leading.is_set, timeout=12)
        spec = apiserver.leases[("ingress-domain", "ingress-watcher")]["spec"]
        assert spec["holderIdentity"] == "watcher-b" and spec["leaseTransitions"] == 1
        await until(lambda: "conditions" in apiserver.status_of("Ingress", "team-a", "web"))
    finally:
        await first.stop()
        await second.stop()


async def test_a_patch_is_not_repeated_before_its_watch_event_arrives(
    apiserver: LocalApiServer,
) -> None:
    # The writer's copy of an object lags its own patch until the watch delivers the result;
    # comparing with that stale copy patched the same status again (seen under load).
    from ingress_watcher.adapters.status import KubeStatusWriter
    from ingress_watcher.domain.status import Target
    from kubernetes_asyncio.client import ApiClient, Configuration

    target = Target("Ingress", "team-a", "web")
    stale = dict(apiserver.objects["Ingress"][("team-a", "web")])
    status = {"loadBalancer": {"ingress": [{"ip": "192.0.2.10"}]}}
    async with ApiClient(Configuration(host=apiserver.url)) as api:
        writer = KubeStatusWriter(api, "test", timeout_seconds=5)
        assert writer.current(target, stale) is None
        await writer.patch(target, status, stale)
    fresh = apiserver.objects["Ingress"][("team-a", "web")]
    assert fresh["metadata"]["resourceVersion"] != stale["metadata"]["resourceVersion"]
    assert writer.current(target, stale) == status  # watch event not there yet
    assert writer.current(target, fresh) == fresh["status"]  # it is
    # Someone else changed the object since: its copy is the truth again.
    other = {**fresh, "metadata": {**fresh["metadata"], "resourceVersion": "99999"}, "status": {}}
    assert writer.current(target, other) == {}
