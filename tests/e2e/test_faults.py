"""Faults in the middle of an Ingress change: nothing is lost and the system converges.

For each of the six services: a new Ingress (and its Domain) is written to the manifests, the
service is killed with SIGKILL the moment the event it acts on is on the bus (the change is in
flight through it), a second change lands while it is down, then it is started again. Then
nats-server (file storage) is restarted in the middle of a change. Each time the new hosts must
end up with a VIP in status, an A record at the client's resolver, the /32 at the ToR and an
HTTP 200 through the VIP, and everything that served before must still serve.
"""

from __future__ import annotations

import asyncio
import ipaddress
from collections.abc import Awaitable, Callable

import pytest
import yaml
from ingress_events import catalogue as c
from ingress_local.testing import HOSTS, events, ready, rows, serves
from ingress_local.topology.system import SERVICES, LocalSystem, wait_for

pytestmark = [pytest.mark.e2e, pytest.mark.asyncio(loop_scope="module")]


def _manifest(name: str, host: str) -> str:
    """A Domain and an Ingress in namespace blog (the zone delegates to it), served by blog."""
    meta = {"name": name, "namespace": "blog", "creationTimestamp": "2026-03-01T00:00:00Z"}
    domain = {
        "apiVersion": "ingress-domain.io/v1alpha1",
        "kind": "Domain",
        "metadata": meta,
        "spec": {"host": host},
    }
    path = {
        "path": "/",
        "pathType": "Prefix",
        "backend": {"service": {"name": "blog", "port": {"number": 80}}},
    }
    ingress = {
        "apiVersion": "networking.k8s.io/v1",
        "kind": "Ingress",
        "metadata": meta,
        "spec": {"rules": [{"host": host, "http": {"paths": [path]}}]},
    }
    return yaml.safe_dump_all([domain, ingress], sort_keys=False)


async def _vip_of(system: LocalSystem, host: str) -> str | None:
    for event in await events(system, c.Family.VIP):
        if isinstance(event, c.VipAssigned) and event.owner.host == host:
            return event.addresses[0]
    return None


async def _domain_desired(system: LocalSystem, host: str) -> bool:
    return any(
        isinstance(e, c.DomainDesired) and e.host == host
        for e in await events(system, c.Family.DOMAIN)
    )


async def _vip_assigned(system: LocalSystem, host: str) -> bool:
    return await _vip_of(system, host) is not None


async def _l4_programmed(system: LocalSystem, host: str) -> bool:
    vip = await _vip_of(system, host)
    return vip is not None and any(
        isinstance(e, c.L4Programmed) and e.vip == vip for e in await events(system, c.Family.L4)
    )


async def _written(system: LocalSystem, host: str) -> bool:
    return True


Trigger = Callable[[LocalSystem, str], Awaitable[bool]]
# When the change is in flight through each service: the event it consumes is on the bus.
IN_FLIGHT: dict[str, Trigger] = {
    "ingress-watcher": _written,
    "ipam": _domain_desired,
    "l7-config": _domain_desired,
    "dns-writer": _vip_assigned,
    "l4-programmer": _vip_assigned,
    "bgp-speaker": _l4_programmed,
    "nats-server": _domain_desired,
}
assert set(IN_FLIGHT) == {s.name for s in SERVICES} | {"nats-server"}


def _resolves(system: LocalSystem, host: str, vip: str) -> Callable[[], bool]:
    return lambda: system.resolver_a(host) == [vip]


def _routed(system: LocalSystem, vip: str) -> Callable[[], bool]:
    assert system.plan is not None
    hop = system.plan.l4_down_addr
    return lambda: system.tor_routes().get(f"{vip}/32") == [hop]


async def _converged(system: LocalSystem, hosts: list[str]) -> None:
    """Status Ready, the VIP in the pool, DNS at the client's resolver, the route at the ToR,
    and a 200 from blog through the VIP, for every host."""
    assert system.plan is not None
    plan = system.plan
    found = await ready(system, hosts, timeout=120)
    for host in hosts:
        vip = found[host].vip
        assert ipaddress.ip_address(vip) in plan.vip_pool
        await wait_for(f"{host} resolves", _resolves(system, host, vip), 30)
        await wait_for(f"ToR route {vip}", _routed(system, vip), 30)
        reply = await serves(system, f"http://{host}/", "blog/blog", timeout=30)
        assert reply.remote_ip == vip and reply.value("host") == host


@pytest.mark.parametrize("victim", list(IN_FLIGHT))
async def test_killing_a_service_mid_change_loses_nothing_and_converges(
    system: LocalSystem, victim: str
) -> None:
    before = await ready(system)
    manifests = system.o.manifests
    slug = victim.replace("ingress-", "")
    first, second = f"k-{slug}.example.com", f"k2-{slug}.example.com"
    (manifests / f"fault-{slug}.yaml").write_text(_manifest(f"k-{slug}", first))
    trigger = IN_FLIGHT[victim]
    await wait_for(
        f"{victim}'s input for {first} on the bus", lambda: trigger(system, first), 60, 0.05
    )
    if victim == "nats-server":
        await system.restart_nats()
        # A change while the bus was away from every client (they reconnect by themselves).
        (manifests / f"fault-{slug}-2.yaml").write_text(_manifest(f"k2-{slug}", second))
    else:
        system.kill_service(victim)
        assert not system.services[victim].running
        # A second change while it is down: it must catch up on it after the restart.
        (manifests / f"fault-{slug}-2.yaml").write_text(_manifest(f"k2-{slug}", second))
        await asyncio.sleep(1.0)
        system.start_service(victim)
    await _converged(system, [first, second])
    # Nothing that served before was lost, and no VIP is held twice.
    after = await ready(system, [*HOSTS, first, second])
    for host in HOSTS:
        assert after[host].vip == before[host].vip
    vips = [r.vip for r in (await rows(system)).values() if r.vip != "-"]
    assert len(vips) == len(set(vips)), vips
    await serves(system, "http://blog.example.com/", "blog/blog")
    assert not system.exited(), system.exited()
