"""The auto-pipelined script client against the session's real Redis: ordering, one
write per loop iteration, redis-py's reply decoding and error types, NOSCRIPT, lost
connections, timeouts, the connect hook and the verified-store gate, closing."""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import redis.exceptions
from redis.asyncio import Redis

from inventory.devtools.servers import free_port, start_redis
from inventory.recovery.fence import StoreUnverifiedError, StoreVerification
from inventory.store import keys
from inventory.store.autopipeline import (
    AutoPipeline,
    PipelinedConnection,
    PipelinedScript,
    pipelined_scripts,
    supports_url,
)
from inventory.store.slot_store import GATED_SCRIPTS

ECHO = "return {KEYS[1], ARGV[1], tonumber(ARGV[2])}"
COUNT = "return redis.call('INCR', KEYS[1])"


def fresh_key(prefix: str) -> str:
    """A key no other test uses (the session server is shared)."""
    return f"test:ap:{prefix}:{uuid.uuid4().hex[:10]}"


@pytest.fixture
async def pipeline(redis_server: Any) -> AsyncIterator[AutoPipeline]:
    """An auto-pipelined client on the session Redis, closed after the test."""
    client = AutoPipeline.from_url(redis_server.url, timeout_s=5.0)
    yield client
    await client.aclose()


@pytest.fixture
async def plain(redis_server: Any) -> AsyncIterator[Redis]:
    """A redis-py client (decode_responses=True) on the same server, for comparison."""
    client = Redis.from_url(redis_server.url, decode_responses=True)
    yield client
    await client.aclose()


async def kill_connection(plain: Redis, pipeline: AutoPipeline) -> None:
    """CLIENT KILL the pipeline's connection from another client."""
    client_id = await pipeline.execute("CLIENT", "ID")
    assert await plain.client_kill_filter(_id=client_id) == 1


async def test_concurrent_calls_get_their_own_replies(pipeline: AutoPipeline) -> None:
    """Thousands of concurrent script calls and commands each get their own reply."""
    script = PipelinedScript(pipeline, ECHO)
    key = fresh_key("order")
    calls = [script(keys=[f"{key}:{i}"], args=[f"v{i}", i]) for i in range(2000)]
    counts = [pipeline.execute("INCR", key) for _ in range(500)]
    replies = await asyncio.gather(*calls)
    assert replies == [[f"{key}:{i}", f"v{i}", i] for i in range(2000)]
    assert sorted(await asyncio.gather(*counts)) == list(range(1, 501))
    await pipeline.execute("DEL", key)


async def test_calls_of_one_iteration_go_out_in_one_write(pipeline: AutoPipeline) -> None:
    """Every call made in one event-loop iteration is written with a single write."""
    script = PipelinedScript(pipeline, ECHO)
    await script(keys=["k"], args=["warm", 0])  # connected and the script loaded
    writes, commands = pipeline.stats.writes, pipeline.stats.commands
    replies = await asyncio.gather(*(script(keys=["k"], args=["x", i]) for i in range(300)))
    assert [r[2] for r in replies] == list(range(300))
    assert pipeline.stats.writes - writes == 1
    assert pipeline.stats.commands - commands == 300


async def test_replies_are_decoded_like_redis_py(pipeline: AutoPipeline, plain: Redis) -> None:
    """Bulk strings, integers, nested arrays, nil and status replies match redis-py's."""
    source = "return {'text', 42, {'nested', -7, {}}, false, 'é中', 3.9}"
    key = fresh_key("decode")
    ours = await PipelinedScript(pipeline, source)(keys=[], args=[])
    theirs = await plain.eval(source, 0)
    assert ours == theirs == ["text", 42, ["nested", -7, []], None, "é中", 3]
    assert await pipeline.execute("SET", key, 1.5) == "OK"
    assert await pipeline.execute("GET", key) == await plain.get(key) == "1.5"
    assert await pipeline.execute("GET", fresh_key("missing")) is None
    await plain.delete(key)


async def test_noscript_after_flush_runs_each_call_exactly_once(
    redis_server: Any, pipeline: AutoPipeline, plain: Redis
) -> None:
    """After SCRIPT FLUSH, every call loads the script and runs once: none lost, none twice."""
    if not redis_server.disposable:
        pytest.skip("SCRIPT FLUSH only on a server the test session started")
    script = PipelinedScript(pipeline, COUNT)
    key = fresh_key("counter")
    assert await script(keys=[key]) == 1
    await plain.script_flush()
    reloads = pipeline.stats.reloads
    replies = await asyncio.gather(*(script(keys=[key]) for _ in range(50)))
    assert sorted(replies) == list(range(2, 52))
    assert int(await plain.get(key)) == 51
    assert pipeline.stats.reloads - reloads == 50
    await plain.delete(key)


async def test_error_replies_raise_redis_py_exception_types(
    pipeline: AutoPipeline, plain: Redis
) -> None:
    """Script errors, unknown digests, wrong types and bad arguments raise what redis-py raises."""
    key = fresh_key("errors")
    await plain.rpush(key, "x")
    cases = [
        ("return redis.error_reply('BOOM custom')", [], redis.exceptions.ResponseError),
        ("return nil + 1", [], redis.exceptions.ResponseError),
        ("return redis.call('INCR', KEYS[1])", [key], redis.exceptions.ResponseError),
    ]
    for source, keys_, expected in cases:
        with pytest.raises(expected) as ours:
            await PipelinedScript(pipeline, source)(keys=keys_, args=[])
        with pytest.raises(expected) as theirs:
            await plain.eval(source, len(keys_), *keys_)
        assert type(ours.value) is type(theirs.value)
    with pytest.raises(redis.exceptions.NoScriptError):
        await pipeline.execute("EVALSHA", "0" * 40, 0)
    with pytest.raises(redis.exceptions.DataError):
        await PipelinedScript(pipeline, ECHO)(keys=["k"], args=[True, 1])
    # The connection survives every one of them.
    assert await pipeline.execute("PING") == "PONG"
    assert pipeline.stats.connects == 1
    await plain.delete(key)


async def test_killed_connection_fails_in_flight_calls_and_next_call_reconnects(
    pipeline: AutoPipeline, plain: Redis
) -> None:
    """CLIENT KILL mid-flight fails every written or queued call with ConnectionError."""
    script = PipelinedScript(pipeline, COUNT)
    key = fresh_key("killed")
    client_id = await pipeline.execute("CLIENT", "ID")
    blocked = asyncio.ensure_future(pipeline.execute("BLPOP", fresh_key("never"), 10))
    behind = [asyncio.ensure_future(script(keys=[key])) for _ in range(10)]
    await asyncio.sleep(0.1)  # written: BLPOP blocks the connection, the scripts wait behind
    assert await plain.client_kill_filter(_id=client_id) == 1
    results = await asyncio.gather(blocked, *behind, return_exceptions=True)
    assert all(isinstance(r, redis.exceptions.ConnectionError) for r in results), results
    assert await plain.get(key) is None  # the queued scripts never ran
    assert not pipeline.connected
    assert await script(keys=[key]) == 1
    assert pipeline.stats.connects == 2
    await plain.delete(key)


async def test_overdue_reply_times_out_and_the_connection_is_replaced(redis_server: Any) -> None:
    """A reply later than timeout_s fails the calls with TimeoutError; the next call reconnects."""
    client = AutoPipeline.from_url(redis_server.url, timeout_s=0.2)
    try:
        loop = asyncio.get_running_loop()
        started = loop.time()
        with pytest.raises(redis.exceptions.TimeoutError):
            await client.execute("BLPOP", fresh_key("never"), 3)
        assert loop.time() - started < 1.5
        assert await client.execute("PING") == "PONG"
        assert client.stats.connects == 2
    finally:
        await client.aclose()


async def test_close_while_connecting_fails_waiting_calls_with_connection_error(
    redis_server: Any,
) -> None:
    """Calls waiting for the first connection when aclose runs get ConnectionError."""
    client = AutoPipeline.from_url(redis_server.url)
    waiting = asyncio.ensure_future(client.execute("PING"))
    await asyncio.sleep(0)
    await client.aclose()
    with pytest.raises(redis.exceptions.ConnectionError):
        await waiting


async def test_unreachable_server_raises_connection_error() -> None:
    """Connecting to a port nobody listens on raises redis-py's ConnectionError."""
    client = AutoPipeline(port=free_port(), connect_timeout_s=2.0)
    with pytest.raises(redis.exceptions.ConnectionError):
        await client.execute("PING")
    await client.aclose()


async def test_hook_runs_on_every_connection_and_a_closed_gate_stops_gated_calls(
    redis_server: Any, plain: Redis
) -> None:
    """After a reconnection whose check closes the gate, a gated script does not run."""
    verification = StoreVerification(required=True)
    connects: list[str] = []

    async def check(connection: PipelinedConnection) -> None:
        info = await connection.execute("INFO", "server")
        run_id = next(line for line in info.splitlines() if line.startswith("run_id:"))
        run_id = run_id.split(":", 1)[1].strip()
        connects.append(run_id)
        # First connection: the record names this server; later: as after a restart.
        verification.check_connection(run_id, run_id if len(connects) == 1 else "older-run")

    client = AutoPipeline.from_url(redis_server.url, on_connect=check)
    gated = PipelinedScript(client, COUNT, gate=verification.check)
    key = fresh_key("gated")
    try:
        assert await gated(keys=[key]) == 1
        assert verification.verified
        await kill_connection(plain, client)
        await asyncio.sleep(0.05)
        with pytest.raises(StoreUnverifiedError):
            await gated(keys=[key])
        assert len(connects) == 2
        assert not verification.verified
        assert int(await plain.get(key)) == 1  # the refused call never reached Redis
    finally:
        await client.aclose()
        await verification.close()
        await plain.delete(key)


async def test_gate_closes_after_a_redis_restart_and_opens_once_verified(tmp_path: Path) -> None:
    """A restarted private Redis: gated calls refused until the run id is recorded again."""
    with start_redis(tmp_path) as server:
        plain = Redis.from_url(server.url, decode_responses=True)
        verification = StoreVerification(required=True)
        verification.attach(plain)
        client = AutoPipeline.from_url(server.url, on_connect=verification.on_raw_connect)
        script = PipelinedScript(client, COUNT, gate=verification.check)

        async def gated() -> Any:
            verification.check()  # what SlotStore._call does before every gated script
            return await script(keys=["n"])

        try:
            await plain.set(keys.VERIFIED_RUN_KEY, (await plain.info("server"))["run_id"])
            await client.connect()  # as the app does at start-up: the hook opens the gate
            assert await gated() == 1
            assert verification.verified
            server.restart()  # the append-only file keeps the old run id's record
            with contextlib.suppress(redis.exceptions.ConnectionError):
                await plain.ping()  # redis-py's pooled connection died with the server
            with contextlib.suppress(redis.exceptions.ConnectionError, StoreUnverifiedError):
                await gated()  # refused either way: a dead socket or the gate
            with pytest.raises(StoreUnverifiedError):
                await gated()
            assert not verification.verified
            assert int(await plain.get("n")) == 1
            await plain.set(keys.VERIFIED_RUN_KEY, (await plain.info("server"))["run_id"])
            for _ in range(50):  # the gate's watcher polls the record
                if verification.verified:
                    break
                await asyncio.sleep(0.1)
            assert await gated() == 2
        finally:
            await client.aclose()
            await verification.close()
            await plain.aclose()


async def test_raw_connect_check_reads_run_id_and_marker() -> None:
    """StoreVerification.on_raw_connect opens the gate only when the marker is the run id."""

    class Stub:
        def __init__(self, marker: str | None) -> None:
            self.marker = marker

        async def execute(self, *args: Any) -> Any:
            if args[0] == "INFO":
                return "# Server\r\nredis_version:7.0.0\r\nrun_id:abc123\r\ntcp_port:1\r\n"
            return self.marker

    verification = StoreVerification(required=True)
    await verification.on_raw_connect(Stub("abc123"))
    assert verification.verified
    await verification.on_raw_connect(Stub(None))
    assert not verification.verified
    await verification.on_raw_connect(Stub("abc123"))
    assert verification.verified
    await verification.close()


async def test_close_waits_for_in_flight_replies_then_refuses(pipeline: AutoPipeline) -> None:
    """aclose lets calls already made finish, then new calls raise ConnectionError."""
    script = PipelinedScript(pipeline, ECHO)
    await script(keys=["k"], args=["warm", 0])
    calls = [asyncio.ensure_future(script(keys=["k"], args=["x", i])) for i in range(100)]
    await asyncio.sleep(0)  # written, replies not yet read
    await pipeline.aclose()
    assert [r[2] for r in await asyncio.gather(*calls)] == list(range(100))
    with pytest.raises(redis.exceptions.ConnectionError):
        await script(keys=["k"], args=["x", 1])


async def test_store_scripts_carry_digest_source_and_gate(pipeline: AutoPipeline) -> None:
    """pipelined_scripts builds every store script, gating exactly the gated ones."""
    scripts = pipelined_scripts(pipeline, shebang=False, gate=lambda: None, gated=GATED_SCRIPTS)
    reserve = scripts["reserve"]
    assert len(reserve.sha) == 40
    assert "reserve" in reserve.script
    assert scripts["rate_limit"]._gate is None  # type: ignore[attr-defined]
    assert scripts["reserve"]._gate is not None  # type: ignore[attr-defined]


def test_urls() -> None:
    """redis:// and unix:// URLs are parsed (credentials, db); rediss:// is refused."""
    client = AutoPipeline.from_url("redis://user:p%40ss@10.0.0.1:6380/3")
    assert (client.host, client.port, client.db) == ("10.0.0.1", 6380, 3)
    assert (client._username, client._password) == ("user", "p@ss")
    local = AutoPipeline.from_url("unix:///tmp/redis.sock?db=2")
    assert (local.path, local.db) == ("/tmp/redis.sock", 2)
    assert supports_url("redis://h")
    assert not supports_url("rediss://h")
    with pytest.raises(ValueError, match="rediss"):
        AutoPipeline.from_url("rediss://h:1/0")


async def test_a_demoted_primary_drops_the_connection(tmp_path: Path) -> None:
    """A server that turned into a replica answers READONLY: the connection is dropped, so
    the next call reconnects (through a resolver: to the new primary) instead of every
    script failing on the old one until a restart."""
    with start_redis(tmp_path / "a") as old, start_redis(tmp_path / "b") as new:
        addresses = [(old.host, old.port)]

        async def resolve() -> tuple[str, int]:
            return addresses[-1]

        client = AutoPipeline(resolve=resolve, timeout_s=5.0)
        try:
            assert await client.execute("SET", "k", "1") == "OK"
            first = client.connection
            with redis.Redis(port=old.port) as admin:
                admin.replicaof(new.host, new.port)
            addresses.append((new.host, new.port))
            with pytest.raises(redis.exceptions.ReadOnlyError):
                await client.execute("SET", "k", "2")
            assert not client.connected
            assert await client.execute("SET", "k", "3") == "OK"
            assert client.connection is not first
            assert client.port == new.port
        finally:
            await client.aclose()
