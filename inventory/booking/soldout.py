"""Slots this process saw sold out, refused for a moment without asking anyone.

After a release sells out, the crowd keeps asking to reserve slots that have nothing
left; each such reserve used to cost a Redis script call and, for a patient the process
had not seen, a Postgres look-up and a rate-limit call of its own, only to learn
``sold_out``. The process remembers what Redis told it instead, for as long as it
caches a schedule's availability (``INVENTORY_AVAILABILITY_CACHE_S``, 0.5 s):

- the reserve script's own ``sold_out`` refusal (it reclaims due holds of the slot
  first, so that answer is the truth at that instant);
- a schedule's availability read in which a slot has nothing remaining, held or waiting
  (every unit booked: only a cancellation can free one, and the memory's lifetime
  bounds how late this process learns of it). Units held or waiting are not enough:
  they come back by a deadline the counts do not show.

A slot seen with units again, or one whose hold or booking this process just released,
is forgotten at once; a unit freed elsewhere (another process, the expirer, added
capacity) is seen when the memory runs out. So a ``sold_out`` answered from memory is
at most that lifetime stale, and only ever for a slot that was sold out.
"""

from __future__ import annotations

import time
from collections.abc import Callable

#: Past this many remembered slots the memory starts over (a bound, not a working size:
#: a release day sells out far fewer slots per process).
MAX_SLOTS = 100_000


class SoldOutSlots:
    """slot id -> (until, tag) of the slots seen sold out."""

    def __init__(self, ttl_s: float, *, clock: Callable[[], float] = time.monotonic) -> None:
        self.ttl_s = ttl_s
        self._clock = clock
        self._slots: dict[str, tuple[float, str]] = {}

    def saw_sold_out(self, slot_id: str, tag: str) -> None:
        """Redis said ``slot_id`` (of department-day ``tag``) is sold out, just now."""
        if self.ttl_s <= 0:
            return
        if len(self._slots) >= MAX_SLOTS:
            self._slots.clear()
        self._slots[slot_id] = (self._clock() + self.ttl_s, tag)

    def saw_units(self, slot_id: str) -> None:
        """Redis said ``slot_id`` has units (or may soon): forget it."""
        self._slots.pop(slot_id, None)

    def saw_counts(
        self, slot_id: str, tag: str, *, remaining: int, held: int, waiting: int
    ) -> None:
        """A slot's counts as an availability read found them."""
        if remaining == 0 and held == 0 and waiting == 0:
            self.saw_sold_out(slot_id, tag)
        else:
            self.saw_units(slot_id)

    def tag_if_sold_out(self, slot_id: str) -> str | None:
        """The slot's tag when it was seen sold out within the lifetime, else None."""
        found = self._slots.get(slot_id)
        if found is None:
            return None
        if found[0] <= self._clock():
            del self._slots[slot_id]
            return None
        return found[1]
