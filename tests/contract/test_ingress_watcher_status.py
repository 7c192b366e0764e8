"""ingress-watcher in local mode writes status files: manifests in, reports from the bus (a real
nats-server) in, one status file per object out; converged means no rewrite."""

from __future__ import annotations

import asyncio
import json
import shutil
from collections.abc import Callable
from pathlib import Path

import pytest
import structlog
from ingress_events import catalogue as c
from ingress_events.bus import Bus
from ingress_runtime import Readiness, ServiceContext
from ingress_watcher.app import WatcherApp
from ingress_watcher.settings import WatcherSettings

pytestmark = pytest.mark.contract

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"


async def until(check: Callable[[], bool], timeout: float = 10.0) -> None:
    async with asyncio.timeout(timeout):
        while not check():  # noqa: ASYNC110
            await asyncio.sleep(0.02)


def _read(path: Path) -> dict[str, object]:
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    status = data.get("status")
    return status if isinstance(status, dict) else {}


def _ips(status: dict[str, object]) -> list[str]:
    lb = status.get("loadBalancer")
    return [x["ip"] for x in lb.get("ingress", [])] if isinstance(lb, dict) else []


async def test_local_mode_writes_status_files(bus: Bus, tmp_path: Path) -> None:
    manifests = tmp_path / "manifests"
    shutil.copytree(EXAMPLES, manifests)
    status_dir = tmp_path / "status"
    settings = WatcherSettings(
        manifests_dir=manifests,
        poll_interval_seconds=0.05,
        debounce_seconds=0.01,
        status_debounce_seconds=0.01,
        status_dir=status_dir,
    )
    ctx = ServiceContext(
        "ingress-watcher", settings, bus, Readiness(), structlog.get_logger("ingress-watcher")
    )
    app = WatcherApp(ctx)
    await app.start()
    try:
        await asyncio.wait_for(app.synced.wait(), 10)
        web = status_dir / "Ingress" / "shop" / "web.json"
        await until(web.exists)
        await bus.publish(
            c.VipAssigned(
                generation=10**15,
                owner=c.VipOwner(kind="domain", host="shop.example.com"),
                addresses=["127.0.0.100"],
                pool="local",
                ports=[c.PortSpec(port=443)],
                observed_generation=1,
            )
        )
        await until(lambda: _ips(_read(web)) == ["127.0.0.100"])
        # The blog Ingress routes /feed on shop.example.com: it contributes, so it shows the VIP.
        assert _ips(_read(status_dir / "Ingress" / "blog" / "blog.json")) == ["127.0.0.100"]
        # The loser of the ClaimConflict contributes nothing: no VIP, Accepted False, an Event.
        loser = _read(status_dir / "Ingress" / "shop" / "web-copy.json")
        assert _ips(loser) == []
        accepted = {x["type"]: x for x in loser["conditions"]}["Accepted"]  # type: ignore[union-attr, index]
        assert accepted["status"] == "False" and accepted["reason"] == "ClaimConflict"
        assert accepted["observedGeneration"] == 2
        events = [json.loads(x) for x in (status_dir / "events.jsonl").read_text().splitlines()]
        assert {(e["involvedObject"]["name"], e["reason"]) for e in events} == {
            ("take-checkout", "OwnershipDenied"),
            ("web-copy", "ClaimConflict"),
        }
        # Converged: another round rewrites nothing.
        writes, rounds = app.status_writes, app.status_rounds
        stamp = web.stat().st_mtime_ns
        (manifests / "rejected.yaml").unlink()
        await until(lambda: not (status_dir / "Ingress" / "blog" / "take-checkout.json").exists())
        await until(lambda: app.status_rounds > rounds)
        assert web.stat().st_mtime_ns == stamp
        assert app.status_writes == writes
    finally:
        await app.stop()
