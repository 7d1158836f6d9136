"""The durable record in Postgres: every change of the store, copied from its outbox stream.

* :mod:`~inventory.record.persister`: the loop that reads the outbox streams and commits them.
* :mod:`~inventory.record.projection`: one event into rows, idempotently.
* :mod:`~inventory.record.bookings`, :mod:`~inventory.record.catalogue`,
  :mod:`~inventory.record.patients`, :mod:`~inventory.record.idempotency`: the records
  the API reads and writes.
* :mod:`~inventory.record.reencrypt`: moving personal data to the current key.
* :mod:`~inventory.record.pool`: ``create_pool`` / ``connect`` (orjson jsonb codecs,
  timeouts) and the wrapping of "Postgres is not there" into DatabaseUnavailableError.
* :mod:`~inventory.record.migrate`: versioned plain-SQL migrations (``migrations/NNNN_*.sql``).
* :mod:`~inventory.record.queries`: the named queries of ``queries.sql`` (``QUERIES``, ``bind``).
* :mod:`~inventory.record.errors`: the adapter's errors.

docs/schema.md describes the tables.
"""

from __future__ import annotations
