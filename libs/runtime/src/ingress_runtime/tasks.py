"""Stopping background tasks for good."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from typing import Any

log = logging.getLogger("ingress_runtime.tasks")


async def cancel_and_wait(
    tasks: Sequence[asyncio.Task[Any]], *, retry_seconds: float = 1.0
) -> None:
    """Cancel ``tasks`` and wait until each is done, cancelling again while one is not.

    One ``cancel()`` is not always enough on Python 3.11: ``asyncio.wait_for`` loses a
    cancellation that arrives as its inner awaitable completes (python/cpython#86296, fixed in
    3.12), and a loop around such a call then runs on. A stop that awaited such a task once
    hung for good: seen in the dns-writer contract tests, where a task dump showed the verify
    loop "cancelling" and asleep again."""
    pending = [t for t in tasks if not t.done()]
    while pending:
        for task in pending:
            task.cancel()
        await asyncio.wait(pending, timeout=retry_seconds)
        pending = [t for t in pending if not t.done()]
    for task in tasks:
        if not task.cancelled() and task.exception() is not None:
            log.warning("task ended with an error before it was stopped", exc_info=task.exception())
