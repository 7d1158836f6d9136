"""How every command refuses what it cannot run with: a bad setting is one message,
``inventory <command>: invalid configuration: ...``, and exit status 2 (before any
server is reached); a bad number in an argument is argparse's usage error, also 2."""

from __future__ import annotations

import pytest

from inventory.cli import main


@pytest.mark.parametrize("command", ["worker", "serve", "check", "rebuild", "persist", "token"])
def test_a_bad_setting_stops_every_command_the_same_way(
    command: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """INVENTORY_REDIS_MAX_CONNECTIONS=0 is refused by name, with exit status 2."""
    monkeypatch.setenv("INVENTORY_REDIS_MAX_CONNECTIONS", "0")
    monkeypatch.delenv("INVENTORY_ENV_FILE", raising=False)
    extra = ["--sub", "acct-1"] if command == "token" else []
    assert main([command, *extra]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"inventory {command}: invalid configuration:")
    assert "INVENTORY_REDIS_MAX_CONNECTIONS: must be a positive integer" in err


@pytest.mark.parametrize(
    ("argv", "why"),
    [
        (["serve", "--workers", "0"], "argument --workers: must be at least 1: '0'"),
        (["reencrypt", "--batch", "x"], "argument --batch: not a whole number: 'x'"),
        (["reconcile", "--days", "-1"], "argument --days: must be at least 1: '-1'"),
        (["persist", "--block", "0"], "argument --block: must be a positive number: '0'"),
    ],
)
def test_a_bad_count_is_a_usage_error(
    argv: list[str], why: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """Counts and durations are checked as the arguments are parsed."""
    with pytest.raises(SystemExit) as exited:
        main(argv)
    assert exited.value.code == 2
    assert why in capsys.readouterr().err
