"""cancel_and_wait ends a task that lost its first cancellation (as Python 3.11's
asyncio.wait_for can lose one under redis-py), where cancel-then-await waits for ever."""

from __future__ import annotations

import asyncio
import contextlib

import pytest

from inventory.ops.tasks import cancel_and_wait


async def _loop_that_loses_one_cancel(turns: list[int]) -> None:
    lost = False
    while True:
        try:
            await asyncio.sleep(0.01)
        except asyncio.CancelledError:
            if lost:
                raise
            lost = True  # what a swallowed cancellation looks like from above
        turns.append(1)


async def test_a_lost_cancellation_does_not_keep_the_task_running() -> None:
    turns: list[int] = []
    task = asyncio.create_task(_loop_that_loses_one_cancel(turns))
    await asyncio.sleep(0.05)
    await asyncio.wait_for(cancel_and_wait(task, every_s=0.05), timeout=5)
    assert task.cancelled()


async def test_cancel_then_await_alone_would_wait_for_ever() -> None:
    """The reason for the helper: the usual way does not end such a task."""
    turns: list[int] = []
    task = asyncio.create_task(_loop_that_loses_one_cancel(turns))
    await asyncio.sleep(0.05)
    task.cancel()
    done, _ = await asyncio.wait([task], timeout=0.3)
    assert not done
    assert turns
    await cancel_and_wait(task)


async def test_an_error_the_task_ended_with_is_raised() -> None:
    async def failing() -> None:
        try:
            await asyncio.sleep(10)
        finally:
            raise ValueError("a bug on the way out")

    task = asyncio.create_task(failing())
    await asyncio.sleep(0)
    with pytest.raises(ValueError, match="on the way out"):
        await cancel_and_wait(task)


async def test_a_finished_task_is_left_as_it_is() -> None:
    task = asyncio.create_task(asyncio.sleep(0))
    await task
    await cancel_and_wait(task)
    assert task.done()
    assert not task.cancelled()


async def test_the_callers_own_cancellation_propagates() -> None:
    stubborn_release = asyncio.Event()

    async def stubborn() -> None:
        while not stubborn_release.is_set():
            with contextlib.suppress(asyncio.CancelledError):
                await asyncio.sleep(0.01)

    task = asyncio.create_task(stubborn())
    waiter = asyncio.create_task(cancel_and_wait(task, every_s=0.05))
    await asyncio.sleep(0.1)
    waiter.cancel()
    with pytest.raises(asyncio.CancelledError):
        await waiter
    stubborn_release.set()
    await task
