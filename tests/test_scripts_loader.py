"""The Lua loader: includes, shipping the scripts inside the wheel, and the headers."""

from __future__ import annotations

import re
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from inventory.store.scripts import SCRIPT_NAMES, ScriptLoadError, assemble, lua_root

REPO = Path(__file__).resolve().parent.parent


def write(root: Path, name: str, text: str) -> None:
    path = root / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")


def test_includes_are_spliced_once(tmp_path: Path) -> None:
    """An include used twice (directly and through another include) appears once."""
    write(tmp_path, "includes/a.lua", "local A = 1\n")
    write(tmp_path, "includes/b.lua", '--- @include "a"\nlocal B = A\n')
    write(tmp_path, "main.lua", '--- @include "a"\n--- @include "b"\nreturn B\n')
    source = assemble("main", tmp_path)
    assert source.count("local A = 1") == 1
    assert source.index("local A = 1") < source.index("local B = A")


def test_missing_include_is_an_error(tmp_path: Path) -> None:
    """A missing include names the file instead of shipping a broken script."""
    write(tmp_path, "main.lua", '--- @include "nope"\n')
    with pytest.raises(ScriptLoadError, match=r"includes/nope\.lua"):
        assemble("main", tmp_path)


def test_circular_include_is_an_error(tmp_path: Path) -> None:
    """Includes that include each other are refused with the cycle named."""
    write(tmp_path, "includes/a.lua", '--- @include "b"\n')
    write(tmp_path, "includes/b.lua", '--- @include "a"\n')
    write(tmp_path, "main.lua", '--- @include "a"\n')
    with pytest.raises(ScriptLoadError, match="circular include: main -> a -> b -> a"):
        assemble("main", tmp_path)


def test_every_script_has_a_complete_header() -> None:
    """Each script's header names every KEYS/ARGV entry it uses, its codes and events."""
    root = Path(str(lua_root()))
    for name in SCRIPT_NAMES:
        text = (root / f"{name}.lua").read_text(encoding="utf-8")
        header = text.split("]]", 1)[0]
        assert header.startswith(f"--[[\n  {name}:"), name
        assert "Returns" in header, name
        assert "Emits:" in header, name
        body = assemble(name, root).split("]]", 1)[1]
        for index in set(re.findall(r"ARGV\[(\d+)\]", body)):
            assert f"ARGV[{index}]" in header, f"{name}: ARGV[{index}] undocumented"
        assert "KEYS[1" in header, name


#: A top-level declaration of an include: ``local NAME = ...``, ``local A, B = ...``,
#: ``local function name(...)``.
_TOP_LOCAL_RE = re.compile(r"^local (?!function\b)([\w, ]+?)\s*(?:=|$)", re.MULTILINE)
_TOP_FUNCTION_RE = re.compile(r"^local function (\w+)", re.MULTILINE)


def test_includes_share_no_mutable_state() -> None:
    """Includes declare only functions and UPPER_CASE constants, and nothing assigns a
    name an include declared: what a step carries (its clock, request id, random
    numbers) is passed to the helpers, never left in a variable scripts overwrite."""
    root = Path(str(lua_root()))
    includes = sorted((root / "includes").glob("*.lua"))
    declared: set[str] = set()
    for include in includes:
        text = include.read_text(encoding="utf-8")
        for names in _TOP_LOCAL_RE.findall(text):
            for name in (part.strip() for part in names.split(",")):
                assert name.isupper(), f"includes/{include.name}: {name} is not a constant"
                declared.add(name)
        declared.update(_TOP_FUNCTION_RE.findall(text))
    for path in [*root.glob("*.lua"), *includes]:
        text = path.read_text(encoding="utf-8")
        for name in declared:
            assigned = re.search(rf"^[ \t]*{name}[ \t]*=(?!=)", text, re.MULTILINE)
            assert assigned is None, f"{path.name} assigns {name}, declared by an include"


def test_wheel_ships_the_scripts(tmp_path: Path) -> None:
    """A built wheel contains every script and include under inventory/lua, and no
    benchmark."""
    subprocess.run(
        [sys.executable, "-m", "build", "--wheel", "--outdir", str(tmp_path), str(REPO)],
        check=True,
        capture_output=True,
    )
    (wheel,) = tmp_path.glob("slot_inventory-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    for name in SCRIPT_NAMES:
        assert f"inventory/lua/{name}.lua" in names
    for include in (REPO / "lua" / "includes").glob("*.lua"):
        assert f"inventory/lua/includes/{include.name}" in names
    # The benchmarks are run from a checkout; the service ships without them.
    assert not [n for n in names if n.startswith(("bench/", "inventory/bench/"))]
    # Installed from the wheel, the package finds its scripts inside itself.
    target = tmp_path / "site"
    subprocess.run(
        [sys.executable, "-m", "pip", "install", "--no-deps", "--target", str(target), str(wheel)],
        check=True,
        capture_output=True,
    )
    probe = (
        "import sys; sys.path.insert(0, sys.argv[1]); "
        "from inventory.store.scripts import lua_root, assemble; "
        "print(lua_root()); assemble('reserve')"
    )
    found = subprocess.run(
        [sys.executable, "-I", "-c", probe, str(target)], check=True, capture_output=True, text=True
    )
    assert found.stdout.strip() == str(target / "inventory" / "lua")


def test_source_checkout_finds_the_scripts() -> None:
    """From an editable install the loader finds the top-level lua/ folder."""
    assert Path(str(lua_root())).resolve() == REPO / "lua"
