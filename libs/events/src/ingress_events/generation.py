"""Generations for producers: strictly increasing per key, also across restarts and fail-overs."""

from __future__ import annotations

import time
from collections.abc import Callable


def _wall_clock_us() -> int:
    return time.time_ns() // 1000


class GenerationClock:
    """``next(last)`` = max(last + 1, wall-clock microseconds).

    Wall-clock microseconds keep a restarted producer (which may not know ``last``) above its
    predecessor; ``last + 1`` keeps the order when the clock stands still or steps back.
    """

    def __init__(self, now_us: Callable[[], int] = _wall_clock_us) -> None:
        self._now_us = now_us

    def next(self, last: int | None = None) -> int:
        return max((last or 0) + 1, self._now_us())
