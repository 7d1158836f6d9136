"""The live inventory in Redis: counts, holds, patient rules and the outbox streams.

Everything here talks to Redis, and every change goes through one of the Lua scripts in
``lua/`` (loaded by :mod:`~inventory.store.scripts`):

* :mod:`~inventory.store.slot_store`: ``SlotStore``, the typed async API over the scripts.
* :mod:`~inventory.store.keys`: the only place that builds key names.
* :mod:`~inventory.store.connection`: connecting to a standalone Redis, a Cluster or Sentinel.
* :mod:`~inventory.store.autopipeline`: one write per event-loop iteration for script calls.
* :mod:`~inventory.store.expirer`: releasing holds whose time ran out.
* :mod:`~inventory.store.backlog`: how far the outbox streams are behind.
* :mod:`~inventory.store.version`: the oldest Redis the service runs on.

Comparing the store with the durable record, fencing and rebuilding live in
:mod:`inventory.recovery`.
"""

from __future__ import annotations
