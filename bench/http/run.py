"""A whole run: private servers (unless URLs are given), a seeded database, the API, the
bare handler and the floor serving and pinned, the rounds; everything stopped, dropped or
deleted at the end."""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from urllib.parse import urlsplit

from bench.http.config import HttpBenchConfig
from bench.http.cpu import descendants
from bench.http.live import LiveBench
from bench.http.plan import WRK_SCRIPT
from bench.http.processes import pin, start_api, start_child_servers, wait_healthy
from bench.http.report import HttpBenchReport
from bench.http.seeding import (
    api_environment,
    create_database,
    delete_tags,
    drop_database,
    seed,
)


def _choose_wrk(generator: str) -> str | None:
    found = shutil.which("wrk")
    if generator == "wrk" and found is None:
        raise RuntimeError("--generator wrk: wrk is not installed (apt-get install wrk)")
    return found if generator in ("auto", "wrk") else None


def _where(url: str) -> str:
    parts = urlsplit(url)
    return f"{parts.hostname}:{parts.port}{parts.path}"


def run_http_bench(
    config: HttpBenchConfig,
    *,
    redis_url: str | None = None,
    database_url: str | None = None,
    progress: Callable[[str], None] | None = None,
) -> HttpBenchReport:
    """Run the whole benchmark: servers, seeding, warm-up, rounds; clean up after."""
    with running_bench(
        config, redis_url=redis_url, database_url=database_url, progress=progress
    ) as bench:
        rounds = bench.run_rounds()
        return HttpBenchReport(config=config, setting=bench.setting(), rounds=tuple(rounds))
    raise AssertionError("unreachable")  # pragma: no cover


@contextlib.contextmanager
def running_bench(
    config: HttpBenchConfig,
    *,
    redis_url: str | None = None,
    database_url: str | None = None,
    progress: Callable[[str], None] | None = None,
) -> Iterator[LiveBench]:
    """Servers (private unless URLs are given), a seeded database, the API and the bare
    handler serving and pinned: everything but the timed phases. All of it is stopped,
    dropped or deleted on exit."""
    from inventory.devtools.servers import free_port, start_postgres, start_redis
    from inventory.ops.config import Settings

    say = progress or (lambda _line: None)
    wrk = _choose_wrk(config.generator)
    cpus = sorted(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else []
    pinning = config.pin if config.pin is not None else (config.workers == 1 and len(cpus) >= 2)
    if pinning and len(cpus) < 2:
        raise RuntimeError("--pin needs at least two CPUs")
    server_cpus = {cpus[-1]} if pinning else None
    other_cpus = set(cpus[:-1]) if pinning else None
    with contextlib.ExitStack() as stack:
        tmp = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="inventory-bench-")))
        redis_pid = postgres_pid = None
        if redis_url is None:
            say(f"starting a private redis-server (AOF {config.aof})")
            redis = stack.enter_context(
                start_redis(
                    tmp / "redis",
                    appendonly=config.aof != "off",
                    appendfsync=config.aof if config.aof != "off" else "everysec",
                )
            )
            redis_url, redis_pid = redis.url, redis.pid
            redis_where = f"private redis-server {redis.version} on {redis.port}, AOF {config.aof}"
        else:
            redis_where = _where(redis_url)
        if database_url is None:
            say("starting a private Postgres")
            postgres = stack.enter_context(start_postgres(tmp / "postgres"))
            server_url, postgres_pid = postgres.dsn, postgres.pid
            postgres_where = f"private Postgres {postgres.version} on {postgres.port}"
        else:
            server_url = database_url
            postgres_where = _where(database_url) + " (fresh database, dropped at the end)"
        if other_cpus is not None:
            pin([os.getpid()], other_cpus)
            for pid in (redis_pid, postgres_pid):
                if pid is not None:
                    pin(descendants(pid), other_cpus)
        verified_gate = redis_pid is not None
        say("creating and migrating a database")
        db_url = asyncio.run(create_database(server_url))
        stack.callback(lambda: asyncio.run(drop_database(server_url, db_url)))
        api_port, bare_port = free_port(), free_port()
        env = api_environment(
            redis_url,
            db_url,
            api_port,
            connections=config.connections,
            verified_gate=verified_gate,
        )
        settings = Settings.from_env({k: v for k, v in env.items() if k.startswith("INVENTORY_")})
        say(f"seeding {config.department_days} department-days and {config.patients:,} patients")
        seeded = asyncio.run(seed(settings, redis_url, db_url, config, verify=verified_gate))
        if redis_pid is None:
            tags, url = seeded.tags, redis_url
            stack.callback(lambda: asyncio.run(delete_tags(url, tags)))
        plan_json, plan_wrk, wrk_script = tmp / "plan.json", tmp / "plan.tsv", tmp / "plan.lua"
        seeded.plan.dump(plan_json)
        seeded.plan.dump_for_wrk(plan_wrk)
        wrk_script.write_text(WRK_SCRIPT, encoding="utf-8")
        say(
            f"starting {config.workers} API and {config.workers} bare process(es)"
            + (f" and {config.workers} floor process(es)" if config.floor else "")
        )
        api = start_api(env, config.workers, tmp / "api.log")
        stack.callback(api.stop)
        bare = start_child_servers("bare", bare_port, config.workers, tmp / "bare.log")
        stack.callback(bare.stop)
        servers = {"api": api, "bare": bare}
        if config.floor:
            floor = start_child_servers(
                "floor", free_port(), config.workers, tmp / "floor.log", env=env
            )
            stack.callback(floor.stop)
            servers["floor"] = floor
        for server in servers.values():
            wait_healthy(server)
        if server_cpus is not None:
            pin([pid for server in servers.values() for pid in server.pids()], server_cpus)
        pinned = (
            f"servers on CPU {sorted(server_cpus)[0]}, generator/Redis/Postgres on CPU "
            + ",".join(str(c) for c in sorted(other_cpus or ()))
            if server_cpus is not None
            else None
        )
        yield LiveBench(
            config=config,
            servers=servers,
            plan_json=plan_json,
            plan_wrk=plan_wrk,
            wrk_script=wrk_script,
            wrk=wrk,
            generator_cpus=other_cpus,
            redis_url=redis_url,
            redis_pid=redis_pid,
            postgres_pid=postgres_pid,
            database_url=db_url,
            pinned=pinned,
            redis_where=redis_where,
            postgres_where=postgres_where,
            api_settings={
                "redis_autopipeline": settings.redis_autopipeline,
                "verified_store_gate": verified_gate,
                "rate_limits": "on, far above the load",
            },
            say=say,
        )
