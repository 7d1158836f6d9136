"""The oldest Redis the service runs on, and how versions are written in messages.

Both the service (refusing an old server at start-up) and the dev tooling (skipping an old
binary when it looks for one to start) use it, so it lives with the store.
"""

from __future__ import annotations

MIN_REDIS_VERSION: tuple[int, int] = (7, 0)
"""The oldest Redis the service runs on: script shebangs (``#!lua`` flags, so an
out-of-memory server refuses a script before it starts) and ``XINFO GROUPS``'s ``lag``
(the outbox backlog of ``/readyz`` and the metrics) arrived in 7.0. Valkey reports a
``redis_version`` of 7.2 or later."""


def version_text(version: tuple[int, ...]) -> str:
    """``(7, 0)`` as ``7.0``."""
    return ".".join(str(part) for part in version)
