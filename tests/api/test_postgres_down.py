"""What the API answers while Postgres is down (docs/runbooks.md, "Postgres down"):
catalogue reads answer 503 ``database_unavailable`` with Retry-After, except a schedule's
slots the same process read within ``INVENTORY_AVAILABILITY_CACHE_S``; reserves of a slot
the process knows keep working from Redis; an operator's action is refused before it
changes anything, since its audit entry cannot be written (no entry, no action). An API
process of its own on a private Postgres that the test stops and restarts."""

from __future__ import annotations

import time
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from typing import Any

import aiohttp
import pytest
from redis.asyncio import Redis

from inventory.devtools.servers import PostgresServer, free_port
from inventory.record.migrate import migrate_database
from inventory.store.slot_store import SlotStore
from inventory.visits.bans import current_ban

from .conftest import ApiServer, api_env, launch_api, mark_store_verified, stop_api
from .helpers import Catalogue, register_patient

#: Long enough that the cached read below is certainly still fresh on a loaded machine.
CACHE_S = 60


@pytest.fixture(scope="module")
async def private_api(
    private_postgres: PostgresServer,
    redis_server: Any,
    tmp_path_factory: pytest.TempPathFactory,
) -> AsyncIterator[ApiServer]:
    """An API process on the module's own Postgres (the test stops and restarts it),
    caching availability for CACHE_S."""
    database_url = private_postgres.create_database("reads")
    await migrate_database(database_url)
    await mark_store_verified(redis_server.url, database_url)
    env = api_env(redis_server.url, database_url, free_port())
    env["INVENTORY_AVAILABILITY_CACHE_S"] = str(CACHE_S)
    server = launch_api(env, tmp_path_factory.mktemp("reads-api") / "api.log")
    try:
        yield server
    finally:
        stop_api(server.process)


async def _get(http: aiohttp.ClientSession, api: ApiServer, path: str) -> tuple[int, Any, str]:
    async with http.get(api.url + path, headers=api.headers("reader")) as answer:
        return (
            answer.status,
            await answer.json(content_type=None),
            answer.headers.get("Retry-After", ""),
        )


async def test_catalogue_reads_while_postgres_is_down(
    private_api: ApiServer, private_postgres: PostgresServer, http: aiohttp.ClientSession
) -> None:
    """Postgres down: the hospital list, the department's schedules and an unread
    schedule's slots answer 503 database_unavailable with Retry-After; a schedule's slots
    read just before come from the process's cache; a reserve still holds a unit, and
    releasing it works without an Idempotency-Key (503 with one: the key's record needs
    Postgres); after the restart the reads answer 200 again."""
    catalogue = await Catalogue(private_api, http).create()
    read_id, (slot_id, *_), day = await catalogue.schedule([3, 3])
    unread_id, _, _ = await catalogue.schedule([2], session="afternoon")
    account = f"acct-{uuid.uuid4().hex[:8]}"
    patient_id = await register_patient(private_api, http, account)
    status, before, _ = await _get(http, private_api, f"/v1/schedules/{read_id}/slots")
    assert status == 200, before
    async with http.post(  # the process learns where the slot lives
        private_api.url + "/v1/holds",
        json={"slot_id": slot_id, "patient_id": patient_id, "channel": "app"},
        headers=private_api.headers(account) | {"Idempotency-Key": uuid.uuid4().hex},
    ) as answer:
        assert answer.status == 201, await answer.text()
        hold_id = (await answer.json())["hold_id"]
    async with http.delete(
        private_api.url + f"/v1/holds/{hold_id}", headers=private_api.headers(account)
    ) as answer:
        assert answer.status == 200, await answer.text()
    private_postgres.stop()
    try:
        down = [
            "/v1/hospitals",
            f"/v1/departments/{catalogue.department_id}/schedules?date={day.isoformat()}",
            f"/v1/schedules/{unread_id}/slots",
        ]
        for path in down:
            status, body, retry_after = await _get(http, private_api, path)
            assert (status, body["code"]) == (503, "database_unavailable"), (path, body)
            assert int(retry_after) >= 1
        status, cached, _ = await _get(http, private_api, f"/v1/schedules/{read_id}/slots")
        assert (status, cached) == (200, before)
        async with http.post(
            private_api.url + "/v1/holds",
            json={"slot_id": slot_id, "patient_id": patient_id, "channel": "app"},
            headers=private_api.headers(account) | {"Idempotency-Key": uuid.uuid4().hex},
        ) as answer:
            assert answer.status == 201, await answer.text()
            hold_id = (await answer.json())["hold_id"]
        # A release with an Idempotency-Key needs Postgres for its record; without a
        # key it is Redis's alone (docs/api.md, "Idempotency").
        release = private_api.url + f"/v1/holds/{hold_id}"
        keyed = private_api.headers(account) | {"Idempotency-Key": uuid.uuid4().hex}
        async with http.delete(release, headers=keyed) as answer:
            problem = await answer.json(content_type=None)
            assert (answer.status, problem["code"]) == (503, "database_unavailable")
        async with http.delete(release, headers=private_api.headers(account)) as answer:
            assert answer.status == 200, await answer.text()
    finally:
        private_postgres.restart()
    for path in ["/v1/hospitals", f"/v1/schedules/{unread_id}/slots"]:
        status, body, _ = await _get(http, private_api, path)
        assert status == 200, (path, body)


async def test_no_operator_action_without_its_audit_entry(
    private_api: ApiServer,
    private_postgres: PostgresServer,
    redis_server: Any,
    http: aiohttp.ClientSession,
) -> None:
    """Postgres down: lifting a ban (which changes Redis before it writes the ban's
    history) answers 503 database_unavailable and the ban stays in force, since the
    action's audit entry could not be written first; once Postgres is back the same lift
    goes through, and the audit log holds it and nothing of the refused attempt."""
    catalogue = await Catalogue(private_api, http).create()
    account = f"acct-{uuid.uuid4().hex[:8]}"
    patient_id = await register_patient(private_api, http, account)
    hospital = catalogue.hospital_id
    until_ms = int((time.time() + 7 * 86400) * 1000)
    redis = Redis.from_url(redis_server.url)
    try:
        store = await SlotStore.connect_scripts(redis)
        await store.ban_patient(
            patient_id, hospital_id=hospital, until_ms=until_ms, reason="no_show_rule"
        )
        lift = f"/v1/operator/hospitals/{hospital}/patients/{patient_id}/bans/lift"
        operator = private_api.headers("ops", operator=True)
        private_postgres.stop()
        try:
            async with http.post(
                private_api.url + lift, json={"reason": "院方核实"}, headers=operator
            ) as answer:
                problem = await answer.json(content_type=None)
                assert (answer.status, problem["code"]) == (503, "database_unavailable")
        finally:
            private_postgres.restart()
        assert await current_ban(store, patient_id, hospital) is not None
    finally:
        await redis.aclose()

    async with http.post(
        private_api.url + lift, json={"reason": "院方核实"}, headers=operator
    ) as answer:
        body = await answer.json()
        assert (answer.status, body["lifted"]) == (200, True), body
    async with http.get(
        private_api.url + "/v1/operator/audit",
        params={
            "hospital_id": hospital,
            "since": datetime.fromtimestamp(time.time() - 3600, UTC).isoformat(),
            "until": datetime.fromtimestamp(time.time() + 60, UTC).isoformat(),
        },
        headers=operator,
    ) as answer:
        audit = await answer.json()
        assert answer.status == 200, audit
    lifts = [e for e in audit["items"] if e["route"].endswith("/bans/lift")]
    assert [e["status"] for e in lifts] == [200]
