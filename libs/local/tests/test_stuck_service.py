"""A service that does not stop on SIGTERM is asked for its stacks before SIGKILL: the log then
says where it was stuck (the e2e runs found services that did not stop, with nothing to go on)."""

from __future__ import annotations

import asyncio
import os
import sys
from pathlib import Path

import pytest
from ingress_events import catalogue as c
from ingress_events.bus import Bus, BusSettings
from ingress_local.topology.components import Child

pytestmark = pytest.mark.integration

RELAY = Path(__file__).resolve().parents[2] / "runtime" / "tests" / "relay_service.py"


async def test_a_service_killed_for_not_stopping_leaves_its_stacks_in_its_log(
    nats_url: str, tmp_path: Path
) -> None:
    bus = await Bus.connect(BusSettings(servers=[nats_url]))
    await bus.ensure_streams()
    await bus.publish(
        c.DomainDesired(
            generation=1,
            host="stuck.example.com",
            owner_namespace="a",
            ingress_class="x",
            sources=[c.ObjectRef(kind="Ingress", namespace="a", name="i")],
        )
    )
    await bus.close()
    env = {
        **os.environ,
        "RELAY_NATS_URL": nats_url,
        # Its handler sleeps an hour: SIGTERM waits for the message in flight, past any timeout.
        "RELAY_DELAY_SECONDS": "3600",
        "PYTHONPATH": str(RELAY.parent),
    }
    child = Child(
        "relay", [sys.executable, str(RELAY)], tmp_path / "relay.log", env, dumps_stacks=True
    ).start()
    try:
        for _ in range(300):
            if '"event": "ready"' in child.log_tail(100_000):
                break
            await asyncio.sleep(0.1)
        await asyncio.sleep(1.0)  # the handler is sleeping now
        assert not await asyncio.to_thread(child.stop, 2.0)
    finally:
        child.kill()
    log = child.log_path.read_text()
    assert "asyncio tasks (SIGUSR2)" in log, log[-3000:]
    assert "in _handle" in log, log[-3000:]  # the task stuck in the relay's handler
    assert "most recent call first" in log, log[-3000:]  # faulthandler's thread stacks
