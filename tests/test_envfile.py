"""Environment files: what `inventory dev` writes and every other command reads with
``--env-file`` or ``INVENTORY_ENV_FILE``."""

from __future__ import annotations

import base64
import os
import stat
import subprocess
import sys
from pathlib import Path

import jwt
import pytest

from inventory.cli import envfile


def test_values_survive_the_round_trip_and_comments_are_skipped(tmp_path: Path) -> None:
    """Quotes, spaces, '=' and '$' come back as written; comment lines are ignored; the
    file is its owner's alone."""
    values = {
        "INVENTORY_A": "plain",
        "INVENTORY_B": "with space and 'quotes' and $HOME and a=b",
        "INVENTORY_EMPTY": "",
    }
    path = tmp_path / "dev.env"
    envfile.write(path, values, comments=["api  http://127.0.0.1:8080", ""])
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert path.read_text().startswith("# api  http://127.0.0.1:8080\n#\n")
    assert envfile.load(path) == values
    # The same file sourced by a POSIX shell gives the same values.
    shell = subprocess.run(
        ["sh", "-c", f'set -a; . "{path}"; printf %s "$INVENTORY_B"'],
        capture_output=True,
        text=True,
        check=True,
        env={"PATH": os.environ["PATH"]},
    )
    assert shell.stdout == values["INVENTORY_B"]


@pytest.mark.parametrize(
    "line", ["PATH=/tmp/evil", "INVENTORY_X", "INVENTORY_X=two words", "INVENTORY_X='open"]
)
def test_a_bad_line_is_refused_with_its_number(line: str) -> None:
    """Only INVENTORY_NAME=value lines (one word once unquoted) are taken."""
    with pytest.raises(envfile.EnvFileError, match="line 2"):
        envfile.parse(f"# a comment\n{line}\n")


def _key() -> str:
    return base64.b64encode(os.urandom(32)).decode()


def _token(args: list[str], env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "inventory", "token", "--sub", "a1", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_commands_read_the_file_named_by_option_or_variable(tmp_path: Path) -> None:
    """`inventory token --env-file F` and `INVENTORY_ENV_FILE=F inventory token` sign with
    the file's key, which wins over the environment's; a missing file is exit 2."""
    key = os.urandom(32)
    path = tmp_path / "dev.env"
    envfile.write(
        path,
        {
            "INVENTORY_JWT_KEYS": f"dev:{base64.b64encode(key).decode()}",
            "INVENTORY_FIELD_KEYS": f"f1:{_key()}",
            "INVENTORY_FIELD_CURRENT_KEY": "f1",
            "INVENTORY_BLIND_INDEX_KEY": f"i1:{_key()}",
        },
    )
    clean = {k: v for k, v in os.environ.items() if not k.startswith("INVENTORY_")}
    shadowed = clean | {"INVENTORY_JWT_KEYS": f"other:{_key()}"}
    for run in (
        _token(["--env-file", str(path)], shadowed),
        _token([], shadowed | {"INVENTORY_ENV_FILE": str(path)}),
    ):
        assert run.returncode == 0, run.stderr
        token = run.stdout.strip()
        assert jwt.get_unverified_header(token)["kid"] == "dev"
        jwt.decode(token, key, algorithms=["HS256"], audience="slot-inventory-api")
    missing = _token(["--env-file", str(tmp_path / "none.env")], clean)
    assert missing.returncode == 2
    assert "inventory token: --env-file: cannot read" in missing.stderr
