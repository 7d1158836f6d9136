"""Postgres: the durable record (docs/schema.md).

* :mod:`inventory.db.pool`: ``create_pool`` / ``connect`` (orjson jsonb codecs, timeouts)
  and the wrapping of "Postgres is not there" failures into DatabaseUnavailableError.
* :mod:`inventory.db.migrate`: versioned plain-SQL migrations (``migrations/NNNN_*.sql``).
* :mod:`inventory.db.queries`: the named queries of ``queries.sql`` (``QUERIES``, ``bind``).
* :mod:`inventory.db.errors`: the adapter's errors.

docs/schema.md describes the tables.
"""

from __future__ import annotations
