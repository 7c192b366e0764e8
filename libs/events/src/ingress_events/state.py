"""The rule that makes level-triggered events safe: keep the highest generation per key.

A consumer offers every envelope it receives (from a replay or a live consumer); ``offer`` tells
whether it is news. Duplicates, replays and older generations arriving late are ignored.
Tombstones (``*.deleted`` etc.) are kept too, so a late older ``desired`` cannot resurrect a key.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Generic, TypeVar

from .catalogue import TOMBSTONES, Event, Family
from .envelope import Envelope

E = TypeVar("E", bound=Event)


class LatestByKey(Generic[E]):
    def __init__(self) -> None:
        self._items: dict[tuple[Family, tuple[str, ...]], Envelope[E]] = {}

    def offer(self, envelope: Envelope[E]) -> bool:
        """Store the envelope if it is newer than what is known for its key; True if it was."""
        event = envelope.event
        slot = (event.family, event.key())
        known = self._items.get(slot)
        if known is not None and known.event.generation >= event.generation:
            return False
        self._items[slot] = envelope
        return True

    def get(self, family: Family, key: tuple[str, ...]) -> E | None:
        envelope = self._items.get((family, key))
        return None if envelope is None else envelope.event

    def live(self, family: Family | None = None) -> Iterator[E]:
        """Current events that are not tombstones."""
        for (fam, _), envelope in self._items.items():
            if (family is None or fam == family) and type(envelope.event) not in TOMBSTONES:
                yield envelope.event

    def __len__(self) -> int:
        return len(self._items)
