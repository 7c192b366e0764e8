"""The whole system on the local topology (what ``scripts/run`` starts), driven like a user.

One topology for the module, started by the runner's own code (``LocalSystem``) from a copy of
examples/ in a temporary directory; the tests edit that copy and look at every stage from the
outside: knotd's answers, the ToR's kernel routes, the L4 node's nft ruleset, real requests from
the client namespace (DNS -> VIP -> ToR -> L4 DNAT -> Envoy -> backend) and the bus.
The module's teardown checks that nothing is left behind.
"""

from __future__ import annotations

import asyncio
import ipaddress
import shutil
import subprocess
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio
import yaml
from ingress_events import catalogue as c
from ingress_local.status import collect
from ingress_local.topology.client import ClientResult, request
from ingress_local.topology.components import free_port
from ingress_local.topology.netns import NETNS_ETC, existing_namespaces
from ingress_local.topology.system import LocalSystem, Options, wait_for

pytestmark = [pytest.mark.e2e, pytest.mark.asyncio(loop_scope="module")]

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
SHOP_CA = "secrets/shop/shop-tls/tls.crt"
HOSTS = ("blog.example.com", "shop.example.com")


def _copy_examples(target: Path) -> None:
    """examples/ with every EndpointSlice port moved to a free one: a scripts/run on this
    machine may hold the examples' own backend ports."""
    shutil.copytree(EXAMPLES, target)
    moved: dict[int, int] = {}
    for path in target.glob("*.yaml"):
        docs = [d for d in yaml.safe_load_all(path.read_text()) if d is not None]
        for doc in docs:
            if doc.get("kind") == "EndpointSlice":
                for port in doc.get("ports") or []:
                    port["port"] = moved.setdefault(port["port"], free_port())
            if doc.get("kind") == "Service":
                for port in doc["spec"].get("ports") or []:
                    if isinstance(port.get("targetPort"), int):
                        port["targetPort"] = moved.setdefault(port["targetPort"], free_port())
        path.write_text(yaml.safe_dump_all(docs, sort_keys=False))


@pytest_asyncio.fixture(loop_scope="module", scope="module")
async def system(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[LocalSystem]:
    root = tmp_path_factory.mktemp("e2e-local")
    manifests = root / "manifests"
    _copy_examples(manifests)
    lines: list[str] = []
    local = LocalSystem(
        Options(
            manifests=manifests,
            state_dir=root / "state",
            nats_port=free_port(),
            sync_interval=0.3,
            extra_env={"INGRESS_WATCHER_POLL_INTERVAL_SECONDS": "0.3"},
            say=lines.append,
        )
    )
    await local.start()
    assert local.plan is not None
    plan = local.plan
    try:
        yield local
    finally:
        problems = await local.stop()
        logs = "\n".join(lines)
        assert not problems, logs
        assert not set(plan.namespaces) & existing_namespaces()
        assert not Path(f"/sys/class/net/{plan.if_root}").exists()
        assert not (NETNS_ETC / plan.ns_client).exists()
        assert str(plan.block) not in _run("ip", "route").stdout
        leftover = _run("pgrep", "-f", str(root))
        assert leftover.returncode == 1, f"processes left: {leftover.stdout}"


def _run(*argv: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(argv, capture_output=True, text=True, check=False, timeout=30)


def _manifests(system: LocalSystem) -> Path:
    return system.o.manifests


async def _rows(system: LocalSystem) -> dict[str, Any]:
    assert system.bus is not None
    return {r.domain: r for r in await collect(system.bus)}


async def _events(system: LocalSystem, family: c.Family) -> list[c.Event]:
    assert system.bus is not None
    return [e.event for e in (await system.bus.replay(family)).values()]


async def _client(system: LocalSystem, url: str, cacert: bool = False) -> ClientResult:
    """curl in the client namespace, off the event loop (the echo backends run on it)."""
    assert system.plan is not None
    ca = _manifests(system) / SHOP_CA if cacert else None
    return await asyncio.to_thread(request, system.plan.ns_client, url, cacert=ca)


async def _ready(system: LocalSystem) -> dict[str, Any]:
    async def all_ready() -> dict[str, Any] | None:
        rows = await _rows(system)
        ok = all(h in rows and rows[h].condition == "Ready" for h in HOSTS)
        return rows if ok else None

    rows: dict[str, Any] = await wait_for("both example domains Ready", all_ready, 90, 0.5)
    return rows


async def _serves(system: LocalSystem, url: str, service: str, cacert: bool = False) -> None:
    last: list[ClientResult] = []

    async def check() -> bool:
        last[:] = [await _client(system, url, cacert)]
        return last[0].ok and last[0].service == service

    try:
        await wait_for(f"{url} answered by {service}", check, 30, 0.3)
    except TimeoutError as exc:
        raise AssertionError(f"{url}: {last[0] if last else None}") from exc


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
        routes = await wait_for(
            f"ToR route to {vip}", lambda v=vip: system.tor_routes().get(f"{v}/32"), 30
        )
        assert routes == [plan.l4_down_addr]
        assert f"ip daddr {vip} tcp dport 80" in system.nft_ruleset()

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
    l7_before = {e.host: e for e in await _events(system, c.Family.L7)}
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
    l7_after = {e.host: e for e in await _events(system, c.Family.L7)}
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
        l7 = {e.host: e for e in await _events(system, c.Family.L7)}
        return isinstance(l7.get("blog.example.com"), c.L7Removed)

    await wait_for("l7.removed for blog.example.com", removed, 30)
    await wait_for("blog's A record removed", lambda: system.dns_a("blog.example.com") == [], 30)
    await wait_for("ToR route withdrawn", lambda: f"{vip}/32" not in system.tor_routes(), 30)
    await wait_for("nft rule removed", lambda: f"ip daddr {vip} " not in system.nft_ruleset(), 30)
    # Envoy itself no longer knows the host: straight to its listener, Host blog -> 404.
    direct = await asyncio.to_thread(
        _run,
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
