"""The whole of test_steps.py again, with the store's scripts on the auto-pipelined client
(inventory/store/autopipeline.py) instead of redis-py's AsyncScript: same replies, same errors,
SCRIPT FLUSH survived. Standalone Redis only (the client does not speak Cluster); the
tests read and poke keys through a redis-py client as before."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest
from redis.asyncio import BlockingConnectionPool, Redis

from inventory.domain import HospitalPolicy
from inventory.store.autopipeline import AutoPipeline, pipelined_scripts
from inventory.store.scripts import server_supports_shebang
from inventory.store.slot_store import PolicyBook, SlotStore

from . import test_steps
from .conftest import ManualClock, Scenario

# Collected here too, so they run against the fixtures of this module.
globals().update(
    {name: value for name, value in vars(test_steps).items() if name.startswith("test_")}
)


@pytest.fixture(scope="module")
async def redis_client(redis_server: Any) -> AsyncIterator[Redis]:
    """The redis-py client for reads and pokes: standalone only, unlike the conftest's."""
    pool = BlockingConnectionPool.from_url(
        redis_server.url, max_connections=64, timeout=20, decode_responses=True
    )
    client = Redis(connection_pool=pool)
    yield client
    await client.aclose()


@pytest.fixture(scope="module")
async def pipeline(redis_server: Any) -> AsyncIterator[AutoPipeline]:
    """The auto-pipelined client every store of this module runs its scripts on."""
    client = AutoPipeline.from_url(redis_server.url)
    yield client
    await client.aclose()


@pytest.fixture
def make_pipelined_store(redis_client: Redis, pipeline: AutoPipeline) -> Any:
    """make_store's stand-in: a store whose scripts go through the pipeline."""

    async def make(client: Any, clock: ManualClock, policy: HospitalPolicy | None = None) -> Any:
        info = await redis_client.info("server")
        scripts = pipelined_scripts(
            pipeline, shebang=server_supports_shebang(str(info["redis_version"]))
        )
        return SlotStore(
            client, scripts, clock=clock, policies=PolicyBook(default=policy or HospitalPolicy())
        )

    return make


@pytest.fixture(autouse=True)
def _pipelined_make_store(monkeypatch: pytest.MonkeyPatch, make_pipelined_store: Any) -> None:
    """Tests that build their own store (with a policy) get a pipelined one too."""
    monkeypatch.setattr(test_steps, "make_store", make_pipelined_store)


@pytest.fixture
async def scenario(redis_client: Redis, clock: ManualClock, make_pipelined_store: Any) -> Scenario:
    """A pipelined store with the default policy and a fresh hospital/department/day."""
    store = await make_pipelined_store(redis_client, clock)
    return Scenario(store=store, clock=clock, client=redis_client)


def test_every_step_test_is_collected_here() -> None:
    """This module runs every test of test_steps.py, none left out."""
    names = {name for name in vars(test_steps) if name.startswith("test_")}
    assert names <= set(globals())
    assert len(names) >= 20


async def test_scenario_scripts_run_on_the_pipeline(
    scenario: Scenario, pipeline: AutoPipeline
) -> None:
    """The store under test sends its script calls through the auto-pipelined client."""
    before = pipeline.stats.commands
    await test_steps.open_slot(scenario)
    outcome = await scenario.store.reserve(scenario.request("slot-a"))
    assert outcome.hold.slot_id == "slot-a"
    assert pipeline.stats.commands - before >= 2
