"""A release day through the waiting room, from several client processes: how long until
every patient knows, and what it costs.

``python -m bench room --patients 20000 --units 500 --processes 4`` starts a private
Redis and Postgres (or a fresh database on ``--postgres-url``'s server), seeds one slot
of ``units`` units whose release T0 is ``--lead`` seconds ahead and ``patients`` accounts
with one patient each (bench/crowd_stack.py, as ``python -m bench.crowd`` seeds), starts
one ``inventory worker`` and one ``inventory serve``, and opens the release's waiting
room. The client processes then join every patient before T0 and each patient follows
its ticket by Server-Sent Events; the admitted reserve with their tokens.

The report: T0 to sold out (the release's own record), T0 to the last patient's final
answer (a hold, or sold out), p50/p99 of each patient's time to its final answer,
requests per patient after joining besides the stream (and stream requests apart), the
answers by status (429 and 503 included), units held against the capacity (oversold =
held beyond it, from the clients and from Redis), how long the sell-out took to reach
the waiting streams, the API's CPU and open files, p50/p99 of the status path (one
ticket status) against a bare aiohttp handler in a process of its own (the same client,
alternating, after the run), and the draw's fairness statistics.

Then, unless ``--no-compare``, the same crowd on the previous design, in the same run:
:func:`bench.crowd.run_crowd` (every patient presses "book" on a released slot of the
same units at once and retries as told, no room), on fresh servers and data.
"""

from __future__ import annotations

import collections
import concurrent.futures
import contextlib
import http.client
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import redis

from bench.crowd import (
    _STACK_SCRIPT,
    CrowdConfig,
    _database,
    _free_port,
    _key,
    _proc_cpu_s,
    _spawn,
    _stop,
    _wait_http,
    run_crowd,
)
from bench.room_client import run_client

#: Latency samples of the status path and of the bare handler, after the run.
LATENCY_SAMPLES = 300


@dataclass(frozen=True, slots=True)
class RoomConfig:
    """What to run."""

    patients: int = 2_000
    units: int = 500
    processes: int = 4
    #: Seconds from seeding's end to T0 (None: 30 s plus a second per 500 patients).
    lead_s: float | None = None
    deadline_s: float = 60.0
    postgres_url: str | None = None
    settings: tuple[tuple[str, str], ...] = ()
    #: Also run the crowd on the previous design (no room) in the same run.
    compare: bool = True
    #: The previous design's crowd gives up this long after its start.
    compare_deadline_s: float = 60.0
    #: Write each patient's run (times relative to T0) here, one JSON object a line.
    results_path: str | None = None
    #: Copy the API's and the worker's logs into this folder when the run ends (also
    #: when it fails); otherwise they go with the run's temporary folder.
    keep_logs: str | None = None

    def __post_init__(self) -> None:
        if min(self.patients, self.units, self.processes) < 1:
            raise ValueError("patients, units and processes must be at least 1")

    @property
    def lead(self) -> float:
        return self.lead_s if self.lead_s is not None else 30.0 + self.patients / 500


def _percentile(values: Sequence[float], q: float) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def _round(value: float | None, digits: int = 3) -> float | None:
    return None if value is None else round(value, digits)


def _get(url: str, token: str | None = None) -> tuple[int, Any]:
    request = urllib.request.Request(url)
    if token:
        request.add_header("Authorization", f"Bearer {token}")
    try:
        with urllib.request.urlopen(request, timeout=10) as answer:
            return answer.status, json.loads(answer.read() or b"null")
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read() or b"null")


def _post(url: str, body: Any, token: str) -> tuple[int, Any]:
    request = urllib.request.Request(
        url,
        data=json.dumps(body).encode(),
        headers={"Authorization": f"Bearer {token}", "Content-Type": "application/json"},
        method="POST",
    )
    try:
        with urllib.request.urlopen(request, timeout=30) as answer:
            return answer.status, json.loads(answer.read())
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read() or b"null")


def _latencies(
    sides: dict[str, tuple[int, str, str | None]], samples: int
) -> dict[str, list[float]]:
    """GET each side's (port, path, token) ``samples`` times over one kept-alive
    connection per side, the sides alternating request by request."""
    connections = {
        name: http.client.HTTPConnection("127.0.0.1", port, timeout=10)
        for name, (port, _, _) in sides.items()
    }
    found: dict[str, list[float]] = {name: [] for name in sides}
    try:
        for _ in range(samples):
            for name, (_, path, token) in sides.items():
                headers = {"Authorization": f"Bearer {token}"} if token else {}
                started = time.perf_counter()
                connections[name].request("GET", path, headers=headers)
                answer = connections[name].getresponse()
                answer.read()
                found[name].append(time.perf_counter() - started)
                if answer.status != 200:
                    raise RuntimeError(f"the {name} side answered {answer.status} on {path}")
    finally:
        for connection in connections.values():
            connection.close()
    return found


def _open_files(pid: int) -> int | None:
    try:
        return len(os.listdir(f"/proc/{pid}/fd"))
    except OSError:
        return None


def _copy_logs(logs: Sequence[Path], folder: Path) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for log in logs:
        if log.exists():
            shutil.copyfile(log, folder / log.name)


def _instant(text: str | None) -> float | None:
    return datetime.fromisoformat(text).timestamp() if text else None


def run_room(config: RoomConfig, *, say: Callable[[str], None] = lambda _: None) -> dict[str, Any]:
    """Start the stack, seed it, run the release, measure, stop everything; the report."""
    from inventory.api.auth import mint_token
    from inventory.devtools.servers import start_redis
    from inventory.ops.config import Settings

    with contextlib.ExitStack() as stack:
        root = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="bench-room-")))
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
                "INVENTORY_ACCESS_LOG": "false",
                # Behind one trusted proxy that appends to X-Forwarded-For: each patient
                # is its own address for the per-address limits, as in bench.crowd.
                "INVENTORY_CLIENT_IP_HEADER": "X-Forwarded-For",
                "INVENTORY_TRUSTED_PROXY_HOPS": "1",
            }
        )
        env.update(dict(config.settings))
        plan_path = root / "plan.json"
        say(f"seeding {config.patients:,} patients and one slot of {config.units:,} units")
        seeded = subprocess.run(
            [
                sys.executable,
                "-P",
                str(_STACK_SCRIPT),
                "seed",
                "--patients",
                str(config.patients),
                "--units",
                str(config.units),
                "--plan",
                str(plan_path),
                "--release-in",
                str(config.lead),
            ],
            env=env,
            cwd=root,
            capture_output=True,
            text=True,
            check=False,
        )
        if seeded.returncode != 0:
            raise RuntimeError(f"seeding failed:\n{(seeded.stdout + seeded.stderr)[-3000:]}")
        plan = json.loads(plan_path.read_text(encoding="utf-8"))
        say("starting the worker and the API")
        worker_log, api_log = root / "worker.log", root / "api.log"
        if config.keep_logs:
            # Registered before the processes' own stops: it runs after them (the
            # stack unwinds in reverse), so the logs are complete when copied.
            stack.callback(_copy_logs, (api_log, worker_log), Path(config.keep_logs))
        worker = _spawn(sys.executable, ["-m", "inventory", "worker"], env, worker_log, root)
        stack.callback(_stop, worker)
        api = _spawn(sys.executable, ["-m", "inventory", "serve"], env, api_log, root)
        stack.callback(_stop, api)
        _wait_http(f"http://127.0.0.1:{worker_port}/healthz", worker, worker_log, 60.0)
        _wait_http(f"http://127.0.0.1:{api_port}/readyz", api, api_log, 60.0)
        bare_port = _free_port()
        bare_log = root / "bare.log"
        bare = _spawn(
            sys.executable,
            ["-m", "bench.http.child", "bare", "--port", str(bare_port)],
            env,
            bare_log,
            Path.cwd(),
        )
        stack.callback(_stop, bare)
        _wait_http(f"http://127.0.0.1:{bare_port}/healthz", bare, bare_log, 60.0)
        url = f"http://127.0.0.1:{api_port}"
        settings = Settings.from_env({k: v for k, v in env.items() if k.startswith("INVENTORY_")})
        operator = mint_token(settings, "bench-ops", operator=True, ttl_s=3600)
        status, opened = _post(
            url + "/v1/operator/releases", {"schedule_ids": [plan["schedule_id"]]}, operator
        )
        t0 = float(plan["release_at"])
        if time.time() >= t0 - 1:
            raise RuntimeError(
                f"T0 came before the stack was up ({time.time() - t0:+.1f} s): raise --lead"
            )
        if status != 201:
            raise RuntimeError(f"opening the release failed: {status} {opened}")
        release_id = opened["release_id"]
        deadline = t0 + config.deadline_s
        indexed = [(i, token, patient) for i, (token, patient) in enumerate(plan["accounts"])]
        shares = [indexed[i :: config.processes] for i in range(config.processes)]
        say(
            f"{config.patients:,} patients join from {config.processes} processes; T0 in "
            f"{t0 - time.time():.1f} s"
        )
        sampler = _ApiSampler(api.pid, t0)
        sampler.start()
        with concurrent.futures.ProcessPoolExecutor(config.processes) as pool:
            parts = list(
                pool.map(
                    run_client,
                    [
                        {
                            "url": url,
                            "release_id": release_id,
                            "slot_id": plan["slot_id"],
                            "accounts": share,
                            "deadline": deadline,
                        }
                        for share in shares
                    ],
                )
            )
        sampler.stop()
        results = [r for part in parts for r in part]
        if config.results_path:
            _write_results(Path(config.results_path), results, float(plan["release_at"]))
        say("measuring the status path against a bare aiohttp handler")
        _, public = _get(f"{url}/v1/releases/{release_id}")
        _, fairness = _get(f"{url}/v1/operator/releases/{release_id}/fairness", operator)
        token, patient = plan["accounts"][0]
        _, view = _post(f"{url}/v1/releases/{release_id}/tickets", {"patient_id": patient}, token)
        if not isinstance(view, dict) or "ticket_id" not in view:
            raise RuntimeError(f"the status path's ticket: {view}")
        latency = _latencies(
            {
                "status": (
                    api_port,
                    f"/v1/releases/{release_id}/tickets/{view['ticket_id']}",
                    token,
                ),
                "bare": (bare_port, "/healthz", None),
            },
            LATENCY_SAMPLES,
        )
        with redis.Redis.from_url(redis_server.url, decode_responses=True) as client:
            slot = plan["slot_id"]
            held, booked, cap = (
                int(v or 0)
                for v in client.hmget(
                    f"inv:{{{plan['tag']}}}:slots",
                    [f"{slot}:held", f"{slot}:booked", f"{slot}:cap"],
                )
            )
        for process, log in ((api, api_log), (worker, worker_log)):
            if process.poll() is not None:
                raise RuntimeError(
                    f"a server process exited during the run:\n{log.read_text()[-2000:]}"
                )
        sold_out_at = _instant(public.get("sold_out_at") if isinstance(public, dict) else None)
        report = _report(config, results, t0, sold_out_at, held + booked, cap, latency)
        report["fairness"] = {
            k: fairness.get(k) if isinstance(fairness, dict) else None
            for k in ("verified", "drawn", "spearman_rho", "chi_square", "chi_square_dof")
        }
        report["api"] = sampler.figures()
        say("stopping the API, the worker, Redis and Postgres")
    if config.compare:
        say(f"the previous design: {config.patients:,} patients press book at once, no room")
        crowd = run_crowd(
            CrowdConfig(
                patients=config.patients,
                units=config.units,
                deadline_s=config.compare_deadline_s,
                postgres_url=config.postgres_url,
                settings=config.settings,
                label="no room",
            ),
            say=say,
        ).as_dict()
        report["previous_design"] = {
            "t0_to_sold_out_s": crowd["store_sold_out_s"],
            "t0_to_all_final_s": crowd["all_final_s"],
            "final_answers": crowd["final_answers"],
            "time_to_final_s": {k: crowd["time_to_final_s"][k] for k in ("p50", "p99")},
            "requests_per_patient": crowd["requests_per_patient"]["mean"],
            "answers_429": crowd["answers_429"],
            "answers_503": crowd["answers_503"],
            "oversold": max(0, crowd["sold"]["redis_held_or_booked"] - config.units),
            "still_503_at_deadline": crowd["still_503_at_deadline"],
            "deadline_s": config.compare_deadline_s,
            "api_cpu_s": crowd["cpu_s"].get("api"),
        }
    return report


def _write_results(path: Path, results: list[dict[str, Any]], t0: float) -> None:
    """Each patient's run, its instants as seconds after T0 (0 stays 0: never)."""
    instants = ("final_at", "joined_at", "streaming_at", "admitted_at", "sold_out_seen_at")
    with path.open("w", encoding="utf-8") as out:
        for result in results:
            row = {k: round(v - t0, 4) if k in instants and v else v for k, v in result.items()}
            out.write(json.dumps(row) + "\n")


class _ApiSampler:
    """The API's CPU from just before T0 to the end, and its most open files before T0."""

    def __init__(self, pid: int, t0: float) -> None:
        import threading

        self.pid, self.t0 = pid, t0
        self._done = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self.cpu_at_t0: float | None = None
        self.cpu_end: float | None = None
        self.most_open = 0

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._done.set()
        self._thread.join()
        self.cpu_end = _proc_cpu_s(self.pid)

    def _run(self) -> None:
        while not self._done.wait(0.25):
            if time.time() < self.t0 - 1.0:
                # Every stream is open before T0; listing 20,000 descriptors costs the
                # machine a tenth of a core, so not while the release is measured.
                self.most_open = max(self.most_open, _open_files(self.pid) or 0)
            elif self.cpu_at_t0 is None and time.time() >= self.t0 - 0.5:
                self.cpu_at_t0 = _proc_cpu_s(self.pid)

    def figures(self) -> dict[str, Any]:
        import resource

        busy = (
            None
            if self.cpu_at_t0 is None or self.cpu_end is None
            else round(self.cpu_end - self.cpu_at_t0, 2)
        )
        return {
            "cpu_s_from_t0": busy,
            "most_open_files": self.most_open,
            "open_files_limit": resource.getrlimit(resource.RLIMIT_NOFILE)[0],
        }


def _report(
    config: RoomConfig,
    results: list[dict[str, Any]],
    t0: float,
    sold_out_at: float | None,
    taken: int,
    cap: int,
    latency: dict[str, list[float]],
) -> dict[str, Any]:
    finals = [r["final_at"] - t0 for r in results if r["final_at"]]
    answered = len(finals)
    statuses: dict[str, int] = {}
    for r in results:
        for code, n in r["statuses"].items():
            statuses[code] = statuses.get(code, 0) + n
    outcomes: dict[str, int] = {}
    for r in results:
        outcome = r["outcome"] or "no answer"
        outcomes[outcome] = outcomes.get(outcome, 0) + 1
    requests = [r["requests_after_join"] for r in results]
    streams = [r["streams"] for r in results]
    client_holds = outcomes.get("held", 0)
    fan_out = (
        [r["sold_out_seen_at"] - sold_out_at for r in results if r["sold_out_seen_at"]]
        if sold_out_at
        else []
    )
    admitted = [r["admitted_at"] - t0 for r in results if r["admitted_at"]]
    return {
        "benchmark": "room",
        "patients": config.patients,
        "units": config.units,
        "processes": config.processes,
        "t0_to_sold_out_s": _round(sold_out_at - t0) if sold_out_at else None,
        "t0_to_all_final_s": _round(max(finals)) if answered == len(results) else None,
        "final_answers": answered,
        "time_to_final_s": {
            "p50": _round(_percentile(finals, 0.5)),
            "p99": _round(_percentile(finals, 0.99)),
            "max": _round(max(finals, default=None)),
        },
        "admitted_seen_s": {
            "first": _round(min(admitted, default=None)),
            "last": _round(max(admitted, default=None)),
        },
        "sold_out_reached_streams_s": {
            "p50": _round(_percentile(fan_out, 0.5)),
            "p99": _round(_percentile(fan_out, 0.99)),
            "max": _round(max(fan_out, default=None)),
        },
        "outcomes": outcomes,
        "late_joiners": sum(1 for r in results if r["joined_at"] > t0),
        "joining_s": _round(
            max((r["joined_at"] for r in results if r["joined_at"]), default=0)
            - min((r["joined_at"] for r in results if r["joined_at"]), default=0)
        ),
        "last_join_before_t0_s": _round(
            t0 - max((r["joined_at"] for r in results if r["joined_at"]), default=t0)
        ),
        # A stream still opening at T0 costs the API then: the run measures less if so.
        "streams_open_before_t0": sum(1 for r in results if 0 < r["streaming_at"] < t0),
        "requests_per_patient_after_join": {
            "mean": _round(statistics.fmean(requests)) if requests else None,
            "max": max(requests, default=0),
        },
        "streams_per_patient": {
            "mean": _round(statistics.fmean(streams)) if streams else None,
            "max": max(streams, default=0),
        },
        "stream_events": sum(r["events"] for r in results),
        # Every request a patient sent: join, stream(s), reserve, retries.
        "requests_per_patient_all": _round(
            sum(sum(r["statuses"].values()) for r in results) / max(1, len(results))
        ),
        "answers": dict(sorted(statuses.items())),
        "codes_5xx": _merged(r["codes_5xx"] for r in results),
        "answers_429": statuses.get("429", 0),
        "answers_503": statuses.get("503", 0),
        "answers_5xx_other": sum(
            n for code, n in statuses.items() if code.startswith("5") and code != "503"
        ),
        "held": {"clients": client_holds, "redis": taken, "capacity": cap},
        "oversold": max(0, client_holds - cap, taken - cap),
        "status_path_s": {
            "p50": _round(_percentile(latency["status"], 0.5), 5),
            "p99": _round(_percentile(latency["status"], 0.99), 5),
        },
        "bare_handler_s": {
            "p50": _round(_percentile(latency["bare"], 0.5), 5),
            "p99": _round(_percentile(latency["bare"], 0.99), 5),
        },
    }


def _merged(counts: Iterable[dict[str, int]]) -> dict[str, int]:
    return dict(sorted(sum(map(collections.Counter, counts), collections.Counter()).items()))


def _cell(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return "never" if value == float("inf") else f"{value:g}"
    if isinstance(value, int):
        return f"{value:,}"
    return str(value)


def format_text(report: dict[str, Any]) -> str:
    """The report for a person: the room and the previous design side by side."""
    r = report
    old = r.get("previous_design") or {}
    n = r["patients"]
    rows = [
        ("T0 to sold out (s)", r["t0_to_sold_out_s"], old.get("t0_to_sold_out_s")),
        (
            "T0 to every final answer (s)",
            r["t0_to_all_final_s"],
            old.get("t0_to_all_final_s"),
        ),
        ("patients with a final answer", r["final_answers"], old.get("final_answers")),
        (
            "time to final answer p50 / p99 (s)",
            f"{_cell(r['time_to_final_s']['p50'])} / {_cell(r['time_to_final_s']['p99'])}",
            f"{_cell(old['time_to_final_s']['p50'])} / {_cell(old['time_to_final_s']['p99'])}"
            if old
            else None,
        ),
        (
            "requests per patient (after joining, besides the stream)",
            f"{_cell(r['requests_per_patient_after_join']['mean'])} mean,"
            f" {_cell(r['requests_per_patient_after_join']['max'])} max",
            "-" if old else None,
        ),
        (
            "requests per patient, all (join and stream included)",
            r["requests_per_patient_all"],
            old.get("requests_per_patient"),
        ),
        ("429 answers", r["answers_429"], old.get("answers_429")),
        ("503 answers", r["answers_503"], old.get("answers_503")),
        ("other 5xx answers", r["answers_5xx_other"], 0 if old else None),
        ("oversold units", r["oversold"], old.get("oversold")),
    ]
    width = max(len(label) for label, _, _ in rows)
    lines = [
        f"room: {n:,} patients on {r['units']:,} units, {r['processes']} client processes, "
        "one API process",
        f"{'':{width}}  {'room':>16}  {'no room (previous design)':>26}",
    ]
    for label, now, before in rows:
        lines.append(f"{label:{width}}  {_cell(now):>16}  {_cell(before):>26}")
    if old:
        lines.append(
            f"(the previous design's crowd gave up at {old['deadline_s']:g} s; "
            f"{_cell(old['still_503_at_deadline'])} had a 503 as their last answer; "
            f"API CPU {_cell(old.get('api_cpu_s'))} s)"
        )
    lines += [
        "",
        f"outcomes: {r['outcomes']}; late joiners {r['late_joiners']}; joins took "
        f"{r['joining_s']} s, the last {r['last_join_before_t0_s']} s before T0; "
        f"{r['streams_open_before_t0']:,} streams open at T0",
        f"held: {r['held']}",
        f"admitted seen by their streams (s after T0): {r['admitted_seen_s']}",
        f"sell-out reached the waiting streams (s after it): {r['sold_out_reached_streams_s']}",
        f"stream requests per patient: {r['streams_per_patient']}; status events sent: "
        f"{r['stream_events']:,}",
        f"answers: {r['answers']}; 5xx by code: {r['codes_5xx']}",
        f"status path p50 / p99: {r['status_path_s']['p50']} / {r['status_path_s']['p99']} s;"
        f" bare aiohttp handler: {r['bare_handler_s']['p50']} / {r['bare_handler_s']['p99']} s",
        f"API: {r.get('api')}",
        f"fairness: {r['fairness']}",
    ]
    return "\n".join(lines)


def ok(report: dict[str, Any]) -> bool:
    """Every patient answered, nothing oversold, no 5xx but 503, the draw verified."""
    return bool(
        report["final_answers"] == report["patients"]
        and report["oversold"] == 0
        and report["answers_5xx_other"] == 0
        and report["fairness"]["verified"] is not False
    )
