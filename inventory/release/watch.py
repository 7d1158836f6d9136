"""One watcher per release and process: it moves the room forward and shares what it
reads with every client of the release that this process streams to.

A watcher calls ``room_advance`` (the room's every step is driven by the time passed
in, so any number of processes may do so; none is needed for another's admissions) and
then reads the release's fields, a few times a second once T0 is near, and wakes the
waiting clients when they changed. A client then reads its own ticket again only when
its own answer may have changed (its turn came, the draw placed it); otherwise its place
follows from the shared fields. So the crowd's status costs Redis one small read per
release and interval, not one per client.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from typing import Final

import structlog

from inventory.errors import InventoryError
from inventory.release.rooms import RoomSnapshot, RoomStore

log = structlog.get_logger(__name__)

#: How often a watcher steps and reads once T0 has passed (and shortly before it).
ACTIVE_INTERVAL_S: Final = 0.1
#: How often before that (only the join count changes).
QUIET_INTERVAL_S: Final = 1.0
#: A watcher without clients for this long stops.
IDLE_S: Final = 30.0


class RoomWatch:
    """A release's watcher in this process."""

    def __init__(self, rooms: RoomStore, release_id: str, *, drive: bool = True) -> None:
        self.rooms = rooms
        self.release_id = release_id
        #: Whether this watcher calls room_advance (the API's do; a read-only one not).
        self.drive = drive
        self.snapshot: RoomSnapshot | None = None
        #: Bumped on every change of the snapshot.
        self.version = 0
        self.clients = 0
        self._changed = asyncio.Event()
        self._last_used = time.monotonic()
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        """Start the watcher's loop (once)."""
        if self._task is None:
            self._task = asyncio.create_task(self._run(), name=f"room-watch:{self.release_id}")

    async def stop(self) -> None:
        """Stop the loop."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    @property
    def stopped(self) -> bool:
        return self._task is not None and self._task.done()

    def touch(self) -> None:
        """A client used the watcher now (it stays up while clients come)."""
        self._last_used = time.monotonic()

    async def wait_change(self, version: int, timeout_s: float) -> bool:
        """Wait until the snapshot's version differs from ``version``; False on timeout."""
        self.touch()
        if self.version != version:
            return True
        event = self._changed
        try:
            await asyncio.wait_for(event.wait(), timeout_s)
        except TimeoutError:
            return False
        return True

    def now_ms(self) -> int:
        """The store's clock (a test's), else this machine's."""
        return self.rooms.store.script_now() or int(time.time() * 1000)

    async def refresh(self) -> RoomSnapshot | None:
        """Step the room (if driving) and read its fields once; wakes the clients."""
        if self.drive:
            snap = self.snapshot
            if snap is None or (snap.state != "sold_out" and self.now_ms() >= snap.t0_ms - 1_000):
                with contextlib.suppress(InventoryError):
                    await self.rooms.advance(self.release_id)
        fresh = await self.rooms.snapshot(self.release_id)
        if fresh != self.snapshot:
            self.snapshot = fresh
            self.version += 1
            event, self._changed = self._changed, asyncio.Event()
            event.set()
        return fresh

    async def _run(self) -> None:
        while True:
            try:
                snap = await self.refresh()
            except InventoryError as error:
                log.warning("room_watch_failed", release=self.release_id, error=error.code)
                snap = self.snapshot
            idle = self.clients == 0 and time.monotonic() - self._last_used > IDLE_S
            if snap is None or idle:
                return
            near = self.now_ms() >= snap.t0_ms - 2_000
            await asyncio.sleep(
                ACTIVE_INTERVAL_S if near and snap.state != "sold_out" else QUIET_INTERVAL_S
            )


class Watchers:
    """This process's watchers, one per release it serves."""

    def __init__(self, rooms: RoomStore, *, drive: bool = True) -> None:
        self.rooms = rooms
        self.drive = drive
        self._by_release: dict[str, RoomWatch] = {}

    async def get(self, release_id: str) -> RoomWatch:
        """The release's watcher, started and with a first snapshot."""
        watch = self._by_release.get(release_id)
        if watch is None or watch.stopped:
            watch = RoomWatch(self.rooms, release_id, drive=self.drive)
            self._by_release[release_id] = watch
            await watch.refresh()
            watch.start()
        watch.touch()
        return watch

    async def close(self) -> None:
        """Stop every watcher."""
        for watch in list(self._by_release.values()):
            await watch.stop()
        self._by_release.clear()
