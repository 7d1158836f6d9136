"""Release day: the waiting room of a queued release (docs/release-day.md).

* :mod:`~inventory.release.draw`: the draw's order and its verification, pure.
* :mod:`~inventory.release.rooms`: ``RoomStore``, the room scripts typed in Python.
* :mod:`~inventory.release.service`: ``WaitingRooms``, what the API and the worker call.
* :mod:`~inventory.release.watch`: one watcher per release and process that moves the
  room forward and wakes the clients streaming its statuses.
"""

from __future__ import annotations
