"""A payment notification while Postgres is down (G15, D2): answered non-2xx with FAIL and
nothing changed, so WeChat Pay notifies again; once Postgres is back, the next delivery is
answered 2xx with the booking committed. Uses an API process of its own on a private
Postgres that the test stops and starts."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import asyncpg
import pytest

from inventory.devtools.servers import PostgresServer, free_port
from inventory.record.migrate import migrate_database
from inventory.simulators.paysim import KeySet
from tests.api.conftest import ApiServer, launch_api, mark_store_verified, stop_api

from .conftest import PaySimServer, payment_api_env
from .helpers import Patient, catalogue, notification, post_notification, sim


@pytest.fixture(scope="module")
async def private_api(
    private_postgres: PostgresServer,
    redis_server: Any,
    pay_keys: KeySet,
    pay_sim: PaySimServer,
    tmp_path_factory: pytest.TempPathFactory,
) -> AsyncIterator[ApiServer]:
    """An API process taking payments, on the module's own Postgres (the tests stop and
    start it)."""
    database_url = private_postgres.create_database("payments")
    await migrate_database(database_url)
    await mark_store_verified(redis_server.url, database_url)
    port = free_port()
    env = payment_api_env(pay_keys, pay_sim, redis_server.url, database_url, port)
    server = launch_api(env, tmp_path_factory.mktemp("pay-api-private") / "api.log")
    try:
        yield server
    finally:
        stop_api(server.process)


async def test_notification_while_postgres_is_down_is_retried(
    private_api: ApiServer,
    private_postgres: PostgresServer,
    pay_keys: KeySet,
    pay_sim: PaySimServer,
    http: aiohttp.ClientSession,
) -> None:
    """Postgres down: 503 FAIL, nothing changes; after the restart a redelivery books."""
    (slot,) = await catalogue(private_api, http, [2])
    patient = await Patient(private_api, http).register()
    hold_id = (await patient.hold(slot))["hold_id"]
    payment_id = (await patient.start_payment(hold_id))["payment_id"]
    private_postgres.stop()
    try:
        paid = await sim(http, pay_sim, "POST", f"/sim/orders/{payment_id}/pay")
        assert paid["notify_status"] == 503, paid
        transaction_id = paid["transaction"]["transaction_id"]
        status, answer = await post_notification(
            private_api,
            http,
            *notification(pay_keys, payment_id, transaction_id=transaction_id),
        )
        assert (status, answer["code"], answer["reason"]) == (
            503,
            "FAIL",
            "database_unavailable",
        ), answer
        status, hold = await patient.get(f"/v1/holds/{hold_id}")
        assert (status, hold["state"]) == (200, "held")
    finally:
        private_postgres.restart()
    deliveries = []
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        deliveries.append(
            (await sim(http, pay_sim, "POST", f"/sim/orders/{payment_id}/notify"))["notify_status"]
        )
        if deliveries[-1] == 204:
            break
    print(f"\nG15 postgres down: deliveries after the restart {deliveries}")
    assert deliveries[-1] == 204, deliveries
    assert all(status == 503 for status in deliveries[:-1]), deliveries
    status, hold = await patient.get(f"/v1/holds/{hold_id}")
    assert hold["state"] == "booked"
    connection = await asyncpg.connect(private_api.database_url)
    try:
        payment = await connection.fetchrow("SELECT * FROM payments WHERE id = $1", payment_id)
        bookings = await connection.fetchval(
            "SELECT count(*) FROM bookings WHERE id = $1 AND payment_ref = $2",
            hold_id,
            payment_id,
        )
    finally:
        await connection.close()
    assert (payment["status"], payment["provider_txn_id"], payment["booking_id"]) == (
        "paid",
        transaction_id,
        hold_id,
    )
    assert bookings == 1
    status, booking = await patient.get(f"/v1/bookings/{hold_id}")
    assert (status, booking["status"]) == (200, "confirmed")
