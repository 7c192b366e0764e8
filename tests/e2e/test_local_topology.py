"""The whole system on the local topology (what ``scripts/run`` starts), driven like a user.

One topology for the module (tests/e2e/conftest.py), started by the runner's own code from a copy
of examples/ in a temporary directory; the tests edit that copy and look at every stage from the
outside: knotd's answers, the ToR's kernel routes, the L4 node's nft ruleset, real requests from
the client namespace (DNS -> VIP -> ToR -> L4 DNAT -> Envoy -> backend) and the bus.
The module's teardown checks that nothing is left behind.
"""

from __future__ import annotations

import asyncio
import ipaddress
from collections.abc import Callable
from pathlib import Path

import pytest
import yaml
from ingress_events import catalogue as c
from ingress_local.testing import HOSTS, run
from ingress_local.testing import client as _client
from ingress_local.testing import events as _events
from ingress_local.testing import ready as _ready
from ingress_local.testing import serves as _serves
from ingress_local.topology.system import LocalSystem, wait_for

pytestmark = [pytest.mark.e2e, pytest.mark.asyncio(loop_scope="module")]


def _manifests(system: LocalSystem) -> Path:
    return system.o.manifests


def _tor_route(system: LocalSystem, vip: str) -> Callable[[], list[str] | None]:
    return lambda: system.tor_routes().get(f"{vip}/32")


async def test_an_ingress_gets_a_vip_dns_a_route_at_the_tor_and_serves_through_it(
    system: LocalSystem,
) -> None:
    assert system.plan is not None
    plan = system.plan
    rows = await _ready(system)
    for host in HOSTS:
        vip = rows[host].vip
        assert ipaddress.ip_address(vip) in plan.vip_pool
        # DNS: at knotd (dns-writer's address) and at the client's resolver address.
        assert system.dns_a(host) == [vip]
        assert system.resolver_a(host) == [vip]
        # The ToR learned the /32 over BGP from the L4 node and installed it.
        routes = await wait_for(f"ToR route to {vip}", _tor_route(system, vip), 30)
        assert routes == [plan.l4_down_addr]
        assert (vip, "TCP", 80) in system.nft_services()

    # HTTP through the VIP: name resolved by the client's resolver, routed by the ToR, DNATed
    # by nftables at the L4 node, routed by Envoy to the backend of the right Service.
    blog = await _client(system, "http://blog.example.com/")
    assert blog.ok and blog.status == 200, blog
    assert blog.service == "blog/blog" and blog.remote_ip == rows["blog.example.com"].vip
    assert blog.value("host") == "blog.example.com"
    # shop is TLS with the default redirect; HTTPS with SNI reaches its own certificate.
    redirect = await _client(system, "http://shop.example.com/")
    assert redirect.status == 301, redirect
    assert redirect.headers.get("location") == "https://shop.example.com/"
    await _serves(system, "https://shop.example.com/", "shop/web", cacert=True)
    # /feed on shop.example.com is blog's, through the PathClaim.
    await _serves(system, "https://shop.example.com/feed/today", "blog/feed", cacert=True)


async def test_a_rejected_ingress_leaves_everything_else_serving(system: LocalSystem) -> None:
    await _ready(system)
    l7_before = {e.key()[0]: e for e in await _events(system, c.Family.L7)}
    # examples/rejected.yaml: blog may not take /checkout on shop.example.com.
    await _serves(system, "https://shop.example.com/checkout", "shop/web", cacert=True)
    bad = {
        "apiVersion": "networking.k8s.io/v1",
        "kind": "Ingress",
        "metadata": {
            "name": "bad-path",
            "namespace": "blog",
            "creationTimestamp": "2026-02-01T00:00:00Z",
        },
        "spec": {
            "rules": [
                {
                    "host": "blog.example.com",
                    "http": {
                        "paths": [
                            {
                                "path": "/x{y}",
                                "pathType": "Prefix",
                                "backend": {"service": {"name": "feed", "port": {"number": 8080}}},
                            }
                        ]
                    },
                }
            ]
        },
    }
    (_manifests(system) / "bad.yaml").write_text(yaml.safe_dump(bad))

    async def rejected() -> list[str]:
        return [
            p.reason
            for e in await _events(system, c.Family.ADMISSION)
            if isinstance(e, c.AdmissionRejected) and e.object.name == "bad-path"
            for p in e.problems
        ]

    reasons = await wait_for("bad-path rejected", rejected, 30)
    assert "PathForbiddenCharacter" in reasons
    for admission in await _events(system, c.Family.ADMISSION):
        if isinstance(admission, c.AdmissionRejected) and admission.object.name == "take-checkout":
            assert "OwnershipDenied" in [p.reason for p in admission.problems]
    # Everything else keeps its configuration and keeps serving.
    blog = await _client(system, "http://blog.example.com/")
    assert blog.ok and blog.service == "blog/blog", blog
    await _serves(system, "https://shop.example.com/feed", "blog/feed", cacert=True)
    rows = await _ready(system)
    assert all(rows[h].condition == "Ready" for h in HOSTS)
    l7_after = {e.key()[0]: e for e in await _events(system, c.Family.L7)}
    assert l7_after["shop.example.com"] == l7_before["shop.example.com"]
    (_manifests(system) / "bad.yaml").unlink()


async def test_deleting_an_ingress_removes_its_dns_record_route_dataplane_and_envoy_config(
    system: LocalSystem,
) -> None:
    assert system.plan is not None and system.l7 is not None
    rows = await _ready(system)
    vip = rows["blog.example.com"].vip
    path = _manifests(system) / "blog.yaml"
    docs = [d for d in yaml.safe_load_all(path.read_text()) if d is not None]
    kept = [d for d in docs if not (d["kind"] == "Ingress" and d["metadata"]["name"] == "blog")]
    assert len(kept) == len(docs) - 1
    path.write_text(yaml.safe_dump_all(kept, sort_keys=False))

    async def removed() -> bool:
        l7 = {e.key()[0]: e for e in await _events(system, c.Family.L7)}
        return isinstance(l7.get("blog.example.com"), c.L7Removed)

    await wait_for("l7.removed for blog.example.com", removed, 30)
    await wait_for("blog's A record removed", lambda: system.dns_a("blog.example.com") == [], 30)
    await wait_for("ToR route withdrawn", lambda: f"{vip}/32" not in system.tor_routes(), 30)
    await wait_for(
        "nft service removed",
        lambda: all(found[0] != vip for found in system.nft_services()),
        30,
    )
    # Envoy itself no longer knows the host: straight to its listener, Host blog -> 404.
    direct = await asyncio.to_thread(
        run,
        *("curl", "-s", "-o", "/dev/null", "-w", "%{http_code}", "-H", "Host: blog.example.com"),
        f"http://{system.l7.address}:{system.l7.http_port}/",
    )
    assert direct.stdout == "404"
    failed = await _client(system, "http://blog.example.com/")
    assert not failed.ok
    # shop.example.com keeps serving; /feed (blog's Ingress) is gone, so / (shop/web) serves it.
    await _serves(system, "https://shop.example.com/feed", "shop/web", cacert=True)
    assert system.dns_a("shop.example.com") == [rows["shop.example.com"].vip]
    assert f"{rows['shop.example.com'].vip}/32" in system.tor_routes()
