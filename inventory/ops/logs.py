"""Logging: structlog, JSON lines on stdout, personal data masked in every line.

Both structlog's loggers and the standard library's (aiohttp, asyncio, asyncpg ...) go
through the same processors, so every line is one JSON object with a timestamp, a
level, the request id when one is bound (inventory/api/observability.py), and resident
ID numbers and mobile numbers masked wherever they appear: in any value, nested
values, exception text and keys. Names cannot be found by pattern: values of fields
that hold one (``name``, ``patient_name``) are masked by field name.

structlog's own lines are written by :class:`BatchedLineLogger`: the lines of one
event-loop iteration leave in one write, not one write and flush each. The access log
(one INFO line per request) takes a shorter path to the same writer, :func:`write_access`:
the same line without structlog's processor chain and generic masking walk, because
it is written for every request and those steps were a measurable share of a reserve's
CPU (docs/benchmarks.md, "Costs the code refers to").
"""

from __future__ import annotations

import asyncio
import atexit
import logging
import re
import sys
import threading
import time
from collections.abc import Mapping, MutableMapping
from typing import Any, BinaryIO, Final, TextIO

import orjson
import structlog

from inventory.privacy.identity import find_pii, mask_name

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
    # orjson rather than json.dumps: this encodes every request's access-log line
    # (docs/benchmarks.md); a value it cannot serialize is written as its repr()
    # (already masked above).
    return orjson.dumps(value, default=repr).decode()


def _dumps_bytes(value: Any, **_options: Any) -> bytes:
    return orjson.dumps(value, default=repr)


def _as_line(message: str | bytes) -> bytes:
    return (message.encode() if isinstance(message, str) else message) + b"\n"


class BatchedLineLogger:
    """A structlog logger writing rendered lines to a binary stream.

    Inside a running event loop, lines wait up to ``flush_delay_s`` (0: the end of the
    loop's current iteration) and leave together in one write, so a burst of requests
    costs one system call, not one each (nginx's ``access_log ... buffer= flush=`` is
    the same trade). Warnings and errors, lines outside a loop or from another thread,
    and lines past ``max_pending_bytes`` are written at once (after those waiting).
    Waiting lines are written at exit too: only a process that dies without exiting
    (SIGKILL, ``os._exit``) can lose its last ``flush_delay_s`` of INFO and DEBUG lines.
    """

    def __init__(
        self,
        stream: BinaryIO,
        *,
        flush_delay_s: float = 0.0,
        max_pending_bytes: int = 64 * 1024,
    ) -> None:
        self._stream = stream
        self._flush_delay_s = flush_delay_s
        self._max_pending = max_pending_bytes
        self._lock = threading.Lock()
        self._pending: list[bytes] = []
        self._pending_bytes = 0
        #: The loop a flush is scheduled on (None: none scheduled).
        self._flush_loop: asyncio.AbstractEventLoop | None = None
        atexit.register(self.flush)

    def msg(self, message: str | bytes) -> None:
        """Write one line (structlog calls this for every level)."""
        line = _as_line(message)
        try:
            loop: asyncio.AbstractEventLoop | None = asyncio.get_running_loop()
        except RuntimeError:
            loop = None
        with self._lock:
            self._pending.append(line)
            self._pending_bytes += len(line)
            if loop is None or self._pending_bytes >= self._max_pending:
                self._write_locked()
            elif self._flush_loop is None:
                self._flush_loop = loop
                if self._flush_delay_s > 0:
                    loop.call_later(self._flush_delay_s, self.flush)
                else:
                    loop.call_soon(self.flush)
            elif self._flush_loop is not loop:
                # Another loop (thread) has a flush scheduled: do not wait on it.
                self._write_locked()

    def msg_now(self, message: str | bytes) -> None:
        """Write one line at once, with any waiting before it (warnings and errors:
        they may be a process's last words before ``os._exit`` or a crash)."""
        line = _as_line(message)
        with self._lock:
            self._pending.append(line)
            self._write_locked()

    log = debug = info = msg
    warn = warning = fatal = failure = err = error = critical = exception = msg_now

    def flush(self) -> None:
        """Write every waiting line now."""
        with self._lock:
            self._flush_loop = None
            self._write_locked()

    def _write_locked(self) -> None:
        if not self._pending:
            return
        data = b"".join(self._pending)
        self._pending.clear()
        self._pending_bytes = 0
        try:
            self._stream.write(data)
            self._stream.flush()
        except (OSError, ValueError):  # a closed or broken stream: logging never raises
            pass


#: The writer structlog's lines go to, when INFO lines are written (see write_access).
_info_writer: BatchedLineLogger | None = None

#: The last whole second :func:`utc_timestamp` wrote, and its text up to the seconds.
_second_text: tuple[int, str] = (-1, "")


def utc_timestamp(ns: int | None = None) -> str:
    """The instant ``ns`` (nanoseconds since the epoch; default now) as structlog's ISO
    timestamper writes it (``datetime.now(UTC).isoformat()`` with ``Z``: microseconds,
    left out when they are 0). The date and time up to the seconds are made once a
    second, not on every access-log line, where a timezone-aware datetime and its
    isoformat cost a measurable share of the line (docs/benchmarks.md)."""
    global _second_text
    second, rest = divmod(time.time_ns() if ns is None else ns, 1_000_000_000)
    cached = _second_text
    if cached[0] != second:
        cached = (second, time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(second)))
        _second_text = cached  # one assignment: another thread sees the old or the new
    micros = rest // 1000
    return f"{cached[1]}.{micros:06d}Z" if micros else cached[1] + "Z"


def write_access(
    request_id: str, method: str, route: str, path: str, status: int, duration_ms: float
) -> bool:
    """Write the access-log line of one request the way structlog would (same fields,
    masking, timestamp and writer), without its processor chain and its generic
    masking walk: one line per request, where those cost a measurable share of a
    reserve's CPU. Only the method and path can carry text from the caller, so only
    they are masked; the route is the router's template and the rest are numbers.
    False when logging is not configured for it (the caller then logs through
    structlog)."""
    writer = _info_writer
    if writer is None:
        return False
    line = {
        "method": mask_text(method),
        "route": route,
        "path": mask_text(path),
        "status": status,
        "duration_ms": duration_ms,
        "event": "http.request",
        "request_id": request_id,
        "level": "info",
        "timestamp": utc_timestamp(),
    }
    writer.msg(orjson.dumps(line))
    return True


def _logger_factory(level: int, text: TextIO) -> Any:
    global _info_writer
    stream = getattr(text, "buffer", None)
    if stream is None:  # a text-only stream (some test captures): write text lines
        _info_writer = None
        return structlog.PrintLoggerFactory(text), _dumps
    logger = BatchedLineLogger(stream)
    _info_writer = logger if level <= logging.INFO else None
    return (lambda *_args: logger), _dumps_bytes


def configure_logging(level: int = logging.INFO, *, stream: TextIO | None = None) -> None:
    """JSON logs with ISO timestamps, context variables (request id) and PII masking, for
    structlog and standard-library loggers alike, on ``stream`` (default: stdout; a
    command whose stdout is its report logs to stderr)."""
    stream = stream if stream is not None else sys.stdout
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
    handler = logging.StreamHandler(stream)
    handler.setFormatter(formatter)
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    factory, serializer = _logger_factory(level, stream)
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            structlog.processors.format_exc_info,
            _mask_pii,
            structlog.processors.JSONRenderer(serializer=serializer),
        ],
        wrapper_class=structlog.make_filtering_bound_logger(level),
        logger_factory=factory,
        cache_logger_on_first_use=True,
    )
