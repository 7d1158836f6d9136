"""Stopping a background task for good.

``task.cancel()`` then ``await task`` is the usual way, but on Python 3.11 a
cancellation can be lost: ``asyncio.wait_for`` (which redis-py and others call around
every socket read and write) returns the inner result when it completes in the same
loop turn as the cancel, and the task runs on as if never cancelled (fixed in 3.12,
where ``wait_for`` is built on ``asyncio.timeout``). A loop that has lost its cancel
would keep a process's shutdown waiting for ever; so the cancel is repeated until the
task has ended.
"""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any, Final

__all__ = ["cancel_and_wait"]

#: How long to wait for a cancelled task before cancelling it again.
RECANCEL_AFTER_S: Final = 0.5


async def cancel_and_wait(task: asyncio.Task[Any], *, every_s: float = RECANCEL_AFTER_S) -> None:
    """Cancel ``task`` (again every ``every_s`` until it has ended) and wait for it.

    Its CancelledError is absorbed; any other exception it ended with is raised here,
    as ``await task`` would. A cancellation of the caller itself still propagates.
    """
    while not task.done():
        task.cancel()
        await asyncio.wait([task], timeout=every_s)
    with contextlib.suppress(asyncio.CancelledError):
        await task
