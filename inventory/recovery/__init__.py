"""Where the live store meets the durable record: comparing them, and restoring the store.

Redis replication and its append-only file are asynchronous, so a restarted or promoted
Redis may have lost writes that Postgres already holds. These modules read both sides:

* :mod:`~inventory.recovery.fence`: notices a new Redis server (a new run id), compares each
  tag with Postgres, fences tags that are behind (they refuse changes) and gates every
  change until the server is verified (``StoreVerification``).
* :mod:`~inventory.recovery.rebuild`: restores fenced tags from Postgres (``inventory rebuild``).
* :mod:`~inventory.recovery.check`: reports drift, oversold, fenced and lagging tags
  (``inventory check``).
"""

from __future__ import annotations
