"""Stopping background tasks for good."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Any

import structlog

STOP_GRACE_SECONDS = 10.0
"""How long a stop waits for cancelled tasks before cancelling them again (a clean-up may wait
out one fetch and one flush)."""


async def cancel_and_wait(
    tasks: Sequence[asyncio.Task[Any]],
    log: Any = None,
    *,
    grace_seconds: float = STOP_GRACE_SECONDS,
    attempts: int = 3,
) -> set[asyncio.Task[Any]]:
    """Cancel ``tasks`` and wait until they end; returns the ones still running.

    One ``cancel()`` is not always enough on Python 3.11: ``asyncio.wait_for`` loses a
    cancellation that arrives as its inner awaitable completes (python/cpython#86296, fixed in
    3.12), and a loop around such a call then runs on; code that catches CancelledError does
    the same. A stop that awaited such a task once hung for good (seen in the dns-writer
    contract tests and in the watcher's leader election). A task still running
    ``grace_seconds`` after its cancellation is logged and cancelled again; after ``attempts``
    rounds it is given up on instead of hanging the shutdown.
    """
    log = log or structlog.stdlib.get_logger("ingress_runtime.tasks")
    pending = {task for task in tasks if not task.done()}
    for attempt in range(1, attempts + 1):
        if not pending:
            break
        for task in pending:
            task.cancel()
        _, pending = await asyncio.wait(pending, timeout=grace_seconds)
        if pending:
            log.error(
                "tasks still running after cancellation; cancelling again",
                tasks=sorted(task.get_name() for task in pending),
                attempt=attempt,
            )
    for task in tasks:
        if task.done() and not task.cancelled() and task.exception() is not None:
            log.error("task had failed", task=task.get_name(), error=repr(task.exception()))
    return pending
