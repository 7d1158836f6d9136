"""Two hospitals of one platform through the whole path: each hospital's HIS reached with
its own credentials (hosp-a by client secret, hosp-b by a signed SMART assertion), and
each hospital's fees collected by its own WeChat Pay sub-merchant (partner mode). A
patient of each books a window synced from that hospital's HIS, pays, and gets the HIS's
appointment number; the money went to the right sub-merchant, the appointment to the
right HIS, each HIS saw only tokens of its own and refused nothing.

Real processes: one HIS simulator serving both hospitals, the WeChat Pay simulator in
partner mode, an API process and an ``inventory worker`` with the connections file."""

from __future__ import annotations

import os
import signal
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import aiohttp
import asyncpg
import pytest

from inventory.devtools.servers import free_port, start_redis
from inventory.simulators.paysim import KeySet
from tests.api.conftest import launch_api, stop_api
from tests.databases import Databases
from tests.his.hospitals import Hospitals, start_hospitals
from tests.his.test_connections import connections_toml, sim_admin, wait_for
from tests.his.world import start_worker
from tests.payments.conftest import PaySimServer, payment_api_env, start_paysim
from tests.payments.helpers import Patient, sim

pytestmark = [pytest.mark.slow, pytest.mark.timeout(300)]

SUB_MERCHANTS = {"hosp-a": "1900000301", "hosp-b": "1900000302"}


@pytest.fixture(scope="module")
def hospitals(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Hospitals]:
    built = start_hospitals(Path(tmp_path_factory.mktemp("platform-his")))
    try:
        yield built
    finally:
        built.sim.stop()


@pytest.fixture(scope="module")
def partner_keys() -> KeySet:
    return KeySet.generate(mchid="1230000119", appid="wxsp00000000000002")


@pytest.fixture(scope="module")
def partner_sim(
    partner_keys: KeySet, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[PaySimServer]:
    server = start_paysim(partner_keys, tmp_path_factory.mktemp("platform-pay") / "paysim.log")
    try:
        yield server
    finally:
        server.process.terminate()
        server.process.wait(timeout=10)


async def _free_paid_slot(pool: asyncpg.Pool, hospital: str) -> str | None:
    """A window of the hospital's released, open schedules not yet begun, with a fee."""
    async with pool.acquire() as connection:
        slot = await connection.fetchval(
            "SELECT sl.id FROM slots sl JOIN schedules s ON s.id = sl.schedule_id"
            " WHERE s.hospital_id = $1 AND s.status = 'open' AND s.release_at <= now()"
            " AND s.starts_at > now() + interval '1 hour' AND s.fee_fen > 0"
            " AND sl.capacity > 0 ORDER BY s.visit_date DESC, sl.id LIMIT 1",
            hospital,
        )
    return None if slot is None else str(slot)


async def test_two_hospitals_with_their_own_his_credentials_and_merchants(
    hospitals: Hospitals,
    partner_keys: KeySet,
    partner_sim: PaySimServer,
    databases: Databases,
    tmp_path: Path,
) -> None:
    redis_server = start_redis(tmp_path / "redis")
    database_url = await databases.create(prefix="platform")
    connections = hospitals.directory / "platform-connections.toml"
    connections.write_text(connections_toml(hospitals))
    port = free_port()
    env = payment_api_env(partner_keys, partner_sim, redis_server.url, database_url, port)
    env.pop("INVENTORY_HIS_URL", None)
    env |= {"INVENTORY_WECHAT_PARTNER": "true"}
    worker_env = env | {
        "INVENTORY_HIS_CONNECTIONS": str(connections),
        "INVENTORY_WORKER_METRICS_PORT": "0",
    }
    worker = start_worker(worker_env, tmp_path / "worker.log")
    api = launch_api(env, tmp_path / "api.log")
    pool = await asyncpg.create_pool(database_url, min_size=1, max_size=2)
    try:
        async with aiohttp.ClientSession() as http:

            async def ready() -> bool:
                async with http.get(api.url + "/readyz") as answer:
                    return answer.status == 200

            await wait_for(ready, 60, "the API ready")

            slots: dict[str, str] = {}

            async def synced() -> bool:
                for hospital in SUB_MERCHANTS:
                    found = await _free_paid_slot(pool, hospital)
                    if found is None:
                        return False
                    slots[hospital] = found
                return True

            await wait_for(synced, 60, "a bookable window synced from each hospital's HIS")
            before = {h: await sim_admin(hospitals, h, "state") for h in SUB_MERCHANTS}
            operator = api.headers("platform-admin", operator=True)
            for hospital, sub_mchid in SUB_MERCHANTS.items():
                async with http.put(
                    f"{api.url}/v1/operator/hospitals/{hospital}/merchant",
                    json={"sub_mchid": sub_mchid},
                    headers=operator,
                ) as answer:
                    assert answer.status in (200, 201), await answer.text()

            paid: dict[str, tuple[str, str]] = {}
            for hospital in SUB_MERCHANTS:
                slot = slots[hospital]
                patient = await Patient(api, http).register()
                hold_id = (await patient.hold(slot))["hold_id"]
                payment_id = (await patient.start_payment(hold_id))["payment_id"]
                await sim(http, partner_sim, "POST", f"/sim/orders/{payment_id}/pay")

                async def at_the_his(patient: Patient = patient, hold_id: str = hold_id) -> bool:
                    status, booking = await patient.get(f"/v1/bookings/{hold_id}")
                    return (
                        status == 200
                        and booking["status"] == "his_confirmed"
                        and bool(booking["his_appointment_no"])
                    )

                await wait_for(at_the_his, 60, f"{hospital}'s booking confirmed by its HIS")
                paid[hospital] = (payment_id, hold_id)

            orders = {
                o["payment_id"]: o
                for o in (await sim(http, partner_sim, "GET", "/sim/orders"))["items"]
            }
            for hospital, (payment_id, _) in paid.items():
                assert orders[payment_id]["sub_mchid"] == SUB_MERCHANTS[hospital]
                assert orders[payment_id]["state"] == "SUCCESS"

            for hospital in SUB_MERCHANTS:
                after = await sim_admin(hospitals, hospital, "state")
                assert _booked(after) - _booked(before[hospital]) == 1, (hospital, after)
                auth = after["auth"]
                assert auth["tokens_issued"] >= 1, auth
                assert not auth["fhir_refused"], auth
                assert not auth["token_refused"], auth
    finally:
        await pool.close()
        stop_api(api.process)
        if worker.poll() is None:
            os.killpg(worker.pid, signal.SIGTERM)
            worker.wait(timeout=30)
        redis_server.close()


def _booked(state: dict[str, Any]) -> int:
    """Appointments the HIS holds as booked, whatever the channel."""
    counts: dict[str, int] = state["state"]["appointments_by_channel_status"]
    return sum(n for key, n in counts.items() if key.endswith(":booked"))
