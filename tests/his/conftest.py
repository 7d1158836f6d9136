"""The HIS simulator as a real server process for the HIS tests, and helpers to drive
its admin API. One simulator serves the module's tests; each test gets it with no
faults, fresh request counters and nothing hanging, and books slots no other test uses.
"""

from __future__ import annotations

import asyncio
import itertools
import uuid
from collections.abc import AsyncIterator, Iterator
from datetime import date, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any
from zoneinfo import ZoneInfo

import aiohttp
import pytest

from inventory.his.client import FhirHisClient, HisClientConfig
from inventory.his.types import HisSlot
from inventory.ops.config import Settings
from inventory.simulators.his.process import SimProcess
from tests.databases import Databases

if TYPE_CHECKING:
    from tests.his.world import World

CHINA = ZoneInfo("Asia/Shanghai")


class SimAdmin:
    """The simulator's admin API (``/$admin``) over one aiohttp session."""

    def __init__(self, sim: SimProcess, session: aiohttp.ClientSession) -> None:
        self.sim = sim
        self.session = session
        self._used_slots: set[str] = set()

    async def call(self, method: str, path: str, body: Any = None) -> Any:
        async with self.session.request(
            method, f"{self.sim.base_url}/$admin/{path}", json=body
        ) as response:
            data = await response.json()
            assert response.status < 300, (response.status, data)
            return data

    async def state(self, *, arrivals: bool = False) -> dict[str, Any]:
        """The simulator's summary, request stats and faults."""
        result: dict[str, Any] = await self.call("GET", "state?arrivals=1" if arrivals else "state")
        return result

    async def faults(self, **settings: Any) -> None:
        """Merge fault settings."""
        await self.call("POST", "faults", settings)

    async def clear(self) -> None:
        """No faults, nothing hanging, counters reset."""
        await self.call("DELETE", "faults")
        for _ in range(200):
            if (await self.state())["requests"]["in_flight"] == 0:
                break
            await asyncio.sleep(0.05)
        await self.call("POST", "stats/reset")

    async def suspend(self, schedule_id: str, reason: str = "专家临时停诊") -> None:
        """停诊 a schedule."""
        await self.call("POST", f"schedules/{schedule_id}/suspend", {"reason": reason})

    async def add_capacity(self, slot_id: str, n: int) -> dict[str, Any]:
        """加号."""
        result: dict[str, Any] = await self.call("POST", f"slots/{slot_id}/capacity", {"add": n})
        return result

    async def book_other(self, slot_id: str, channel: str, count: int = 1) -> list[dict[str, Any]]:
        """Bookings made at the window or by phone."""
        result = await self.call(
            "POST", f"slots/{slot_id}/book", {"channel": channel, "count": count}
        )
        made: list[dict[str, Any]] = result["appointments"]
        return made

    async def fresh_slot(self, his: FhirHisClient, *, min_free: int = 1) -> HisSlot:
        """A slot of tomorrow (so never in the past) that no other test has touched."""
        tomorrow = datetime.now(tz=CHINA).date() + timedelta(days=1)
        for day in (tomorrow, tomorrow + timedelta(days=1)):
            for schedule in await his.list_schedules(day, day):
                for slot in schedule.slots:
                    if (
                        schedule.active
                        and slot.slot_id not in self._used_slots
                        and slot.free >= min_free
                    ):
                        self._used_slots.add(slot.slot_id)
                        return slot
        raise AssertionError("the demo hospital ran out of fresh slots")


_ids = itertools.count(1)


def booking_id() -> str:
    """A booking id no other test (or earlier run against the same state) has used."""
    return f"bk-{next(_ids)}-{uuid.uuid4().hex[:10]}"


def tomorrow() -> date:
    """Tomorrow in the hospital's time zone."""
    return datetime.now(tz=CHINA).date() + timedelta(days=1)


@pytest.fixture(scope="module")
def sim(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SimProcess]:
    """One simulator process (demo hospital, seeded RNG) for the module."""
    with SimProcess(Path(tmp_path_factory.mktemp("his-sim")), seed_rng=7) as process:
        yield process


@pytest.fixture(scope="module")
async def admin_session() -> AsyncIterator[aiohttp.ClientSession]:
    """An HTTP session for the admin API."""
    async with aiohttp.ClientSession() as session:
        yield session


@pytest.fixture(scope="module")
async def module_admin(sim: SimProcess, admin_session: aiohttp.ClientSession) -> SimAdmin:
    """The admin helper, shared by the module (it remembers which slots were used)."""
    return SimAdmin(sim, admin_session)


@pytest.fixture
async def admin(module_admin: SimAdmin) -> AsyncIterator[SimAdmin]:
    """The admin helper, with a clean simulator before and after the test."""
    await module_admin.clear()
    yield module_admin
    await module_admin.clear()


def client_config(sim: SimProcess, **overrides: Any) -> HisClientConfig:
    """A client config for the tests: short timeouts and back-off."""
    settings: dict[str, Any] = {
        "base_url": sim.fhir_url,
        "request_timeout_s": 2.0,
        "total_timeout_s": 10.0,
        "attempts": 4,
        "backoff_initial_s": 0.02,
        "backoff_max_s": 0.2,
        "rate_per_s": 1000.0,
        "burst": 100,
        "max_concurrency": 16,
    }
    settings.update(overrides)
    return HisClientConfig(**settings)


@pytest.fixture
async def his(sim: SimProcess) -> AsyncIterator[FhirHisClient]:
    """A client with the test settings."""
    async with FhirHisClient(client_config(sim)) as client:
        yield client


@pytest.fixture(scope="module")
async def world(
    sim: SimProcess,
    module_admin: SimAdmin,
    databases: Databases,
    tmp_path_factory: pytest.TempPathFactory,
) -> AsyncIterator[World]:
    """The module's world (tests/his/world.py), with the HIS's window synced once."""
    from tests.his.world import open_world  # world.py imports this module: not at the top

    directory = tmp_path_factory.mktemp("his-world")
    async with open_world(sim, module_admin, databases, directory) as built:
        await built.sync.sync()
        yield built


@pytest.fixture(scope="module")
async def api(
    world: World, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[dict[str, Any]]:
    """An API process over the world's Redis and database (the store verified first)."""
    from inventory.devtools.servers import free_port
    from tests.api.conftest import api_env, mark_store_verified, start_api, stop_api

    await mark_store_verified(world.redis.url, world.database_url)
    port = free_port()
    env = api_env(world.redis.url, world.database_url, port)
    log_path = tmp_path_factory.mktemp("his-api") / "api.log"
    process = start_api(env, log_path)
    settings = Settings.from_env({k: v for k, v in env.items() if k.startswith("INVENTORY_")})
    try:
        yield {"url": f"http://127.0.0.1:{port}", "settings": settings, "env": env}
    finally:
        stop_api(process)
