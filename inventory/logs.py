"""Logging: structlog, JSON lines on stdout, personal data masked in every line."""

from __future__ import annotations

import logging
import sys
from collections.abc import MutableMapping
from typing import Any

import structlog

from inventory.identity import find_pii


def _mask_pii(
    _logger: Any, _method: str, event: MutableMapping[str, Any]
) -> MutableMapping[str, Any]:
    """Mask ID numbers and mobile numbers wherever they appear in a log line's values."""
    for key, value in event.items():
        if isinstance(value, str):
            for found in find_pii(value):
                value = value.replace(found, found[:3] + "*" * (len(found) - 5) + found[-2:])
            event[key] = value
    return event


def configure_logging(level: int = logging.INFO) -> None:
    """JSON logs with ISO timestamps, context variables (request id) and PII masking."""
    logging.basicConfig(format="%(message)s", stream=sys.stdout, level=level)
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            structlog.processors.format_exc_info,
            _mask_pii,
            structlog.processors.JSONRenderer(),
        ],
        wrapper_class=structlog.make_filtering_bound_logger(level),
        logger_factory=structlog.PrintLoggerFactory(sys.stdout),
        cache_logger_on_first_use=True,
    )
