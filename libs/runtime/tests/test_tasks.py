"""cancel_and_wait stops a task even when a cancellation is lost, and never hangs a stop."""

from __future__ import annotations

import asyncio
import contextlib

import pytest
import structlog
from ingress_runtime import cancel_and_wait

pytestmark = pytest.mark.unit

LOG = structlog.get_logger("test")


async def test_a_task_that_loses_a_cancellation_is_still_stopped() -> None:
    swallowed = 0

    async def loop_that_loses_one_cancel() -> None:
        # What asyncio.wait_for does on 3.11 when the cancel races its result: the
        # CancelledError never reaches the loop, which goes on.
        nonlocal swallowed
        while True:
            try:
                await asyncio.sleep(0.05)
            except asyncio.CancelledError:
                if swallowed:
                    raise
                swallowed += 1

    obedient = asyncio.create_task(asyncio.sleep(3600))
    task = asyncio.create_task(loop_that_loses_one_cancel())
    await asyncio.sleep(0.01)
    async with asyncio.timeout(5):
        left = await cancel_and_wait([task, obedient], LOG, grace_seconds=0.1)
    assert left == set() and swallowed == 1
    assert task.cancelled() and obedient.cancelled()


async def test_a_task_that_never_ends_is_given_up_on() -> None:
    released = asyncio.Event()
    forever = asyncio.create_task(_ignore_cancellation(released))
    await asyncio.sleep(0)
    async with asyncio.timeout(5):
        left = await cancel_and_wait([forever], grace_seconds=0.05, attempts=2)
    assert left == {forever} and not forever.done()
    released.set()
    await forever


async def test_finished_and_failed_tasks_are_fine() -> None:
    async def fails() -> None:
        raise RuntimeError("boom")

    done = asyncio.create_task(asyncio.sleep(0))
    failed = asyncio.create_task(fails())
    await asyncio.sleep(0.01)
    assert await cancel_and_wait([done, failed]) == set()
    assert done.done() and isinstance(failed.exception(), RuntimeError)


async def _ignore_cancellation(released: asyncio.Event) -> None:
    while not released.is_set():
        with contextlib.suppress(asyncio.CancelledError):
            await released.wait()
