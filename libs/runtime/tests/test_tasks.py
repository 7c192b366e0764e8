"""cancel_and_wait stops a task even when one cancellation is lost."""

from __future__ import annotations

import asyncio

import pytest
from ingress_runtime import cancel_and_wait

pytestmark = pytest.mark.unit


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

    task = asyncio.create_task(loop_that_loses_one_cancel())
    await asyncio.sleep(0.01)
    await asyncio.wait_for(cancel_and_wait([task], retry_seconds=0.1), timeout=5)
    assert task.cancelled() and swallowed == 1


async def test_finished_and_failed_tasks_are_fine() -> None:
    async def fails() -> None:
        raise RuntimeError("boom")

    done = asyncio.create_task(asyncio.sleep(0))
    failed = asyncio.create_task(fails())
    await asyncio.sleep(0.01)
    await cancel_and_wait([done, failed])
    assert done.done() and isinstance(failed.exception(), RuntimeError)
