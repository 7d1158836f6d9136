"""Metrics: counters move as requests happen, N API processes answer for all of them,
label values stay bounded, /metrics is never shed, the worker exports its own, and
every scrape passes ``promtool check metrics``.

The stack here is private: its own Redis, a fresh database, an API with two processes
sharing a multiprocess directory, and an ``inventory worker`` with its metrics port.
"""

from __future__ import annotations

import asyncio
import os
import re
import shutil
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import asyncpg
import orjson
import pytest
from prometheus_client import REGISTRY
from prometheus_client.multiprocess import MultiProcessCollector
from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.registry import CollectorRegistry
from redis.asyncio import Redis

from inventory.api.routes import OPERATIONS
from inventory.devtools.servers import free_port, start_redis
from inventory.errors import InventoryError
from inventory.ops import metrics
from inventory.store import keys

from .api.conftest import ApiServer, api_env, launch_api, start_api, stop_api
from .api.helpers import Catalogue, patient_body, register_patient, uid
from .databases import Databases
from .durability.stack import start_worker

PROMTOOL = shutil.which("promtool")
needs_promtool = pytest.mark.skipif(
    PROMTOOL is None,
    reason="promtool not installed (Debian: apt-get install prometheus; .ci/run does)",
)

Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


def parse(text: str) -> Samples:
    """Every sample of a scrape by (name, sorted labels)."""
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def value(samples: Samples, name: str, **labels: str) -> float:
    """One sample's value (0 when absent)."""
    return samples.get((name, tuple(sorted(labels.items()))), 0.0)


async def scrape(http: aiohttp.ClientSession, url: str) -> str:
    """The text of one scrape of ``url``."""
    async with http.get(url) as answer:
        assert answer.status == 200, await answer.text()
        assert answer.headers["Content-Type"].startswith("text/plain; version=0.0.4")
        return await answer.text()


@dataclass
class Stack:
    """A private API (two processes) and worker on their own Redis and database."""

    api: ApiServer
    worker: subprocess.Popen[bytes]
    worker_url: str
    redis_url: str
    multiproc_dir: Path
    worker_log: Path
    #: Ids created by the tests: none may ever appear in a scrape.
    ids: set[str] = field(default_factory=set)


def _wait_http(url: str, process: subprocess.Popen[bytes], log_path: Path) -> None:
    import urllib.request

    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"exited: {log_path.read_text(errors='replace')[-2000:]}")
        try:
            with urllib.request.urlopen(url, timeout=1) as answer:
                if answer.status == 200:
                    return
        except OSError:
            time.sleep(0.1)
    raise RuntimeError(f"{url} never answered: {log_path.read_text(errors='replace')[-2000:]}")


def _wait_serving(log_path: Path, count: int) -> None:
    """Until ``count`` API processes said they serve (start_api waits for the first)."""
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if log_path.read_text(errors="replace").count("serving on ") >= count:
            return
        time.sleep(0.1)
    raise RuntimeError(f"fewer than {count} API processes started")


@pytest.fixture(scope="module")
def stack(databases: Databases, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    """The private stack of this module."""
    root = tmp_path_factory.mktemp("metrics")
    redis = start_redis(root / "redis")
    processes: list[subprocess.Popen[bytes]] = []
    try:
        database_url = asyncio.run(databases.create())
        port = free_port()
        multiproc = root / "multiproc"
        multiproc.mkdir()
        env = api_env(redis.url, database_url, port) | {"PROMETHEUS_MULTIPROC_DIR": str(multiproc)}
        worker_port = free_port()
        worker_env = {k: v for k, v in env.items() if k != "PROMETHEUS_MULTIPROC_DIR"} | {
            "INVENTORY_WORKER_METRICS_PORT": str(worker_port),
            "INVENTORY_EXPIRE_INTERVAL_S": "0.2",
        }
        worker_log = root / "worker.log"
        worker = start_worker(worker_env, worker_log)
        processes.append(worker)
        worker_url = f"http://127.0.0.1:{worker_port}/metrics"
        _wait_http(worker_url, worker, worker_log)
        # The worker's fence verifies the new server at start; the API's gate opens then.
        api = launch_api(env, root / "api.log", workers=2)
        processes.append(api.process)
        _wait_serving(api.log_path, 2)
        yield Stack(api, worker, worker_url, redis.url, multiproc, worker_log)
    finally:
        for process in reversed(processes):
            stop_api(process)
        redis.close()


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    """A client that opens a new connection per request (spread over API processes)."""
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(force_close=True)) as s:
        yield s


async def _wait_ready(stack: Stack, http: aiohttp.ClientSession) -> None:
    """Until every API process's gate is open (the worker's fence verified the store)."""
    for _ in range(300):
        samples = parse(await scrape(http, stack.api.url + "/metrics"))
        if value(samples, "inventory_store_verified") == 1:
            return
        await asyncio.sleep(0.1)
    raise AssertionError("the API processes never saw a verified store")


async def _reserve(
    stack: Stack, http: aiohttp.ClientSession, account: str, body: dict[str, Any], key: str
) -> tuple[int, dict[str, Any], dict[str, str]]:
    headers = stack.api.headers(account) | {"Idempotency-Key": key}
    async with http.post(stack.api.url + "/v1/holds", json=body, headers=headers) as answer:
        data = await answer.json(content_type=None)
        return answer.status, data, dict(answer.headers)


# -- the API -------------------------------------------------------------------------------


async def test_reserve_outcomes_and_latency_are_counted(
    stack: Stack, http: aiohttp.ClientSession
) -> None:
    """ok, replay, sold_out and a missing key each move their reserve counter; latency is
    recorded under the route template and the status answered."""
    await _wait_ready(stack, http)
    metrics_url = stack.api.url + "/metrics"
    before = parse(await scrape(http, metrics_url))
    cat = await Catalogue(stack.api, http).create()
    _, slots, _ = await cat.schedule([1])
    first, second = uid("acct"), uid("acct")
    stack.ids |= {first, second, slots[0], cat.hospital_id, cat.department_id}
    patient_a = await register_patient(stack.api, http, first)
    patient_b = await register_patient(stack.api, http, second)
    stack.ids |= {patient_a, patient_b}
    key = uuid.uuid4().hex
    body = {"slot_id": slots[0], "patient_id": patient_a, "channel": "app"}
    status, hold, _ = await _reserve(stack, http, first, body, key)
    assert status == 201, hold
    stack.ids.add(hold["hold_id"])
    status, _, headers = await _reserve(stack, http, first, body, key)
    assert status == 201
    assert headers["Idempotent-Replayed"] == "true"
    other = {"slot_id": slots[0], "patient_id": patient_b, "channel": "app"}
    status, refused, _ = await _reserve(stack, http, second, other, uuid.uuid4().hex)
    assert (status, refused["code"]) == (409, "sold_out"), refused
    async with http.post(
        stack.api.url + "/v1/holds", json=other, headers=stack.api.headers(second)
    ) as answer:
        assert answer.status == 400
    async with http.get(stack.api.url + f"/v1/holds/{hold['hold_id']}/nope") as answer:
        assert answer.status == 404

    after = parse(await scrape(http, metrics_url))

    def gained(name: str, **labels: str) -> float:
        return value(after, name, **labels) - value(before, name, **labels)

    outcomes = "inventory_reserve_outcomes_total"
    assert gained(outcomes, outcome="ok") == 1
    assert gained(outcomes, outcome="replay") == 1
    assert gained(outcomes, outcome="sold_out") == 1
    assert gained(outcomes, outcome="idempotency_key_required") == 1
    latency = "inventory_http_request_duration_seconds_count"
    assert gained(latency, route="/v1/holds", method="POST", status="201") == 2
    assert gained(latency, route="/v1/holds", method="POST", status="409") == 1
    assert gained(latency, route="/v1/patients", method="POST", status="201") == 2
    assert gained(latency, route="unmatched", method="GET", status="404") == 1
    assert value(after, "inventory_store_verified") == 1


async def test_request_id_is_echoed_and_logged(stack: Stack, http: aiohttp.ClientSession) -> None:
    """A sane X-Request-Id is echoed and carried by the access-log line; a bad one (or
    one holding a phone number) is replaced by a fresh id."""
    sent = f"rid-{uuid.uuid4().hex}"
    async with http.get(stack.api.url + "/v1/hospitals", headers={"X-Request-Id": sent}) as answer:
        assert answer.status == 200
        assert answer.headers["X-Request-Id"] == sent
    for bad in ("has space", "x" * 129, "13812345678", "引用"):
        async with http.get(
            stack.api.url + "/v1/hospitals", headers={"X-Request-Id": bad}
        ) as answer:
            echoed = answer.headers["X-Request-Id"]
            assert echoed != bad
            assert re.fullmatch(r"[a-p]{30}", echoed)
    async with http.get(stack.api.url + "/nowhere") as answer:
        assert answer.status == 404
        assert re.fullmatch(r"[a-p]{30}", answer.headers["X-Request-Id"])
    lines = []
    for _ in range(50):
        lines = [
            orjson.loads(line)
            for line in stack.api.log_path.read_text(errors="replace").splitlines()
            if sent in line
        ]
        if lines:
            break
        await asyncio.sleep(0.1)
    assert len(lines) == 1, lines
    line = lines[0]
    assert line["event"] == "http.request"
    assert line["request_id"] == sent
    assert (line["method"], line["route"], line["path"], line["status"]) == (
        "GET",
        "/v1/hospitals",
        "/v1/hospitals",
        200,
    )
    assert line["duration_ms"] >= 0
    assert line["level"] == "info"
    assert "timestamp" in line


async def test_processes_share_one_view(stack: Stack, http: aiohttp.ClientSession) -> None:
    """With --workers 2 both processes write to the multiprocess directory and every
    scrape, whichever process answers it, counts the requests of both."""
    route = "/v1/hospitals"
    name = "inventory_http_request_duration_seconds_count"
    labels = {"route": route, "method": "GET", "status": "200"}
    before = value(parse(await scrape(http, stack.api.url + "/metrics")), name, **labels)
    sent = 60
    for _ in range(sent):
        async with http.get(stack.api.url + route) as answer:
            assert answer.status == 200
    totals = {
        value(parse(await scrape(http, stack.api.url + "/metrics")), name, **labels)
        for _ in range(10)
    }
    assert totals == {before + sent}
    # Each process's own share, read from its files alone: both served some.
    pids = {
        m.group(1)
        for p in stack.multiproc_dir.iterdir()
        if (m := re.search(r"_(\d+)\.db$", p.name))
    }
    assert len(pids) == 2, pids
    shares = []
    for pid in pids:
        alone = stack.multiproc_dir.parent / f"alone-{pid}"
        alone.mkdir(exist_ok=True)
        for path in stack.multiproc_dir.glob(f"*_{pid}.db"):
            shutil.copy(path, alone / path.name)
        registry = CollectorRegistry()
        MultiProcessCollector(registry, path=str(alone))
        shares.append(registry.get_sample_value(name, labels) or 0.0)
    assert all(share > 0 for share in shares), shares
    assert sum(shares) == before + sent
    text = await scrape(http, stack.api.url + "/metrics")
    assert 'pid="' not in text
    assert value(parse(text), "inventory_http_requests_in_flight") >= 0


def _children_multiproc_dir(pid: int) -> Path:
    """The one multiprocess directory every child of ``pid`` was started with."""
    children = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
    # multiprocessing's resource tracker is a child too: keep the API processes.
    servers = [c for c in children if b"spawn_main" in Path(f"/proc/{c}/cmdline").read_bytes()]
    assert len(servers) == 2, children
    found = set()
    for child in servers:
        environ = Path(f"/proc/{child}/environ").read_bytes().decode().split("\0")
        found.add(
            dict(item.split("=", 1) for item in environ if "=" in item).get(metrics.MULTIPROC_ENV)
        )
    assert len(found) == 1, found
    directory = found.pop()
    assert directory is not None
    return Path(directory)


async def test_workers_get_a_fresh_multiprocess_dir(
    stack: Stack, http: aiohttp.ClientSession, tmp_path: Path
) -> None:
    """Without PROMETHEUS_MULTIPROC_DIR, `serve --workers 2` makes a fresh directory for
    its processes, aggregates over it, and removes it at exit."""
    port = free_port()
    env = {k: v for k, v in stack.api.env.items() if k != "PROMETHEUS_MULTIPROC_DIR"}
    env["INVENTORY_PORT"] = str(port)
    process = await asyncio.to_thread(start_api, env, tmp_path / "api.log", workers=2)
    try:
        await asyncio.to_thread(_wait_serving, tmp_path / "api.log", 2)
        directory = _children_multiproc_dir(process.pid)
        assert directory.is_dir()
        for _ in range(20):
            async with http.get(f"http://127.0.0.1:{port}/healthz") as answer:
                assert answer.status == 200
        samples = parse(await scrape(http, f"http://127.0.0.1:{port}/metrics"))
        name = "inventory_http_request_duration_seconds_count"
        assert value(samples, name, route="/healthz", method="GET", status="200") >= 20
    finally:
        await asyncio.to_thread(stop_api, process)
    assert process.returncode == 0
    assert not directory.exists()


async def test_a_dead_process_stops_counting_in_live_gauges(
    stack: Stack, http: aiohttp.ClientSession, tmp_path: Path
) -> None:
    """When one of the API processes dies, the supervisor drops its live gauges (in
    flight, store verified) while its counters stay in the sums."""
    port = free_port()
    env = {k: v for k, v in stack.api.env.items() if k != "PROMETHEUS_MULTIPROC_DIR"}
    env["INVENTORY_PORT"] = str(port)
    process = await asyncio.to_thread(start_api, env, tmp_path / "api.log", workers=2)
    try:
        await asyncio.to_thread(_wait_serving, tmp_path / "api.log", 2)
        directory = _children_multiproc_dir(process.pid)
        victim = int(next(directory.glob("gauge_livemin_*.db")).stem.rsplit("_", 1)[1])
        os.kill(victim, signal.SIGKILL)
        for _ in range(100):
            if not list(directory.glob(f"gauge_live*_{victim}.db")):
                break
            await asyncio.sleep(0.05)
        assert not list(directory.glob(f"gauge_live*_{victim}.db"))
        assert list(directory.glob(f"histogram_{victim}.db"))
        samples = parse(await scrape(http, f"http://127.0.0.1:{port}/metrics"))
        assert value(samples, "inventory_store_verified") == 1
    finally:
        await asyncio.to_thread(stop_api, process)
    assert process.returncode == 1  # one process did not exit cleanly


async def test_metrics_are_not_shed(
    stack: Stack, http: aiohttp.ClientSession, tmp_path: Path
) -> None:
    """With the only in-flight place taken, other requests are shed (and counted) while
    /metrics, /healthz and /readyz still answer."""
    port = free_port()
    env = {k: v for k, v in stack.api.env.items() if k != "PROMETHEUS_MULTIPROC_DIR"}
    env |= {"INVENTORY_PORT": str(port), "INVENTORY_MAX_IN_FLIGHT": "1"}
    process = await asyncio.to_thread(start_api, env, tmp_path / "api.log")
    base = f"http://127.0.0.1:{port}"
    try:
        locker = await asyncpg.connect(stack.api.database_url)
        try:
            transaction = locker.transaction()
            await transaction.start()
            await locker.execute("LOCK TABLE patients IN SHARE MODE")
            blocked = asyncio.create_task(
                http.post(
                    base + "/v1/patients",
                    json=patient_body(),
                    headers=stack.api.headers(uid("acct")),
                )
            )
            for _ in range(200):
                waiting = await locker.fetchval(
                    "SELECT count(*) FROM pg_locks WHERE NOT granted"
                    " AND relation = 'patients'::regclass"
                )
                if waiting:
                    break
                await asyncio.sleep(0.025)
            async with http.get(base + "/v1/hospitals") as answer:
                assert answer.status == 503
                assert (await answer.json(content_type=None))["code"] == "overloaded"
            for path in ("/metrics", "/healthz", "/readyz"):
                async with http.get(base + path) as answer:
                    assert answer.status == 200, path
            samples = parse(await scrape(http, base + "/metrics"))
            assert value(samples, "inventory_admission_shed_total") >= 1
            await transaction.rollback()
        finally:
            await locker.close()
        response = await asyncio.wait_for(blocked, timeout=20)
        assert response.status == 201
        response.release()
    finally:
        await asyncio.to_thread(stop_api, process)


# -- the worker and bounded labels -----------------------------------------------------------


async def _held_in_redis(redis_url: str) -> int:
    client = Redis.from_url(redis_url, decode_responses=True)
    try:
        held = 0
        for tag in await client.smembers(keys.TAG_REGISTRY_KEY):
            for name, count in (await client.hgetall(keys.tag_keys(tag).slots)).items():
                if name.endswith(":held"):
                    held += int(count)
        return held
    finally:
        await client.aclose()


async def test_worker_exports_its_own(stack: Stack, http: aiohttp.ClientSession) -> None:
    """The worker's /metrics has the sampled store gauges (holds active as Redis counts
    them), persister batches and expirer sweeps, and no API family; its /healthz and
    /readyz say it is alive and ready."""
    cat = await Catalogue(stack.api, http).create()
    _, slots, _ = await cat.schedule([3])
    account = uid("acct")
    patient = await register_patient(stack.api, http, account)
    body = {"slot_id": slots[0], "patient_id": patient, "channel": "app"}
    status, hold, _ = await _reserve(stack, http, account, body, uuid.uuid4().hex)
    assert status == 201, hold
    stack.ids |= {account, patient, slots[0], hold["hold_id"]}
    held = await _held_in_redis(stack.redis_url)
    assert held >= 1
    samples: Samples = {}
    for _ in range(150):
        samples = parse(await scrape(http, stack.worker_url))
        if (
            value(samples, "inventory_holds_active") == held
            and value(samples, "inventory_persist_events_total", result="applied") > 0
        ):
            break
        await asyncio.sleep(0.1)
    assert value(samples, "inventory_holds_active") == held
    assert value(samples, "inventory_tags") >= 1
    assert value(samples, "inventory_fenced_tags") == 0
    assert value(samples, "inventory_invariant_violating_slots") == 0
    assert value(samples, "inventory_persist_batches_total") >= 1
    assert value(samples, "inventory_persist_batch_size_count") >= 1
    assert value(samples, "inventory_persist_events_total", result="applied") > 0
    assert value(samples, "inventory_persist_postgres_available") == 1
    assert value(samples, "inventory_expirer_sweeps_total", result="ok") >= 1
    names = {name for name, _ in samples}
    assert not any(name.startswith("inventory_http_") for name in names)
    base = stack.worker_url.removesuffix("/metrics")
    async with http.get(base + "/healthz") as answer:
        assert (answer.status, await answer.json()) == (200, {"status": "ok"})
    async with http.get(base + "/readyz") as answer:
        ready = await answer.json()
        assert answer.status == 200, ready
    assert ready["checks"] == {"redis": "ok", "postgres": "ok", "outbox": "ok", "fence": "ok"}


#: Every label an inventory_* family may carry, and the values it may take.
_HTTP = {
    "route": {op.path for op in OPERATIONS} | {metrics.UNMATCHED},
    "method": set(metrics.HTTP_METHODS) | {metrics.OTHER},
}


def _error_codes() -> set[str]:
    import inventory.app  # noqa: F401  (every error class loaded)

    codes: set[str] = set()
    pending: list[type[InventoryError]] = [InventoryError]
    while pending:
        cls = pending.pop()
        codes.add(cls.code)
        pending += cls.__subclasses__()
    return codes


def _allowed_labels() -> dict[str, dict[str, set[str] | re.Pattern[str]]]:
    status = re.compile(r"[1-5][0-9][0-9]")
    le = re.compile(r"\+Inf|[0-9]+(\.[0-9]+)?(e[+-]?[0-9]+)?")
    reserve = _error_codes() | {"ok", "replay", "internal_error", metrics.OTHER}
    his_operation = set(metrics.HIS_OPERATIONS) | {metrics.OTHER}
    his_connection = set(metrics.HIS_CONNECTIONS) | {metrics.OTHER}
    return {
        "inventory_http_request_duration_seconds": _HTTP | {"status": status, "le": le},
        "inventory_reserve_outcomes": {"outcome": reserve | {"http_400", "http_413"}},
        "inventory_rate_limited": {"bucket": {"account", "ip"}},
        "inventory_rate_limit_unavailable": {"bucket": {"account", "ip"}},
        "inventory_invariant_violations": {"source": {"sampler", "check"}},
        "inventory_expirer_sweeps": {"result": {"ok", "failed"}},
        "inventory_events": {"type": set(metrics.EVENT_TYPES) | {metrics.OTHER}},
        "inventory_units_rereleased": {"reason": {"expired", "released", "cancelled"}},
        "inventory_waitlist_events": {"event": set(metrics.WAITLIST_OUTCOMES) | {metrics.OTHER}},
        "inventory_hold_age_seconds": {
            "outcome": {"confirmed", "expired", "released"},
            "le": le,
        },
        "inventory_persist_events": {"result": {"applied", "duplicate", "diverged"}},
        "inventory_persist_failures": {"dependency": {"postgres", "redis"}},
        "inventory_persist_batch_size": {"le": le},
        "inventory_room_sold_out_seconds": {"le": le},
        "inventory_persist_batch_duration_seconds": {"le": le},
        "inventory_his_request_duration_seconds": {
            "connection": his_connection,
            "operation": his_operation,
            "outcome": set(metrics.HIS_OUTCOMES) | {metrics.OTHER},
            "le": le,
        },
        "inventory_his_errors": {
            "connection": his_connection,
            "operation": his_operation,
            "kind": set(metrics.HIS_ERROR_KINDS),
        },
        "inventory_his_circuit_state": {"connection": his_connection},
        "inventory_his_circuit_transitions": {
            "connection": his_connection,
            "state": set(metrics.HIS_CIRCUIT_STATES),
        },
        "inventory_reconciliation_drift": {
            "connection": his_connection,
            "kind": set(metrics.RECONCILIATION_KINDS) | {metrics.OTHER},
        },
        "inventory_check_drift": {"kind": set(metrics.CHECK_KINDS) | {metrics.OTHER}},
        "inventory_payment_notifications_refused": {
            "reason": set(metrics.NOTIFICATION_REFUSALS) | {metrics.NOT_SETTLED}
        },
        "inventory_refunds_open": {"status": set(metrics.REFUND_OPEN_STATUSES)},
        "inventory_his_submission_queue": {"status": set(metrics.HIS_WAITING_STATUSES)},
        "inventory_his_connection_queue": {
            "connection": his_connection,
            "status": set(metrics.HIS_WAITING_STATUSES),
        },
        "inventory_his_connection_oldest_age_seconds": {"connection": his_connection},
        "inventory_visit_outcomes": {
            "outcome": set(metrics.VISIT_SOURCES) | {metrics.OTHER},
            "source": set().union(*metrics.VISIT_SOURCES.values()) | {metrics.OTHER},
        },
        "inventory_patient_bans": {"action": set(metrics.BAN_ACTIONS) | {metrics.OTHER}},
        "inventory_visit_readback_last_success_timestamp_seconds": {"connection": his_connection},
    }


def assert_bounded(text: str, ids: set[str]) -> int:
    """Every label of every inventory_* sample is allowed for its family; no id of the
    tests appears anywhere; returns the number of samples checked."""
    allowed = _allowed_labels()
    checked = 0
    for family in text_string_to_metric_families(text):
        if not family.name.startswith("inventory_"):
            assert family.name.startswith(("process_", "python_")), family.name
            continue
        rules = allowed.get(family.name, {})
        for sample in family.samples:
            checked += 1
            for label, label_value in sample.labels.items():
                assert label in rules, (family.name, label)
                rule = rules[label]
                ok = (
                    rule.fullmatch(label_value) is not None
                    if isinstance(rule, re.Pattern)
                    else label_value in rule
                )
                assert ok, (family.name, label, label_value)
    leaked = {found for found in ids if found in text}
    assert not leaked, leaked
    return checked


async def test_label_values_are_bounded(stack: Stack, http: aiohttp.ClientSession) -> None:
    """After traffic with ids in paths, odd methods and unknown routes, every label value
    of both scrapes comes from a known finite set and no test id appears in them."""
    junk = uuid.uuid4().hex
    stack.ids.add(junk)
    for method, path in (
        ("GET", f"/v1/holds/h-{junk}"),
        ("GET", f"/v1/bookings/{junk}"),
        ("DELETE", f"/v1/holds/{junk}"),
        ("PURGE", f"/v1/holds/{junk}"),
        ("GET", f"/{junk}/x"),
        ("GET", f"/api/appointment/available?scheduleId={junk}"),
    ):
        async with http.request(method, stack.api.url + path) as answer:
            await answer.read()
    api_text = await scrape(http, stack.api.url + "/metrics")
    worker_text = await scrape(http, stack.worker_url)
    assert stack.ids
    assert assert_bounded(api_text, stack.ids) > 0
    assert assert_bounded(worker_text, stack.ids) > 0
    samples = parse(api_text)
    assert (
        value(
            samples,
            "inventory_http_request_duration_seconds_count",
            route="/v1/holds/{hold_id}",
            method="GET",
            status="401",
        )
        >= 1
    )
    assert (
        value(
            samples,
            "inventory_http_request_duration_seconds_count",
            route="unmatched",
            method="other",
            status="405",
        )
        >= 1
    )


# -- promtool ------------------------------------------------------------------------------


def promtool_check(text: str) -> None:
    """``promtool check metrics`` accepts ``text`` with no lint complaint."""
    assert PROMTOOL is not None
    result = subprocess.run(
        [PROMTOOL, "check", "metrics"],
        input=text.encode(),
        capture_output=True,
        timeout=60,
        check=False,
    )
    output = (result.stdout + result.stderr).decode(errors="replace")
    assert result.returncode == 0, output
    assert output.strip() == "", output


@needs_promtool
async def test_promtool_accepts_every_scrape(
    stack: Stack, http: aiohttp.ClientSession, tmp_path: Path
) -> None:
    """The API's (aggregated) and the worker's scrapes, and `inventory check`'s textfile,
    pass `promtool check metrics`."""
    promtool_check(await scrape(http, stack.api.url + "/metrics"))
    promtool_check(await scrape(http, stack.worker_url))
    textfile = tmp_path / "check.prom"
    env = {k: v for k, v in stack.api.env.items() if k != "PROMETHEUS_MULTIPROC_DIR"}
    result = await asyncio.to_thread(
        subprocess.run,
        [sys.executable, "-m", "inventory", "check", "--metrics-file", str(textfile)],
        env=env,
        capture_output=True,
        timeout=120,
        check=False,
    )
    assert result.returncode in (0, 1), result.stderr
    text = textfile.read_text()
    assert "inventory_check_last_run_timestamp_seconds" in text
    assert 'inventory_invariant_violations_total{source="check"} 0.0' in text
    promtool_check(text)
    assert_bounded(text, stack.ids)


# -- in-process helpers ----------------------------------------------------------------------


def _sample(name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


@dataclass
class _Hold:
    created_ms: int
    confirmed_ms: int = 0
    ended_ms: int = 0


@dataclass
class _Event:
    type: str
    hold: _Hold | None = None


def test_events_feed_expiries_rereleases_and_hold_age() -> None:
    """Recorded events count expiries, freed and returned units and hold ages; unknown
    event types count as "other"."""
    before = {
        "expiries": _sample("inventory_hold_expiries_total"),
        "expired": _sample("inventory_units_rereleased_total", reason="expired"),
        "cancelled": _sample("inventory_units_rereleased_total", reason="cancelled"),
        "returned": _sample("inventory_units_returned_total"),
        "other": _sample("inventory_events_total", type="other"),
        "age_expired": _sample("inventory_hold_age_seconds_count", outcome="expired"),
        "age_sum": _sample("inventory_hold_age_seconds_sum", outcome="confirmed"),
    }
    metrics.observe_events(
        [
            _Event("hold_expired", _Hold(created_ms=1_000, ended_ms=901_000)),
            _Event("booking_confirmed", _Hold(created_ms=1_000, confirmed_ms=61_000)),
            _Event("booking_cancelled", _Hold(created_ms=1_000, ended_ms=2_000)),
            _Event("unit_returned"),
            _Event("something_new"),
        ]
    )
    assert _sample("inventory_hold_expiries_total") - before["expiries"] == 1
    assert _sample("inventory_units_rereleased_total", reason="expired") - before["expired"] == 1
    gained = _sample("inventory_units_rereleased_total", reason="cancelled") - before["cancelled"]
    assert gained == 1
    assert _sample("inventory_units_returned_total") - before["returned"] == 1
    assert _sample("inventory_events_total", type="other") - before["other"] == 1
    count = _sample("inventory_hold_age_seconds_count", outcome="expired")
    assert count - before["age_expired"] == 1
    age = _sample("inventory_hold_age_seconds_sum", outcome="confirmed") - before["age_sum"]
    assert age == pytest.approx(60.0)


def test_persister_stats_map_to_metrics() -> None:
    """observe_persister sets the gauges and advances counters by what the totals
    gained; MeteredPersisterStats observes each committed batch once."""
    from inventory.ops.sampler import MeteredPersisterStats

    stats = MeteredPersisterStats()
    batches = _sample("inventory_persist_batches_total")
    applied = _sample("inventory_persist_events_total", result="applied")
    lost = _sample("inventory_persist_lost_events_total")
    stats.last_batch_size, stats.last_batch_latency_s, stats.last_commit_at = 7, 0.01, 1.0
    stats.last_batch_size, stats.last_batch_latency_s, stats.last_commit_at = 3, 0.02, 2.0
    stats.events_persisted, stats.autoclaim_deleted, stats.pending_deleted = 10, 1, 1
    stats.total_lag, stats.total_pending, stats.db_available = 5, 2, False
    metrics.observe_persister(stats)
    metrics.observe_persister(stats)
    stats.events_persisted = 15
    metrics.observe_persister(stats)
    assert _sample("inventory_persist_batches_total") - batches == 2
    assert _sample("inventory_persist_events_total", result="applied") - applied == 15
    assert _sample("inventory_persist_lost_events_total") - lost == 2
    assert _sample("inventory_outbox_lag_entries") == 5
    assert _sample("inventory_outbox_pending_entries") == 2
    assert _sample("inventory_persist_postgres_available") == 0
    assert _sample("inventory_persist_last_commit_timestamp_seconds") == 2.0


def test_visit_and_ban_labels_stay_bounded() -> None:
    """Visits count by outcome and source, bans by action, a read-back by connection; an
    outcome from an unknown source, an unknown action or an unregistered connection is
    "other"; every pair a source can decide starts at 0 in both roles that count them."""
    api_samples = parse(metrics.exposition("api").decode())
    for outcome, sources in metrics.VISIT_SOURCES.items():
        for source in sources:
            key = (("outcome", outcome), ("source", source))
            assert ("inventory_visit_outcomes_total", key) in api_samples
    assert ("inventory_patient_bans_total", (("action", "lifted"),)) in api_samples
    metrics.observe_visit_outcome("no_show", "session_ended")
    metrics.observe_visit_outcome("visited", "session_ended")  # not a source of visits
    metrics.observe_ban("applied")
    metrics.observe_ban(f"a-{uuid.uuid4().hex}")
    metrics.observe_visits_round(5.0)
    metrics.observe_visit_readback(7.0, connection=f"h-{uuid.uuid4().hex}")
    text = metrics.exposition("worker").decode()
    assert_bounded(text, set())
    samples = parse(text)
    outcomes = "inventory_visit_outcomes_total"
    assert value(samples, outcomes, outcome="no_show", source="session_ended") >= 1
    assert value(samples, outcomes, outcome="other", source="other") >= 1
    assert value(samples, "inventory_patient_bans_total", action="other") >= 1
    assert value(samples, "inventory_visits_last_round_timestamp_seconds") >= 5.0
    readback = "inventory_visit_readback_last_success_timestamp_seconds"
    assert value(samples, readback, connection="other") == 7.0


def test_his_and_reconciliation_labels_stay_bounded() -> None:
    """Unknown HIS operations and outcomes, and unknown drift kinds, become "other";
    failures count as errors by kind; the breaker's state is a number; a connection the
    configuration did not register is "other" (the label is bounded by it)."""
    metrics.observe_his_call("create_appointment", 0.05, "unavailable")
    metrics.observe_his_call(f"op-{uuid.uuid4().hex}", 0.05, f"o-{uuid.uuid4().hex}")
    metrics.observe_his_call("get_schedule", 0.05, "ok", connection=f"h-{uuid.uuid4().hex}")
    metrics.register_his_connections(["hosp-registered"])
    metrics.observe_his_call("get_schedule", 0.05, "ok", connection="hosp-registered")
    metrics.observe_his_breaker("closed", "open")
    metrics.observe_reconciliation({"missing_in_his": 2, f"k-{uuid.uuid4().hex}": 1}, at=1.0)
    text = metrics.exposition("worker").decode()
    assert_bounded(text, set())
    samples = parse(text)
    assert (
        value(
            samples,
            "inventory_his_errors_total",
            connection="default",
            operation="create_appointment",
            kind="unavailable",
        )
        >= 1
    )
    assert (
        value(
            samples,
            "inventory_his_request_duration_seconds_count",
            connection="default",
            operation="other",
            outcome="other",
        )
        >= 1
    )
    for connection in ("other", "hosp-registered"):
        count = "inventory_his_request_duration_seconds_count"
        assert value(samples, count, connection=connection, operation="get_schedule", outcome="ok")
    assert value(samples, "inventory_his_circuit_state", connection="default") == 2
    drift = "inventory_reconciliation_drift"
    assert value(samples, drift, connection="default", kind="missing_in_his") == 2
    assert value(samples, drift, connection="default", kind="other") == 1
    assert value(samples, drift, connection="default", kind="status_mismatch") == 0


def test_roles_export_only_their_families() -> None:
    """Each role's scrape holds only its own inventory_* families (and every family
    belongs to some role)."""
    for role in ("api", "worker", "check"):
        names = {f.name for f in text_string_to_metric_families(metrics.exposition(role).decode())}
        assert {n for n in names if n.startswith("inventory_")} <= metrics.FAMILIES[role]
    every = {family.name for family in REGISTRY.collect() if family.name.startswith("inventory_")}
    assert every <= set().union(*metrics.FAMILIES.values())


def test_worker_readiness_says_what_is_wrong() -> None:
    """The worker's readiness names each failing part: no recent store sample, Postgres
    writes retried, an outbox backlog past its bound, fenced department-days."""
    from inventory.ops.sampler import WorkerHealth
    from inventory.record.persister import PersisterStats

    stats = PersisterStats(db_available=False, last_error="postgres: down")
    stats.total_lag, stats.total_pending = 50_000, 1
    health = WorkerHealth(
        stats, interval_s=5.0, max_backlog=50_000, last_sample=100.0, sample_error="Redis gone"
    )
    checks = health.checks(now=200.0)
    assert checks["redis"].startswith("failing: no store sample for 100 s (Redis gone)")
    never = WorkerHealth(stats, interval_s=5.0, max_backlog=50_000, started=5000.0)
    assert never.checks(now=5002.0)["redis"] == (
        "failing: no store sample yet, 2 s after start (sampling)"
    )
    assert checks["postgres"] == "failing: persister writes retried (postgres: down)"
    assert checks["outbox"] == "lagging: 50001 entries waiting (bound 50000)"
    assert checks["fence"] == "ok"
    health.fenced_tags = 2
    assert health.checks(now=200.0)["fence"].startswith(
        "fenced: 2 department-day(s) refuse changes until `inventory rebuild --fenced`"
    )
    health.fenced_tags = 0
    stats.db_available, stats.total_lag = True, 0
    assert health.checks(now=110.0) == {
        "redis": "ok",
        "postgres": "ok",
        "outbox": "ok",
        "fence": "ok",
    }
