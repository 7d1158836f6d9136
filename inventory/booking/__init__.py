"""The booking use cases the API calls: one call per request, no HTTP in here.

* :mod:`~inventory.booking.reservations`: ``Reservations``, the patient's steps on a hold
  (reserve, look, release, confirm, cancel) with the caches and limits around the store.
* :mod:`~inventory.booking.ratelimit`: the reserve rate limits, per account and address.
* :mod:`~inventory.booking.soldout`: slots this process saw sold out, refused from memory.

It builds on the store (``inventory.store``) and the record (``inventory.record``); the
API (``inventory.api``) parses a request, calls one method here and renders the result.
"""

from __future__ import annotations
