"""Where desired state goes: the bus, or an in-memory fake for unit tests."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

from ingress_events import catalogue as c
from ingress_events.bus import Bus
from ingress_events.catalogue import Family

from ..domain.normalize import StateKey, key_of_event

OWN_FAMILIES = (Family.DOMAIN, Family.BACKEND, Family.LBSERVICE, Family.POOL, Family.PEER)


class EventPublisher(Protocol):
    async def current(self) -> dict[StateKey, c.Event]:
        """The last event of every key this watcher owns, as consumers see it now."""
        ...

    async def publish(self, events: Sequence[c.Event]) -> None: ...


class BusPublisher:
    def __init__(self, bus: Bus, component: str) -> None:
        self._bus = bus
        self._component = component

    async def current(self) -> dict[StateKey, c.Event]:
        out: dict[StateKey, c.Event] = {}
        for family in OWN_FAMILIES:
            for envelope in (await self._bus.replay(family)).values():
                out[key_of_event(envelope.event)] = envelope.event
        admissions = await self._bus.replay(Family.ADMISSION, (self._component,))
        for envelope in admissions.values():
            out[key_of_event(envelope.event)] = envelope.event
        return out

    async def publish(self, events: Sequence[c.Event]) -> None:
        if events:
            await self._bus.publish_many(events)


class InMemoryPublisher:
    def __init__(self) -> None:
        self.state: dict[StateKey, c.Event] = {}
        self.published: list[c.Event] = []

    async def current(self) -> dict[StateKey, c.Event]:
        return dict(self.state)

    async def publish(self, events: Sequence[c.Event]) -> None:
        for event in events:
            self.published.append(event)
            self.state[key_of_event(event)] = event
