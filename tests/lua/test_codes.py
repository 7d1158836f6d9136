"""The scripts' return codes (lua/includes/codes.lua) and the error tree (errors.py)
agree: every refusal code a script can answer is an error class with the same number
and the same name, and every error class that stands for a script's code is in
codes.lua. A code added on one side only fails here, not in production as an
"unknown script return code"."""

from __future__ import annotations

import re
from pathlib import Path

from inventory import errors
from inventory.store.scripts import SCRIPT_NAMES, lua_root

#: ``local NAME = number`` in codes.lua.
_CODE_RE = re.compile(r"^local ([A-Z_]+) = (-?\d+)\s*$", re.MULTILINE)

#: A code line of a script header's "Returns" block: ``   -17  store_fenced ...``.
_HEADER_CODE_RE = re.compile(r"^ {2,}(-\d+) +([a-z_]+)\b", re.MULTILINE)


def lua_codes() -> dict[str, int]:
    """Every constant of codes.lua, by name."""
    text = (Path(str(lua_root())) / "includes" / "codes.lua").read_text(encoding="utf-8")
    found = _CODE_RE.findall(text)
    codes = {name: int(value) for name, value in found}
    assert len(codes) == len(found), "a name is defined twice in codes.lua"
    return codes


def python_codes() -> dict[str, int]:
    """Every error class that stands for a script's code: machine code -> number."""
    by_code: dict[str, int] = {}
    pending: list[type[errors.InventoryError]] = [errors.InventoryError]
    while pending:
        cls = pending.pop()
        pending.extend(cls.__subclasses__())
        if "lua_code" in vars(cls) and cls is not errors.RefusedError:
            assert cls.code not in by_code, f"{cls.code} has two classes"
            by_code[cls.code] = int(vars(cls)["lua_code"])
    return by_code


def test_codes_are_distinct() -> None:
    """No two constants of codes.lua share a number."""
    codes = lua_codes()
    assert len(set(codes.values())) == len(codes)


def test_success_codes_match() -> None:
    """OK and REPLAY are errors.py's LUA_OK and LUA_REPLAY."""
    codes = lua_codes()
    assert (codes.pop("OK"), codes.pop("REPLAY")) == (errors.LUA_OK, errors.LUA_REPLAY)


def test_every_refusal_code_is_an_error_and_back() -> None:
    """Each E_NAME = n of codes.lua is the error class with code "name" and lua_code n,
    and each error class with a lua_code is in codes.lua."""
    refusals = {
        name.removeprefix("E_").lower(): value
        for name, value in lua_codes().items()
        if name.startswith("E_")
    }
    assert refusals == python_codes()


def test_refusals_resolve_to_their_class() -> None:
    """refusal_for knows every refusal a script step answers through LUA_CODES (the
    rate limit's refusal, answered with a retry time, is read before it)."""
    for code, value in python_codes().items():
        if code == errors.RateLimitedError.code:
            assert value not in errors.LUA_CODES
            continue
        assert errors.refusal_for(value).code == code


def test_script_headers_name_codes_as_codes_lua_does() -> None:
    """A script header's "-n  name" lines use codes.lua's number for that name."""
    by_name = {
        name.removeprefix("E_").lower(): value
        for name, value in lua_codes().items()
        if name.startswith("E_")
    }
    root = Path(str(lua_root()))
    for script in SCRIPT_NAMES:
        header = (root / f"{script}.lua").read_text(encoding="utf-8").split("]]", 1)[0]
        returns = header.split("Returns", 1)[1]
        for value, name in _HEADER_CODE_RE.findall(returns):
            assert by_name.get(name) == int(value), f"{script}.lua: {value} {name}"
