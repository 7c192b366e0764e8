"""Per-service NATS permissions, generated from the catalogue, enforced by a real nats-server."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import nats
import pytest
from ingress_events import catalogue as c
from ingress_events.bus import Bus, BusSettings
from ingress_events.examples import examples
from ingress_events.permissions import (
    SERVICES,
    permissions_for,
    produced_families,
    render_authorization,
)
from ingress_testkit import NatsServer, find_nats_server


@pytest.mark.unit
def test_every_family_has_exactly_one_producing_service_or_is_shared() -> None:
    owners: dict[c.Family, set[str]] = {}
    for service in SERVICES:
        for family in produced_families(service):
            owners.setdefault(family, set()).add(service)
    assert set(owners) == set(c.Family) - {c.Family.ADMISSION}
    assert all(len(s) == 1 for s in owners.values()), owners


@pytest.mark.unit
def test_a_service_may_publish_its_own_admission_verdicts_only() -> None:
    assert "ingress.v1.admission.ipam.>" in permissions_for("ipam").publish
    assert "ingress.v1.admission.>" not in permissions_for("ipam").publish


@pytest.fixture
async def secured_server(tmp_path: Path) -> AsyncIterator[NatsServer]:
    binary = find_nats_server()
    assert binary is not None, "nats-server is not installed: run scripts/setup"
    config = tmp_path / "nats.conf"
    config.write_text(render_authorization())
    env = {f"NATS_PASSWORD_{s.upper().replace('-', '_')}": f"pw-{s}" for s in SERVICES}
    server = NatsServer(binary, config=config, env=env).start()
    try:
        yield server
    finally:
        server.cleanup()


async def _bus_as(server: NatsServer, service: str) -> Bus:
    host = server.url.removeprefix("nats://")
    return await Bus.connect(BusSettings(servers=[f"nats://{service}:pw-{service}@{host}"]))


@pytest.mark.integration
async def test_each_service_publishes_only_what_it_produces(secured_server: NatsServer) -> None:
    watcher = await _bus_as(secured_server, "ingress-watcher")
    await watcher.ensure_streams()
    ipam = await _bus_as(secured_server, "ipam")
    by_type = {type(e): e for e in examples()}
    # Allowed: ipam publishes VIP events and its own admission verdicts.
    await ipam.publish(by_type[c.VipAssigned])
    verdict = by_type[c.AdmissionRejected].model_copy(update={"component": "ipam"})
    await ipam.publish(verdict)
    # Refused: a domain event (the watcher's) and another component's admission verdict.
    for event in (by_type[c.DomainDesired], by_type[c.AdmissionRejected]):
        with pytest.raises((asyncio.TimeoutError, nats.errors.TimeoutError)):
            await ipam.publish(event, timeout=1.0)
    assert await watcher.replay(c.Family.DOMAIN) == {}
    stored = [e.event for e in (await watcher.replay(c.Family.ADMISSION)).values()]
    assert stored == [verdict]
    # Reading is open to everyone.
    assert len(await ipam.replay(c.Family.VIP)) == 1
    await ipam.close()
    await watcher.close()


@pytest.mark.integration
async def test_a_wrong_password_is_refused(secured_server: NatsServer) -> None:
    host = secured_server.url.removeprefix("nats://")
    with pytest.raises(Exception, match=r"[Aa]uthorization"):
        await nats.connect(
            f"nats://ipam:wrong@{host}",
            max_reconnect_attempts=0,
            allow_reconnect=False,
            connect_timeout=2,
        )


@pytest.mark.integration
async def test_no_service_may_delete_or_purge_a_stream(secured_server: NatsServer) -> None:
    watcher = await _bus_as(secured_server, "ingress-watcher")
    await watcher.ensure_streams()
    stream = watcher.subjects.stream(c.Family.DOMAIN)
    try:
        for service in SERVICES:
            bus = await _bus_as(secured_server, service)
            try:
                for api in ("STREAM.DELETE", "STREAM.PURGE"):
                    with pytest.raises((asyncio.TimeoutError, nats.errors.TimeoutError)):
                        await bus.nats.request(f"$JS.API.{api}.{stream}", b"", timeout=1.0)
                # Managing streams and consumers it needs still works.
                reply = await bus.nats.request(f"$JS.API.STREAM.INFO.{stream}", b"", timeout=2.0)
                assert b'"config"' in reply.data
            finally:
                await bus.close()
        info = await watcher.nats.jetstream().stream_info(stream)
        assert info.config.name == stream
    finally:
        await watcher.close()
