"""Where desired state goes: the bus, or an in-memory fake for unit tests."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

from ingress_events import catalogue as c
from ingress_events.bus import Bus
from ingress_events.catalogue import Family

from ..domain.normalize import StateKey, key_of_event
from ..domain.plan import Published, kept

OWN_FAMILIES = (Family.DOMAIN, Family.BACKEND, Family.LBSERVICE, Family.POOL, Family.PEER)


class EventPublisher(Protocol):
    async def current(self) -> dict[StateKey, Published]:
        """The last event of every key this watcher owns, as consumers see it now, in the form
        the planner keeps it (:func:`~..domain.plan.kept`)."""
        ...

    async def publish(self, events: Sequence[c.Event]) -> None: ...


class BusPublisher:
    def __init__(self, bus: Bus, component: str) -> None:
        self._bus = bus
        self._component = component

    async def current(self) -> dict[StateKey, Published]:
        # A fetch at a time: all of the backends' events at once were the peak of a restart.
        out: dict[StateKey, Published] = {}
        wanted: list[tuple[Family, tuple[str, ...]]] = [(family, ()) for family in OWN_FAMILIES]
        wanted.append((Family.ADMISSION, (self._component,)))
        for family, prefix in wanted:
            async for part in self._bus.replay_batches(family, prefix):
                for _, envelope in part:
                    out[key_of_event(envelope.event)] = kept(envelope.event)
        return out

    async def publish(self, events: Sequence[c.Event]) -> None:
        if events:
            await self._bus.publish_many(events)


class InMemoryPublisher:
    def __init__(self) -> None:
        self.state: dict[StateKey, c.Event] = {}
        self.published: list[c.Event] = []

    async def current(self) -> dict[StateKey, Published]:
        return {key: kept(event) for key, event in self.state.items()}

    async def publish(self, events: Sequence[c.Event]) -> None:
        for event in events:
            self.published.append(event)
            self.state[key_of_event(event)] = event
