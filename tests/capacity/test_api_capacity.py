"""The capacity operator routes, through a real API process."""

from __future__ import annotations

import uuid
from typing import Any

import aiohttp
import asyncpg  # type: ignore[import-untyped]  # asyncpg ships no type information
import pytest

from inventory.capacity.mms import mms_metrics
from inventory.capacity.planning import max_arrival_rate_for_wait, min_servers_for_wait
from tests.api.conftest import ApiServer
from tests.api.helpers import Catalogue, register_patient, uid

FIGURES = ("utilization", "p_wait", "wq_hours", "w_hours", "lq", "l")


async def _get(
    api: ApiServer, http: aiohttp.ClientSession, path: str, *, operator: bool = True
) -> tuple[int, dict[str, Any]]:
    headers = api.headers("ops" if operator else uid("acct"), operator=operator)
    async with http.get(api.url + path, headers=headers) as answer:
        data: dict[str, Any] = await answer.json(content_type=None)
        return answer.status, data


async def test_figures_match_the_model(api_server: ApiServer, http: aiohttp.ClientSession) -> None:
    """The six figures are mms_metrics' own."""
    status, data = await _get(
        api_server, http, "/v1/operator/capacity?arrival_rate=10&service_rate=4&servers=3"
    )
    assert status == 200, data
    expected = mms_metrics(10.0, 4.0, 3)
    for name in FIGURES:
        assert data[name] == pytest.approx(getattr(expected, name), rel=1e-12)


async def test_account_token_is_forbidden(
    api_server: ApiServer, http: aiohttp.ClientSession
) -> None:
    """A token without the operator role gets 403."""
    status, data = await _get(
        api_server,
        http,
        "/v1/operator/capacity?arrival_rate=10&service_rate=4&servers=3",
        operator=False,
    )
    assert status == 403, data


async def test_unstable_system_is_refused(
    api_server: ApiServer, http: aiohttp.ClientSession
) -> None:
    """Utilisation >= 1 is a 422 problem that says why."""
    status, data = await _get(
        api_server, http, "/v1/operator/capacity?arrival_rate=12&service_rate=4&servers=3"
    )
    assert status == 422, data
    assert data["code"] == "validation_failed"
    assert data["errors"][0]["code"] == "capacity_unstable"
    assert data["errors"][0]["reason"]


@pytest.mark.parametrize(
    "query",
    [
        "arrival_rate=-1&service_rate=4&servers=3",
        "arrival_rate=nan&service_rate=4&servers=3",
        "arrival_rate=1&service_rate=4&servers=0",
        "arrival_rate=1&service_rate=4&servers=3&extra=1",
        "arrival_rate=1&service_rate=4",
    ],
)
async def test_nonsense_is_refused(
    api_server: ApiServer, http: aiohttp.ClientSession, query: str
) -> None:
    """Negative, NaN, zero doctors, unknown or missing parameters: 422."""
    status, data = await _get(api_server, http, f"/v1/operator/capacity?{query}")
    assert status == 422, data


async def test_min_servers_and_max_rate(api_server: ApiServer, http: aiohttp.ClientSession) -> None:
    """The inverse routes answer what the planning functions answer."""
    status, data = await _get(
        api_server,
        http,
        "/v1/operator/capacity/min-servers?arrival_rate=10&service_rate=4&max_wait_minutes=6",
    )
    assert status == 200, data
    assert data["servers"] == min_servers_for_wait(10.0, 4.0, 0.1)
    status, data = await _get(
        api_server,
        http,
        "/v1/operator/capacity/max-rate?service_rate=4&servers=3&max_wait_minutes=6&session_hours=4",
    )
    assert status == 200, data
    rate = max_arrival_rate_for_wait(4.0, 3, 0.1)
    assert data["max_arrival_rate"] == pytest.approx(rate, rel=1e-12)
    assert data["patients_per_session"] == int(rate * 4)


async def test_overflowing_figures_are_422(
    api_server: ApiServer, http: aiohttp.ClientSession
) -> None:
    """Rates and session lengths whose product overflows answer 422, not 500 (found by
    schemathesis)."""
    status, data = await _get(
        api_server,
        http,
        "/v1/operator/capacity/max-rate?max_wait_minutes=250&session_hours=1e300"
        "&service_rate=6.2470111863030536e16&servers=11450",
    )
    assert status == 422, data
    assert data["errors"][0]["field"] == "session_hours"


async def _book(api: ApiServer, http: aiohttp.ClientSession, slot_id: str) -> str:
    account = uid("acct")
    headers = api.headers(account)
    patient_id = await register_patient(api, http, account)
    body = {"slot_id": slot_id, "patient_id": patient_id, "channel": "wechat"}
    key = {"Idempotency-Key": uuid.uuid4().hex}
    async with http.post(api.url + "/v1/holds", json=body, headers=headers | key) as answer:
        hold = await answer.json()
        assert answer.status == 201, hold
    async with http.post(
        api.url + f"/v1/holds/{hold['hold_id']}/confirm",
        json={"payment_ref": "wx-" + uuid.uuid4().hex[:8]},
        headers=headers,
    ) as answer:
        booking = await answer.json()
        assert answer.status == 200, booking
    return str(booking["booking_id"])


async def _settle(
    database_url: str, outcomes: dict[str, str], *, consultation_minutes: float | None = None
) -> None:
    """The visits as the HIS would settle them (with each consultation's length)."""
    connection = await asyncpg.connect(database_url)
    try:
        for booking_id, status in outcomes.items():
            await connection.execute(
                "UPDATE bookings SET status = $2, his_appointment_no = 'A-' || id,"
                " checked_in_at = CASE WHEN $2 = 'visited' THEN now() END,"
                " no_show_at = CASE WHEN $2 = 'no_show' THEN now() END,"
                " consultation_started_at = CASE WHEN $2 = 'visited' AND $3::float8 IS NOT NULL"
                "   THEN now() END,"
                " consultation_ended_at = CASE WHEN $2 = 'visited' AND $3::float8 IS NOT NULL"
                "   THEN now() + make_interval(secs => $3::float8 * 60) END"
                " WHERE id = $1",
                booking_id,
                status,
                consultation_minutes,
            )
    finally:
        await connection.close()


async def test_department_estimate_from_bookings(
    api_server: ApiServer, http: aiohttp.ClientSession
) -> None:
    """Visited and no-show bookings in Postgres give the arrival and no-show rates."""
    cat = await Catalogue(api_server, http).create()
    _, slots, day = await cat.schedule([1, 1, 1, 1])  # one 4-hour session
    bookings = [await _book(api_server, http, slot) for slot in slots]
    await _settle(
        api_server.database_url,
        {bookings[0]: "visited", bookings[1]: "visited", bookings[2]: "visited"}
        | {bookings[3]: "no_show"},
    )
    path = (
        f"/v1/operator/departments/{cat.department_id}/capacity"
        f"?from={day.isoformat()}&to={day.isoformat()}&servers=1&service_rate=2"
    )
    status, data = await _get(api_server, http, path)
    assert status == 200, data
    estimate = data["estimate"]
    assert (estimate["sessions"], estimate["attended"], estimate["no_shows"]) == (1, 3, 1)
    assert estimate["observed_hours"] == pytest.approx(4.0)
    assert estimate["booked_rate_per_hour"] == pytest.approx(1.0)
    assert estimate["no_show_rate"] == pytest.approx(0.25)
    assert estimate["effective_arrival_rate_per_hour"] == pytest.approx(0.75)
    assert estimate["service_rate_per_hour"] is None
    expected = mms_metrics(0.75, 2.0, 1)
    for name in FIGURES:
        assert data["figures"][name] == pytest.approx(getattr(expected, name), rel=1e-9)

    without_rate = path.replace("&service_rate=2", "")
    status, data = await _get(api_server, http, without_rate)
    assert status == 422, data
    assert data["errors"][0]["field"] == "service_rate"
    assert data["errors"][0]["code"] == "capacity_insufficient_data"


async def test_department_service_rate_from_recorded_consultations(
    api_server: ApiServer, http: aiohttp.ClientSession
) -> None:
    """Visits whose consultations the HIS timed (20 minutes each) give the service rate
    (3 per hour): the route needs no service_rate then."""
    cat = await Catalogue(api_server, http).create()
    _, slots, day = await cat.schedule([1, 1])
    bookings = [await _book(api_server, http, slot) for slot in slots]
    await _settle(
        api_server.database_url,
        {bookings[0]: "visited", bookings[1]: "visited"},
        consultation_minutes=20.0,
    )
    path = (
        f"/v1/operator/departments/{cat.department_id}/capacity"
        f"?from={day.isoformat()}&to={day.isoformat()}&servers=1"
    )
    status, data = await _get(api_server, http, path)
    assert status == 200, data
    assert data["estimate"]["service_rate_per_hour"] == pytest.approx(3.0)
    assert data["estimate"]["mean_service_minutes"] == pytest.approx(20.0)


async def test_department_without_settled_bookings(
    api_server: ApiServer, http: aiohttp.ClientSession
) -> None:
    """Too few records is a 422 insufficient-data problem."""
    cat = await Catalogue(api_server, http).create()
    _, slots, day = await cat.schedule([1])
    await _book(api_server, http, slots[0])  # still confirmed: outcome unknown
    path = (
        f"/v1/operator/departments/{cat.department_id}/capacity"
        f"?from={day.isoformat()}&to={day.isoformat()}&servers=1&service_rate=2"
    )
    status, data = await _get(api_server, http, path)
    assert status == 422, data
    assert data["errors"][0]["code"] == "capacity_insufficient_data"
    status, data = await _get(
        api_server,
        http,
        f"/v1/operator/departments/{cat.department_id}/capacity"
        f"?from={day.isoformat()}&to=2000-01-01&servers=1&service_rate=2",
    )
    assert status == 422, data
