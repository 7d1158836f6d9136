"""Staff sign-in against real processes: accounts made with ``inventory staff`` (the
password from stdin, never argv) in the API's own database, then ``POST
/v1/auth/staff/login`` on a real API process: the right password's operator token (its
hospitals carried and enforced by an operator route), the same answer for a wrong password
and an unknown username, the lock after too many wrong passwords and its end, a disabled
account, per-address limits and bad bodies; the password never reaches the log."""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import os
import select
import subprocess
import sys
import termios
import time
from collections.abc import AsyncIterator, Iterator
from datetime import date
from typing import Any

import aiohttp
import asyncpg
import jwt
import pytest

from inventory.devtools.servers import free_port
from tests.api.conftest import ApiServer, api_env, running_api, verified_database
from tests.api.helpers import Catalogue, uid
from tests.databases import Databases

from .conftest import address, call

#: Wrong passwords that lock an account, and how long, in the test API.
MAX_FAILURES = 3
LOCK_S = 2
#: Sign-ins per client address per minute in the test API.
PER_ADDRESS = 8
PROBLEM = "application/problem+json"


@pytest.fixture(scope="module")
def staff_api(
    redis_server: Any, databases: Databases, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[ApiServer]:
    """An API process with a short lock and small limits."""
    database_url = verified_database(redis_server.url, databases)
    env = api_env(redis_server.url, database_url, free_port())
    env.update(
        {
            "INVENTORY_STAFF_MAX_FAILURES": str(MAX_FAILURES),
            "INVENTORY_STAFF_LOCK_S": str(LOCK_S),
            "INVENTORY_STAFF_LOGIN_RATE_PER_IP": f"{PER_ADDRESS}/60",
            "INVENTORY_STAFF_TOKEN_TTL_S": "7200",
            "INVENTORY_CLIENT_IP_HEADER": "X-Forwarded-For",
        }
    )
    with running_api(env, tmp_path_factory.mktemp("staff-api") / "api.log") as server:
        yield server


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as session:
        yield session


def staff(api: ApiServer, *args: str, stdin: str = "") -> subprocess.CompletedProcess[str]:
    """``inventory staff ARGS`` on the API's database, ``stdin`` its standard input."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("INVENTORY_")}
    env.update({k: v for k, v in api.env.items() if k.startswith("INVENTORY_")})
    return subprocess.run(
        [sys.executable, "-m", "inventory", "staff", *args],
        input=stdin,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )


def new_account(api: ApiServer, *scope: str) -> tuple[str, str]:
    """A fresh account (``scope``: --platform or --hospital H ...): (username, password)."""
    username = uid("staff").lower()
    password = f"pw-{uid('secret')}-long"
    made = staff(api, "add", username, *(scope or ("--platform",)), stdin=password + "\n")
    assert made.returncode == 0, made.stderr
    assert password not in made.stdout + made.stderr
    return username, password


async def sign_in(
    http: aiohttp.ClientSession,
    api: ApiServer,
    username: str,
    password: str,
    headers: dict[str, str] | None = None,
) -> tuple[int, Any, Any]:
    return await call(
        http,
        "POST",
        api.url + "/v1/auth/staff/login",
        json={"username": username, "password": password},
        headers=headers or address(),
    )


def assert_problem(answer: tuple[int, Any, Any], status: int, code: str) -> None:
    got, body, headers = answer
    assert got == status, body
    assert headers["Content-Type"].startswith(PROBLEM), headers
    assert body["code"] == code, body


async def test_the_right_password_gets_a_platform_operator_token(
    http: aiohttp.ClientSession, staff_api: ApiServer
) -> None:
    """A platform account's token is an operator token without hospitals, of the
    configured life, served by an operator route; the sign-in's time is kept."""
    username, password = new_account(staff_api)
    status, body, headers = await sign_in(http, staff_api, username, password)
    assert status == 200, body
    assert headers["Cache-Control"] == "no-store"
    assert body["account_id"] == username
    assert body["token_type"] == "Bearer"
    assert body["expires_in"] == 7200
    assert "hospitals" not in body
    claims = jwt.decode(body["access_token"], options={"verify_signature": False})
    assert claims["sub"] == username
    assert claims["roles"] == ["operator"]
    assert "hospitals" not in claims
    assert claims["exp"] - claims["iat"] == 7200
    hospital = await Catalogue(staff_api, http).create()
    auth = {"Authorization": f"Bearer {body['access_token']}"}
    day = date.today().isoformat()
    status, served, _ = await call(
        http,
        "GET",
        f"{staff_api.url}/v1/operator/hospitals/{hospital.hospital_id}/day?date={day}",
        headers=auth,
    )
    assert status == 200, served
    listed = staff(staff_api, "list")
    assert listed.returncode == 0, listed.stderr
    line = next(x for x in listed.stdout.splitlines() if x.startswith(username + "\t"))
    assert "\tplatform\tenabled\t" in line
    assert not line.endswith("\t-")


async def test_a_hospital_operator_token_reaches_its_hospitals_only(
    http: aiohttp.ClientSession, staff_api: ApiServer
) -> None:
    """A hospital account's token names its hospitals; an operator route serves its
    hospital and answers another's 404, as a missing one."""
    mine = await Catalogue(staff_api, http).create()
    other = await Catalogue(staff_api, http).create()
    username, password = new_account(staff_api, "--hospital", mine.hospital_id)
    status, body, _ = await sign_in(http, staff_api, username, password)
    assert status == 200, body
    assert body["hospitals"] == [mine.hospital_id]
    claims = jwt.decode(body["access_token"], options={"verify_signature": False})
    assert claims["hospitals"] == [mine.hospital_id]
    auth = {"Authorization": f"Bearer {body['access_token']}"}
    day = date.today().isoformat()
    base = f"{staff_api.url}/v1/operator/hospitals"
    status, _, _ = await call(
        http, "GET", f"{base}/{mine.hospital_id}/day?date={day}", headers=auth
    )
    assert status == 200
    answer = await call(http, "GET", f"{base}/{other.hospital_id}/day?date={day}", headers=auth)
    assert_problem(answer, 404, "not_found")


async def test_a_wrong_password_and_an_unknown_username_answer_the_same(
    http: aiohttp.ClientSession, staff_api: ApiServer
) -> None:
    """Same status, code and body for both, and no quicker for the unknown username (its
    password is hashed too)."""
    username, _ = new_account(staff_api)
    wrong = await sign_in(http, staff_api, username, "not-the-password-at-all")
    unknown = await sign_in(http, staff_api, uid("nobody").lower(), "not-the-password-at-all")
    assert_problem(wrong, 401, "staff_login_failed")
    assert_problem(unknown, 401, "staff_login_failed")
    assert wrong[1] == unknown[1]

    async def took(name: str) -> float:
        loop = asyncio.get_running_loop()
        started = loop.time()
        await sign_in(http, staff_api, name, "not-the-password-at-all")
        return loop.time() - started

    # The dummy hash costs what a real one does: the unknown name is not many times quicker.
    known = min([await took(username) for _ in range(2)])
    nobody = min([await took(uid("nobody").lower()) for _ in range(2)])
    assert nobody > known / 3, (nobody, known)


async def test_wrong_passwords_lock_the_account_until_the_lock_ends(
    http: aiohttp.ClientSession, staff_api: ApiServer
) -> None:
    """The wrong password that reaches the limit locks the account (429 with
    Retry-After); meanwhile the right password is refused too; after the lock it signs
    in, and a new password from the CLI clears a lock at once."""
    username, password = new_account(staff_api)
    for _ in range(MAX_FAILURES - 1):
        assert_problem(
            await sign_in(http, staff_api, username, "wrong-password-1"), 401, "staff_login_failed"
        )
    locking = await sign_in(http, staff_api, username, "wrong-password-1")
    assert_problem(locking, 429, "staff_login_locked")
    assert 1 <= int(locking[2]["Retry-After"]) <= LOCK_S
    assert_problem(await sign_in(http, staff_api, username, password), 429, "staff_login_locked")
    await asyncio.sleep(LOCK_S + 0.5)
    status, body, _ = await sign_in(http, staff_api, username, password)
    assert status == 200, body

    for _ in range(MAX_FAILURES):
        await sign_in(http, staff_api, username, "wrong-password-2")
    assert_problem(await sign_in(http, staff_api, username, password), 429, "staff_login_locked")
    renewed = "a-brand-new-password"
    done = staff(staff_api, "password", username, stdin=renewed + "\n")
    assert done.returncode == 0, done.stderr
    assert_problem(await sign_in(http, staff_api, username, password), 401, "staff_login_failed")
    status, body, _ = await sign_in(http, staff_api, username, renewed)
    assert status == 200, body


async def test_a_disabled_account_is_refused(
    http: aiohttp.ClientSession, staff_api: ApiServer
) -> None:
    """After `inventory staff disable`, the right password answers 403; a wrong one is
    still the plain wrong-password answer (nothing said of the account)."""
    username, password = new_account(staff_api)
    done = staff(staff_api, "disable", username)
    assert done.returncode == 0, done.stderr
    assert_problem(
        await sign_in(http, staff_api, username, password), 403, "staff_account_disabled"
    )
    assert_problem(
        await sign_in(http, staff_api, username, "wrong-password-3"), 401, "staff_login_failed"
    )
    listed = staff(staff_api, "list")
    assert f"{username}\tplatform\tdisabled" in listed.stdout


async def test_sign_ins_are_limited_per_address(
    http: aiohttp.ClientSession, staff_api: ApiServer
) -> None:
    """Past the limit an address is refused (429 rate_limited) before any password is
    checked; another address goes on."""
    headers = address()
    for _ in range(PER_ADDRESS):
        await sign_in(http, staff_api, "nobody-here", "some-password-x", headers)
    answer = await sign_in(http, staff_api, "nobody-here", "some-password-x", headers)
    assert_problem(answer, 429, "rate_limited")
    assert int(answer[2]["Retry-After"]) >= 1
    assert_problem(
        await sign_in(http, staff_api, "nobody-here", "some-password-x"), 401, "staff_login_failed"
    )


async def test_a_username_is_read_in_lower_case(
    http: aiohttp.ClientSession, staff_api: ApiServer
) -> None:
    username, password = new_account(staff_api)
    status, body, _ = await sign_in(http, staff_api, f" {username.upper()} ", password)
    assert status == 200, body
    assert body["account_id"] == username


@pytest.mark.parametrize(
    "body",
    [
        {},
        {"username": "ops"},
        {"password": "some-password-x"},
        {"username": "", "password": "some-password-x"},
        {"username": "ops", "password": ""},
        {"username": "x" * 65, "password": "some-password-x"},
        {"username": "ops", "password": "p" * 257},
        {"username": 7, "password": "some-password-x"},
        {"username": "ops", "password": "some-password-x", "extra": 1},
    ],
)
async def test_bad_bodies_are_422(
    http: aiohttp.ClientSession, staff_api: ApiServer, body: dict[str, Any]
) -> None:
    answer = await call(
        http, "POST", staff_api.url + "/v1/auth/staff/login", json=body, headers=address()
    )
    assert_problem(answer, 422, "validation_failed")


async def test_no_password_reaches_the_log_or_the_database(
    http: aiohttp.ClientSession, staff_api: ApiServer
) -> None:
    """Right and wrong passwords appear neither in the API's log nor in the table (only
    the argon2id hash is stored); neither does an unknown username."""
    username, password = new_account(staff_api)
    assert (await sign_in(http, staff_api, username, password))[0] == 200
    await sign_in(http, staff_api, username, "wrong-but-logged-nowhere")
    await sign_in(http, staff_api, "typed-" + password, "any-password-here")
    log = staff_api.log_path.read_text(errors="replace")
    # Who signed in is logged; an unknown username is not (often a mistyped password).
    assert "staff.signed_in" in log
    assert username in log
    assert "staff.login_unknown_username" in log
    assert password not in log
    assert "wrong-but-logged-nowhere" not in log
    connection = await asyncpg.connect(staff_api.database_url)
    try:
        row = await connection.fetchrow(
            "SELECT password_hash FROM staff_accounts WHERE username = $1", username
        )
    finally:
        await connection.close()
    assert row["password_hash"].startswith("$argon2id$")
    assert password not in row["password_hash"]


def test_the_cli_refuses_bad_input_with_its_exit_codes(staff_api: ApiServer) -> None:
    """Bad usernames and short passwords are usage errors (2); a taken username, an
    unknown account or hospital are refusals (1); a password is never an argument."""
    username, _ = new_account(staff_api)
    taken = staff(staff_api, "add", username, "--platform", stdin="another-long-password\n")
    assert taken.returncode == 1
    assert "is taken" in taken.stderr
    short = staff(staff_api, "add", uid("s").lower(), "--platform", stdin="short\n")
    assert short.returncode == 2
    assert "12-256 characters" in short.stderr
    bad = staff(staff_api, "add", "Bad Name", "--platform", stdin="long-enough-password\n")
    assert bad.returncode == 2
    assert "bad username" in bad.stderr
    nowhere = staff(
        staff_api,
        "add",
        uid("s").lower(),
        "--hospital",
        "no-such-hospital",
        stdin="long-enough-password\n",
    )
    assert nowhere.returncode == 1
    assert "no such hospital" in nowhere.stderr
    assert (
        staff(staff_api, "password", "no-such-user", stdin="long-enough-password\n").returncode == 1
    )
    assert staff(staff_api, "disable", "no-such-user").returncode == 1
    neither = staff(staff_api, "add", uid("s").lower(), stdin="long-enough-password\n")
    assert neither.returncode == 2  # --platform or --hospital is required
    argv = staff(staff_api, "add", uid("s").lower(), "--platform", "--password", "x" * 20)
    assert argv.returncode == 2
    assert "unrecognized arguments" in argv.stderr


def _own_terminal() -> None:
    """In the child: a session of its own whose controlling terminal is its stdin (the
    pty), so getpass reads from it as from a person's terminal."""
    os.setsid()
    fcntl.ioctl(0, termios.TIOCSCTTY, 0)


def _expect(fd: int, text: str, seen: bytearray, timeout_s: float = 30.0) -> None:
    """Read the terminal until ``text`` appears."""
    deadline = time.monotonic() + timeout_s
    while text.encode() not in seen:
        left = deadline - time.monotonic()
        assert left > 0, (text, bytes(seen))
        ready, _, _ = select.select([fd], [], [], left)
        if ready:
            try:
                chunk = os.read(fd, 1024)
            except OSError:  # the child closed the terminal
                chunk = b""
            assert chunk, (text, bytes(seen))
            seen += chunk


def _at_terminal(api: ApiServer, args: list[str], answers: list[str]) -> tuple[int, str]:
    """``inventory staff ARGS`` at a terminal, typing each answer after each prompt."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("INVENTORY_")}
    env.update({k: v for k, v in api.env.items() if k.startswith("INVENTORY_")})
    primary, secondary = os.openpty()
    process = subprocess.Popen(
        [sys.executable, "-m", "inventory", "staff", *args],
        stdin=secondary,
        stdout=secondary,
        stderr=secondary,
        env=env,
        preexec_fn=_own_terminal,
    )
    os.close(secondary)
    seen = bytearray()
    try:
        for prompt, answer in zip(["Password: ", "Password again: "], answers, strict=True):
            _expect(primary, prompt, seen)
            os.write(primary, answer.encode() + b"\n")
        status = process.wait(timeout=60)
        with contextlib.suppress(OSError):
            while select.select([primary], [], [], 0.2)[0] and (chunk := os.read(primary, 1024)):
                seen += chunk
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
        os.close(primary)
    return status, seen.decode(errors="replace")


async def test_at_a_terminal_the_password_is_asked_twice_unechoed(
    http: aiohttp.ClientSession, staff_api: ApiServer
) -> None:
    """At a terminal `staff add` asks twice without echo (two that differ are refused,
    2) and the account then signs in with it."""
    username, password = uid("tty").lower(), "typed-at-a-terminal"
    status, shown = _at_terminal(staff_api, ["add", username, "--platform"], [password, "other"])
    assert status == 2, shown
    assert "differ" in shown
    assert password not in shown
    status, shown = _at_terminal(staff_api, ["add", username, "--platform"], [password] * 2)
    assert status == 0, shown
    assert password not in shown
    assert (await sign_in(http, staff_api, username, password))[0] == 200
