"""`inventory loadtest`: the release-day Locust scenario, headless, then the invariants.

Against a running stack (API, worker, Redis, Postgres): seed a schedule that releases at
T0 (unless ``--department``/``--date`` name one; with ``INVENTORY_HIS_URL`` set the
schedule is added to the HIS simulator and synced from it, so the HIS accepts its
bookings; it has no fee, so confirm books at once whether payments are on or not), run
``locust --headless`` on
loadtest/locustfile.py (with ``--workers N`` as a master and N local workers, so
Locust's distributed mode is the same command), then check:

- 0 oversold: no slot breaks ``remaining + held + booked + waiting == capacity`` in Redis,
  and no slot has more bookings that hold a unit (not ``rejected``, not ``cancelled``)
  than capacity in Postgres;
- Redis equals Postgres (``inventory check``, once the persister has caught up);
- every paid booking present: each confirm that answered 200 is a booking in Postgres
  (cancelled if its cancel answered 200);
- holds all expired or confirmed: after waiting (``--wait-holds``) and one expiry sweep,
  no hold is still held past its deadline;
- no server error (5xx other than 503) in Locust's failures.

It prints a summary ending in PASS or FAIL; the exit status is 0 only on PASS.
"""

from __future__ import annotations

import argparse
import asyncio
import csv
import ipaddress
import json
import os
import re
import subprocess
import sys
import tempfile
import time
import urllib.request
import uuid
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from inventory.ops.config import Settings

MAX_USERS = 10_000
MAX_RUN_TIME_S = 3600
LOOPBACK_NAMES = {"localhost"}
SERVER_ERROR = re.compile(r"\b5(?:0[0-24-9]|[1-9]\d)\b")


def register(subparsers: Any) -> None:
    """Add the ``loadtest`` command."""
    parser = subparsers.add_parser(
        "loadtest",
        help="run the release-day Locust scenario headless, then check the invariants",
    )
    parser.add_argument("--host", default="http://127.0.0.1:8080", help="the API's base URL")
    parser.add_argument(
        "--allow-remote", action="store_true", help="allow a --host that is not loopback"
    )
    parser.add_argument("--users", type=int, default=50, help=f"peak users (1-{MAX_USERS})")
    parser.add_argument(
        "--spawn-rate", type=float, default=10.0, help="users started per second before T0"
    )
    parser.add_argument(
        "--run-time", type=float, default=60.0, help=f"seconds (1-{MAX_RUN_TIME_S})"
    )
    parser.add_argument(
        "--wait-s", type=float, help="seconds from start to T0 (default: a fifth of the run)"
    )
    parser.add_argument(
        "--department", help="an existing department to load (default: seed a fresh one)"
    )
    parser.add_argument("--date", help="its visit date, YYYY-MM-DD (with --department)")
    parser.add_argument("--slots", type=int, default=8, help="seeded slots (default 8)")
    parser.add_argument(
        "--capacity", type=int, default=10, help="units per seeded slot (default 10)"
    )
    parser.add_argument(
        "--hold-ttl-s", type=int, default=60, help="the seeded hospital's hold time (>= 60)"
    )
    parser.add_argument(
        "--workers",
        type=int,
        default=0,
        help="Locust distributed mode: a master and this many local worker processes",
    )
    parser.add_argument(
        "--remote-workers",
        type=int,
        default=0,
        help="distributed mode: also wait for this many workers started elsewhere",
    )
    parser.add_argument("--master-port", type=int, default=5557, help="the master's port")
    parser.add_argument(
        "--wait-holds",
        type=float,
        default=90.0,
        help="seconds to wait for open holds to reach their deadline before the sweep",
    )
    parser.add_argument(
        "--queued",
        action="store_true",
        help="open a waiting room on the seeded schedule (a queued release) and run the"
        " QueuedPatient class with its LOADTEST_RELEASE (not with --department)",
    )
    parser.add_argument("--locustfile", help="path of the locustfile (default: the repo's)")
    parser.add_argument("--out", help="directory for Locust's CSVs and the paid log")
    parser.set_defaults(handler=run)


# -- arguments ----------------------------------------------------------------------------


def _is_loopback(url: str) -> bool:
    host = urlsplit(url).hostname or ""
    if host in LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def validate(args: argparse.Namespace) -> str | None:
    """The first problem with the arguments, or None."""
    if urlsplit(args.host).scheme not in ("http", "https"):
        return "--host must be an http(s) URL"
    if not args.allow_remote and not _is_loopback(args.host):
        return "--host is not loopback; pass --allow-remote to load another machine"
    if not 1 <= args.users <= MAX_USERS:
        return f"--users must be 1-{MAX_USERS}"
    if not 0 < args.spawn_rate <= 10_000:
        return "--spawn-rate must be in (0, 10000]"
    if not 1 <= args.run_time <= MAX_RUN_TIME_S:
        return f"--run-time must be 1-{MAX_RUN_TIME_S} seconds"
    if not 0 <= args.workers <= 64 or not 0 <= args.remote_workers <= 1024:
        return "--workers must be 0-64 and --remote-workers 0-1024"
    if args.remote_workers and not args.workers and not args.allow_remote:
        return "--remote-workers binds the master on every interface: pass --allow-remote"
    if (args.department is None) != (args.date is None):
        return "--department and --date go together"
    if args.queued and args.department is not None:
        return "--queued opens a room on the schedule it seeds: not with --department"
    if not 1 <= args.slots <= 500 or not 1 <= args.capacity <= 10_000:
        return "--slots must be 1-500 and --capacity 1-10000"
    if not 60 <= args.hold_ttl_s <= 7200:
        return "--hold-ttl-s must be 60-7200 (the API's bounds)"
    if not 0 <= args.wait_holds <= 7200:
        return "--wait-holds must be 0-7200 seconds"
    return None


def find_locustfile(explicit: str | None) -> Path | None:
    """The locustfile: ``--locustfile``, else the repository's, else ./loadtest/."""
    candidates = [Path(explicit)] if explicit else []
    candidates += [
        Path(__file__).resolve().parents[2] / "loadtest" / "locustfile.py",
        Path.cwd() / "loadtest" / "locustfile.py",
    ]
    for candidate in candidates:
        if candidate.is_file():
            return candidate
    return None


# -- seeding --------------------------------------------------------------------------------


def _put(host: str, token: str, path: str, body: dict[str, Any]) -> None:
    request = urllib.request.Request(
        host.rstrip("/") + path,
        data=json.dumps(body).encode(),
        method="PUT",
        headers={"Authorization": f"Bearer {token}", "Content-Type": "application/json"},
    )
    with urllib.request.urlopen(request, timeout=30) as answer:
        if answer.status not in (200, 201):
            raise OSError(f"PUT {path}: {answer.status}")


def seed(
    host: str, settings: Settings, *, release_in_s: float, slots: int, capacity: int, ttl: int
) -> tuple[str, str, str]:
    """A hospital, department, doctor and one schedule releasing in ``release_in_s``;
    returns (department id, visit date, schedule id)."""
    from inventory.api.auth import mint_token

    token = mint_token(settings, "loadtest-operator", operator=True, ttl_s=3600)
    run = uuid.uuid4().hex[:8]
    hospital, department, doctor = f"lt-h-{run}", f"lt-d-{run}", f"lt-doc-{run}"
    policy = {"hold_ttl_s": ttl, "max_hold_s": max(ttl, 1800)}
    _put(host, token, f"/v1/operator/hospitals/{hospital}", {"name": "Load", "policy": policy})
    _put(
        host,
        token,
        f"/v1/operator/departments/{department}",
        {"hospital_id": hospital, "name": "Release day"},
    )
    _put(
        host,
        token,
        f"/v1/operator/doctors/{doctor}",
        {
            "hospital_id": hospital,
            "department_id": department,
            "name": "Dr Load",
            "title": "主任医师",
            "specialty": "load",
        },
    )
    now = datetime.now(tz=UTC)
    day = (now + timedelta(days=3)).date()
    start = datetime(day.year, day.month, day.day, 0, 0, tzinfo=UTC)
    minutes = max(1, min(30, 720 // slots))
    _put(
        host,
        token,
        f"/v1/operator/schedules/lt-s-{run}",
        {
            "hospital_id": hospital,
            "department_id": department,
            "doctor_id": doctor,
            "visit_date": day.isoformat(),
            "session": "morning",
            "starts_at": start.isoformat(),
            "ends_at": (start + timedelta(minutes=minutes * slots)).isoformat(),
            "release_at": (now + timedelta(seconds=release_in_s)).isoformat(),
            "cancel_deadline": (start - timedelta(hours=12)).isoformat(),
            # No fee: confirm books at once, with payments on (`inventory dev`) or off.
            "fee_fen": 0,
            "location": "Load test",
            "slots": [
                {
                    "slot_id": f"lt-sl-{run}-{i}",
                    "starts_at": (start + timedelta(minutes=minutes * i)).isoformat(),
                    "ends_at": (start + timedelta(minutes=minutes * (i + 1))).isoformat(),
                    "capacity": capacity,
                }
                for i in range(slots)
            ],
        },
    )
    return department, day.isoformat(), f"lt-s-{run}"


def open_release(host: str, settings: Settings, schedule_id: str) -> str:
    """Open the waiting room of a release of ``schedule_id`` (before its T0); its id."""
    from inventory.api.auth import mint_token

    token = mint_token(settings, "loadtest-operator", operator=True, ttl_s=3600)
    request = urllib.request.Request(
        host.rstrip("/") + "/v1/operator/releases",
        data=json.dumps({"schedule_ids": [schedule_id]}).encode(),
        method="POST",
        headers={"Authorization": f"Bearer {token}", "Content-Type": "application/json"},
    )
    with urllib.request.urlopen(request, timeout=30) as answer:
        return str(json.loads(answer.read())["release_id"])


def seed_his(
    settings: Settings, *, release_in_s: float, slots: int, capacity: int
) -> tuple[str, str, str]:
    """A schedule releasing in ``release_in_s``, added to the HIS simulator at
    ``INVENTORY_HIS_URL`` (an evening session three days ahead, no fee) and synced from it
    into Postgres and Redis at once; returns (department id, visit date, schedule id as
    the simulator named it). Bookings of a
    schedule the HIS does not know are rejected by it, so the load test's must be the
    HIS's own."""
    from inventory.cli.dev import sync_his

    run = uuid.uuid4().hex[:8]
    now = datetime.now(tz=settings.zone)
    body = {
        "id": f"lt-s-{run}",
        "date": (now + timedelta(days=3)).date().isoformat(),
        "session": "evening",
        "slots": slots,
        "capacity": capacity,
        "fee_fen": 0,
        "release_at": (now + timedelta(seconds=release_in_s)).isoformat(),
    }
    admin = settings.his_url.rstrip("/").removesuffix("/fhir") + "/$admin/schedules"
    request = urllib.request.Request(
        admin,
        data=json.dumps(body).encode(),
        method="POST",
        headers={"Content-Type": "application/json"},
    )
    with urllib.request.urlopen(request, timeout=30) as answer:
        made = json.loads(answer.read())
    asyncio.run(sync_his(settings, settings.redis_url, settings.database_url))
    return str(made["department"]), str(made["date"]), str(made.get("id", body["id"]))


# -- running Locust -------------------------------------------------------------------------


def locust_commands(
    args: argparse.Namespace, locustfile: Path, csv_prefix: Path
) -> tuple[list[str], list[list[str]]]:
    """The headless (master) command and the local workers' commands."""
    base = [sys.executable, "-m", "locust", "-f", str(locustfile)]
    main = [
        *base,
        "--headless",
        "--host",
        args.host,
        "--users",
        str(args.users),
        "--spawn-rate",
        str(args.spawn_rate),
        "--run-time",
        f"{round(args.run_time)}s",
        "--stop-timeout",
        "10",
        "--csv",
        str(csv_prefix),
        "--only-summary",
        "--loglevel",
        "WARNING",
    ]
    workers: list[list[str]] = []
    expected = args.workers + args.remote_workers
    if expected:
        bind = "127.0.0.1" if not args.remote_workers else "*"
        main += [
            "--master",
            "--expect-workers",
            str(expected),
            "--master-bind-host",
            bind,
            "--master-bind-port",
            str(args.master_port),
        ]
        worker = [
            *base,
            "--worker",
            "--master-host",
            "127.0.0.1",
            "--master-port",
            str(args.master_port),
            "--loglevel",
            "WARNING",
        ]
        workers = [worker] * args.workers
    return main, workers


def run_locust(
    main: list[str], workers: list[list[str]], env: dict[str, str], timeout_s: float
) -> int:
    """Run the master (or the lone process) and the local workers; the master's status."""
    started = [subprocess.Popen(cmd, env=env) for cmd in workers]
    try:
        master = subprocess.Popen(main, env=env)
        try:
            return master.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            master.kill()
            master.wait()
            return -1
    finally:
        for process in started:
            try:
                process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()


# -- the invariants -------------------------------------------------------------------------


@dataclass
class Verdict:
    """What the checks found."""

    checks: list[tuple[str, bool, str]] = field(default_factory=list)
    stats: dict[str, str] = field(default_factory=dict)

    def add(self, name: str, ok: bool, detail: str) -> None:
        self.checks.append((name, ok, detail))

    @property
    def passed(self) -> bool:
        return bool(self.checks) and all(ok for _, ok, _ in self.checks)


def read_records(path: Path) -> tuple[dict[str, dict[str, Any]], set[str]]:
    """Paid records by hold id, and the hold ids whose cancel answered 200."""
    paid: dict[str, dict[str, Any]] = {}
    cancelled: set[str] = set()
    if not path.exists():
        return paid, cancelled
    for line in path.read_text(encoding="utf-8").splitlines():
        if not line.strip():
            continue
        entry = json.loads(line)
        if entry.get("event") == "cancelled":
            cancelled.add(str(entry["hold_id"]))
        else:
            paid[str(entry["hold_id"])] = entry
    return paid, cancelled


def read_locust_csv(prefix: Path, verdict: Verdict) -> None:
    """Locust's aggregated numbers into the summary; server errors into the verdict."""
    stats = Path(f"{prefix}_stats.csv")
    if stats.exists():
        with stats.open(newline="") as handle:
            for row in csv.DictReader(handle):
                if row.get("Name") == "Aggregated":
                    for key in ("Request Count", "Failure Count", "Requests/s", "95%", "99%"):
                        verdict.stats[key] = row.get(key, "")
    server_errors = 0
    examples: list[str] = []
    failures = Path(f"{prefix}_failures.csv")
    if failures.exists():
        with failures.open(newline="") as handle:
            for row in csv.DictReader(handle):
                error = row.get("Error", "")
                if SERVER_ERROR.search(error) or "second hold" in error:
                    server_errors += int(row.get("Occurrences", "1") or 1)
                    examples.append(f"{row.get('Name')}: {error[:120]}")
    verdict.add(
        "no server errors",
        server_errors == 0,
        f"{server_errors} (5xx other than 503, or a double-click that made two holds)"
        + (f": {'; '.join(examples[:3])}" if examples else ""),
    )


async def check_invariants(
    settings: Settings,
    paid: dict[str, dict[str, Any]],
    cancelled: set[str],
    *,
    wait_holds_s: float,
    verdict: Verdict,
) -> None:
    """Expire, wait for the persister, then compare Redis, Postgres and the paid log."""
    from inventory.record.pool import create_pool
    from inventory.recovery.check import check
    from inventory.store.connection import connect_redis
    from inventory.store.slot_store import SlotStore

    client = await connect_redis(settings.redis_url, cluster=settings.redis_cluster)
    pool = await create_pool(settings.database_url, min_size=1, max_size=2)
    try:
        store = await SlotStore.connect_scripts(client)
        deadline = time.monotonic() + wait_holds_s
        while time.monotonic() < deadline:
            held = await pool.fetchval("SELECT count(*) FROM holds WHERE state = 'held'")
            if not held:
                break
            await asyncio.sleep(1.0)
        swept = await store.expire_all()
        report = await check(store, pool)
        give_up = time.monotonic() + 30
        while report.lagging and time.monotonic() < give_up:
            await asyncio.sleep(0.5)
            report = await check(store, pool)
        verdict.add(
            "0 oversold (Redis)",
            not report.violations,
            f"{len(report.violations)} conservation violations in {report.slots} slots",
        )
        oversold = await oversold_slots(pool)
        verdict.add("0 oversold (Postgres)", not oversold, f"{len(oversold)} slots over capacity")
        verdict.add(
            "Redis equals Postgres",
            not report.drift and not report.lagging and not report.fenced,
            f"{len(report.drift)} drifts, {len(report.lagging)} tags lagging, "
            f"{len(report.fenced)} fenced"
            + "".join(f"; {d.tag} {d.slot} {d.kind}" for d in report.drift[:3]),
        )
        rows = await pool.fetch(
            "SELECT id, status FROM bookings WHERE id = ANY($1::text[])", list(paid)
        )
        status = {str(r["id"]): str(r["status"]) for r in rows}
        missing = [h for h in paid if h not in status]
        wrong = [h for h in cancelled if status.get(h, "cancelled") != "cancelled"]
        verdict.add(
            "every paid booking present",
            not missing and not wrong,
            f"{len(paid)} paid, {len(missing)} missing, {len(cancelled)} cancelled, "
            f"{len(wrong)} cancels not recorded" + (f"; e.g. {missing[0]}" if missing else ""),
        )
        overdue = await pool.fetchval(
            "SELECT count(*) FROM holds WHERE state = 'held' AND deadline < now()"
            " - interval '2 seconds'"
        )
        open_held = await pool.fetchval("SELECT count(*) FROM holds WHERE state = 'held'")
        verdict.add(
            "holds all expired or confirmed",
            not overdue,
            f"{overdue} held past their deadline after a sweep ({swept.changed} expired by it); "
            f"{open_held - overdue} still within their deadline",
        )
        verdict.stats["holds by state"] = ", ".join(
            f"{r['state']}={r['n']}"
            for r in await pool.fetch(
                "SELECT state, count(*) AS n FROM holds GROUP BY state ORDER BY state"
            )
        )
    finally:
        await pool.close()
        await client.aclose()


async def oversold_slots(pool: Any) -> list[Any]:
    """Slots with more bookings that hold a unit than capacity (a rejected or cancelled
    booking gave its unit back, and the unit may have been sold again)."""
    from inventory.record.bookings import HOLDING_STATUSES

    return list(
        await pool.fetch(
            """
            SELECT s.id, s.capacity, count(b.id) AS booked
            FROM slots s JOIN bookings b ON b.slot_id = s.id AND b.schedule_id = s.schedule_id
            WHERE b.status = ANY($1::text[])
            GROUP BY s.id, s.capacity HAVING count(b.id) > s.capacity
            """,
            list(HOLDING_STATUSES),
        )
    )


def print_summary(verdict: Verdict, *, users: int, run_time: float, workers: int) -> None:
    """The human summary, ending in PASS or FAIL."""
    mode = f"distributed, {workers} workers" if workers else "one process"
    print(f"\n== inventory loadtest: {users} peak users, {run_time:g} s, {mode} ==")
    for key, value in verdict.stats.items():
        print(f"  {key}: {value}")
    for name, ok, detail in verdict.checks:
        print(f"  [{'ok' if ok else 'FAIL'}] {name}: {detail}")
    print("PASS" if verdict.passed else "FAIL")


def run(args: argparse.Namespace) -> int:
    """Seed, run Locust headless, check the invariants and print PASS or FAIL."""
    problem = validate(args)
    if problem:
        print(f"inventory loadtest: {problem}", file=sys.stderr)
        return 2
    locustfile = find_locustfile(args.locustfile)
    if locustfile is None:
        print("inventory loadtest: loadtest/locustfile.py not found", file=sys.stderr)
        return 2
    try:
        import locust  # noqa: F401
    except ImportError:
        print(
            "inventory loadtest: Locust is not installed (pip install 'slot-inventory[loadtest]')",
            file=sys.stderr,
        )
        return 2
    check_settings = Settings.from_env(for_api=False)
    api_settings = None if args.department else Settings.from_env()
    wait_s = args.wait_s if args.wait_s is not None else args.run_time / 5
    out = Path(args.out) if args.out else Path(tempfile.mkdtemp(prefix="loadtest-"))
    out.mkdir(parents=True, exist_ok=True)
    paid_log = out / "paid.jsonl"
    paid_log.unlink(missing_ok=True)
    try:
        if api_settings is not None and api_settings.his_url:
            if not args.allow_remote and not _is_loopback(api_settings.his_url):
                print(
                    "inventory loadtest: INVENTORY_HIS_URL is not loopback; the load test adds "
                    "its schedule to a HIS simulator only (pass --allow-remote, or name a "
                    "schedule with --department and --date)",
                    file=sys.stderr,
                )
                return 2
            department, day, schedule_id = seed_his(
                api_settings,
                release_in_s=wait_s + 1.5,  # Locust's own start-up
                slots=args.slots,
                capacity=args.capacity,
            )
        elif api_settings is not None:
            department, day, schedule_id = seed(
                args.host,
                api_settings,
                release_in_s=wait_s + 1.5,  # Locust's own start-up
                slots=args.slots,
                capacity=args.capacity,
                ttl=args.hold_ttl_s,
            )
        else:
            department, day = args.department, date.fromisoformat(args.date).isoformat()
            schedule_id = ""
        release_id = ""
        if args.queued and api_settings is not None:
            release_id = open_release(args.host, api_settings, schedule_id)
    except (OSError, ValueError) as error:
        print(f"inventory loadtest: seeding failed: {error}", file=sys.stderr)
        return 1
    print(f"department {department} on {day}; T0 in {wait_s:g} s; files in {out}")
    env = dict(os.environ) | {
        "LOADTEST_DEPARTMENT": department,
        "LOADTEST_DATE": day,
        "LOADTEST_WAIT_S": str(wait_s),
        "LOADTEST_PAID_LOG": str(paid_log),
    }
    if release_id:
        print(f"queued release {release_id}: QueuedPatient joins its waiting room")
        env["LOADTEST_RELEASE"] = release_id
    main, workers = locust_commands(args, locustfile, out / "locust")
    if args.remote_workers:
        print(
            f"waiting for {args.remote_workers} remote workers: LOADTEST_DEPARTMENT={department}"
            f" LOADTEST_DATE={day} locust -f loadtest/locustfile.py --worker "
            f"--master-host <this machine> --master-port {args.master_port}"
        )
    status = run_locust(main, workers, env, timeout_s=args.run_time + 120)
    verdict = Verdict()
    verdict.add("locust ran", status in (0, 1), f"exit status {status}")
    read_locust_csv(out / "locust", verdict)
    paid, cancelled = read_records(paid_log)
    try:
        asyncio.run(
            check_invariants(
                check_settings, paid, cancelled, wait_holds_s=args.wait_holds, verdict=verdict
            )
        )
    except (OSError, ConnectionError) as error:
        verdict.add("invariants checked", False, f"could not reach Redis/Postgres: {error}")
    except Exception as error:  # the summary must say FAIL, whatever broke
        verdict.add("invariants checked", False, f"{type(error).__name__}: {error}")
    print_summary(verdict, users=args.users, run_time=args.run_time, workers=args.workers)
    return 0 if verdict.passed else 1
