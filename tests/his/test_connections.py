"""Per-hospital HIS connections: the connections file, and an ``inventory worker``
process serving two hospitals of one simulator process, each with its own credentials
(a client secret, a SMART Backend Services key). One hospital's HIS made slow or down
never holds up the other's sync, submissions or reconciliation; a secret rotated at the
hospital and then in our file is picked up without a restart; the worker's log never
carries a secret, a key or a token."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from datetime import date, timedelta
from pathlib import Path
from typing import Any

import aiohttp
import asyncpg
import pytest
from redis.asyncio import Redis

from inventory.devtools.servers import RedisServer, free_port, start_redis
from inventory.domain import ReserveRequest
from inventory.his.connections import DEFAULT, ConnectionsError, load_connections
from inventory.his.scope import HospitalScope
from inventory.record.bookings import PgBookings
from inventory.record.catalogue import PgCatalogue
from inventory.record.pool import create_pool
from inventory.store.slot_store import SlotStore
from tests.api.conftest import api_env
from tests.databases import Databases
from tests.his.conftest import tomorrow
from tests.his.hospitals import Hospitals, start_hospitals
from tests.his.world import start_worker

# -- the connections file -----------------------------------------------------------------


def test_the_his_url_alone_is_the_default_connection() -> None:
    """Without a file, INVENTORY_HIS_URL is the default connection serving every
    hospital; without either there is none."""
    connections = load_connections(None, default_url="http://127.0.0.1:1/fhir")
    assert connections.names == [DEFAULT]
    assert connections.default is not None
    assert connections.default.auth is None
    assert connections.scope(connections.default) == HospitalScope()
    assert not load_connections(None)


def test_a_connections_file(tmp_path: Path) -> None:
    """Each hospital's connection with its limits, schedules, credentials (a secret
    by file, a key by environment variable) and TLS files; the default serves every
    other hospital; relative paths are the file's."""
    (tmp_path / "a.secret").write_text("s3cret-value\n")
    from tests.his.hospitals import new_key, pem

    environ = {"HOSP_B_KEY": pem(new_key("ES384")).decode()}
    path = tmp_path / "his.toml"
    path.write_text(
        """
[hospitals.hosp-a]
base_url = "https://his.a.example/fhir"
max_concurrency = 2
rate_per_s = 5
breaker_failures = 3
sync_interval_s = 30
reconcile_interval_s = 900
[hospitals.hosp-a.auth]
method = "client_secret_post"
token_url = "https://his.a.example/token"
client_id = "inv"
client_secret_file = "a.secret"

[hospitals.hosp-b]
base_url = "https://his.b.example/r4"
[hospitals.hosp-b.auth]
method = "private_key_jwt"
token_url = "https://auth.b.example/token"
client_id = "inv-b"
private_key_env = "HOSP_B_KEY"
algorithm = "ES384"
"""
    )
    connections = load_connections(path, default_url="http://127.0.0.1:1/fhir", environ=environ)
    assert connections.names == [DEFAULT, "hosp-a", "hosp-b"]
    a = connections.hospitals["hosp-a"]
    assert (a.client.max_concurrency, a.client.rate_per_s, a.client.breaker_failures) == (2, 5, 3)
    assert (a.sync_interval_s, a.reconcile_interval_s) == (30, 900)
    assert a.auth is not None
    assert a.auth.secret is not None
    assert a.auth.secret.read() == "s3cret-value"
    assert "s3cret" not in repr(a)
    assert connections.scope(a) == HospitalScope(only=("hosp-a",))
    assert connections.default is not None
    assert connections.scope(connections.default) == HospitalScope(but=("hosp-a", "hosp-b"))
    assert connections.for_hospital("hosp-z") is connections.default


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (
            '[hospitals.h]\nbase_url = "http://x/fhir"\n[hospitals.h.auth]\n'
            'method = "client_secret_basic"\ntoken_url = "http://x/t"\nclient_id = "c"\n'
            'client_secret = "inline"\n',
            "never written in this file",
        ),
        (
            '[hospitals.h]\nbase_url = "http://x/fhir"\n[hospitals.h.auth]\n'
            'method = "client_secret_basic"\ntoken_url = "http://x/t"\nclient_id = "c"\n'
            'client_secret_file = "missing"\n',
            "cannot be read",
        ),
        ('[hospitals.h]\nbase_url = "http://x/fhir"\nadapter = "hl7v2"\n', "adapter"),
        ('[hospitals.h]\nbase_url = "http://x/fhir"\nrate_per_s = -1\n', "rate_per_s"),
        ('[hospitals.h]\nbase_url = "http://x/fhir"\nsurprise = 1\n', "unknown keys"),
        ('[hospitals."bad id!"]\nbase_url = "http://x/fhir"\n', "not a valid hospital id"),
        ('[hospitals.h]\nadapter = "fhir-r4"\n', "base_url is required"),
        (
            '[hospitals.h]\nbase_url = "http://x/fhir"\n[hospitals.h.auth]\n'
            'method = "private_key_jwt"\ntoken_url = "http://x/t"\nclient_id = "c"\n',
            "private key",
        ),
    ],
)
def test_a_wrong_connections_file_is_refused(tmp_path: Path, text: str, message: str) -> None:
    """Every mistake is refused at start-up with where it is."""
    path = tmp_path / "his.toml"
    path.write_text(text)
    with pytest.raises(ConnectionsError, match=message):
        load_connections(path)


def test_the_worker_refuses_a_wrong_file_at_start(tmp_path: Path) -> None:
    """``inventory worker`` exits 2 on a wrong connections file, naming the problem."""
    path = tmp_path / "his.toml"
    path.write_text('[hospitals.h]\nbase_url = "http://x/fhir"\nsurprise = 1\n')
    env = dict(os.environ) | {
        "INVENTORY_HIS_CONNECTIONS": str(path),
        "INVENTORY_REDIS_URL": "redis://127.0.0.1:1",
        "INVENTORY_DATABASE_URL": "postgresql://127.0.0.1:1/x",
    }
    done = subprocess.run(
        [sys.executable, "-m", "inventory", "worker"], env=env, capture_output=True, timeout=60
    )
    assert done.returncode == 2
    assert b"INVENTORY_HIS_CONNECTIONS" in done.stderr
    assert b"surprise" in done.stderr


@pytest.mark.parametrize("algorithm", ["RS384", "ES384"])
def test_his_key_makes_a_key_and_prints_its_jwks(tmp_path: Path, algorithm: str) -> None:
    """``inventory his-key --new`` writes an owner-only key, never over an existing one,
    and prints the public JWKS whose kid our assertions carry."""
    import jwt
    import orjson

    from inventory.his.auth import TokenAuth, TokenAuthConfig
    from inventory.his.secrets import SecretSource

    key = tmp_path / "key.pem"
    command = [sys.executable, "-m", "inventory", "his-key", "--new", algorithm, str(key)]
    done = subprocess.run(command, capture_output=True, timeout=60, check=True)
    assert key.stat().st_mode & 0o777 == 0o600
    [jwk] = orjson.loads(done.stdout)["keys"]
    assert jwk["alg"] == algorithm
    assert "d" not in jwk
    assert b"PRIVATE" not in done.stdout
    again = subprocess.run(command, capture_output=True, timeout=60)
    assert again.returncode == 2
    reprinted = subprocess.run([*command[:4], str(key)], capture_output=True, timeout=60)
    assert orjson.loads(reprinted.stdout) == orjson.loads(done.stdout)
    auth = TokenAuth(
        TokenAuthConfig(
            token_url="https://his.example/token",
            client_id="c",
            method="private_key_jwt",
            private_key=SecretSource(file=key),
            algorithm=algorithm,  # type: ignore[arg-type]
        )
    )
    assertion = auth.assertion()
    assert jwt.get_unverified_header(assertion)["kid"] == jwk["kid"]
    public = jwt.PyJWK.from_dict(jwk).key
    claims = jwt.decode(
        assertion, public, algorithms=[algorithm], audience="https://his.example/token"
    )
    assert claims["iss"] == claims["sub"] == "c"
    assert 0 < claims["exp"] - claims["iat"] <= 300


# -- two hospitals, one worker ------------------------------------------------------------


@dataclass
class Stack:
    """The simulator, a Redis, a database and what the test books with."""

    hospitals: Hospitals
    redis: RedisServer
    database_url: str
    pool: asyncpg.Pool
    client: Redis
    store: SlotStore
    catalogue: PgCatalogue
    bookings: PgBookings
    connections_file: Path
    used: set[str] = field(default_factory=set)

    async def scalar(self, sql: str, *args: Any) -> Any:
        async with self.pool.acquire() as connection:
            return await connection.fetchval(sql, *args)

    async def free_slots(self, hospital: str, day: date, count: int) -> list[str]:
        """``count`` slot ids of the hospital's open schedules on ``day``."""
        async with self.pool.acquire() as connection:
            rows = await connection.fetch(
                "SELECT sl.id FROM slots sl JOIN schedules s ON s.id = sl.schedule_id"
                " WHERE s.hospital_id = $1 AND s.visit_date = $2 AND s.status = 'open'"
                " AND sl.capacity > 0 AND NOT (sl.id = ANY($4::text[])) ORDER BY sl.id LIMIT $3",
                hospital,
                day,
                count,
                sorted(self.used),
            )
        assert len(rows) == count, (hospital, day)
        self.used |= {row["id"] for row in rows}
        return [row["id"] for row in rows]

    async def book(self, slot_id: str) -> str:
        """One confirmed booking recorded in Postgres (as the API's confirm does)."""
        location = await self.catalogue.slot_location(slot_id)
        assert location is not None, slot_id
        patient = f"p{uuid.uuid4().hex[:16]}"
        async with self.pool.acquire() as connection:
            await connection.execute(
                "INSERT INTO patients (id, account_id, blind_index, key_id, name_enc,"
                " phone_enc, resident_id_enc, gender, birth_date) VALUES ($1, 'acct', $2,"
                " 'k', '\\x00', '\\x00', '\\x00', 'female', '1990-01-01')",
                patient,
                uuid.uuid4().bytes + uuid.uuid4().bytes,
            )
        request = ReserveRequest(
            location.hospital_id,
            location.department_id,
            location.visit_date,
            slot_id,
            "acct",
            patient,
            "wechat",
            uuid.uuid4().hex,
        )
        held = await self.store.reserve(request)
        booked = await self.store.confirm(held.hold.hold_id, account_id="", payment_ref="wx-t")
        await self.bookings.record(booked.hold)
        return held.hold.hold_id

    async def statuses(self, booking_ids: list[str]) -> list[str]:
        async with self.pool.acquire() as connection:
            rows = await connection.fetch(
                "SELECT status FROM bookings WHERE id = ANY($1::text[]) ORDER BY id", booking_ids
            )
        return [row["status"] for row in rows]


def connections_toml(hospitals: Hospitals) -> str:
    """hosp-a by client secret, hosp-b by an RS384 key; short timeouts, a quick breaker."""
    sim = hospitals.sim
    limits = (
        "request_timeout_s = 1\ntotal_timeout_s = 2\nattempts = 2\n"
        "breaker_failures = 2\nbreaker_cooldown_s = 1\nsync_interval_s = 0.5\n"
        "reconcile_interval_s = 1\n"
    )
    return f"""
[hospitals.hosp-a]
base_url = "{sim.fhir_url_of("hosp-a")}"
{limits}
[hospitals.hosp-a.auth]
method = "client_secret_basic"
token_url = "{sim.token_url_of("hosp-a")}"
client_id = "inventory-hosp-a"
client_secret_file = "our-hosp-a-secret.txt"

[hospitals.hosp-b]
base_url = "{sim.fhir_url_of("hosp-b")}"
{limits}
[hospitals.hosp-b.auth]
method = "private_key_jwt"
token_url = "{sim.token_url_of("hosp-b")}"
client_id = "inventory-hosp-b"
private_key_file = "our-hosp-b-key.pem"
algorithm = "RS384"
scope = "system/Schedule.rs system/Slot.rs system/Appointment.cruds"
"""


@pytest.fixture(scope="module")
def hospitals(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Hospitals]:
    """One simulator process serving the hospitals."""
    built = start_hospitals(Path(tmp_path_factory.mktemp("his-connections")))
    try:
        yield built
    finally:
        built.sim.stop()


@pytest.fixture(scope="module")
async def stack(
    hospitals: Hospitals, databases: Databases, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[Stack]:
    """A private Redis and database, and the connections file."""
    directory = Path(tmp_path_factory.mktemp("his-connections-stack"))
    redis_server = start_redis(directory / "redis")
    database_url = await databases.create(prefix="hisconn")
    pool = await create_pool(database_url, min_size=1, max_size=4)
    client = Redis.from_url(redis_server.url, decode_responses=True)
    path = hospitals.directory / "connections.toml"
    path.write_text(connections_toml(hospitals))
    try:
        store = await SlotStore.connect_scripts(client)
        yield Stack(
            hospitals,
            redis_server,
            database_url,
            pool,
            client,
            store,
            PgCatalogue(pool, store),
            PgBookings(pool),
            path,
        )
    finally:
        await pool.close()
        await client.aclose()
        redis_server.close()


async def wait_for(check: Any, timeout_s: float, what: str) -> float:
    """Poll ``check()`` until true; the seconds it took."""
    started = time.monotonic()
    while time.monotonic() - started < timeout_s:
        if await check():
            return time.monotonic() - started
        await asyncio.sleep(0.1)
    raise AssertionError(f"{what}: not within {timeout_s} s")


async def sim_admin(hospitals: Hospitals, hospital: str, path: str, body: Any = None) -> Any:
    async with aiohttp.ClientSession() as session:
        method = "GET" if body is None else ("DELETE" if body == "DELETE" else "POST")
        url = f"{hospitals.sim.root_of(hospital)}/$admin/{path}"
        async with session.request(
            method, url, json=None if body in (None, "DELETE") else body
        ) as response:
            assert response.status < 300, await response.text()
            return await response.json()


@pytest.mark.timeout(240)
@pytest.mark.parametrize("fault", ["slow", "down"])
async def test_one_hospitals_his_faulted_never_holds_up_the_other(
    stack: Stack, tmp_path: Path, fault: str
) -> None:
    """A worker process with hosp-a's and hosp-b's connections. hosp-a's HIS made slow
    (every answer after 3 s, past the client's 1 s) or down (every answer 503): hosp-b's
    bookings still reach its HIS within seconds, a schedule added at hosp-b still
    arrives, hosp-b still reconciles; hosp-a's wait, and go through once its HIS is
    back. Meanwhile hosp-a's circuit opened, hosp-b's never did."""
    hospitals = stack.hospitals
    env = api_env(stack.redis.url, stack.database_url, free_port())
    env.pop("INVENTORY_HIS_URL", None)
    env |= {
        "INVENTORY_HIS_CONNECTIONS": str(stack.connections_file),
        "INVENTORY_WORKER_METRICS_PORT": "0",
    }
    log_path = tmp_path / "worker.log"
    worker = start_worker(env, log_path)
    try:
        for hospital in ("hosp-a", "hosp-b"):
            await wait_for(
                lambda h=hospital: _has_schedules(stack, h), 60, f"{hospital}'s schedules synced"
            )
        day = tomorrow()
        await sim_admin(
            hospitals,
            "hosp-a",
            "faults",
            {"latency_ms": 3000} if fault == "slow" else {"error_rate": 1.0},
        )
        await asyncio.sleep(1.0)  # the worker's calls in flight meet the fault
        runs_before = await stack.scalar(
            "SELECT count(*) FROM reconciliation_runs WHERE status = 'completed'"
        )
        a_bookings = [await stack.book(s) for s in await stack.free_slots("hosp-a", day, 3)]
        b_bookings = [await stack.book(s) for s in await stack.free_slots("hosp-b", day, 3)]

        async def b_confirmed() -> bool:
            return await stack.statuses(b_bookings) == ["his_confirmed"] * 3

        took = await wait_for(b_confirmed, 15, "hosp-b's bookings in its HIS")
        assert took < 10, took
        assert "his_confirmed" not in await stack.statuses(a_bookings)

        added = await sim_admin(
            hospitals,
            "hosp-b",
            "schedules",
            {
                # One doctor per run: a doctor has one schedule per session here.
                "doctor": "b-cardiology-dr2" if fault == "slow" else "b-pediatrics-dr2",
                "date": day.isoformat(),
                "session": "evening",
                "id": f"b-new-{uuid.uuid4().hex[:6]}",
            },
        )

        async def b_schedule_synced() -> bool:
            found = await stack.scalar("SELECT 1 FROM schedules WHERE id = $1", added["schedule"])
            return found is not None

        await wait_for(b_schedule_synced, 10, "hosp-b's new schedule synced")

        async def b_reconciled() -> bool:
            runs = await stack.scalar(
                "SELECT count(*) FROM reconciliation_runs WHERE status = 'completed'"
            )
            return bool(runs > runs_before)

        await wait_for(b_reconciled, 15, "a reconciliation completed while hosp-a is faulted")
        assert "his_confirmed" not in await stack.statuses(a_bookings)

        await sim_admin(hospitals, "hosp-a", "faults", "DELETE")

        async def a_confirmed() -> bool:
            return await stack.statuses(a_bookings) == ["his_confirmed"] * 3

        # The deferred bookings come due again (a circuit-open retry after 15 s).
        await wait_for(a_confirmed, 90, "hosp-a's bookings once its HIS is back")
    finally:
        if worker.poll() is None:
            os.killpg(worker.pid, signal.SIGTERM)
            worker.wait(timeout=30)
    log = log_path.read_text(errors="replace")
    assert '"connection": "hosp-a"' in log or '"connection":"hosp-a"' in log
    retries = [line for line in log.splitlines() if "stamina.retry_scheduled" in line]
    assert retries
    # Each names its connection (the client's retries log nothing of their own about it).
    assert all('"his_connection":' in line for line in retries), retries[:3]
    assert any('"his_connection":"hosp-a"' in line for line in retries)
    failed_b = [line for line in log.splitlines() if "hosp-b" in line and "_failed" in line]
    assert not failed_b, failed_b[:3]
    _assert_no_secrets(hospitals, log)


async def test_a_secret_rotated_at_the_hospital_is_picked_up_without_a_restart(
    stack: Stack, tmp_path: Path
) -> None:
    """The hospital rotates hosp-a's secret and revokes its tokens: the worker's hosp-a
    flows fail (invalid_client, logged without the secret) while hosp-b's go on; once
    our secret file has the new value, hosp-a's bookings reach its HIS, same process."""
    hospitals = stack.hospitals
    env = api_env(stack.redis.url, stack.database_url, free_port())
    env.pop("INVENTORY_HIS_URL", None)
    env |= {
        "INVENTORY_HIS_CONNECTIONS": str(stack.connections_file),
        "INVENTORY_WORKER_METRICS_PORT": "0",
    }
    log_path = tmp_path / "worker.log"
    worker = start_worker(env, log_path)
    old = hospitals.our_secret("hosp-a").read_text().strip()
    try:
        for hospital in ("hosp-a", "hosp-b"):
            await wait_for(
                lambda h=hospital: _has_schedules(stack, h), 60, f"{hospital}'s schedules synced"
            )
        new = hospitals.rotate_secret("hosp-a", ours=False)
        await sim_admin(hospitals, "hosp-a", "auth", {"revoke": True})
        day = tomorrow()
        [a_booking] = [await stack.book(s) for s in await stack.free_slots("hosp-a", day, 1)]
        [b_booking] = [await stack.book(s) for s in await stack.free_slots("hosp-b", day, 1)]

        async def b_confirmed() -> bool:
            return await stack.statuses([b_booking]) == ["his_confirmed"]

        await wait_for(b_confirmed, 15, "hosp-b's booking in its HIS")

        async def refused_logged() -> bool:
            return "invalid_client" in log_path.read_text(errors="replace")

        await wait_for(refused_logged, 15, "hosp-a's refused secret logged")
        assert await stack.statuses([a_booking]) != ["his_confirmed"]
        hospitals.our_secret("hosp-a").write_text(new + "\n")

        async def a_confirmed() -> bool:
            return await stack.statuses([a_booking]) == ["his_confirmed"]

        await wait_for(a_confirmed, 90, "hosp-a's booking after our secret was rotated")
    finally:
        if worker.poll() is None:
            os.killpg(worker.pid, signal.SIGTERM)
            worker.wait(timeout=30)
    log = log_path.read_text(errors="replace")
    for value in (old, new):
        assert value not in log
    _assert_no_secrets(hospitals, log)


async def _has_schedules(stack: Stack, hospital: str) -> bool:
    """Whether the first sync round of the hospital has written tomorrow's schedules
    (about forty: 24 doctors, two sessions, one in six off)."""
    count = await stack.scalar(
        "SELECT count(*) FROM schedules WHERE hospital_id = $1 AND visit_date = $2",
        hospital,
        tomorrow(),
    )
    return bool(count >= 30)


def _assert_no_secrets(hospitals: Hospitals, log: str) -> None:
    """Neither secret, nor the private key, nor a bearer token or an assertion; and no
    loop of the worker died."""
    assert "worker.loop_failed" not in log
    assert hospitals.our_secret("hosp-a").read_text().strip() not in log
    key_lines = hospitals.our_key("hosp-b").read_text().splitlines()[1:-1]
    assert not any(line in log for line in key_lines if len(line) > 20)
    for marker in ("Bearer ", "access_token", "client_assertion=", "eyJ"):
        assert marker not in log, marker


def test_a_default_table_adds_credentials_to_the_his_url(tmp_path: Path) -> None:
    """``[default]`` without base_url takes INVENTORY_HIS_URL and adds its settings."""
    (tmp_path / "secret").write_text("x" * 20)
    path = tmp_path / "his.toml"
    path.write_text(
        '[default]\nmax_concurrency = 3\n[default.auth]\nmethod = "client_secret_post"\n'
        'token_url = "http://127.0.0.1:1/token"\nclient_id = "c"\nclient_secret_file = "secret"\n'
    )
    connections = load_connections(path, default_url="http://127.0.0.1:1/fhir")
    assert connections.default is not None
    assert connections.default.base_url == "http://127.0.0.1:1/fhir"
    assert connections.default.client.max_concurrency == 3
    assert connections.default.auth is not None
    assert connections.default.auth.method == "client_secret_post"


async def test_a_hospitals_catalogue_is_written_under_its_own_id_and_never_moves_ids(
    stack: Stack,
) -> None:
    """A hospital's connection writes its HIS's catalogue under the hospital id it is
    configured for, whatever the HIS calls itself; another connection whose HIS names the
    same departments is refused rather than moving them to its hospital."""
    from inventory.his.client import FhirHisClient
    from inventory.his.sync import HisIdsTakenError, ScheduleSync
    from tests.his.conftest import client_config

    config = client_config(
        stack.hospitals.sim, base_url=stack.hospitals.sim.fhir_url_of("hosp-open")
    )
    async with FhirHisClient(config) as his:
        ours = ScheduleSync(his, stack.pool, stack.store, stack.catalogue, hospital_id="city-1")
        catalogue = await ours.sync_catalogue()
        assert catalogue.hospital_id == "hosp-open"
        owner = await stack.scalar(
            "SELECT hospital_id FROM departments WHERE id = 'open-cardiology'"
        )
        assert owner == "city-1"
        other = ScheduleSync(his, stack.pool, stack.store, stack.catalogue)
        with pytest.raises(HisIdsTakenError, match="belongs to city-1"):
            await other.sync_catalogue()
    owner = await stack.scalar("SELECT hospital_id FROM departments WHERE id = 'open-cardiology'")
    assert owner == "city-1"
    assert await stack.scalar("SELECT count(*) FROM hospitals WHERE id = 'hosp-open'") == 0


async def test_reconcile_one_hospitals_connection(stack: Stack) -> None:
    """``inventory reconcile --hospital`` reads that hospital's HIS with its credentials
    and only that hospital's bookings; an unknown hospital without a default connection
    is a configuration problem (exit 2)."""
    import orjson

    env = api_env(stack.redis.url, stack.database_url, free_port())
    env.pop("INVENTORY_HIS_URL", None)
    env["INVENTORY_HIS_CONNECTIONS"] = str(stack.connections_file)
    first, last = tomorrow() - timedelta(days=1), tomorrow() + timedelta(days=12)
    connections = load_connections(stack.connections_file)
    for hospital in ("hosp-a", "hosp-b"):
        if not await _has_schedules(stack, hospital):  # run alone: sync and book first
            from inventory.his.sync import ScheduleSync

            his = connections.hospitals[hospital].build()
            try:
                await ScheduleSync(
                    his, stack.pool, stack.store, stack.catalogue, hospital_id=hospital
                ).sync()
            finally:
                await his.close()
            await stack.book((await stack.free_slots(hospital, tomorrow(), 1))[0])
        done = await asyncio.to_thread(
            subprocess.run,
            [sys.executable, "-m", "inventory", "reconcile", "--hospital", hospital, "--json"],
            env=env,
            capture_output=True,
            timeout=120,
        )
        assert done.returncode in (0, 1), done.stderr[-2000:]
        report = orjson.loads(done.stdout)
        ours = await stack.scalar(
            "SELECT count(*) FROM bookings b JOIN schedules s ON s.id = b.schedule_id"
            " WHERE s.hospital_id = $1 AND s.visit_date BETWEEN $2 AND $3",
            hospital,
            first,
            last,
        )
        assert ours > 0
        assert report["checked"]["bookings"] == ours, hospital
    done = await asyncio.to_thread(
        subprocess.run,
        [sys.executable, "-m", "inventory", "reconcile", "--hospital", "hosp-z"],
        env=env,
        capture_output=True,
        timeout=60,
    )
    assert done.returncode == 2
    assert b"hosp-z has no connection" in done.stderr


async def test_each_connections_queue_is_sampled(stack: Stack) -> None:
    """The worker's sampler adds each hospital's waiting bookings to the connection
    serving it: a booking of hosp-a not yet sent shows under hosp-a only."""
    from prometheus_client.parser import text_string_to_metric_families

    from inventory.ops import metrics
    from inventory.ops.sampler import sample_records

    connections = load_connections(stack.connections_file)
    metrics.register_his_connections(connections.names)

    async def sampled() -> dict[tuple[str, str], float]:
        await sample_records(stack.pool, his_queue=True, his_connection_of=connections.name_for)
        found: dict[tuple[str, str], float] = {}
        for family in text_string_to_metric_families(metrics.exposition("worker").decode()):
            if family.name == "inventory_his_connection_queue":
                for sample in family.samples:
                    key = (sample.labels["connection"], sample.labels["status"])
                    found[key] = sample.value
        return found

    before = await sampled()
    if not await _has_schedules(stack, "hosp-a"):  # run alone: sync first
        from inventory.his.sync import ScheduleSync

        his = connections.hospitals["hosp-a"].build()
        try:
            await ScheduleSync(
                his, stack.pool, stack.store, stack.catalogue, hospital_id="hosp-a"
            ).sync()
        finally:
            await his.close()
    await stack.book((await stack.free_slots("hosp-a", tomorrow(), 1))[0])
    after = await sampled()
    assert after[("hosp-a", "confirmed")] == before.get(("hosp-a", "confirmed"), 0) + 1
    assert after[("hosp-b", "confirmed")] == before.get(("hosp-b", "confirmed"), 0)
    assert connections.name_for("hosp-zz") == "none"
