"""What tests/e2e and bench/e2e share: a local topology started from a copy of examples/ in a
temporary directory, looked at from the outside (the bus, knotd, the ToR, the client)."""

from __future__ import annotations

import asyncio
import shutil
import subprocess
from collections.abc import AsyncIterator, Callable, Iterable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import yaml
from ingress_events import catalogue as c

from ingress_local.status import Row, collect
from ingress_local.topology.client import ClientResult, request
from ingress_local.topology.components import free_port
from ingress_local.topology.netns import NETNS_ETC, existing_namespaces
from ingress_local.topology.system import LocalSystem, Options, wait_for

EXAMPLES = Path(__file__).resolve().parents[4] / "examples"
SHOP_CA = "secrets/shop/shop-tls/tls.crt"
HOSTS = ("blog.example.com", "shop.example.com")


def copy_examples(target: Path, source: Path = EXAMPLES) -> None:
    """examples/ with every EndpointSlice port moved to a free one: a scripts/run on this
    machine may hold the examples' own backend ports."""
    shutil.copytree(source, target)
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


def run(*argv: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(argv, capture_output=True, text=True, check=False, timeout=30)


@asynccontextmanager
async def local_system(
    root: Path, prepare: Callable[[Path], None] | None = None, **options: Any
) -> AsyncIterator[LocalSystem]:
    """A started topology on a copy of examples/ under ``root``; on exit it is stopped and
    checked to have left nothing behind (namespaces, links, routes, /etc/netns, processes).
    ``prepare`` may add manifests to the copy before anything starts (a cold start with them)."""
    manifests = root / "manifests"
    copy_examples(manifests)
    if prepare is not None:
        prepare(manifests)
    lines: list[str] = []
    values: dict[str, Any] = {
        # Room for the VIPs that tests add (the default /28 holds 15).
        "vip_pool": "198.51.100.0/26",
        "sync_interval": 0.3,
        "extra_env": {"INGRESS_WATCHER_POLL_INTERVAL_SECONDS": "0.3"},
        **options,
    }
    local = LocalSystem(
        Options(
            manifests=manifests,
            state_dir=root / "state",
            nats_port=free_port(),
            say=lines.append,
            **values,
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
        assert str(plan.block) not in run("ip", "route").stdout
        leftover = run("pgrep", "-f", str(root))
        assert leftover.returncode == 1, f"processes left: {leftover.stdout}"


async def rows(system: LocalSystem) -> dict[str, Row]:
    assert system.bus is not None
    return {r.domain: r for r in await collect(system.bus)}


async def events(system: LocalSystem, family: c.Family) -> list[c.Event]:
    assert system.bus is not None
    return [e.event for e in (await system.bus.replay(family)).values()]


async def client(system: LocalSystem, url: str, cacert: bool = False) -> ClientResult:
    """curl in the client namespace, off the event loop (the echo backends run on it)."""
    assert system.plan is not None
    ca = system.o.manifests / SHOP_CA if cacert else None
    return await asyncio.to_thread(request, system.plan.ns_client, url, cacert=ca)


async def ready(
    system: LocalSystem, hosts: Iterable[str] = HOSTS, timeout: float = 90
) -> dict[str, Row]:
    wanted = tuple(hosts)

    last: dict[str, Row] = {}

    async def all_ready() -> dict[str, Row] | None:
        found = await rows(system)
        last.clear()
        last.update(found)
        ok = all(h in found and found[h].condition == "Ready" for h in wanted)
        return found if ok else None

    try:
        found: dict[str, Row] = await wait_for(
            f"{', '.join(wanted)} Ready", all_ready, timeout, 0.3
        )
    except TimeoutError as exc:
        # Which stage each host is stuck at is what a failure report needs first.
        seen = "; ".join(f"{h}: {last.get(h, 'no row')}" for h in wanted)
        print(complaints(system))  # pytest shows it with the failure
        raise TimeoutError(f"{exc}; rows: {seen}") from None
    return found


def complaints(system: LocalSystem, per_service: int = 5) -> str:
    """The last warnings and errors each service logged (a failing test's first clue)."""
    out: list[str] = []
    for name, child in system.services.items():
        lines = [
            line[:400]
            for line in child.log_tail(200_000).splitlines()
            if '"level": "warning"' in line or '"level": "error"' in line
        ]
        out.append(f"--- {name}: {len(lines)} warnings/errors in the tail, the last:")
        out.extend(lines[-per_service:])
    return "\n".join(out)


async def serves(
    system: LocalSystem, url: str, service: str, cacert: bool = False, timeout: float = 30
) -> ClientResult:
    last: list[ClientResult] = []

    async def check() -> bool:
        last[:] = [await client(system, url, cacert)]
        return last[0].ok and last[0].status == 200 and last[0].service == service

    try:
        await wait_for(f"{url} answered by {service}", check, timeout, 0.3)
    except TimeoutError as exc:
        raise AssertionError(f"{url}: {last[0] if last else None}") from exc
    return last[0]
