"""The servers' processes: the API (``inventory serve``) and the child servers (bare,
floor) started, waited for, pinned to CPUs and stopped."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
import urllib.request
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import bench
from bench.http.cpu import descendants, tree_cpu_s


@dataclass
class Server:
    """One side's server processes."""

    side: str
    port: int
    processes: list[subprocess.Popen[bytes]]
    log_path: Path

    def cpu_s(self) -> float:
        return sum(tree_cpu_s(p.pid) for p in self.processes)

    def pids(self) -> list[int]:
        return [pid for p in self.processes for pid in descendants(p.pid)]

    def stop(self) -> None:
        for process in self.processes:
            if process.poll() is None:
                process.send_signal(signal.SIGTERM)
        for process in self.processes:
            try:
                process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()


def wait_healthy(server: Server, timeout_s: float = 60.0) -> None:
    url = f"http://127.0.0.1:{server.port}/healthz"
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        for process in server.processes:
            if process.poll() is not None:
                tail = server.log_path.read_text(errors="replace")[-3000:]
                raise RuntimeError(f"the {server.side} server exited:\n{tail}")
        try:
            with urllib.request.urlopen(url, timeout=1) as answer:
                if answer.status == 200:
                    return
        except OSError:
            time.sleep(0.1)
    tail = server.log_path.read_text(errors="replace")[-3000:]
    raise RuntimeError(f"the {server.side} server did not start:\n{tail}")


def start_api(env: dict[str, str], workers: int, log_path: Path) -> Server:
    with log_path.open("ab") as log:
        process = subprocess.Popen(
            [sys.executable, "-m", "inventory", "serve", "--workers", str(workers)],
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )
    return Server("api", int(env["INVENTORY_PORT"]), [process], log_path)


def start_child_servers(
    role: str, port: int, workers: int, log_path: Path, env: dict[str, str] | None = None
) -> Server:
    """``workers`` processes of a child server role (bare, floor) sharing ``port``."""
    command = [sys.executable, "-m", "bench.http.child", role, "--port", str(port)]
    if workers > 1:
        command.append("--reuse-port")
    processes = []
    with log_path.open("ab") as log:
        for _ in range(workers):
            processes.append(
                subprocess.Popen(
                    command,
                    env=child_environment(env),
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    stdin=subprocess.DEVNULL,
                    start_new_session=True,
                )
            )
    return Server(role, port, processes, log_path)


#: The folder that holds the bench package: a checkout's root, not on the path of a
#: child started elsewhere than there (the benchmarks are not installed with the service).
_CHECKOUT = Path(bench.__file__).resolve().parent.parent


def child_environment(env: dict[str, str] | None = None) -> dict[str, str]:
    """``env`` (default: this process's) with the checkout first on PYTHONPATH, so that
    ``python -m bench.http.child ...`` finds the package from any working directory."""
    child = dict(os.environ if env is None else env)
    path = child.get("PYTHONPATH")
    child["PYTHONPATH"] = str(_CHECKOUT) + (os.pathsep + path if path else "")
    return child


def pin(pids: Sequence[int], cpus: set[int]) -> None:
    for pid in pids:
        with contextlib.suppress(OSError):
            os.sched_setaffinity(pid, cpus)
