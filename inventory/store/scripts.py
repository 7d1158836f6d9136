"""Finding, assembling and registering the Lua scripts.

The scripts live in the top-level ``lua/`` folder, one file per operation, and ship
inside the wheel as ``inventory/lua``. A script may pull shared helpers in with a line
``--- @include "name"`` (resolved from ``lua/includes/name.lua``, each at most once, as
BullMQ's loader does). Registration goes through redis-py's own ``register_script``,
whose EVALSHA falls back to loading the script after a SCRIPT FLUSH or a restart. On
Cluster that fallback (SCRIPT LOAD) goes to every master and fails while one is down, so
there the fallback is an EVAL routed by the call's keys (:class:`ClusterScript`): a
master that lost its script cache (a restart, a replica just promoted) serves its tags
whatever happened to the others.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from importlib.resources import files
from importlib.resources.abc import Traversable
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from redis.asyncio import Redis
from redis.asyncio.cluster import RedisCluster
from redis.commands.core import AsyncScript
from redis.exceptions import NoScriptError
from redis.typing import ScriptTextT

if TYPE_CHECKING:
    from collections.abc import Awaitable, Iterable, Mapping, Sequence

#: Every operation script (lua/<name>.lua).
SCRIPT_NAMES: tuple[str, ...] = (
    "reserve",
    "confirm",
    "release",
    "extend",
    "expire",
    "load_schedule",
    "adjust_capacity",
    "suspend",
    "reopen",
    "patient_acquire",
    "patient_settle",
    "patient_release",
    "patient_reap",
    "patient_ban",
    "rate_limit",
    "fence",
    "rebuild",
    "room_open",
    "room_join",
    "room_advance",
    "room_status",
    "room_restore",
    "reschedule",
    "reschedule_take",
    "reschedule_mark",
    "login_code_issue",
    "login_code_check",
    "waitlist_join",
    "waitlist_leave",
    "waitlist_settle",
)

_INCLUDE_RE = re.compile(r'^--- @include "([a-z_]+)"\s*$', re.MULTILINE)


class ScriptLoadError(RuntimeError):
    """A script or include is missing or includes itself."""


def lua_root() -> Traversable:
    """The folder holding the scripts: inside the installed package, else the repo's."""
    packaged = files("inventory") / "lua"
    if packaged.is_dir():
        return packaged
    # Editable install or a source checkout: the package sits beside lua/.
    repo = Path(__file__).resolve().parents[2] / "lua"
    if repo.is_dir():
        return repo
    raise ScriptLoadError("cannot find the Lua scripts (inventory/lua or ../lua)")


def assemble(name: str, root: Traversable | None = None) -> str:
    """The source of script ``name`` with its includes spliced in, each once."""
    base = root if root is not None else lua_root()
    seen: set[str] = set()

    def read(path: Traversable, label: str) -> str:
        if not path.is_file():
            raise ScriptLoadError(f"missing Lua file: {label}")
        return path.read_text(encoding="utf-8")

    def expand(source: str, stack: tuple[str, ...]) -> str:
        def splice(match: re.Match[str]) -> str:
            include = match.group(1)
            if include in stack:
                raise ScriptLoadError(f"circular include: {' -> '.join((*stack, include))}")
            if include in seen:
                return f"-- (include {include} already spliced above)"
            seen.add(include)
            text = read(base / "includes" / f"{include}.lua", f"includes/{include}.lua")
            return expand(text, (*stack, include))

        return _INCLUDE_RE.sub(splice, source)

    return expand(read(base / f"{name}.lua", f"{name}.lua"), (name,))


def with_shebang(source: str) -> str:
    """Prefix Redis 7's ``#!lua`` line: the server then refuses a script under
    out-of-memory before it starts, instead of at its first write."""
    return "#!lua\n" + source


class ScriptCall(Protocol):
    """One registered script, called as ``await script(keys=[...], args=[...])``:
    redis-py's ``AsyncScript`` (:meth:`Scripts.register`) or the auto-pipeline's
    ``PipelinedScript`` (inventory.store.autopipeline.pipelined_scripts)."""

    @property
    def sha(self) -> str:
        """The script's SHA1 digest (what EVALSHA names)."""

    @property
    def script(self) -> ScriptTextT:
        """The script's source as registered."""

    def __call__(
        self, keys: Sequence[Any] | None = None, args: Iterable[Any] | None = None
    ) -> Awaitable[Any]: ...


class ClusterScript(AsyncScript):
    """redis-py's script object, whose NOSCRIPT fallback on Cluster runs EVAL on the
    node of the call's keys (which caches the script there) instead of SCRIPT LOAD on
    every master."""

    async def __call__(
        self,
        keys: Sequence[Any] | None = None,
        args: Iterable[Any] | None = None,
        client: Redis | RedisCluster | None = None,
    ) -> Any:
        keys, args = list(keys or []), list(args or [])
        target = client if client is not None else self.registered_client
        if not isinstance(target, RedisCluster):
            return await super().__call__(keys, args, client)
        try:
            return await target.evalsha(self.sha, len(keys), *keys, *args)
        except NoScriptError:
            source = self.script.decode() if isinstance(self.script, bytes) else str(self.script)
            return await target.eval(source, len(keys), *keys, *args)


@dataclass(frozen=True)
class Scripts:
    """Every script registered on one client, as awaitable callables."""

    by_name: Mapping[str, ScriptCall]

    def __getitem__(self, name: str) -> ScriptCall:
        return self.by_name[name]

    @classmethod
    def register(
        cls, client: Redis | RedisCluster, *, shebang: bool, root: Traversable | None = None
    ) -> Scripts:
        """Register every script on ``client`` (a redis-py asyncio Redis or RedisCluster)."""
        by_name: dict[str, ScriptCall] = {}
        for name in SCRIPT_NAMES:
            source = assemble(name, root)
            text = with_shebang(source) if shebang else source
            if isinstance(client, RedisCluster):
                by_name[name] = ClusterScript(client, text)
            else:
                by_name[name] = client.register_script(text)
        return cls(by_name)


def server_supports_shebang(redis_version: str) -> bool:
    """Script shebangs (and their flags) arrived in Redis 7.0."""
    major = redis_version.split(".", 1)[0]
    return major.isdigit() and int(major) >= 7
