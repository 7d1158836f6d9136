"""Redis Cluster under node failure: clusters of each test's own (a test kills nodes),
and helpers to find a tag on a given master and to wait for the cluster to notice a
death or a promotion."""

from __future__ import annotations

import time
from collections.abc import Iterator
from datetime import date
from pathlib import Path

import pytest
import redis
from redis.crc import key_slot

from inventory.devtools.servers import (
    CLUSTER_SLOTS,
    RedisClusterServers,
    RedisServer,
    start_redis_cluster,
)
from inventory.store import keys

#: cluster-node-timeout of the test clusters: a dead master is flagged within ~1-3 s.
NODE_TIMEOUT_MS = 1000


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[RedisClusterServers]:
    """Three masters of this test's own, ``cluster-require-full-coverage no``: the
    recommended set-up, where the live masters go on serving their slots."""
    with start_redis_cluster(
        tmp_path / "cluster", require_full_coverage=False, node_timeout_ms=NODE_TIMEOUT_MS
    ) as servers:
        yield servers


def cluster_url(cluster: RedisClusterServers, *, skip: int | None = None) -> str:
    """INVENTORY_REDIS_URL naming every master but ``skip``, comma-separated."""
    return ",".join(node.url for i, node in enumerate(cluster.nodes) if i != skip)


def slot_range(index: int, masters: int = 3) -> range:
    """The hash slots start_redis_cluster gave master ``index``."""
    return range(index * CLUSTER_SLOTS // masters, (index + 1) * CLUSTER_SLOTS // masters)


def department_on(index: int, visit_date: date, prefix: str) -> str:
    """A department id whose department-day tag on ``visit_date`` lives on master
    ``index`` (as first assigned)."""
    slots = slot_range(index)
    for n in range(10_000):
        department = f"{prefix}{n}"
        tag = keys.department_day_tag(department, visit_date)
        if key_slot(keys.tag_keys(tag).meta.encode()) in slots:
            return department
    raise AssertionError("no department found")  # pragma: no cover


def subject_on(index: int, kind: str, prefix: str) -> str:
    """An account id or address whose rate-limit bucket of ``kind`` lives on master
    ``index``."""
    slots = slot_range(index)
    for n in range(10_000):
        subject = f"{prefix}{n}"
        if key_slot(keys.rate_limit_key(kind, subject).encode()) in slots:
            return subject
    raise AssertionError("no subject found")  # pragma: no cover


def _nodes_view(node: RedisServer) -> list[list[str]]:
    with redis.Redis(host=node.host, port=node.port, decode_responses=True) as client:
        text = str(client.execute_command("CLUSTER", "NODES"))
    return [line.split() for line in text.splitlines()]


def kill_and_wait_flagged(cluster: RedisClusterServers, dead: RedisServer) -> float:
    """SIGKILL ``dead`` and wait until every live node flags it ``fail``; returns the
    seconds that took."""
    started = time.monotonic()
    dead.kill()
    address = f"{dead.host}:{dead.port}@"
    live = [n for n in cluster.all_nodes if n is not dead and n.running]
    deadline = started + 30
    while time.monotonic() < deadline:
        views = [_nodes_view(node) for node in live]
        if all(
            any(f[1].startswith(address) and "fail" in f[2].split(",") for f in view)
            for view in views
        ):
            return time.monotonic() - started
        time.sleep(0.05)
    raise AssertionError(f"node {dead.port} was not flagged fail within 30 s")


def wait_promoted(
    cluster: RedisClusterServers, replica: RedisServer, timeout_s: float = 30
) -> float:
    """Wait until ``replica`` is a master that every live node sees as one; returns the
    seconds that took."""
    started = time.monotonic()
    address = f"{replica.host}:{replica.port}@"
    live = [n for n in cluster.all_nodes if n.running]
    while time.monotonic() < started + timeout_s:
        views = [_nodes_view(node) for node in live]
        if all(
            any(f[1].startswith(address) and "master" in f[2].split(",") for f in view)
            for view in views
        ):
            return time.monotonic() - started
        time.sleep(0.05)
    raise AssertionError(f"replica {replica.port} was not promoted within {timeout_s} s")


def wait_serving(node: RedisServer, timeout_s: float = 30) -> None:
    """Wait until a restarted node reports ``cluster_state:ok`` (it answers CLUSTERDOWN
    for a moment after it rejoins)."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        with redis.Redis(host=node.host, port=node.port, decode_responses=True) as client:
            if "cluster_state:ok" in str(client.execute_command("CLUSTER", "INFO")):
                return
        time.sleep(0.05)
    raise AssertionError(f"node {node.port} did not reach cluster_state:ok in {timeout_s} s")
