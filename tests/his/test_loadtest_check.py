"""The load test's "0 oversold (Postgres)" check counts only bookings that hold a unit:
a booking the HIS rejected or the patient cancelled gave its unit back, and that unit may
be sold again, so counting it reported oversold slots that were not (a false FAIL)."""

from __future__ import annotations

from typing import Any

from inventory.cli.loadtest import oversold_slots
from tests.his.world import World


async def _oversold(world: World, slot_id: str) -> list[Any]:
    return [row for row in await oversold_slots(world.pool) if row["id"] == slot_id]


async def test_rejected_cancelled_and_expired_do_not_count_as_sold(world: World) -> None:
    """Three bookings and an expired hold on a slot: the HIS rejected one booking, the
    patient cancelled another, and their units were sold again (capacity is what the
    remaining booking holds): not oversold. A second booking that holds a unit is."""
    slot = await world.fresh_slot(min_free=4)
    rejected, cancelled, kept = [await world.book(slot.slot_id) for _ in range(3)]
    expired = await world.hold(slot.slot_id)
    async with world.pool.acquire() as connection:
        await connection.execute("UPDATE bookings SET status = 'rejected' WHERE id = $1", rejected)
        await connection.execute(
            "UPDATE bookings SET status = 'cancelled', cancelled_at = now() WHERE id = $1",
            cancelled,
        )
        # The hold as the persister records an expiry (a hold row, never a booking).
        await connection.execute(
            "INSERT INTO holds (id, tag, slot_id, schedule_id, account_id, patient_id, state,"
            " channel, amount_fen, deadline, created_at, ended_at)"
            " SELECT $1, tag, slot_id, schedule_id, account_id, patient_id, 'expired', channel,"
            " amount_fen, now(), now(), now() FROM holds WHERE id = $2",
            expired,
            kept,
        )
        # The two units given back were sold again: one unit holds one booking.
        await connection.execute("UPDATE slots SET capacity = 1 WHERE id = $1", slot.slot_id)
    assert await _oversold(world, slot.slot_id) == []

    async with world.pool.acquire() as connection:
        await connection.execute(
            "UPDATE bookings SET status = 'his_confirmed', his_appointment_no = 'A-1'"
            " WHERE id = $1",
            rejected,
        )
    [row] = await _oversold(world, slot.slot_id)
    assert (row["capacity"], row["booked"]) == (1, 2)
