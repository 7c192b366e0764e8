"""What a source of objects (the API server, a manifest directory) offers the app."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Protocol

from ..domain.store import ObjectStore

Notify = Callable[[bool], Awaitable[None]]
"""Called after the source changed the store; True when it installed complete lists (a sync),
False for single watch events."""


class ObjectSource(Protocol):
    async def run(self, store: ObjectStore, notify: Notify) -> None:
        """Fill ``store`` with a complete initial sync, notify, then keep it current until
        cancelled."""
        ...
