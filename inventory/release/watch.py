"""One watcher per release and process: it moves the room forward, reads the release's
fields once per interval for every client this process serves, and wakes only the
clients whose answer changed.

A watcher calls ``room_advance`` (the room's every step is driven by the time passed
in, so any number of processes may do so; none is needed for another's admissions) and
then reads the release's fields (one HMGET), a few times a second once T0 is near.
Each client following a ticket (a Server-Sent Events stream or a long-poll) is a
:class:`Waiter` filed by the ticket's place in the queue, so a read that moved the
admitted-through counter from a to b wakes the waiters placed in (a, b] and nobody
else: their turn came, and they read their own ticket once (its admission token is in
Redis). Every other answer follows from the shared fields and the waiter's place:

- the draw: the watcher reads the drawn order once (in chunks) and places every waiter
  it serves (a late joiner is at drawn + its arrival number);
- sold out: one state change answers every waiter once: a stream parked in its wait
  is sent its final answer from the watcher's one pass (its ``on_sold_out``), any
  other client is woken to answer itself;
- a waiting ticket's place (people ahead) is sent at most once a second, and the
  watcher wakes at most :data:`PLACE_RATE` waiters a second for it, so a crowd's place
  updates never crowd out the answers that matter; the draw's places go out from
  :data:`PLACES_AFTER_DRAW_S` after it: the first second belongs to the admitted and
  their reserves (20,000 place updates at T0 delayed the first admissions by 0.3 s),
  and a release that sells out in it sends its crowd one answer, the final one.

So the crowd's status costs Redis one small read per release and interval, and the
process one wake-up per client per answer it sends, not one per client per read.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import heapq
import itertools
import time
from collections.abc import Callable, Iterable
from typing import Final

import structlog

from inventory.errors import InventoryError
from inventory.ops.tasks import cancel_and_wait
from inventory.release.rooms import RoomSnapshot, RoomStore, TicketStatus

log = structlog.get_logger(__name__)

#: How often a watcher steps and reads once T0 has passed (and shortly before it).
ACTIVE_INTERVAL_S: Final = 0.1
#: How often before that (only the join count changes).
QUIET_INTERVAL_S: Final = 1.0
#: A watcher without clients for this long stops.
IDLE_S: Final = 30.0
#: A waiting stream is sent its new place at most this often.
PLACE_EVERY_S: Final = 1.0
#: At most this many waiters a second are woken to be told their new place (the
#: draw's first places included); a larger crowd hears of its place less often.
PLACE_RATE: Final = 2_000
#: The draw's places are sent from this long after it (see the module's docstring).
PLACES_AFTER_DRAW_S: Final = 1.5
#: Handlers of streams the sell-out answered are woken to end this many at a time,
#: one batch every END_PAUSE_S (4,000 a second: 20,000 in 5 s).
END_BATCH: Final = 200
END_PAUSE_S: Final = 0.05
#: At most this many room_advance steps per refresh while the draw goes on in batches.
DRAW_STEPS: Final = 20
#: A watcher remembers at most this many tickets read by this process (see
#: :meth:`RoomWatch.known`); the oldest is forgotten first. About 500 bytes each: 25 MB
#: at most per release watched (a watcher and what it remembers go 30 s after its last
#: client).
KNOWN_TICKETS: Final = 50_000

_sequence = itertools.count()
#: A room's states in the order it passes through them.
_STAGE: Final = {"open": 0, "admitting": 1, "sold_out": 2}


class Waiter:
    """One client following one ticket through this process's watcher."""

    __slots__ = (
        "_event",
        "answered",
        "closed",
        "filed",
        "late",
        "needs_read",
        "on_sold_out",
        "order",
        "parked",
        "position",
        "queued",
        "stream",
        "ticket_id",
        "turn",
    )

    def __init__(self, status: TicketStatus, *, stream: bool) -> None:
        self.ticket_id = status.ticket_id
        #: The ticket's place in the queue; 0 until drawn.
        self.position = status.position
        self.late = status.late
        #: A stream wants its place as it moves; a long-poll only a new version.
        self.stream = stream
        #: The admitted-through counter reached its place: its token is in Redis.
        self.turn = False
        #: Its answer cannot follow from the shared fields (it holds a token, or it
        #: missed the draw's placing): read its ticket once.
        self.needs_read = False
        self.closed = False
        #: Whether it waits in the watcher's queue of place updates.
        self.queued = False
        #: Whether it is in the watcher's heap of placed waiters.
        self.filed = False
        self.order = next(_sequence)
        #: Its client waits in :meth:`wait` now (nothing of it runs).
        self.parked = False
        #: Set by a stream: sends the sell-out's answer at once, from the watcher's
        #: pass, and closes its connection (True when it did); the client, woken
        #: after, only ends its handler.
        self.on_sold_out: Callable[[RoomSnapshot], bool] | None = None
        #: The sell-out's answer went out through ``on_sold_out``.
        self.answered = False
        self._event = asyncio.Event()

    def wake(self) -> None:
        self._event.set()

    async def wait(self, timeout_s: float) -> bool:
        """Wait until woken; False on timeout. Clears the wake-up."""
        if not self._event.is_set():
            self.parked = True
            try:
                async with asyncio.timeout(timeout_s):
                    await self._event.wait()
            except TimeoutError:
                return False
            finally:
                self.parked = False
        self._event.clear()
        return True

    def follow(self, status: TicketStatus, snap: RoomSnapshot) -> TicketStatus | None:
        """The ticket's status under ``snap`` when it follows from the shared fields
        and this waiter's place; None when it must be read from Redis."""
        if self.turn or self.needs_read:
            return None
        return follow_status(status, snap, self.position)


def follow_status(status: TicketStatus, snap: RoomSnapshot, position: int) -> TicketStatus | None:
    """``status`` (read from Redis earlier) brought up to ``snap``, for a ticket at
    ``position`` in the queue, when that follows from the release's shared fields; None
    when the ticket must be read again: it holds or held a token (its state is its
    own), it has no place while the room is drawn, or its turn came (its token)."""
    if status.token_state:
        return None
    if snap.state == "open":
        # Before the draw only the join count moves: nothing of this ticket changes.
        return status if position == 0 else None
    if position == 0 or snap.admitted >= position:
        return None
    return TicketStatus(
        status.release_id,
        status.ticket_id,
        status.patient_id,
        snap.state,
        position,
        snap.admitted,
        status.token,
        status.token_expiry_ms,
        status.token_state,
        snap.drawn,
        status.t0_ms,
        snap.sold_out_ms,
        snap.drawn_ms,
        status.joined_ms,
        status.late,
    )


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
        self._last_used = time.monotonic()
        self._task: asyncio.Task[None] | None = None
        #: Ends the handlers of the streams the sell-out answered (_end_answered).
        self._ending: asyncio.Task[None] | None = None
        #: Waiters not placed yet (joined before T0, room not drawn), by ticket.
        self._undrawn: dict[str, list[Waiter]] = {}
        #: Placed waiters still waiting for their turn, by place.
        self._placed: list[tuple[int, int, Waiter]] = []
        #: Waiters read again on every change (they hold a token: it may lapse).
        self._every: set[Waiter] = set()
        #: Waiters due their new place, woken at most PLACE_RATE a second.
        self._places: collections.deque[Waiter] = collections.deque()
        self._place_round_at = 0.0
        #: No place is sent before this (time.monotonic()): the draw's grace.
        self._places_from = 0.0
        self._place_admitted = 0
        self._place_credit = 0.0
        self._credit_at = time.monotonic()
        #: Wake-ups by cause, for tests and the benchmark (never labels of a metric).
        self.woken: collections.Counter[str] = collections.Counter()
        #: Tickets this process read from Redis, with the account that read them.
        self._known: dict[str, tuple[str, TicketStatus]] = {}

    def start(self) -> None:
        """Start the watcher's loop (once)."""
        if self._task is None:
            self._task = asyncio.create_task(self._run(), name=f"room-watch:{self.release_id}")

    async def stop(self) -> None:
        """Stop the loop, and end at once the handlers still to be ended."""
        if self._task is not None:
            await cancel_and_wait(self._task)
        if self._ending is not None and not self._ending.done():
            await cancel_and_wait(self._ending)

    @property
    def stopped(self) -> bool:
        return self._task is not None and self._task.done()

    def touch(self) -> None:
        """A client used the watcher now (it stays up while clients come)."""
        self._last_used = time.monotonic()

    def now_ms(self) -> int:
        """The store's clock (a test's), else this machine's."""
        return self.rooms.store.script_now() or int(time.time() * 1000)

    # -- clients -------------------------------------------------------------------

    def known(self, ticket_id: str, account_id: str) -> TicketStatus | None:
        """``ticket_id``'s status now, without a call to Redis, when this process read
        the ticket for ``account_id`` before and its answer follows from the shared
        fields since (:func:`follow_status`): a client that polls its ticket, or a
        stream that reconnects, then costs no more than a bare request. None otherwise
        (the caller reads it, and its account is checked there)."""
        entry = self._known.get(ticket_id)
        snap = self.snapshot
        if entry is None or entry[0] != account_id or snap is None:
            return None
        status = entry[1]
        stage, read_at = _STAGE.get(snap.state), _STAGE.get(status.state)
        if stage is None or read_at is None or stage < read_at or snap.admitted < status.admitted:
            return None  # the ticket was read after the watcher's last read
        return follow_status(status, snap, status.position)

    def remember(self, account_id: str, status: TicketStatus) -> None:
        """``status`` was just read from Redis for ``account_id``: keep it for
        :meth:`known` (bounded: the oldest is forgotten first)."""
        known = self._known
        known.pop(status.ticket_id, None)
        if len(known) >= KNOWN_TICKETS:
            del known[next(iter(known))]
        known[status.ticket_id] = (account_id, status)

    def subscribe(self, status: TicketStatus, *, stream: bool) -> Waiter:
        """File a client of ``status``'s ticket (its status just read from Redis)."""
        waiter = Waiter(status, stream=stream)
        self.clients += 1
        self.touch()
        self.place(waiter, status)
        return waiter

    def unsubscribe(self, waiter: Waiter) -> None:
        """The client is gone (its place in the heap is dropped lazily)."""
        if waiter.closed:
            return
        waiter.closed = True
        self.clients -= 1
        self.touch()
        self._every.discard(waiter)
        same = self._undrawn.get(waiter.ticket_id)
        if same is not None:
            with contextlib.suppress(ValueError):
                same.remove(waiter)
            if not same:
                del self._undrawn[waiter.ticket_id]

    def place(self, waiter: Waiter, status: TicketStatus) -> None:
        """File ``waiter`` again after its ticket was read (``status``)."""
        waiter.turn = waiter.needs_read = False
        self._every.discard(waiter)
        waiter.position = status.position
        waiter.late = status.late
        snap = self.snapshot
        if snap is not None and snap.state == "sold_out" and status.state != "sold_out":
            # Sold out since it was read: the sell-out's wake-up went by.
            waiter.needs_read = True
            waiter.wake()
        elif status.token_state:
            # It holds (or held) a token: read again whenever the release changes.
            self._every.add(waiter)
        elif status.state == "sold_out":
            pass  # final: nothing wakes it again
        elif waiter.position == 0:
            if snap is not None and snap.state != "open":
                # Drawn since it was read: it missed the watcher's placing.
                waiter.needs_read = True
                waiter.wake()
            else:
                self._undrawn.setdefault(waiter.ticket_id, []).append(waiter)
        elif snap is not None and snap.admitted >= waiter.position:
            waiter.turn = True
            waiter.wake()
        else:
            self._file(waiter)

    def _file(self, waiter: Waiter) -> None:
        if not waiter.filed:
            waiter.filed = True
            heapq.heappush(self._placed, (waiter.position, waiter.order, waiter))

    async def wait_change(self, waiter: Waiter, timeout_s: float) -> bool:
        """Wait until the watcher wakes ``waiter``; False on timeout."""
        self.touch()
        return await waiter.wait(timeout_s)

    # -- the loop --------------------------------------------------------------------

    async def refresh(self) -> RoomSnapshot | None:
        """Step the room (if driving), read its fields once and wake the waiters whose
        answer changed."""
        if self.drive:
            snap = self.snapshot
            if snap is None or (snap.state != "sold_out" and self.now_ms() >= snap.t0_ms - 1_000):
                with contextlib.suppress(InventoryError):
                    for _ in range(DRAW_STEPS):
                        step = await self.rooms.advance(self.release_id)
                        if step.state != "open" or step.drawn == 0:
                            break
        fresh = await self.rooms.snapshot(self.release_id)
        before = self.snapshot
        if fresh is None or (
            before is not None
            and (fresh.seed_hash != before.seed_hash or fresh.admitted < before.admitted)
        ):
            # The room is gone, or is not the one read before (a rebuild put it back):
            # what this process remembers of its tickets may no longer hold.
            self._known.clear()
        if fresh != before:
            self.snapshot = fresh
            self.version += 1
            if fresh is not None:
                await self._changed(before, fresh)
        self._pump_places()
        return fresh

    async def _changed(self, before: RoomSnapshot | None, fresh: RoomSnapshot) -> None:
        # In order of what matters: turns first, then final answers, then places.
        if fresh.state != "open" and self._undrawn:
            await self._place_drawn(fresh)
        while self._placed and self._placed[0][0] <= fresh.admitted:
            _, _, waiter = heapq.heappop(self._placed)
            waiter.filed = False
            if not waiter.closed:
                waiter.turn = True
                self._wake(waiter, "turn")
        for waiter in list(self._every):
            self._wake(waiter, "token")
        if fresh.state == "sold_out":
            answered = self._sell_out(fresh)
            if answered:
                self._ending = asyncio.create_task(
                    self._end_answered(answered), name=f"room-ends:{self.release_id}"
                )

    async def _place_drawn(self, snap: RoomSnapshot) -> None:
        """The draw is done: place every waiter that was waiting for it."""
        early = {t: ws for t, ws in self._undrawn.items() if any(w.late == 0 for w in ws)}
        rank: dict[str, int] = {}
        if early:
            try:
                order = await self.rooms.drawn_order(self.release_id)
            except InventoryError:
                order = []
            rank = {t: i for i, t in enumerate(order, start=1) if t in early}
        for ticket, waiters in self._undrawn.items():
            for waiter in waiters:
                if waiter.closed:
                    continue
                position = snap.drawn + waiter.late if waiter.late else rank.get(ticket, 0)
                if position == 0:
                    waiter.needs_read = True  # not in the order read: ask Redis once
                    self._wake(waiter, "read")
                    continue
                waiter.position = position
                self._file(waiter)
                self._queue_place(waiter)
        self._undrawn.clear()
        # The draw's places are the first round of place updates, sent after its grace.
        self._place_round_at = time.monotonic()
        self._places_from = self._place_round_at + PLACES_AFTER_DRAW_S
        self._place_admitted = snap.admitted

    def _sell_out(self, snap: RoomSnapshot) -> list[Waiter]:
        """One state change, every waiting client's final answer: a stream parked in
        its wait is sent its answer in this pass (in queue order: its connection
        then closes, its file is free at once), every other client is woken to answer
        itself. Returns the answered, whose handlers are left to end."""
        answered: list[Waiter] = []
        for _, _, waiter in sorted(self._placed):
            waiter.filed = False
            if not waiter.closed:
                self._answer_sold_out(waiter, snap, answered)
        self._placed.clear()
        for waiters in self._undrawn.values():
            for waiter in waiters:
                self._answer_sold_out(waiter, snap, answered)
        self._undrawn.clear()
        self._places.clear()
        return answered

    def _answer_sold_out(self, waiter: Waiter, snap: RoomSnapshot, answered: list[Waiter]) -> None:
        if waiter.parked and waiter.on_sold_out is not None and waiter.on_sold_out(snap):
            waiter.answered = True
            self.woken["answered"] += 1
            answered.append(waiter)
        else:
            self._wake(waiter, "sold_out")

    async def _end_answered(self, answered: list[Waiter]) -> None:
        """Wake the answered clients' handlers to end, :data:`END_BATCH` at a time every
        :data:`END_PAUSE_S`: their patients have their answers and their connections
        are closed, so ending them is the least urgent work there is. Woken at once,
        20,000 handlers held the event loop for a second, and a patient whose stream
        had found the process at its open-file limit, taken as soon as the pass freed
        the files, waited behind them for its answer."""
        woken = 0
        try:
            while woken < len(answered):
                for waiter in answered[woken : woken + END_BATCH]:
                    waiter.wake()
                woken += END_BATCH
                await asyncio.sleep(END_PAUSE_S)
        finally:
            for waiter in answered[woken:]:  # stopped early: the rest end now
                waiter.wake()

    def _wake(self, waiter: Waiter, cause: str) -> None:
        self.woken[cause] += 1
        waiter.wake()

    def _queue_place(self, waiter: Waiter) -> None:
        if not waiter.queued:
            waiter.queued = True
            self._places.append(waiter)

    def _pump_places(self) -> None:
        """Queue a round of place updates at most once a second (less often for a crowd
        larger than PLACE_RATE), and wake the queue's head within the rate."""
        now = time.monotonic()
        # The credit of one active interval at most: a round goes out in even steps,
        # never as a burst that would hold up a turn or the sell-out behind it.
        self._place_credit = min(
            PLACE_RATE * ACTIVE_INTERVAL_S,
            self._place_credit + (now - self._credit_at) * PLACE_RATE,
        )
        self._credit_at = now
        if now < self._places_from:
            return
        snap = self.snapshot
        if (
            snap is not None
            and snap.state == "admitting"
            and snap.admitted != self._place_admitted
            and not self._places
            and now - self._place_round_at >= PLACE_EVERY_S
        ):
            self._place_round_at = now
            self._place_admitted = snap.admitted
            for _, _, waiter in self._placed:
                if waiter.stream and not waiter.closed:
                    self._queue_place(waiter)
        while self._places and self._place_credit >= 1:
            waiter = self._places.popleft()
            waiter.queued = False
            if waiter.closed or waiter.turn or waiter.needs_read:
                continue  # gone, or woken for a read already
            self._place_credit -= 1
            self._wake(waiter, "place")

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
            now = self.now_ms()
            near = now >= snap.t0_ms - 2_000
            busy = near and snap.state != "sold_out"
            pause = ACTIVE_INTERVAL_S if busy or self._places else QUIET_INTERVAL_S
            if snap.state == "open" and now < snap.t0_ms:
                # Wake at T0 itself: the draw and the first admissions start on time.
                pause = min(pause, (snap.t0_ms - now) / 1000 + 0.001)
            await asyncio.sleep(pause)


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

    def running(self, release_id: str) -> RoomWatch | None:
        """The release's watcher when one runs here (never starts one)."""
        watch = self._by_release.get(release_id)
        return None if watch is None or watch.stopped else watch

    def all(self) -> Iterable[RoomWatch]:
        """The watchers now running."""
        return list(self._by_release.values())

    async def close(self) -> None:
        """Stop every watcher."""
        for watch in list(self._by_release.values()):
            await watch.stop()
        self._by_release.clear()
