"""`inventory staff`: the staff console's sign-in accounts (docs/auth.md, "Staff sign-in").

    inventory staff add USERNAME (--platform | --hospital ID [--hospital ID ...])
    inventory staff password USERNAME
    inventory staff disable USERNAME
    inventory staff list

A password is read from the terminal (asked twice, not echoed) or, when standard input
is no terminal, from its first line; never from the command line, where other users of
the machine and the shell's history would see it. Exit status: 0 done; 1 refused (the
username is taken or unknown, a hospital is not in the catalogue) or Postgres out of
reach; 2 for command-line errors (a bad username or password, no password).
"""

from __future__ import annotations

import argparse
import asyncio
import getpass
import sys
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

from inventory.api.auth import MAX_TOKEN_HOSPITALS
from inventory.login.passwords import PasswordRuleError, check_new_password, hash_password
from inventory.ops.config import Settings
from inventory.record.staff import USERNAME_RE, StaffRecord
from inventory.store.keys import ID_RE

_PROG = "inventory staff"
T = TypeVar("T")


def register(subparsers: Any) -> None:
    """Add the ``staff`` command and its subcommands."""
    parser = subparsers.add_parser(
        "staff",
        help="manage the staff console's sign-in accounts",
        description="Staff accounts sign in to the console with a username and password.",
    )
    commands = parser.add_subparsers(dest="staff_command", metavar="<action>", required=True)
    add = commands.add_parser(
        "add", help="add an account (the password is asked for, or read from stdin)"
    )
    add.add_argument("username", help="lower-case letters, digits, '_' or '-' (1-64)")
    scope = add.add_mutually_exclusive_group(required=True)
    scope.add_argument(
        "--platform", action="store_true", help="a platform operator: every hospital"
    )
    scope.add_argument(
        "--hospital",
        action="append",
        dest="hospitals",
        metavar="HOSPITAL_ID",
        help="a hospital operator for this hospital (repeat for more)",
    )
    add.set_defaults(handler=run_add)
    password = commands.add_parser(
        "password", help="set a new password (clears a lock; asked for, or read from stdin)"
    )
    password.add_argument("username")
    password.set_defaults(handler=run_password)
    disable = commands.add_parser("disable", help="refuse the account's sign-ins from now on")
    disable.add_argument("username")
    disable.set_defaults(handler=run_disable)
    listing = commands.add_parser("list", help="list the accounts (never their passwords)")
    listing.set_defaults(handler=run_list)


def _fail(message: str, status: int) -> int:
    print(f"{_PROG}: {message}", file=sys.stderr)
    return status


def read_password() -> str:
    """The new password: asked twice at a terminal, else standard input's first line."""
    if sys.stdin.isatty():
        first = getpass.getpass("Password: ")
        if getpass.getpass("Password again: ") != first:
            raise PasswordRuleError("the two passwords differ")
        return first
    return sys.stdin.readline().removesuffix("\n").removesuffix("\r")


def _new_password_hash() -> str:
    password = read_password()
    check_new_password(password)
    return hash_password(password)


def _with_record(work: Callable[[StaffRecord], Awaitable[T]]) -> T:
    """Run ``work`` with a record on a small pool of the configured database."""
    from inventory.record.pool import create_pool

    settings = Settings.from_env(for_api=False)

    async def go() -> T:
        pool = await create_pool(settings.database_url, min_size=1, max_size=1)
        try:
            return await work(StaffRecord(pool))
        finally:
            await pool.close()

    return asyncio.run(go())


def _check_username(username: str) -> str | None:
    if USERNAME_RE.fullmatch(username):
        return None
    return f"bad username {username!r}: 1-64 lower-case letters, digits, '_' or '-'"


def run_add(args: argparse.Namespace) -> int:
    """Add an account."""
    problem = _check_username(args.username)
    hospitals: list[str] | None = None if args.platform else sorted(set(args.hospitals))
    if hospitals is not None and (
        len(hospitals) > MAX_TOKEN_HOSPITALS or not all(map(ID_RE.fullmatch, hospitals))
    ):
        problem = f"--hospital: 1-{MAX_TOKEN_HOSPITALS} ids of 1-64 letters, digits, '_' or '-'"
    if problem:
        return _fail(problem, 2)
    try:
        password_hash = _new_password_hash()
    except PasswordRuleError as error:
        return _fail(str(error), 2)

    async def add(record: StaffRecord) -> int:
        unknown = await record.unknown_hospitals(hospitals or [])
        if unknown:
            return _fail(f"no such hospital: {', '.join(unknown)}", 1)
        if not await record.add(args.username, password_hash, hospitals=hospitals):
            return _fail(f"the username {args.username!r} is taken", 1)
        scope = "platform operator" if hospitals is None else "operator of " + ", ".join(hospitals)
        print(f"added {args.username} ({scope})")
        return 0

    return _with_record(add)


def run_password(args: argparse.Namespace) -> int:
    """Set a new password."""
    problem = _check_username(args.username)
    if problem:
        return _fail(problem, 2)
    try:
        password_hash = _new_password_hash()
    except PasswordRuleError as error:
        return _fail(str(error), 2)
    if not _with_record(lambda record: record.set_password(args.username, password_hash)):
        return _fail(f"no such account: {args.username}", 1)
    print(f"password set for {args.username}")
    return 0


def run_disable(args: argparse.Namespace) -> int:
    """Disable an account."""
    problem = _check_username(args.username)
    if problem:
        return _fail(problem, 2)
    if not _with_record(lambda record: record.disable(args.username)):
        return _fail(f"no such account: {args.username}", 1)
    print(f"disabled {args.username}")
    return 0


def run_list(args: argparse.Namespace) -> int:
    """Print the accounts, one a line."""
    rows = _with_record(lambda record: record.all())
    print("username\tscope\tstate\tlast_login_at")
    for row in rows:
        scope = "platform" if row["platform"] else ",".join(row["hospitals"])
        state = "disabled" if row["disabled"] else "enabled"
        if row["locked_until"] is not None:
            state += f" locked-until={row['locked_until'].isoformat()}"
        last = row["last_login_at"].isoformat() if row["last_login_at"] else "-"
        print(f"{row['username']}\t{scope}\t{state}\t{last}")
    if not rows:
        print("(no staff accounts)", file=sys.stderr)
    return 0
