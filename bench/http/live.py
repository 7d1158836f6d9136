"""A live run's timed phases: one side, one mode, the generator driven (wrk or the
Python one) and every CPU figure taken around it; the warm-up and the rounds."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bench.http.config import BOOKING_SIDES, SIDES, WARMUP_EXTRA_S, HttpBenchConfig
from bench.http.cpu import children_cpu_s, host_busy_s, proc_cpu_s, tree_cpu_s
from bench.http.plan import PATH
from bench.http.processes import Server, child_environment
from bench.http.report import HttpRound, Phase, Setting


@dataclass
class LiveBench:
    """The live run: servers, generator, plan files and the request counter.

    :func:`running_bench` yields one with both sides serving; :meth:`phase` runs one
    timed phase of one side (the rounds of ``python -m bench http`` and the offered-load
    sweep of :mod:`bench.http.sweep` are both built from it)."""

    config: HttpBenchConfig
    servers: dict[str, Server]
    plan_json: Path
    plan_wrk: Path
    wrk_script: Path
    wrk: str | None
    generator_cpus: set[int] | None
    redis_url: str
    redis_pid: int | None
    postgres_pid: int | None
    #: The run's own database (created for it, dropped at the end).
    database_url: str = ""
    #: Where the servers and the rest run (None: not pinned).
    pinned: str | None = None
    redis_where: str = ""
    postgres_where: str = ""
    api_settings: dict[str, Any] = field(default_factory=dict)
    next_index: int = 0
    say: Callable[[str], None] = field(default=lambda _line: None)

    def setting(self) -> Setting:
        """Where and how the run happened, requests used so far included."""
        config = self.config
        return Setting(
            generator=f"wrk ({self.wrk}), 1 thread" if self.wrk else "python (1 process)",
            paced_generator="python (1 process)",
            processes={
                "api": config.workers,
                "bare": config.workers,
                **({"floor": config.workers} if config.floor else {}),
                "generator": 1,
                "redis": 1,
            },
            pinned=self.pinned,
            redis=self.redis_where,
            postgres=self.postgres_where,
            api_settings=self.api_settings,
            request_budget=config.request_budget,
            requests_used=self.next_index,
        )

    def _redis_cpu_s(self) -> float:
        import redis

        with redis.Redis.from_url(self.redis_url) as client:
            info: dict[str, Any] = client.info("cpu")
        return float(info["used_cpu_sys"]) + float(info["used_cpu_user"])

    def _preexec(self) -> Callable[[], None] | None:
        cpus = self.generator_cpus
        if cpus is None:
            return None
        return lambda: os.sched_setaffinity(0, cpus)

    def _generate(
        self, side: str, mode: str, seconds: float, rate: float, start: int
    ) -> tuple[dict[str, Any], str]:
        port = self.servers[side].port
        timeout = seconds + 120
        if mode == "max" and self.wrk is not None:
            whole = max(1, round(seconds))
            command = [
                self.wrk,
                "-t1",
                f"-c{self.config.connections}",
                f"-d{whole}s",
                "--timeout",
                "10s",
                "-s",
                str(self.wrk_script),
                f"http://127.0.0.1:{port}{PATH}",
                "--",
                str(self.plan_wrk),
                str(start),
            ]
            done = subprocess.run(
                command,
                capture_output=True,
                text=True,
                timeout=timeout,
                preexec_fn=self._preexec(),  # the parent is single-threaded
                check=False,
            )
            line = next((x for x in done.stdout.splitlines() if x.startswith("WRKJSON ")), None)
            if done.returncode != 0 or line is None:
                raise RuntimeError(f"wrk failed ({done.returncode}): {done.stderr[-2000:]}")
            raw = json.loads(line.split(" ", 1)[1])
            socket_errors = raw["connect"] + raw["read"] + raw["write"] + raw["timeout"]
            errors = raw["status"] + socket_errors
            return {
                "requests": raw["requests"],
                "ok": raw["requests"] - raw["status"],
                "errors": errors,
                "first_error": (
                    None
                    if not errors
                    else f"wrk: {raw['status']} non-2xx/3xx, {socket_errors} socket errors"
                ),
                "elapsed_s": raw["duration_us"] / 1e6,
                "p50_ms": raw["p50_us"] / 1000,
                "p99_ms": raw["p99_us"] / 1000,
                "late": 0,
                # Every index the script took, sent or not: the next phase starts past
                # them (an overlap replays requests, or, across the api and the floor,
                # books one patient twice in a department-day: a 409).
                "used": start + raw["generated"],
            }, "wrk"
        command = [
            sys.executable,
            "-m",
            "bench.http.child",
            "load",
            "--plan",
            str(self.plan_json),
            "--port",
            str(port),
            "--mode",
            mode,
            "--connections",
            str(self.config.connections),
            "--seconds",
            str(seconds),
            "--rate",
            str(rate),
            "--start",
            str(start),
        ]
        done = subprocess.run(
            command,
            env=child_environment(),
            capture_output=True,
            text=True,
            timeout=timeout,
            preexec_fn=self._preexec(),  # the parent is single-threaded
            check=False,
        )
        if done.returncode != 0 or not done.stdout.strip():
            raise RuntimeError(f"the load generator failed: {done.stderr[-2000:]}")
        return json.loads(done.stdout.strip().splitlines()[-1]), "python"

    def phase(self, side: str, mode: str, seconds: float, rate: float = 0.0) -> Phase:
        """One timed phase (``mode`` is one of PHASES) of one side; the phases of the
        sides that book (the API and the floor) consume fresh request indices."""
        booking = side in BOOKING_SIDES
        start = self.next_index if booking else 0
        server = self.servers[side]
        server_before = server.cpu_s()
        redis_before = self._redis_cpu_s()
        host_before = host_busy_s()
        own_before = time.process_time()
        children_before = children_cpu_s()
        backing_before = self._backing_cpu_s()
        drive = "max" if mode == "max" else "paced"
        raw, generator = self._generate(side, drive, seconds, rate, start)
        generator_cpu = children_cpu_s() - children_before
        backing_after = self._backing_cpu_s()
        host_after = host_busy_s()
        own = time.process_time() - own_before
        redis_cpu = self._redis_cpu_s() - redis_before
        server_cpu = server.cpu_s() - server_before
        if booking:
            self.next_index = int(raw["used"])
        elapsed = float(raw["elapsed_s"])
        other: float | None = None
        if (
            host_before is not None
            and host_after is not None
            and backing_before is not None
            and backing_after is not None
        ):
            busy = host_after - host_before
            backing = backing_after - backing_before
            # The generator's CPU also counts the time it spent connecting and finishing.
            other = max(0.0, busy - own - generator_cpu - server_cpu - backing) / elapsed * 100
        answered = max(1, int(raw["requests"]))
        return Phase(
            side=side,
            mode=mode,
            generator=generator,
            requests=int(raw["requests"]),
            ok=int(raw["ok"]),
            errors=int(raw["errors"]),
            first_error=raw.get("first_error"),
            elapsed_s=elapsed,
            p50_ms=float(raw["p50_ms"]),
            p99_ms=float(raw["p99_ms"]),
            target_rps=rate if mode != "max" else None,
            late=int(raw.get("late", 0)),
            server_cpu_us=server_cpu / answered * 1e6,
            generator_cpu_us=generator_cpu / answered * 1e6,
            redis_cpu_us=redis_cpu / answered * 1e6,
            generator_busy_pct=generator_cpu / elapsed * 100 if elapsed > 0 else 0.0,
            other_cpu_pct=other,
        )

    def _backing_cpu_s(self) -> float | None:
        """CPU of the private Redis and Postgres (None when either is not ours)."""
        if self.redis_pid is None or self.postgres_pid is None:
            return None
        return proc_cpu_s(self.redis_pid) + tree_cpu_s(self.postgres_pid)

    def warm_up(self) -> None:
        """Untimed closed loop, ``warmup_seconds`` per side; then more on the api until
        the api itself has served every patient of the plan once, so that its
        slot-location and patient-link caches are full as in production (at most
        WARMUP_EXTRA_S more). Nothing with a warm-up of 0.

        The floor's requests take request indices too, so the api's own requests are
        counted: only its extra phases, which follow one another on consecutive indices,
        each serving the next patients in turn."""
        seconds = self.config.warmup_seconds
        if seconds <= 0:
            return
        self.say(f"warming up: {seconds:g} s per side")
        for side in self.servers:
            self.phase(side, "max", seconds)
        deadline = time.monotonic() + WARMUP_EXTRA_S
        served = self.next_index if "floor" not in self.servers else 0
        while served < self.config.patients and time.monotonic() < deadline:
            self.say(
                f"warming up the api until it has served every patient once "
                f"({served:,} of {self.config.patients:,})"
            )
            served += self.phase("api", "max", seconds).requests

    def run_rounds(self) -> list[HttpRound]:
        c = self.config
        self.warm_up()
        rounds: list[HttpRound] = []
        for index in range(1, c.rounds + 1):
            order = SIDES if index % 2 else (SIDES[1], SIDES[0])
            maxed = {side: self.phase(side, "max", c.seconds) for side in order}
            floor = self.phase("floor", "max", c.seconds) if c.floor else None
            rate = c.paced_fraction * maxed["bare"].rps
            paced = {side: self.phase(side, "paced", c.seconds, rate) for side in order}
            low = c.paced_fraction * maxed["api"].rps
            paced_api = {side: self.phase(side, "paced_api", c.seconds, low) for side in order}
            floor_paced = self.phase("floor", "paced_api", c.seconds, low) if c.floor else None
            result = HttpRound(index, order, maxed, paced, paced_api, floor, floor_paced)
            rounds.append(result)
            self.say(
                f"round {index}/{c.rounds}: bare {maxed['bare'].rps:,.0f}/s, "
                f"api {maxed['api'].rps:,.0f}/s (ratio {result.throughput_ratio:.3f}); "
                f"paced at {rate:,.0f}/s: p99 bare {paced['bare'].p99_ms:.2f} ms, "
                f"api {paced['api'].p99_ms:.2f} ms (ratio {result.paced_p99_ratio:.2f})"
                + (
                    f"; floor {floor.rps:,.0f}/s (floor/bare {result.floor_ratio:.3f}, "
                    f"api/floor {result.api_to_floor_ratio:.3f}); p99 api/floor at "
                    f"{low:,.0f}/s {result.paced_api_floor_p99_ratio:.2f}"
                    if floor is not None
                    else ""
                )
            )
        return rounds
