"""Logging: structlog, JSON lines on stdout, personal data masked in every line.

Both structlog's loggers and the standard library's (aiohttp, asyncio, asyncpg ...) go
through the same processors, so every line is one JSON object with a timestamp, a
level, the request id when one is bound (inventory/api/observability.py), and resident
ID numbers and mobile numbers masked wherever they appear: in any value, nested
values, exception text and keys. Names cannot be found by pattern: values of fields
that hold one (``name``, ``patient_name``) are masked by field name.
"""

from __future__ import annotations

import logging
import re
import sys
from collections.abc import Mapping, MutableMapping
from typing import Any, Final

import orjson
import structlog

from inventory.identity import find_pii, mask_name

#: The shortest text that can hold a mobile number (11 digits); shorter is left alone.
_MIN_PII_LEN: Final = 11
#: Every ID number and mobile number has three digits in a row (of any script); text
#: without is left alone without the full scan.
_DIGIT_RUN: Final = re.compile(r"\d{3}")
#: Fields this module or the request middleware fill: never personal data.
_OWN_FIELDS: Final = frozenset({"timestamp", "level", "logger", "request_id"})
#: Fields whose value is a person's name.
NAME_FIELDS: Final = frozenset({"name", "patient_name", "full_name"})


def mask_text(text: str) -> str:
    """``text`` with every ID number and mobile number masked (``110*************21``)."""
    if len(text) < _MIN_PII_LEN or _DIGIT_RUN.search(text) is None:
        return text
    for found in find_pii(text):
        text = text.replace(found, found[:3] + "*" * (len(found) - 5) + found[-2:])
    return text


def _mask_value(value: Any) -> Any:
    if value is None or isinstance(value, bool | float):
        return value
    if isinstance(value, str):
        return mask_text(value)
    if isinstance(value, int):
        text = str(value)
        masked = mask_text(text)
        return value if masked == text else masked
    if isinstance(value, Mapping):
        return {_mask_value(str(k)): _mask_value(v) for k, v in value.items()}
    if isinstance(value, list | tuple | set | frozenset):
        return [_mask_value(v) for v in value]
    # Anything else is rendered with repr(): mask that text.
    return mask_text(repr(value))


def _mask_pii(
    _logger: Any, _method: str, event: MutableMapping[str, Any]
) -> MutableMapping[str, Any]:
    """Mask ID numbers and mobile numbers wherever they appear in a log line."""
    masked: dict[str, Any] = {}
    for key, value in event.items():
        if key in _OWN_FIELDS:
            masked[key] = value
        elif key in NAME_FIELDS and isinstance(value, str):
            masked[key] = mask_name(value)
        else:
            masked[mask_text(key)] = _mask_value(value)
    return masked


def _dumps(value: Any, **_options: Any) -> str:
    # orjson: several times faster than json.dumps on the access log's hot path; a value
    # it cannot serialize is written as its repr() (already masked above).
    return orjson.dumps(value, default=repr).decode()


def configure_logging(level: int = logging.INFO) -> None:
    """JSON logs with ISO timestamps, context variables (request id) and PII masking, for
    structlog and standard-library loggers alike."""
    formatter = structlog.stdlib.ProcessorFormatter(
        foreign_pre_chain=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            structlog.stdlib.add_logger_name,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            structlog.stdlib.ExtraAdder(),
        ],
        processors=[
            structlog.stdlib.ProcessorFormatter.remove_processors_meta,
            structlog.processors.format_exc_info,
            _mask_pii,
            structlog.processors.JSONRenderer(serializer=_dumps),
        ],
    )
    handler = logging.StreamHandler(sys.stdout)
    handler.setFormatter(formatter)
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            structlog.processors.format_exc_info,
            _mask_pii,
            structlog.processors.JSONRenderer(serializer=_dumps),
        ],
        wrapper_class=structlog.make_filtering_bound_logger(level),
        logger_factory=structlog.PrintLoggerFactory(sys.stdout),
        cache_logger_on_first_use=True,
    )
