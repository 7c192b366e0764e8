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
    """Keeps the events, not their envelopes: an envelope's CloudEvents attributes are ~1.8 KB a
    message once decoded, more than most events, and nothing reads them after the offer (a
    service that holds 60,000 events at 10,000 domains held ~100 MB of them)."""

    def __init__(self) -> None:
        self._items: dict[tuple[Family, tuple[str, ...]], E] = {}

    def offer(self, envelope: Envelope[E]) -> bool:
        """Store the envelope's event if it is newer than what is known for its key; True if it
        was."""
        event = envelope.event
        slot = (event.family, event.key())
        known = self._items.get(slot)
        if known is not None and known.generation >= event.generation:
            return False
        self._items[slot] = event
        return True

    def get(self, family: Family, key: tuple[str, ...]) -> E | None:
        return self._items.get((family, key))

    def live(self, family: Family | None = None) -> Iterator[E]:
        """Current events that are not tombstones."""
        for (fam, _), event in self._items.items():
            if (family is None or fam == family) and type(event) not in TOMBSTONES:
                yield event

    def __len__(self) -> int:
        return len(self._items)
