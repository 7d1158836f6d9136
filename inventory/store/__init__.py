"""The live inventory in Redis: counts, holds, patient rules and the outbox streams.

Everything here talks to Redis, and every change goes through one of the Lua scripts in
``lua/`` (loaded by :mod:`~inventory.store.scripts`):

* :mod:`~inventory.store.slot_store`: ``SlotStore``, the typed async API over the scripts.
* :mod:`~inventory.store.keys`: the only place that builds key names.
* :mod:`~inventory.store.connection`: connecting to a standalone Redis, a Cluster or Sentinel.
* :mod:`~inventory.store.autopipeline`: one write per event-loop iteration for script calls.
* :mod:`~inventory.store.fence`: fencing tags that a restarted Redis may have lost writes of.
* :mod:`~inventory.store.expirer`: releasing holds whose time ran out.
* :mod:`~inventory.store.rebuild`: rebuilding a fenced tag from the durable record.
* :mod:`~inventory.store.backlog`: how far the outbox streams are behind.
"""

from __future__ import annotations
