"""Operating the service while a Cluster master is down: the command line says what is
wrong in one line and exits non-zero (no traceback), and several start-up nodes let a
process start while one of them is dead."""

from __future__ import annotations

import subprocess
import sys
from datetime import date
from pathlib import Path
from typing import Any

import pytest

from inventory.devtools.servers import RedisClusterServers, free_port, start_redis_cluster
from inventory.ops.config import ConfigError, Settings
from inventory.store import keys
from inventory.store.connection import connect_redis

from ..api.conftest import api_env
from .conftest import NODE_TIMEOUT_MS, cluster_url, department_on, kill_and_wait_flagged


def _inventory(
    *args: str, env: dict[str, str], timeout_s: float = 60
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "inventory", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout_s,
        check=False,
    )


def _env(redis_url: str, database_url: str, *, cluster: bool = True) -> dict[str, str]:
    env = api_env(redis_url, database_url, free_port())
    env["INVENTORY_REDIS_CLUSTER"] = "true" if cluster else "false"
    return env


def _assert_one_line(done: subprocess.CompletedProcess[str], command: str, *either: str) -> None:
    assert done.returncode == 1, (done.stdout, done.stderr)
    assert "Traceback" not in done.stderr, done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1, done.stderr
    assert lines[0].startswith(f"inventory {command}: "), lines
    assert any(words in lines[0] for words in either), lines


@pytest.mark.cluster
def test_check_says_the_cluster_is_down_in_one_line(tmp_path: Path, database: str) -> None:
    """With the default full coverage and one master dead the cluster refuses every
    command (or the command reaches the dead node itself): `inventory check` says so
    in one line and exits 1."""
    with start_redis_cluster(tmp_path / "c", node_timeout_ms=NODE_TIMEOUT_MS) as servers:
        kill_and_wait_flagged(servers, servers.nodes[2])
        dead = f"127.0.0.1:{servers.nodes[2].port}"
        env = _env(cluster_url(servers, skip=2), database)
        down = ("Redis Cluster is down", f"Redis unreachable: Error 111 connecting to {dead}")
        _assert_one_line(_inventory("check", env=env), "check", *down)


@pytest.mark.cluster
def test_commands_say_the_cluster_is_unreachable_in_one_line(
    cluster: RedisClusterServers, database: str
) -> None:
    """No start-up node answers: check, serve and the worker say so in one line, exit 1."""
    for node in cluster.nodes:
        node.kill()
    env = _env(cluster_url(cluster), database)
    _assert_one_line(_inventory("check", env=env), "check", "Redis Cluster unreachable")
    _assert_one_line(_inventory("serve", env=env), "serve", "Redis Cluster unreachable")


def test_serve_says_redis_is_unreachable_in_one_line(database: str) -> None:
    """A standalone Redis that refuses connections: `inventory serve` (one process or
    several) ends with one line per process and a non-zero exit, not a traceback."""
    dead = f"redis://127.0.0.1:{free_port()}/0"
    env = _env(dead, database, cluster=False)
    _assert_one_line(_inventory("serve", env=env), "serve", "Redis unreachable")
    several = _inventory("serve", "--workers", "2", env=env)
    assert several.returncode == 1, several.stderr
    assert "Traceback" not in several.stderr, several.stderr
    lines = several.stderr.strip().splitlines()
    assert len(lines) == 2
    assert all("inventory serve: Redis unreachable" in line for line in lines)


@pytest.mark.cluster
async def test_several_start_up_nodes_start_while_one_is_dead(
    cluster: RedisClusterServers,
) -> None:
    """INVENTORY_REDIS_URL naming every master, the first of them dead: the client
    starts from another one and serves the live masters' slots."""
    kill_and_wait_flagged(cluster, cluster.nodes[0])
    url = cluster_url(cluster)
    assert url.startswith(cluster.nodes[0].url + ",")
    client: Any = await connect_redis(url, cluster=True)
    try:
        key = keys.tag_keys(
            keys.department_day_tag(department_on(1, date.today(), "s"), date.today())
        ).meta
        assert client.get_node_from_key(key).port == cluster.nodes[1].port
        await client.set(key, "1")
        assert await client.get(key) == "1"
        await client.delete(key)
    finally:
        await client.aclose()


def test_several_urls_need_cluster_mode() -> None:
    """Several URLs name a Cluster's start-up nodes: without cluster mode the settings
    are refused at start-up."""
    env = {"INVENTORY_REDIS_URL": "redis://127.0.0.1:7000,redis://127.0.0.1:7001"}
    with pytest.raises(ConfigError, match="REDIS_URL"):
        Settings.from_env(env, for_api=False)
    assert Settings.from_env({**env, "INVENTORY_REDIS_CLUSTER": "true"}, for_api=False)
