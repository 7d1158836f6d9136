"""The crowd measurement's steps that run on the measured build's own code.

:mod:`bench.crowd` can measure another build of the service (an older commit in a
worktree of its own, with its own virtual environment): the database's migrations, the
seeded rows and keys, and the counts read afterwards must then be that build's, not the
harness's. So these steps run as a script under the measured build's Python::

    <build python> -P bench/crowd_stack.py seed --patients N --units U --plan PATH
    <build python> -P bench/crowd_stack.py verify --plan PATH --settle-s S

Run as a script with ``-P``, nothing is put in front of ``sys.path`` (neither the
checkout, as ``-m`` would, nor ``bench/``, whose ``http`` package would hide the
standard library's), so ``import inventory`` finds the measured build's package.
The settings (Redis, the database, the keys) come from the environment, as for
``inventory serve``. Only calls that every measured build has are used.

``seed`` migrates the database, writes one hospital, department and doctor, one
released schedule with one slot of ``units`` units, and ``patients`` accounts with one
registered patient each (through the service's own patient registry, so names and ID
numbers are encrypted and indexed as the API would do it) and a token each; then runs
the fence's comparison once, so the API's verified-store gate is open from its first
request. It writes the plan (slot, tag, tokens, patient ids) as JSON.

``verify`` runs the service's own check (what ``inventory check`` runs), again while the
worker is still persisting the run's events, and prints its report with the slot's
counts in Redis and its holds in Postgres, as JSON.
"""

from __future__ import annotations

import argparse
import asyncio
import importlib
import inspect
import json
import os
import secrets
import sys
import time
from datetime import UTC, date, datetime, timedelta
from datetime import time as clock_time
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

_ZONE = ZoneInfo("Asia/Shanghai")
#: Registrations in flight while seeding (each is a short Postgres transaction).
_SEED_CONCURRENCY = 16


def _module(*names: str) -> Any:
    """The first of ``inventory.<name>`` that the measured build has: the package's
    modules moved into folders (``inventory.keys`` became ``inventory.store.keys``), and
    this script runs on builds from either side of that move. Typed ``Any``: the
    harness type-checks against its own build only."""
    for name in names:
        try:
            return importlib.import_module(f"inventory.{name}")
        except ModuleNotFoundError as error:
            if error.name is None or not f"inventory.{name}".startswith(error.name):
                raise  # the module exists but something it imports does not
    raise ModuleNotFoundError(f"none of inventory.{', inventory.'.join(names)}")


async def seed(patients: int, units: int, release_in_s: float | None = None) -> dict[str, Any]:
    """Migrate, write the catalogue and the patients, verify the store; the plan.
    ``release_in_s``: the slot is released that long from now (a queued release's T0,
    for ``python -m bench room``) instead of an hour ago."""
    from redis.asyncio import Redis

    keys = _module("store.keys", "keys")
    mint_token = _module("api.auth").mint_token
    PatientCreate = _module("api.models").PatientCreate
    PgCatalogue = _module("record.catalogue", "catalogue").PgCatalogue
    Settings = _module("ops.config", "config").Settings
    migrate_database = _module("record.migrate", "db.migrate").migrate_database
    pools = _module("record.pool", "db.pool")
    acquire, create_pool = pools.acquire, pools.create_pool
    QUERIES = _module("record.queries", "db.queries").QUERIES
    verify_store = _module("recovery.fence", "fence").verify_store
    make_resident_id = _module("privacy.identity", "identity").make_resident_id
    PatientRegistry = _module("record.patients", "patients").PatientRegistry
    SlotStore = _module("store.slot_store", "store").SlotStore

    settings = Settings.from_env()
    await migrate_database(settings.database_url)
    client = Redis.from_url(settings.redis_url, decode_responses=True)
    pool = await create_pool(settings.database_url, min_size=1, max_size=_SEED_CONCURRENCY)
    try:
        store = await SlotStore.connect_scripts(client)
        catalogue = PgCatalogue(pool, store)
        hospital = "crowd-hospital"
        # A department of its own per run: the slot's tag is new in any Redis.
        department = f"crowd-{secrets.token_hex(4)}"
        async with acquire(pool, timeout_s=10.0) as connection:
            await connection.execute(
                QUERIES["upsert_hospital"], hospital, "Crowd Hospital", "Asia/Shanghai", {}
            )
            await connection.execute(
                QUERIES["upsert_department"], department, hospital, None, department, 0
            )
            await connection.execute(
                QUERIES["upsert_doctor"],
                f"{department}-dr",
                hospital,
                department,
                "Dr Crowd",
                "主任医师",
                "general",
            )
        await catalogue.load_policies()
        day = datetime.now(tz=_ZONE).date() + timedelta(days=1)
        starts_at = datetime.combine(day, clock_time(8, 0), _ZONE)
        schedule_id = f"{department}-{day:%Y%m%d}-am"
        # Released an hour ago: the crowd's first request may take a unit (or, for a
        # queued release, T0 ahead).
        release_at = datetime.now(tz=UTC) - timedelta(hours=1)
        if release_in_s is not None:
            release_at = (datetime.now(tz=UTC) + timedelta(seconds=release_in_s)).replace(
                microsecond=0
            )
        slot_id = f"{schedule_id}-0"
        schedule = {
            "schedule_id": schedule_id,
            "hospital_id": hospital,
            "department_id": department,
            "doctor_id": f"{department}-dr",
            "visit_date": day,
            "session": "morning",
            "starts_at": starts_at,
            "ends_at": starts_at + timedelta(hours=4),
            # Released an hour ago: the crowd's first request may take a unit.
            "release_at": (
                datetime.now(tz=UTC) - timedelta(hours=1)
                if release_in_s is None
                else (datetime.now(tz=UTC) + timedelta(seconds=release_in_s)).replace(microsecond=0)
            ),
            "cancel_deadline": datetime.combine(day - timedelta(days=1), clock_time(16, 0), _ZONE),
            "fee_fen": 5000,
            "location": "Outpatient building",
        }
        slot = {
            "slot_id": slot_id,
            "starts_at": starts_at,
            "ends_at": starts_at + timedelta(hours=4),
            "capacity": units,
        }
        await catalogue.put_schedule(schedule, [slot])
        extra: dict[str, Any] = {}
        # Builds that keep a copy of each account-patient link in Redis take the client,
        # as their API does; older ones ask Postgres only.
        if "redis" in inspect.signature(PatientRegistry).parameters:
            extra["redis"] = client
        registry = PatientRegistry(pool, settings.keyring(), settings.blind_index(), **extra)
        limit = asyncio.Semaphore(_SEED_CONCURRENCY)

        async def register(n: int) -> tuple[str, str]:
            account = f"crowd-a{n}"
            born = date(1950, 1, 1) + timedelta(days=n // 500)
            body = PatientCreate.model_validate(
                {
                    "name": "测试患者",
                    "gender": "female",
                    "birth_date": born,
                    "phone": f"139{n % 10**8:08d}",
                    "resident_id": make_resident_id(born, "female", seq=n % 500),
                }
            )
            async with limit:
                view, _ = await registry.register(account, body)
            return mint_token(settings, account, ttl_s=24 * 3600), str(view["patient_id"])

        accounts = await asyncio.gather(*(register(n) for n in range(patients)))
        await verify_store(store, pool)
        return {
            "slot_id": slot_id,
            "schedule_id": schedule_id,
            "release_at": release_at.timestamp(),
            "tag": keys.department_day_tag(department, day),
            "units": units,
            "accounts": accounts,
            "key_prefix": f"crowd-{secrets.token_hex(4)}",
        }
    finally:
        await pool.close()
        await client.aclose()


async def verify(plan: dict[str, Any], settle_s: float) -> dict[str, Any]:
    """The service's own check (what ``inventory check`` runs: Redis against Postgres,
    every slot's invariant), repeated while tags are still lagging (the worker is still
    persisting the run's events) for at most ``settle_s``; then the slot's counts."""
    check = _module("recovery.check", "check").check
    Settings = _module("ops.config", "config").Settings
    create_pool = _module("record.pool", "db.pool").create_pool
    connect_redis = _module("store.connection", "redis_client").connect_redis
    SlotStore = _module("store.slot_store", "store").SlotStore

    settings = Settings.from_env(for_api=False)
    client = await connect_redis(settings.redis_url, cluster=settings.redis_cluster)
    pool = await create_pool(settings.database_url, min_size=1, max_size=2)
    try:
        store = await SlotStore.connect_scripts(client)
        started = time.monotonic()
        runs = 0
        while True:
            runs += 1
            report = (await check(store, pool)).as_dict()
            if not report.get("lagging") or time.monotonic() - started >= settle_s:
                break
            await asyncio.sleep(0.5)
        passed = bool(report["ok"]) and not report.get("lagging") and not report.get("fenced")
        return {
            "check": {
                "passed": passed,
                "runs": runs,
                "waited_s": round(time.monotonic() - started, 1),
                **report,
            },
            "counts": await _counts(store, pool, plan),
        }
    finally:
        await pool.close()
        await client.aclose()


async def _counts(store: Any, pool: Any, plan: dict[str, Any]) -> dict[str, Any]:
    """The slot's counts in Redis and its holds in Postgres, by state."""
    acquire = _module("record.pool", "db.pool").acquire

    counts = (await store.slot_counts(plan["tag"], [plan["slot_id"]]))[plan["slot_id"]]
    async with acquire(pool, timeout_s=10.0) as connection:
        rows = await connection.fetch(
            "SELECT state, count(*) AS n FROM holds WHERE slot_id = $1 GROUP BY state",
            plan["slot_id"],
        )
        # When the store made the slot's holds (its own clock): the last one is when the
        # slot sold out, whether or not that hold's answer reached its patient.
        made = await connection.fetchrow(
            "SELECT min(created_at) AS first, max(created_at) AS last FROM holds "
            "WHERE slot_id = $1",
            plan["slot_id"],
        )
    return {
        "redis": {
            "capacity": counts.capacity,
            "remaining": counts.remaining,
            "held": counts.held,
            "booked": counts.booked,
            "waiting": counts.waiting,
        },
        "postgres_holds": {str(row["state"]): int(row["n"]) for row in rows},
        "holds_made": {
            "first": None if made["first"] is None else made["first"].timestamp(),
            "last": None if made["last"] is None else made["last"].timestamp(),
        },
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="crowd_stack.py")
    steps = parser.add_subparsers(dest="step", required=True)
    seeding = steps.add_parser("seed")
    seeding.add_argument("--patients", type=int, required=True)
    seeding.add_argument("--units", type=int, required=True)
    seeding.add_argument("--plan", type=Path, required=True)
    seeding.add_argument("--release-in", type=float, default=None)
    verifying = steps.add_parser("verify")
    verifying.add_argument("--plan", type=Path, required=True)
    verifying.add_argument("--settle-s", type=float, required=True)
    args = parser.parse_args(argv)
    if args.step == "seed":
        import inventory

        plan = asyncio.run(seed(args.patients, args.units, args.release_in))
        # Where the measured build's package is (its commit is read from there).
        plan["package_dir"] = os.path.dirname(os.path.abspath(inventory.__file__))
        args.plan.write_text(json.dumps(plan), encoding="utf-8")
        return 0
    plan = json.loads(args.plan.read_text(encoding="utf-8"))
    print(json.dumps(asyncio.run(verify(plan, args.settle_s))))
    return 0


if __name__ == "__main__":
    sys.exit(main())
