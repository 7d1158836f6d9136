"""BatchedLineLogger: lines of one loop iteration leave in one write, none is lost or
reordered, and a process that exits normally writes everything it logged; the access
log's short path writes what structlog writes."""

from __future__ import annotations

import asyncio
import io
import subprocess
import sys
import threading
from datetime import UTC, datetime

import orjson
import pytest

from inventory.ops.logs import BatchedLineLogger, utc_timestamp


class CountingStream(io.BytesIO):
    def __init__(self) -> None:
        super().__init__()
        self.writes = 0

    def write(self, data: bytes) -> int:  # type: ignore[override]
        self.writes += 1
        return super().write(data)


def test_outside_a_loop_each_line_is_written_at_once() -> None:
    stream = CountingStream()
    logger = BatchedLineLogger(stream)
    logger.info("one")
    assert stream.getvalue() == b"one\n"
    logger.msg(b"two")
    assert stream.getvalue() == b"one\ntwo\n"
    assert stream.writes == 2


async def test_one_iteration_is_one_write() -> None:
    stream = CountingStream()
    logger = BatchedLineLogger(stream)
    for n in range(100):
        logger.info(f"line {n}")
    assert stream.getvalue() == b""  # waiting for the end of this iteration
    await asyncio.sleep(0)
    assert stream.writes == 1
    assert stream.getvalue().decode().splitlines() == [f"line {n}" for n in range(100)]
    logger.info("next")
    await asyncio.sleep(0)
    assert stream.writes == 2
    assert stream.getvalue().endswith(b"line 99\nnext\n")


async def test_a_large_backlog_is_written_without_waiting() -> None:
    stream = CountingStream()
    logger = BatchedLineLogger(stream, max_pending_bytes=1000)
    for _ in range(20):
        logger.info("x" * 99)  # 100 bytes a line with its newline
    assert stream.writes == 2
    assert len(stream.getvalue()) == 2000


async def test_another_thread_does_not_wait_for_this_loop() -> None:
    stream = CountingStream()
    logger = BatchedLineLogger(stream)
    logger.info("from the loop")
    worker = threading.Thread(target=logger.info, args=("from a thread",))
    worker.start()
    worker.join()
    # The thread's line went out at once, and took the loop's waiting line with it.
    assert stream.getvalue() == b"from the loop\nfrom a thread\n"
    await asyncio.sleep(0)
    assert stream.getvalue() == b"from the loop\nfrom a thread\n"


async def test_a_thread_with_its_own_loop_is_not_starved() -> None:
    """A second loop in another thread while this loop's flush is scheduled."""
    stream = CountingStream()
    logger = BatchedLineLogger(stream)
    logger.info("main")

    def other_loop() -> None:
        async def log_there() -> None:
            logger.info("other")

        asyncio.run(log_there())

    worker = threading.Thread(target=other_loop)
    worker.start()
    worker.join()
    assert b"other\n" in stream.getvalue()
    await asyncio.sleep(0)
    assert sorted(stream.getvalue().splitlines()) == [b"main", b"other"]


def test_a_process_writes_every_line_before_it_exits() -> None:
    """structlog through configure_logging in a real process: 5,000 lines logged inside
    a loop that then ends (and the process exits) all reach stdout, in order."""
    program = """
import asyncio, structlog
from inventory.ops.logs import configure_logging
configure_logging()
log = structlog.get_logger("t")
async def main():
    for n in range(5000):
        log.info("line", n=n)
        if n % 1000 == 0:
            await asyncio.sleep(0)
    log.info("last", n=5000)
asyncio.run(main())
"""
    done = subprocess.run(
        [sys.executable, "-c", program], capture_output=True, check=True, timeout=60
    )
    lines = [orjson.loads(line) for line in done.stdout.splitlines()]
    assert [line["n"] for line in lines] == list(range(5001))
    assert lines[-1]["event"] == "last"
    assert lines[0]["level"] == "info"


async def test_lines_wait_up_to_the_flush_delay() -> None:
    stream = CountingStream()
    logger = BatchedLineLogger(stream, flush_delay_s=0.05)
    logger.info("first")
    await asyncio.sleep(0)
    logger.info("second")
    await asyncio.sleep(0.01)
    assert stream.getvalue() == b""
    await asyncio.sleep(0.1)
    assert stream.getvalue() == b"first\nsecond\n"
    assert stream.writes == 1


def test_write_access_writes_what_structlog_writes() -> None:
    """The access log's short path (write_access) gives the same line as structlog for
    the same fields: masking included (a phone number in the path and one in the
    method), timestamp aside."""
    program = """
import asyncio, structlog
from inventory.ops.logs import configure_logging, write_access
configure_logging()
log = structlog.get_logger("inventory.api.access")
fields = {"method": "X13912345678", "route": "unmatched", "path": "/v1/x/13812345678",
          "status": 404, "duration_ms": 0.5}
async def main():
    structlog.contextvars.bind_contextvars(request_id="rid-1")
    log.info("http.request", **fields)
    assert write_access("rid-1", *fields.values())
asyncio.run(main())
"""
    done = subprocess.run(
        [sys.executable, "-c", program], capture_output=True, check=True, timeout=60
    )
    by_structlog, by_write_access = (orjson.loads(line) for line in done.stdout.splitlines())
    assert by_structlog.pop("timestamp").endswith("Z")
    assert by_write_access.pop("timestamp").endswith("Z")
    assert by_write_access == by_structlog
    assert by_structlog["path"] == "/v1/x/138******78"
    assert by_structlog["method"] == "X139******78"
    assert by_structlog["request_id"] == "rid-1"


def test_write_access_declines_when_info_is_not_written() -> None:
    program = """
import logging
from inventory.ops.logs import configure_logging, write_access
configure_logging(logging.WARNING)
print(write_access("rid", "GET", "/v1/holds", "/v1/holds", 201, 0.5))
"""
    done = subprocess.run(
        [sys.executable, "-c", program], capture_output=True, text=True, check=True, timeout=60
    )
    assert done.stdout.strip() == "False"


async def test_warnings_and_errors_leave_at_once_after_the_waiting_lines() -> None:
    stream = CountingStream()
    logger = BatchedLineLogger(stream, flush_delay_s=10)
    logger.info("waiting")
    logger.warning("warned")
    assert stream.getvalue() == b"waiting\nwarned\n"
    logger.info("waiting again")
    logger.error("failed")
    assert stream.getvalue().endswith(b"waiting again\nfailed\n")


def test_a_warning_before_os_exit_is_not_lost() -> None:
    """The persister's test-only crash hook logs a warning and calls os._exit (no atexit):
    the warning, and the INFO line waiting before it, must be in the output."""
    program = """
import asyncio, os, structlog
from inventory.ops.logs import configure_logging
configure_logging()
log = structlog.get_logger("t")
async def main():
    log.info("before")
    log.warning("last words")
    os._exit(137)
asyncio.run(main())
"""
    done = subprocess.run([sys.executable, "-c", program], capture_output=True, timeout=60)
    assert done.returncode == 137
    events = [orjson.loads(line)["event"] for line in done.stdout.splitlines()]
    assert events == ["before", "last words"]


@pytest.mark.parametrize(
    "ns",
    [
        0,
        1_780_000_000_000_000_000,  # a whole second: no fraction, as isoformat writes it
        1_780_000_000_000_000_999,  # under a microsecond past it: still none
        1_780_000_000_000_001_000,
        1_780_000_000_123_456_789,
        1_780_000_000_999_999_999,
        1_780_000_001_000_500_000,
        1_780_000_000_500_000_000,  # the earlier second again, after a later one
        4_102_444_799_999_999_000,
    ],
)
def test_utc_timestamp_is_what_the_iso_timestamper_writes(ns: int) -> None:
    """The access log's timestamp, cached by the second, reads exactly like
    ``datetime.now(UTC).isoformat()`` with ``Z`` (structlog's ``TimeStamper``)."""
    second, rest = divmod(ns, 1_000_000_000)
    moment = datetime.fromtimestamp(second, UTC).replace(microsecond=rest // 1000)
    assert utc_timestamp(ns) == moment.isoformat().replace("+00:00", "Z")


def test_utc_timestamp_is_now() -> None:
    before = datetime.now(UTC)
    stamp = datetime.fromisoformat(utc_timestamp())
    assert before <= stamp <= datetime.now(UTC)
