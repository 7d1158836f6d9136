"""``inventory check`` does not call a tag settled while Postgres may still miss one of
its events: an entry waiting on a dead consumer's pending list, or a gap in the tag's
seqs in Postgres, is reported as ``lagging`` and the command exits non-zero (before,
both checked clean: Postgres's highest seq matched Redis's)."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from typing import Any

import orjson

from inventory.record.persister import GROUP
from inventory.recovery.check import check
from inventory.store import keys

from .test_fence_rebuild import book, persist_stream, world

__all__ = ["world"]


async def _cli_check(world: dict[str, Any]) -> tuple[int, dict[str, Any]]:
    env = dict(os.environ)
    env |= {
        "INVENTORY_REDIS_URL": world["redis_url"],
        "INVENTORY_DATABASE_URL": world["database_url"],
    }
    done = await asyncio.to_thread(
        subprocess.run,
        [sys.executable, "-m", "inventory", "check", "--json"],
        env=env,
        capture_output=True,
        timeout=120,
        check=False,
    )
    return done.returncode, orjson.loads(done.stdout)


async def test_an_entry_on_a_dead_consumers_pending_list_is_lagging(
    world: dict[str, Any],
) -> None:
    """A persister read an entry and died before acknowledging it: the tag is lagging
    (not compared), and `inventory check` exits 1 until the entry is acknowledged."""
    await book(world, world["slots"][0])
    await persist_stream(world)
    stream = keys.tag_keys(world["tag"]).outbox
    await world["client"].xgroup_create(stream, GROUP, id="0")
    await world["client"].xreadgroup(GROUP, "dead-persister", {stream: ">"}, count=1)
    report = await check(world["store"], world["pool"])
    assert report.lagging == [world["tag"]], report.as_dict()
    assert "delivered and not acknowledged" in report.lag_reasons[world["tag"]]
    assert not report.settled
    status, printed = await _cli_check(world)
    assert status == 1
    assert printed["lagging"] == [world["tag"]]
    # Claimed and acknowledged by a live persister: settled again, exit 0.
    pending = await world["client"].xpending_range(stream, GROUP, min="-", max="+", count=10)
    await world["client"].xack(stream, GROUP, *[entry["message_id"] for entry in pending])
    report = await check(world["store"], world["pool"])
    assert report.settled, report.as_dict()
    assert (await _cli_check(world))[0] == 0


async def test_a_gap_in_the_tags_seqs_in_postgres_is_lagging(world: dict[str, Any]) -> None:
    """Postgres holds the tag's highest seq but not one before it (an event dead-lettered
    or still on its way): lagging, exit 1."""
    await book(world, world["slots"][1])
    await book(world, world["slots"][1])
    last = await persist_stream(world)
    async with world["pool"].acquire() as conn:
        await conn.execute(
            "DELETE FROM inventory_events WHERE tag = $1 AND seq = $2", world["tag"], last - 1
        )
    report = await check(world["store"], world["pool"])
    assert report.lagging == [world["tag"]], report.as_dict()
    assert "1 events missing" in report.lag_reasons[world["tag"]]
    status, printed = await _cli_check(world)
    assert status == 1
    assert printed["settled"] is False
