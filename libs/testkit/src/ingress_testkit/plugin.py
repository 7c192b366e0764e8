"""pytest fixtures: ``nats_server``, ``nats_url``, ``bus_settings``, ``bus``, ``event_capture``."""

from __future__ import annotations

import os
import uuid
from collections.abc import AsyncIterator, Iterator

import pytest
from ingress_events.bus import Bus, BusSettings, StreamSettings
from ingress_events.subjects import Subjects

from .capture import EventCapture
from .nats_server import NatsServer, find_nats_server, nats_server_url


@pytest.fixture
def nats_server() -> Iterator[NatsServer]:
    """A local nats-server process the test may stop and restart (keeping its store)."""
    binary = find_nats_server()
    if binary is None:
        raise RuntimeError(
            "nats-server is not installed: run scripts/setup (apt-get install nats-server)"
        )
    server = NatsServer(binary).start()
    try:
        yield server
    finally:
        server.cleanup()


@pytest.fixture
def nats_url() -> Iterator[str]:
    with nats_server_url() as url:
        yield url


@pytest.fixture
def bus_settings(nats_url: str) -> BusSettings:
    # A root of its own per test keeps tests isolated also on a shared NATS_URL server.
    root = "ingress" if not os.environ.get("NATS_URL") else f"t{uuid.uuid4().hex[:12]}"
    return BusSettings(
        servers=[nats_url],
        source="//ingress-domain/test/pytest",
        subjects=Subjects(root),
        streams=StreamSettings(replicas=1),
    )


@pytest.fixture
async def bus(bus_settings: BusSettings) -> AsyncIterator[Bus]:
    bus = await Bus.connect(bus_settings)
    await bus.ensure_streams()
    try:
        yield bus
    finally:
        await bus.close()


@pytest.fixture
async def event_capture(bus: Bus) -> AsyncIterator[EventCapture]:
    capture = await EventCapture(bus).start()
    try:
        yield capture
    finally:
        await capture.stop()
    capture.assert_clean()
