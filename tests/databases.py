"""Databases of the tests' own on a shared Postgres: migrated ones are copies of a template.

Migrating a new database applies every migration, each in a transaction of its own with
fsync on: about a second on a loaded machine. ``CREATE DATABASE ... TEMPLATE`` copies a
migrated database in a tenth of that, so the session migrates one template (the
``database_template`` fixture) and each test or module that needs a migrated database gets
a copy. The tests of the migrations themselves start from an empty database
(:func:`scratch_database` with no template) and migrate it as the service would.

Every name is random, so tests never meet each other's databases, also not on a server
from the environment that other runs share; a test drops only databases it created. The
copies are dropped by a thread of their own (:class:`Dropper`): Postgres 15 forces a
checkpoint on every DROP DATABASE, which with fsync on takes seconds on a busy machine,
and no test needs to wait for it.
"""

from __future__ import annotations

import asyncio
import contextlib
import queue
import threading
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from urllib.parse import urlsplit, urlunsplit

import asyncpg

from inventory.record.migrate import migrate_database


def database_url(server_url: str, name: str) -> str:
    """``server_url`` pointing at database ``name`` instead."""
    return urlunsplit(urlsplit(server_url)._replace(path=f"/{name}"))


async def create_database(
    server_url: str, *, template: str | None = None, prefix: str = "test"
) -> str:
    """A new database with a random name, a copy of ``template`` when given (else empty);
    its URL. Nobody may be connected to ``template`` while it is copied."""
    name = f"{prefix}_{uuid.uuid4().hex[:16]}"
    # Postgres 15 and later copy through the WAL by default, with no checkpoint: cheap.
    copy = f' TEMPLATE "{template}"' if template else ""
    admin = await asyncpg.connect(server_url)
    try:
        await admin.execute(f'CREATE DATABASE "{name}"{copy}')
    finally:
        await admin.close()
    return database_url(server_url, name)


async def drop_database(server_url: str, url: str) -> None:
    """Drop the database at ``url`` (ours), ending any connection a killed test left."""
    name = urlsplit(url).path.lstrip("/")
    admin = await asyncpg.connect(server_url)
    try:
        await admin.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
            " WHERE datname = $1 AND pid <> pg_backend_pid()",
            name,
        )
        await admin.execute(f'DROP DATABASE IF EXISTS "{name}"')
    finally:
        await admin.close()


@contextlib.asynccontextmanager
async def scratch_database(server_url: str, *, template: str | None = None) -> AsyncIterator[str]:
    """A database of our own (a copy of ``template``, or empty); its URL; dropped after."""
    url = await create_database(server_url, template=template)
    try:
        yield url
    finally:
        await drop_database(server_url, url)


async def create_template(server_url: str) -> str:
    """A new database with every migration applied, for copies to start from; its name."""
    url = await create_database(server_url, prefix="template")
    await migrate_database(url)  # closes its connection: the template is free to copy
    return urlsplit(url).path.lstrip("/")


class Dropper:
    """Drops databases one at a time in a thread of its own, so that no test waits for it.

    :meth:`close` drops what is still queued and raises if any drop failed (in the
    teardown of the fixture that owns the dropper, so the failure is reported).
    """

    def __init__(self, server_url: str) -> None:
        self._server_url = server_url
        self._queue: queue.SimpleQueue[str | None] = queue.SimpleQueue()
        self._failures: list[str] = []
        self._thread = threading.Thread(target=self._run, name="drop-databases", daemon=True)
        self._thread.start()

    def drop(self, url: str) -> None:
        """Drop the database at ``url`` (ours, no longer used) soon."""
        self._queue.put(url)

    def close(self) -> None:
        """Drop what is queued, stop the thread; raise if any drop failed."""
        self._queue.put(None)
        self._thread.join()
        if self._failures:
            raise RuntimeError("databases not dropped: " + "; ".join(self._failures))

    def _run(self) -> None:
        while (url := self._queue.get()) is not None:
            try:
                asyncio.run(drop_database(self._server_url, url))
            except Exception as exc:  # reported by close()
                self._failures.append(f"{url}: {exc!r}")


@dataclass(frozen=True)
class Databases:
    """Migrated databases on one server, copied from the session's template."""

    server_url: str
    template: str
    dropper: Dropper

    async def create(self, *, prefix: str = "test") -> str:
        """A new migrated database; its URL. Left on the server: for databases that live
        as long as the session (a server the session started goes with it)."""
        return await create_database(self.server_url, template=self.template, prefix=prefix)

    @contextlib.asynccontextmanager
    async def scratch(self) -> AsyncIterator[str]:
        """A new migrated database, dropped (by the dropper) after the with-block."""
        url = await self.create()
        try:
            yield url
        finally:
            self.dropper.drop(url)
