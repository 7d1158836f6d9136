"""Run the simulator as a child process (tests, ``inventory dev``): start it on a free
loopback port, wait until it answers, stop it with SIGTERM (SIGKILL if it lingers)."""

from __future__ import annotations

import contextlib
import os
import signal
import ssl
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from types import TracebackType
from typing import Self

from inventory.devtools.servers import LOOPBACK, free_port


class SimStartError(RuntimeError):
    """The simulator did not come up; the message ends with its log."""


class SimProcess:
    """One ``inventory his-sim`` child with its state file and log in ``directory``."""

    def __init__(
        self,
        directory: Path,
        *,
        port: int | None = None,
        seed_rng: int | None = 7,
        extra_args: tuple[str, ...] = (),
        start_timeout_s: float = 20.0,
        hospitals: tuple[str, ...] = (),
        ssl_context: ssl.SSLContext | None = None,
    ) -> None:
        """``hospitals``: the ids of a ``--hospitals`` file (in ``extra_args``), so the
        readiness check and the URLs name them; ``ssl_context``: the simulator serves
        HTTPS (``--tls-cert``), checked with this context (a client certificate in it
        when the simulator asks for one)."""
        self.directory = directory
        self.state_path = directory / "his-sim.sqlite3"
        self.log_path = directory / "his-sim.log"
        self.port = port or free_port()
        self.seed_rng = seed_rng
        self.extra_args = extra_args
        self.start_timeout_s = start_timeout_s
        self.hospitals = hospitals
        self.ssl_context = ssl_context
        self._process: subprocess.Popen[bytes] | None = None

    @property
    def base_url(self) -> str:
        """The simulator's root (the admin API lives under ``/$admin``)."""
        scheme = "https" if self.ssl_context is not None else "http"
        return f"{scheme}://{LOOPBACK}:{self.port}"

    @property
    def fhir_url(self) -> str:
        """The FHIR base a client is configured with (the first hospital's of several)."""
        if self.hospitals:
            return self.fhir_url_of(self.hospitals[0])
        return f"{self.base_url}/fhir"

    def root_of(self, hospital: str) -> str:
        """One hospital's root when the simulator serves several (``/$admin`` under it)."""
        return f"{self.base_url}/h/{hospital}"

    def fhir_url_of(self, hospital: str) -> str:
        """One hospital's FHIR base."""
        return f"{self.root_of(hospital)}/fhir"

    def token_url_of(self, hospital: str) -> str:
        """One hospital's token endpoint."""
        return f"{self.root_of(hospital)}/auth/token"

    @property
    def pid(self) -> int | None:
        """The child's process id while it runs."""
        return self._process.pid if self._process is not None else None

    @property
    def running(self) -> bool:
        """Whether the child is alive (False before :meth:`start` and after it died)."""
        return self._process is not None and self._process.poll() is None

    def start(self) -> None:
        """Start the child and wait until ``/fhir/metadata`` answers."""
        self.directory.mkdir(parents=True, exist_ok=True)
        argv = [
            sys.executable,
            "-m",
            "inventory",
            "his-sim",
            "--state",
            str(self.state_path),
            "--host",
            LOOPBACK,
            "--port",
            str(self.port),
            *(("--seed-rng", str(self.seed_rng)) if self.seed_rng is not None else ()),
            *self.extra_args,
        ]
        with self.log_path.open("ab") as log:
            self._process = subprocess.Popen(
                argv,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        deadline = time.monotonic() + self.start_timeout_s
        while True:
            code = self._process.poll()
            if code is not None:
                self._process = None
                raise SimStartError(f"his-sim exited with {code}:\n{self._log_tail()}")
            if self._answers():
                return
            if time.monotonic() > deadline:
                self.stop()
                raise SimStartError(
                    f"his-sim not ready in {self.start_timeout_s} s\n{self._log_tail()}"
                )
            time.sleep(0.05)

    def _answers(self) -> bool:
        try:
            with urllib.request.urlopen(
                f"{self.fhir_url}/metadata", timeout=1.0, context=self.ssl_context
            ) as response:
                return int(response.status) == 200
        except (OSError, urllib.error.URLError):
            return False

    def _log_tail(self, lines: int = 30) -> str:
        try:
            text = self.log_path.read_text(encoding="utf-8", errors="replace")
        except OSError:
            return ""
        return "\n".join(text.splitlines()[-lines:])

    def stop(self, timeout_s: float = 10.0) -> None:
        """SIGTERM, wait, then SIGKILL the child's process group if it is still there."""
        process, self._process = self._process, None
        if process is None:
            return
        if process.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                process.send_signal(signal.SIGTERM)
            try:
                process.wait(timeout=timeout_s)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(process.pid, signal.SIGKILL)
        process.wait()

    def restart(self) -> None:
        """Stop and start again on the same port with the same state."""
        self.stop()
        self.start()

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()
