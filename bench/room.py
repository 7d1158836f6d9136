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
requests per patient after joining (the stream counts one), the answers by status (429
and 503 included), units held against the capacity (oversold = held beyond it, from the
clients and from Redis), p50/p99 of the status path (one ticket status) against the
API's bare health handler measured after the run, and the draw's fairness statistics.
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import redis

from bench.crowd import (
    _STACK_SCRIPT,
    _database,
    _free_port,
    _key,
    _spawn,
    _stop,
    _wait_http,
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


def _latencies(url: str, token: str | None, samples: int) -> list[float]:
    found = []
    for _ in range(samples):
        started = time.perf_counter()
        _get(url, token)
        found.append(time.perf_counter() - started)
    return found


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
        worker = _spawn(sys.executable, ["-m", "inventory", "worker"], env, worker_log, root)
        stack.callback(_stop, worker)
        api = _spawn(sys.executable, ["-m", "inventory", "serve"], env, api_log, root)
        stack.callback(_stop, api)
        _wait_http(f"http://127.0.0.1:{worker_port}/healthz", worker, worker_log, 60.0)
        _wait_http(f"http://127.0.0.1:{api_port}/readyz", api, api_log, 60.0)
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
        shares = [plan["accounts"][i :: config.processes] for i in range(config.processes)]
        say(
            f"{config.patients:,} patients join from {config.processes} processes; T0 in "
            f"{t0 - time.time():.1f} s"
        )
        with concurrent.futures.ProcessPoolExecutor(config.processes) as pool:
            parts = list(
                pool.map(
                    run_client,
                    [
                        {
                            "url": url,
                            "release_id": release_id,
                            "slot_id": plan["slot_id"],
                            "accounts": [tuple(a) for a in share],
                            "deadline": deadline,
                        }
                        for share in shares
                    ],
                )
            )
        results = [r for part in parts for r in part]
        say("measuring the status path against the bare health handler")
        first_token = plan["accounts"][0][0]
        _, public = _get(f"{url}/v1/releases/{release_id}")
        _, fairness = _get(f"{url}/v1/operator/releases/{release_id}/fairness", operator)
        ticket_url = None
        for token, patient in plan["accounts"][:1]:
            _, view = _post(
                f"{url}/v1/releases/{release_id}/tickets", {"patient_id": patient}, token
            )
            if isinstance(view, dict) and "ticket_id" in view:
                ticket_url = f"{url}/v1/releases/{release_id}/tickets/{view['ticket_id']}"
        status_lat = _latencies(ticket_url, first_token, LATENCY_SAMPLES) if ticket_url else []
        bare_lat = _latencies(f"{url}/healthz", None, LATENCY_SAMPLES)
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
        finals = [r["final_at"] - t0 for r in results if r["final_at"]]
        answered = len(finals)
        statuses: dict[str, int] = {}
        for r in results:
            for code, n in r["statuses"].items():
                statuses[code] = statuses.get(code, 0) + n
        outcomes: dict[str, int] = {}
        for r in results:
            outcomes[r["outcome"] or "no answer"] = outcomes.get(r["outcome"] or "no answer", 0) + 1
        sold_out_at = _instant(public.get("sold_out_at") if isinstance(public, dict) else None)
        requests = [r["requests_after_join"] for r in results]
        client_holds = outcomes.get("held", 0)
        report = {
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
            },
            "outcomes": outcomes,
            "late_joiners": sum(1 for r in results if r["joined_at"] > t0),
            "requests_per_patient_after_join": {
                "mean": _round(statistics.fmean(requests)) if requests else None,
                "max": max(requests, default=0),
            },
            "answers": dict(sorted(statuses.items())),
            "answers_429": statuses.get("429", 0),
            "answers_503": statuses.get("503", 0),
            "answers_5xx_other": sum(
                n for code, n in statuses.items() if code.startswith("5") and code != "503"
            ),
            "held": {"clients": client_holds, "redis": held + booked, "capacity": cap},
            "oversold": max(0, client_holds - cap, held + booked - cap),
            "status_path_s": {
                "p50": _round(_percentile(status_lat, 0.5), 5),
                "p99": _round(_percentile(status_lat, 0.99), 5),
            },
            "bare_handler_s": {
                "p50": _round(_percentile(bare_lat, 0.5), 5),
                "p99": _round(_percentile(bare_lat, 0.99), 5),
            },
            "fairness": {
                k: fairness.get(k) if isinstance(fairness, dict) else None
                for k in ("verified", "drawn", "spearman_rho", "chi_square", "chi_square_dof")
            },
        }
        say("stopping the API, the worker, Redis and Postgres")
        return report
    raise AssertionError("unreachable")  # pragma: no cover


def format_text(report: dict[str, Any]) -> str:
    """The report for a person."""
    lines = [
        f"room: {report['patients']:,} patients, {report['units']:,} units, "
        f"{report['processes']} client processes"
    ]
    for key in (
        "t0_to_sold_out_s",
        "t0_to_all_final_s",
        "final_answers",
        "time_to_final_s",
        "outcomes",
        "late_joiners",
        "requests_per_patient_after_join",
        "answers_429",
        "answers_503",
        "answers_5xx_other",
        "held",
        "oversold",
        "status_path_s",
        "bare_handler_s",
        "fairness",
    ):
        lines.append(f"  {key}: {report[key]}")
    return "\n".join(lines)


def ok(report: dict[str, Any]) -> bool:
    """Every patient answered, nothing oversold, no 5xx but 503, the draw verified."""
    return bool(
        report["final_answers"] == report["patients"]
        and report["oversold"] == 0
        and report["answers_5xx_other"] == 0
        and report["fairness"]["verified"] is not False
    )
