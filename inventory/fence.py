"""Noticing that Redis is behind Postgres, and refusing to sell from such a state.

Postgres learns each tag's sequence numbers only from Redis's own events, so in a
healthy system Redis's per-tag ``seq`` is never below the highest one Postgres recorded.
When it is (an empty store after a restart without its file, a failover that dropped
acknowledged writes, a restore from an old copy), units booked in the lost history would
look free: an oversell. So:

* the worker's fence monitor compares every tag after each Redis (re)start (a new
  ``run_id``) and every ``interval`` seconds, and fences tags that are behind (they
  refuse every state change with ``store_fenced`` until ``inventory rebuild``);
* after a full comparison it records the server's ``run_id`` as verified; API processes
  check that record on every new Redis connection (which is what follows a restart) and
  refuse state changes with ``store_unverified`` until it matches, which closes the
  window between a restart and the first comparison.

On Redis Cluster the comparison and fencing work the same; the run-id gate is per
server and is not applied (documented in docs/durability.md).
"""

from __future__ import annotations

import asyncio
import contextlib
from dataclasses import dataclass, field
from typing import Any

import structlog

from inventory import keys
from inventory.backoff import TRANSIENT_ERRORS, Backoff, sleep_unless_stopped
from inventory.db.pool import acquire
from inventory.db.queries import QUERIES
from inventory.errors import InventoryError
from inventory.store import SlotStore

log = structlog.get_logger(__name__)

#: The longest wait between two failed checks (Redis or Postgres away).
FENCE_BACKOFF_MAX_S = 5.0


class StoreUnverifiedError(InventoryError):
    code = "store_unverified"
    http_status = 503
    title = "The inventory store restarted and is being checked; retry shortly"


@dataclass
class VerifyReport:
    """One comparison of every tag."""

    run_id: str
    tags: int = 0
    fenced: list[str] = field(default_factory=list)


def _run_id(info: Any) -> str:
    if isinstance(info, dict) and "run_id" not in info:  # cluster: one entry per node
        return ",".join(sorted(str(v.get("run_id", "")) for v in info.values()))
    return str(info["run_id"])


def _run_id_of_info_text(text: str) -> str:
    """The run id in the text of INFO server ("" if absent)."""
    return next(
        (line.split(":", 1)[1].strip() for line in text.splitlines() if line.startswith("run_id:")),
        "",
    )


async def server_run_id(client: Any) -> str:
    """The Redis server's run id (changes at every start)."""
    return _run_id(await client.info("server"))


async def verify_store(store: SlotStore, pool: Any, *, batch: int = 200) -> VerifyReport:
    """Compare every tag Postgres knows with Redis, fence those behind, then record the
    server's run id as verified."""
    run_id = await server_run_id(store.client)
    async with acquire(pool, timeout_s=5.0) as connection:
        rows = await connection.fetch(QUERIES["list_all_tag_sequences"])
    report = VerifyReport(run_id=run_id, tags=len(rows))
    department_rows = [r for r in rows if not str(r["tag"]).startswith("p:")]
    for start in range(0, len(department_rows), batch):
        chunk = department_rows[start : start + batch]
        results = await asyncio.gather(
            *(store.fence_if_behind(r["tag"], int(r["last_seq"])) for r in chunk)
        )
        for row, (fenced, redis_seq) in zip(chunk, results, strict=True):
            if fenced:
                report.fenced.append(row["tag"])
                log.warning(
                    "fence.tag_fenced",
                    tag=row["tag"],
                    redis_seq=redis_seq,
                    postgres_seq=int(row["last_seq"]),
                )
    # Only a server that was compared in full is marked verified, and only if it is
    # still the same server (it may have restarted while we compared).
    if await server_run_id(store.client) == run_id:
        await store.client.set(keys.VERIFIED_RUN_KEY, run_id)
    return report


async def run_fence_monitor(
    store: SlotStore, pool: Any, *, interval_s: float, stop: asyncio.Event
) -> None:
    """Verify at start, whenever the server's run id changes, and every ``interval_s``
    (a restore can also happen behind an unchanged address)."""
    last_run_id = ""
    last_full = 0.0
    loop = asyncio.get_running_loop()
    # A failed check is tried again sooner than ``interval_s`` at first: the API refuses
    # every change until a restarted server is verified, so the first answer counts.
    backoff = Backoff(min(0.2, interval_s), max(interval_s, FENCE_BACKOFF_MAX_S))
    while not stop.is_set():
        try:
            run_id = await server_run_id(store.client)
            if run_id != last_run_id or loop.time() - last_full >= 30 * interval_s:
                report = await verify_store(store, pool)
                last_run_id, last_full = run_id, loop.time()
                log.info(
                    "fence.verified", run_id=run_id, tags=report.tags, fenced=len(report.fenced)
                )
        except TRANSIENT_ERRORS as error:
            delay = backoff.next_delay()
            log.warning(
                "fence.check_failed",
                error=f"{type(error).__name__}: {error}",
                failures=backoff.failures,
                retry_in_s=round(delay, 2),
            )
            await sleep_unless_stopped(stop, delay)
            continue
        backoff.reset()
        await sleep_unless_stopped(stop, interval_s)


class StoreVerification:
    """The API's gate: state changes only on a Redis server the fence has verified.

    ``on_connect`` is redis-py's ``redis_connect_func``: it runs for every new
    connection, so the first command after a Redis restart already sees the gate closed.
    """

    def __init__(self, *, required: bool) -> None:
        self.required = required
        self.verified = not required
        self._watcher: asyncio.Task[None] | None = None
        self._client: Any = None

    def attach(self, client: Any) -> None:
        """The client used to poll the verification record while the gate is closed."""
        self._client = client

    async def on_connect(self, connection: Any) -> None:
        """Connection set-up (redis-py's own), then compare run id and record."""
        await connection.on_connect()
        if not self.required:
            return
        await connection.send_command("INFO", "server")
        info = await connection.read_response()
        text = info.decode() if isinstance(info, bytes) else str(info)
        await connection.send_command("GET", keys.VERIFIED_RUN_KEY)
        marker = await connection.read_response()
        marker_text = marker.decode() if isinstance(marker, bytes) else marker
        self.check_connection(_run_id_of_info_text(text), marker_text)

    async def on_raw_connect(self, connection: Any) -> None:
        """The same check for clients that speak RESP themselves (inventory.autopipeline):
        ``await connection.execute(*args)`` answers one command on the fresh connection."""
        if not self.required:
            return
        info = await connection.execute("INFO", "server")
        marker = await connection.execute("GET", keys.VERIFIED_RUN_KEY)
        self.check_connection(_run_id_of_info_text(str(info)), marker)

    def check_connection(self, run_id: str, marker: str | None) -> None:
        """Open or close the gate for a fresh connection to the server ``run_id``, whose
        verification record reads ``marker``."""
        if not self.required:
            return
        if run_id and marker == run_id:
            self.verified = True
            return
        self.verified = False
        if self._watcher is None or self._watcher.done():
            self._watcher = asyncio.get_running_loop().create_task(self._wait_for_verification())

    async def _wait_for_verification(self) -> None:
        while not self.verified:
            await asyncio.sleep(0.2)
            if self._client is None:  # not attached yet (the first connect comes first)
                continue
            with contextlib.suppress(Exception):
                run_id = await server_run_id(self._client)
                if await self._client.get(keys.VERIFIED_RUN_KEY) == run_id:
                    self.verified = True

    def check(self) -> None:
        """Raise :class:`StoreUnverifiedError` while the gate is closed."""
        if not self.verified:
            raise StoreUnverifiedError()

    async def close(self) -> None:
        if self._watcher is not None:
            self._watcher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._watcher
