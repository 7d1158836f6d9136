"""How every answer writes an instant: in the hospital's time zone with its offset
(RFC 3339, as ``datetime.isoformat`` writes it: ``2026-12-09T08:00:00+08:00``), so an
08:00 Beijing session reads 08:00, never ``00:00+00:00``."""

from __future__ import annotations

import functools
from datetime import UTC, datetime, timedelta, tzinfo
from typing import Final

_EPOCH: Final = datetime(1970, 1, 1, tzinfo=UTC)


def instant(ms: int) -> datetime:
    """An epoch-ms instant as an aware UTC datetime."""
    # Integer arithmetic: exact to the millisecond at any date (a float division is not).
    return _EPOCH + timedelta(milliseconds=ms)


@functools.lru_cache(maxsize=4096)
def _second_text(seconds: int, zone: tzinfo) -> tuple[str, str]:
    local = instant(seconds * 1000).astimezone(zone).isoformat()
    # "2026-12-09T08:00:00+08:00" -> ("2026-12-09T08:00:00", "+08:00")
    return local[:-6], local[-6:]


def instant_text(ms: int, zone: tzinfo) -> str:
    """An epoch-ms instant in ``zone`` (``...08:00:00.123000+08:00`` with a fraction, as
    ``datetime.isoformat``). The whole-second part is remembered: in a release spike
    most holds are made, and their deadlines fall, within the same few seconds (every
    reserve answer has three instants)."""
    seconds, millis = divmod(ms, 1000)
    local, offset = _second_text(seconds, zone)
    if millis:
        return f"{local}.{millis:03d}000{offset}"
    return local + offset


def local_text(value: datetime, zone: tzinfo) -> str:
    """An aware datetime in ``zone``, written as :func:`instant_text` writes it."""
    return value.astimezone(zone).isoformat()
