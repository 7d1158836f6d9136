"""A release crowd against a real API and worker: how long until every patient knows.

``python -m bench.crowd --patients 20000 --units 500`` starts a private Redis (append-only
file, fsync always, as ``inventory dev`` and the compose file run it) and Postgres (or
a fresh database on ``--postgres-url``'s server, dropped at the end), seeds one released
slot of ``units`` units and ``patients`` accounts with one registered patient each, then
starts one ``inventory worker`` and one ``inventory serve`` process on 127.0.0.1. The
API reads the client's address from ``X-Forwarded-For`` with one trusted hop (as behind
the compose file's ingress), so each patient is its own address for the per-address
limit; every other setting is the service's default unless ``--set`` changes it.

Then the whole crowd presses "book" on that slot at the same instant and each patient
retries as the service tells it (:mod:`bench.crowd_client`), until every patient has a
final answer (a hold, ``sold_out``, or any other answer that is not "come back later")
or the deadline passes. The report gives: when the slot sold out and when the last
patient had a final answer, p50/p90/p99 of each patient's time to its final answer, the
answers (201, 409, 503, 429, ...), requests per patient, the patients still being told
to come back at the deadline, units sold; the CPU of the client, the API, the worker and
Redis, and the machine's load. Afterwards it checks that no unit was sold twice: the
distinct holds the crowd was given, the slot's counts in Redis and its open holds in
Postgres are at most the units, and the service's own check (what ``inventory check``
runs: Redis against Postgres, every slot's invariant) passes once the worker has
persisted the run's events.

``--server-python`` measures another build: that Python runs the worker, the API and
the seeding and checking steps (:mod:`bench.crowd_stack`), so an older commit checked
out with its own virtual environment is measured on its own code by this harness.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import math
import os
import resource
import secrets
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
import uuid
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bench.crowd_client import CLIENT_BUSY_PCT, Crowd, CrowdResult, Patient, address_of

_STACK_SCRIPT = Path(__file__).with_name("crowd_stack.py")
_CLK_TCK = os.sysconf("SC_CLK_TCK")
#: Longest wait for the service's check to find every event of the run in Postgres.
SETTLE_S = 120.0


@dataclass(frozen=True, slots=True)
class CrowdConfig:
    """What to run."""

    patients: int = 20_000
    units: int = 500
    connections: int = 2_000
    deadline_s: float = 150.0
    #: The Python of the build measured (its worker, API, check, seeding).
    server_python: str = sys.executable
    #: A Postgres server to create (and drop) the run's database on; None: private.
    postgres_url: str | None = None
    #: Service settings set for the run (``INVENTORY_...`` names and values).
    settings: tuple[tuple[str, str], ...] = ()
    label: str = ""

    def __post_init__(self) -> None:
        if min(self.patients, self.units, self.connections) < 1:
            raise ValueError("patients, units and connections must be at least 1")
        if not (self.deadline_s > 0 and math.isfinite(self.deadline_s)):
            raise ValueError("the deadline must be a positive number of seconds")
        for name, _ in self.settings:
            if not name.startswith("INVENTORY_"):
                raise ValueError(f"{name}: only INVENTORY_ settings may be set")


@dataclass
class CrowdReport:
    """Everything one run measured."""

    config: CrowdConfig
    result: CrowdResult
    build: str
    seed_s: float
    cpu_s: dict[str, float]
    #: The machine's busy CPU-seconds during the crowd, all processes.
    host_busy_s: float | None
    load_before: tuple[float, float, float]
    load_after: tuple[float, float, float]
    counts: dict[str, Any]
    #: The service's own check after the run (inventory.check, what ``inventory check``
    #: runs), with ``passed``: no drift, no invariant violation, nothing lagging or fenced.
    check: dict[str, Any]
    flags: list[str] = field(default_factory=list)

    @property
    def redis_taken(self) -> int:
        """Units held or booked in Redis after the run."""
        redis = self.counts.get("redis", {})
        return int(redis.get("held", 0)) + int(redis.get("booked", 0))

    @property
    def postgres_open(self) -> int:
        """Holds of the slot open (held or booked) in Postgres after the run."""
        holds = self.counts.get("postgres_holds", {})
        return int(holds.get("held", 0)) + int(holds.get("booked", 0))

    @property
    def store_sold_out_s(self) -> float | None:
        """When the store made the slot's last hold, from the crowd's start, once every
        unit is held or booked (None otherwise): the sell-out as the store saw it, also
        when that hold's answer had not reached its patient yet."""
        last = self.counts.get("holds_made", {}).get("last")
        if last is None or self.redis_taken < self.config.units:
            return None
        return float(last) - self.result.start_wall

    @property
    def check_passed(self) -> bool:
        """The service's own check found no drift or violation, nothing unchecked."""
        return bool(self.check.get("passed"))

    @property
    def conserved(self) -> bool:
        """The slot's counts in Redis add up to its capacity, none negative."""
        redis = self.counts.get("redis", {})
        parts = [int(redis.get(k, 0)) for k in ("remaining", "held", "booked", "waiting")]
        return min(parts) >= 0 and sum(parts) == int(redis.get("capacity", -1))

    @property
    def sold_at_most_once(self) -> bool:
        """No unit was sold twice, by every count there is."""
        units = self.config.units
        return (
            self.result.sold <= units
            and self.redis_taken <= units
            and self.postgres_open <= units
            and self.conserved
            and self.check_passed
        )

    def as_dict(self) -> dict[str, Any]:
        """The machine-readable report (``--json``)."""
        r, c = self.result, self.config
        requests = r.requests
        return {
            "benchmark": "crowd",
            "label": c.label,
            "build": self.build,
            "config": {
                "patients": c.patients,
                "units": c.units,
                "connections": r.connections,
                "deadline_s": c.deadline_s,
                "settings": dict(c.settings),
            },
            "sold_out_s": _round(r.sold_out_s),
            "store_sold_out_s": _round(self.store_sold_out_s),
            "first_sold_out_answer_s": _round(r.first_sold_out_s),
            "all_final_s": _round(r.all_final_s),
            "final_answers": r.answered,
            "time_to_final_s": {
                "p50": _round(r.percentile_s(0.50)),
                "p90": _round(r.percentile_s(0.90)),
                "p99": _round(r.percentile_s(0.99)),
            },
            "answers": dict(sorted(r.answers.items())),
            "answers_503": r.count("503"),
            "answers_429": r.count("429"),
            "connections_lost": r.lost,
            "connect_errors": r.connect_errors,
            "requests": sum(requests),
            "requests_per_patient": {
                "mean": round(sum(requests) / len(requests), 2) if requests else 0,
                "median": statistics.median(requests) if requests else 0,
                "max": max(requests, default=0),
            },
            "peak_requests_per_s": max((s.get("sent", 0) for s in r.timeline), default=0),
            "retry_after_s": {str(k): v for k, v in r.retry_after.items()},
            "still_retrying_at_deadline": r.still_retrying,
            "still_503_at_deadline": r.still_retrying.get("503", 0),
            "sold": {
                "holds_answered": r.sold,
                "redis_held_or_booked": self.redis_taken,
                "postgres_open_holds": self.postgres_open,
                "units": c.units,
                "conserved": self.conserved,
                "at_most_once": self.sold_at_most_once,
            },
            "counts": self.counts,
            "check": self.check,
            "cpu_s": {k: round(v, 2) for k, v in self.cpu_s.items()},
            "client_busy_pct": round(r.client_busy_pct, 1),
            "host_busy_pct": (
                None
                if self.host_busy_s is None or r.wall_s <= 0
                else round(100.0 * self.host_busy_s / r.wall_s, 1)
            ),
            "crowd_wall_s": round(r.wall_s, 3),
            "seed_s": round(self.seed_s, 1),
            "load_before": list(self.load_before),
            "load_after": list(self.load_after),
            "flags": self.flags,
            "timeline": r.timeline,
        }

    def format_text(self) -> str:
        """The human-readable report."""
        d = self.as_dict()
        r, c = self.result, self.config

        def secs(value: float | None) -> str:
            if value is None:
                return "-"
            return "never (gave up)" if math.isinf(value) else f"{value:.2f} s"

        per = d["requests_per_patient"]
        sold = d["sold"]
        cpu = ", ".join(f"{k} {v:.1f} s" for k, v in d["cpu_s"].items())
        lines = [
            f"crowd: {c.patients:,} patients on {c.units:,} units, {r.connections:,} "
            f"connections, deadline {c.deadline_s:g} s" + (f" [{c.label}]" if c.label else ""),
            f"build: {self.build}; settings: "
            + (", ".join(f"{k}={v}" for k, v in c.settings) or "defaults"),
            f"load average before {_load(self.load_before)}, after {_load(self.load_after)}",
            "",
            f"sold out (store made the last hold)    {secs(self.store_sold_out_s)}",
            f"sold out (last unit's hold answered)   {secs(r.sold_out_s)}",
            f"first sold_out answer                  {secs(r.first_sold_out_s)}",
            f"every patient had a final answer       {secs(r.all_final_s)}"
            + ("" if r.all_final_s is not None else f" ({r.answered:,} of {c.patients:,} did)"),
            "time to final answer p50 / p90 / p99   "
            + " / ".join(secs(r.percentile_s(q)) for q in (0.5, 0.9, 0.99)),
            f"answers                                {sum(r.answers.values()):,}: "
            + ", ".join(f"{k} {v:,}" for k, v in sorted(r.answers.items())),
            f"503 / 429 answers                      {d['answers_503']:,} / {d['answers_429']:,}",
            f"requests per patient                   mean {per['mean']}, median "
            f"{per['median']}, max {per['max']}; peak {d['peak_requests_per_s']:,}/s sent",
            "Retry-After received (s: count)        "
            + (", ".join(f"{k}: {v:,}" for k, v in r.retry_after.items()) or "none"),
            f"still told to come back at deadline    {sum(r.still_retrying.values()):,}"
            + (f" (last answer: {r.still_retrying})" if r.still_retrying else ""),
            f"connections lost mid-request           {r.lost}",
            f"units sold                             {sold['holds_answered']} holds answered; "
            f"Redis {sold['redis_held_or_booked']} held or booked; Postgres "
            f"{sold['postgres_open_holds']} open holds (of {c.units})",
            "sold at most once                      "
            + ("yes" if self.sold_at_most_once else "NO")
            + f" (counts conserved: {self.conserved}; the service's check "
            + ("passed" if self.check_passed else "FAILED")
            + ")",
            "",
            f"CPU during the crowd: {cpu}; client {d['client_busy_pct']:.0f} % of a core; "
            f"machine {d['host_busy_pct']} % of one core busy over {r.wall_s:.1f} s",
            f"seeding took {self.seed_s:.1f} s",
        ]
        lines += self.flags
        return "\n".join(lines)


def _round(value: float | None) -> float | None:
    if value is None or math.isinf(value):
        return None
    return round(value, 3)


def _load(load: tuple[float, float, float]) -> str:
    return " ".join(f"{x:.2f}" for x in load)


# ----------------------------------------------------------------------------------------
# Processes and their CPU
# ----------------------------------------------------------------------------------------


def _proc_cpu_s(pid: int) -> float:
    """CPU seconds of a process and its reaped children (0 once it is gone)."""
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii", errors="replace") as stat:
            fields = stat.read().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return sum(int(x) for x in fields[11:15]) / _CLK_TCK


def _host_busy_s() -> float | None:
    """Busy CPU-seconds of the whole machine since boot, or None."""
    try:
        with open("/proc/stat", encoding="ascii") as stat:
            ticks = [int(v) for v in stat.readline().split()[1:9]]
    except OSError:
        return None
    return (sum(ticks) - ticks[3] - ticks[4]) / _CLK_TCK


def _redis_cpu_s(url: str) -> float:
    import redis

    with redis.Redis.from_url(url) as client:
        info: dict[str, Any] = client.info("cpu")
    return float(info["used_cpu_sys"]) + float(info["used_cpu_user"])


def _spawn(
    python: str, args: Sequence[str], env: dict[str, str], log: Path, cwd: Path
) -> subprocess.Popen[bytes]:
    # The working directory is the run's own folder, never a checkout: there,
    # ``-m inventory`` would import the checkout's package instead of the measured build's.
    with log.open("ab") as out:
        return subprocess.Popen(
            [python, *args],
            env=env,
            cwd=cwd,
            stdout=out,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )


def _stop(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
    try:
        process.wait(timeout=30)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


def _wait_http(url: str, process: subprocess.Popen[bytes], log: Path, timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"{url}: the process exited:\n{_tail(log)}")
        try:
            with urllib.request.urlopen(url, timeout=1) as answer:
                if answer.status == 200:
                    return
        except OSError:
            pass
        time.sleep(0.1)
    raise RuntimeError(f"{url} did not answer 200 within {timeout_s:g} s:\n{_tail(log)}")


def _tail(log: Path) -> str:
    try:
        return log.read_text(errors="replace")[-3000:]
    except OSError:
        return ""


def _free_port() -> int:
    from inventory.devtools.servers import free_port

    return free_port()


def _key() -> str:
    import base64

    return base64.b64encode(secrets.token_bytes(32)).decode()


def _build_of(package_dir: str) -> str:
    """The measured build's commit (short), when its package sits in a git checkout."""
    commit = subprocess.run(
        ["git", "-C", package_dir, "rev-parse", "--short", "HEAD"],
        capture_output=True,
        text=True,
        check=False,
    ).stdout.strip()
    return commit or "unknown (not a git checkout)"


# ----------------------------------------------------------------------------------------
# The run
# ----------------------------------------------------------------------------------------


@contextlib.contextmanager
def _database(postgres_url: str | None, root: Path) -> Iterator[str]:
    """A fresh, empty database's URL: on a private Postgres, or created (and dropped
    at the end) on ``postgres_url``'s server."""
    from inventory.devtools.servers import start_postgres

    if postgres_url is None:
        with start_postgres(root / "postgres") as server:
            yield server.dsn
        return
    import asyncpg  # type: ignore[import-untyped]  # asyncpg ships no type information

    name = f"bench_crowd_{uuid.uuid4().hex[:12]}"

    async def execute(sql: str) -> None:
        connection = await asyncpg.connect(postgres_url)
        try:
            await connection.execute(sql)
        finally:
            await connection.close()

    asyncio.run(execute(f'CREATE DATABASE "{name}"'))
    try:
        yield postgres_url.rsplit("/", 1)[0] + "/" + name
    finally:
        asyncio.run(execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))


def run_crowd(config: CrowdConfig, *, say: Callable[[str], None] = lambda _: None) -> CrowdReport:
    """Start the stack, seed it, release the crowd, check, stop everything; the report."""
    from inventory.devtools.servers import start_redis

    with contextlib.ExitStack() as stack:
        root = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="bench-crowd-")))
        say("starting a private Redis" + ("" if config.postgres_url else " and Postgres"))
        redis_server = stack.enter_context(start_redis(root / "redis"))
        database_url = stack.enter_context(_database(config.postgres_url, root))
        api_port, worker_port = _free_port(), _free_port()
        env = dict(os.environ)
        env.update(
            {
                "INVENTORY_REDIS_URL": redis_server.url,
                "INVENTORY_DATABASE_URL": database_url,
                "INVENTORY_HOST": "127.0.0.1",
                "INVENTORY_PORT": str(api_port),
                "INVENTORY_WORKER_METRICS_PORT": str(worker_port),
                "INVENTORY_JWT_KEYS": f"k1:{_key()}",
                "INVENTORY_JWT_CURRENT_KEY": "k1",
                "INVENTORY_FIELD_KEYS": f"f1:{_key()}",
                "INVENTORY_FIELD_CURRENT_KEY": "f1",
                "INVENTORY_BLIND_INDEX_KEY": f"i1:{_key()}",
                # Behind one trusted proxy that appends to X-Forwarded-For.
                "INVENTORY_CLIENT_IP_HEADER": "X-Forwarded-For",
                "INVENTORY_TRUSTED_PROXY_HOPS": "1",
                # One JSON line per request to a file would be the client's and the
                # API's shared disk, not the service; the ingress logs requests.
                "INVENTORY_ACCESS_LOG": "false",
            }
        )
        env.update(dict(config.settings))
        plan_path = root / "plan.json"
        say(f"seeding {config.patients:,} patients and one slot of {config.units:,} units")
        started = time.monotonic()
        seeded = subprocess.run(
            [
                config.server_python,
                "-P",  # no folder in front of sys.path: see bench/crowd_stack.py
                str(_STACK_SCRIPT),
                "seed",
                "--patients",
                str(config.patients),
                "--units",
                str(config.units),
                "--plan",
                str(plan_path),
            ],
            env=env,
            cwd=root,
            capture_output=True,
            text=True,
            check=False,
        )
        if seeded.returncode != 0:
            raise RuntimeError(f"seeding failed:\n{(seeded.stdout + seeded.stderr)[-3000:]}")
        seed_s = time.monotonic() - started
        plan = json.loads(plan_path.read_text(encoding="utf-8"))
        build = _build_of(plan["package_dir"])
        say("starting the worker and the API")
        worker_log, api_log = root / "worker.log", root / "api.log"
        worker = _spawn(config.server_python, ["-m", "inventory", "worker"], env, worker_log, root)
        stack.callback(_stop, worker)
        api = _spawn(config.server_python, ["-m", "inventory", "serve"], env, api_log, root)
        stack.callback(_stop, api)
        _wait_http(f"http://127.0.0.1:{worker_port}/healthz", worker, worker_log, 60.0)
        _wait_http(f"http://127.0.0.1:{api_port}/readyz", api, api_log, 60.0)
        patients = [
            Patient(token=token, patient_id=patient_id, address=address_of(i))
            for i, (token, patient_id) in enumerate(plan["accounts"])
        ]
        say(f"releasing the crowd ({config.connections:,} connections)")
        load_before = os.getloadavg()
        cpu_before = {
            "api": _proc_cpu_s(api.pid),
            "worker": _proc_cpu_s(worker.pid),
            "redis": _redis_cpu_s(redis_server.url),
        }
        host_before = _host_busy_s()
        result = _run_client(
            Crowd,
            host="127.0.0.1",
            port=api_port,
            slot_id=plan["slot_id"],
            key_prefix=plan["key_prefix"],
            patients=patients,
            units=config.units,
            connections=config.connections,
            deadline_s=config.deadline_s,
        )
        host_after = _host_busy_s()
        cpu_s = {
            "client": result.client_cpu_s,
            "api": _proc_cpu_s(api.pid) - cpu_before["api"],
            "worker": _proc_cpu_s(worker.pid) - cpu_before["worker"],
            "redis": _redis_cpu_s(redis_server.url) - cpu_before["redis"],
        }
        load_after = os.getloadavg()
        for process, log in ((api, api_log), (worker, worker_log)):
            if process.poll() is not None:
                raise RuntimeError(f"a server process exited during the run:\n{_tail(log)}")
        say("checking: no unit sold twice (once the worker has persisted the run's events)")
        verified = subprocess.run(
            [
                config.server_python,
                "-P",  # no folder in front of sys.path: see bench/crowd_stack.py
                str(_STACK_SCRIPT),
                "verify",
                "--plan",
                str(plan_path),
                "--settle-s",
                str(SETTLE_S),
            ],
            env=env,
            cwd=root,
            capture_output=True,
            text=True,
            check=False,
        )
        if verified.returncode != 0:
            raise RuntimeError(f"checking failed:\n{(verified.stdout + verified.stderr)[-3000:]}")
        checked = json.loads(verified.stdout)
        report = CrowdReport(
            config=config,
            result=result,
            build=build,
            seed_s=seed_s,
            cpu_s=cpu_s,
            host_busy_s=(
                None if host_before is None or host_after is None else host_after - host_before
            ),
            load_before=load_before,
            load_after=load_after,
            counts=checked["counts"],
            check=checked["check"],
        )
        report.flags = _flags(report)
        say("stopping the API, the worker, Redis and Postgres")
        return report
    raise AssertionError("unreachable")  # pragma: no cover


def _run_client(crowd: type[Crowd], **kwargs: Any) -> CrowdResult:
    """The crowd on its own event loop (uvloop when installed), with the open-file
    limit raised to its hard limit for the connections."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))

    async def main() -> CrowdResult:
        return await crowd(**kwargs).run()

    try:
        import uvloop
    except ImportError:  # pragma: no cover - uvloop is a dependency of the service
        return asyncio.run(main())
    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        return runner.run(main())


def _flags(report: CrowdReport) -> list[str]:
    r = report.result
    found = []
    if r.client_busy_pct > CLIENT_BUSY_PCT:
        found.append(
            f"CLIENT-BOUND?: the client used {r.client_busy_pct:.0f} % of a core; it may "
            "have limited the run"
        )
    if r.connections < report.config.connections:
        found.append(
            f"CONNECTIONS: only {r.connections} of {report.config.connections} connections "
            "opened (raise the open-file limit: ulimit -n)"
        )
    if r.all_final_s is None:
        found.append(
            f"GAVE UP: {r.patients - r.answered:,} patients had no final answer at the "
            f"{report.config.deadline_s:g} s deadline"
        )
    if not report.sold_at_most_once:
        found.append("OVERSOLD OR UNCHECKED: see the counts and the service's check above")
    return found


# ----------------------------------------------------------------------------------------
# Command line
# ----------------------------------------------------------------------------------------


def _positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError("must be at least 1")
    return value


def _positive_float(text: str) -> float:
    value = float(text)
    if not (value > 0 and math.isfinite(value)):
        raise argparse.ArgumentTypeError("must be a positive number")
    return value


def _setting(text: str) -> tuple[str, str]:
    name, sep, value = text.partition("=")
    if not sep or not name.startswith("INVENTORY_"):
        raise argparse.ArgumentTypeError("expected INVENTORY_NAME=VALUE")
    return name, value


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m bench.crowd``: exit 0 when the run sold no unit twice, else 1."""
    parser = argparse.ArgumentParser(
        prog="python -m bench.crowd",
        description=(
            "A crowd of patients presses 'book' on one slot at the same instant and retries "
            "as told, against one API process and one worker on 127.0.0.1: time to sell "
            "out, time until every patient has a final answer, and whether any unit was "
            "sold twice."
        ),
    )
    parser.add_argument("--patients", type=_positive_int, default=20_000)
    parser.add_argument("--units", type=_positive_int, default=500)
    parser.add_argument(
        "--connections",
        type=_positive_int,
        default=2_000,
        help="keep-alive connections of the client (default 2000)",
    )
    parser.add_argument(
        "--deadline",
        type=_positive_float,
        default=150.0,
        help="seconds after which a patient without a final answer gives up (default 150)",
    )
    parser.add_argument(
        "--server-python",
        default=sys.executable,
        help="the Python of the build to measure (default: this one)",
    )
    parser.add_argument(
        "--postgres-url",
        help="create (and drop) the run's database on this server; default: a private one",
    )
    parser.add_argument(
        "--set",
        dest="settings",
        type=_setting,
        action="append",
        default=[],
        metavar="INVENTORY_NAME=VALUE",
        help="a service setting for the run (repeatable)",
    )
    parser.add_argument("--label", default="", help="a name for the run in the report")
    parser.add_argument("--json", action="store_true", help="print the report as JSON")
    parser.add_argument("--out", type=Path, help="also write the JSON report to this file")
    args = parser.parse_args(argv)
    try:
        config = CrowdConfig(
            patients=args.patients,
            units=args.units,
            connections=args.connections,
            deadline_s=args.deadline,
            server_python=args.server_python,
            postgres_url=args.postgres_url,
            settings=tuple(args.settings),
            label=args.label,
        )
    except ValueError as error:
        parser.error(str(error))

    began = time.monotonic()

    def say(line: str) -> None:
        print(
            f"bench.crowd: [{time.monotonic() - began:6.1f} s] {line}", file=sys.stderr, flush=True
        )

    try:
        report = run_crowd(config, say=say)
    except (RuntimeError, OSError, subprocess.SubprocessError) as error:
        print(f"bench.crowd: {type(error).__name__}: {error}", file=sys.stderr)
        return 1
    data = report.as_dict()
    if args.out is not None:
        args.out.write_text(json.dumps(data, indent=2), encoding="utf-8")
    print(json.dumps(data, indent=2) if args.json else report.format_text())
    return 0 if report.sold_at_most_once else 1


if __name__ == "__main__":
    raise SystemExit(main())
