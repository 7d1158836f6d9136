"""Personal data never reaches a log line unmasked.

An API process is fed requests that put resident ID numbers and mobile numbers where a
careless logger would write them (paths, bad bodies, headers, a request that fails
inside Postgres); its log must hold none of them unmasked. Canaries planted in a copy
of that log prove the scanner finds what it looks for. Finally every log file the test
session's processes wrote (API, worker, persister: ``*.log`` under the session's
temporary folder, the database servers' own logs aside) is scanned the same way; this
module sorts after tests/api, tests/db and tests/durability, so a full run scans theirs.
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
from collections.abc import Iterator
from datetime import date
from pathlib import Path
from typing import Any
from urllib.parse import quote

import aiohttp
import orjson
import pytest

from inventory.devtools.servers import free_port
from inventory.privacy.identity import find_pii, make_resident_id
from tests.databases import Databases

from .api.conftest import ApiServer, api_env, running_api, verified_database
from .api.helpers import patient_body, register_patient, uid

#: Logs of servers this project does not write (and that never see personal data).
FOREIGN_LOGS = frozenset({"redis.log", "postgres.log"})

ID_NUMBER = make_resident_id(date(1987, 3, 14), "female", seq=271)
OTHER_ID_NUMBER = make_resident_id(date(1991, 11, 2), "male", seq=33)
PHONE = "13912345678"
#: The request id of the last careless request: once it is logged, all of them are.
DONE = "careless-requests-done"


def _strings(value: Any) -> Iterator[str]:
    if isinstance(value, str):
        yield value
    elif isinstance(value, int | float) and not isinstance(value, bool):
        yield str(value)
    elif isinstance(value, dict):
        for key, item in value.items():
            yield str(key)
            yield from _strings(item)
    elif isinstance(value, list):
        for item in value:
            yield from _strings(item)


def pii_in_line(line: str) -> list[str]:
    """Unmasked ID numbers and mobile numbers in one log line: in its raw text, and in
    every key and value once decoded (JSON escapes like ``\\uff11`` hide digits)."""
    found = list(find_pii(line))
    try:
        decoded = orjson.loads(line)
    except orjson.JSONDecodeError:
        return found
    for text in _strings(decoded):
        found += [item for item in find_pii(text) if item not in found]
    return found


def scan(path: Path) -> list[tuple[int, str]]:
    """(line number, what was found) for every leak in the file at ``path``."""
    leaks = []
    with path.open(encoding="utf-8", errors="replace") as lines:
        for number, line in enumerate(lines, 1):
            leaks += [(number, item) for item in pii_in_line(line.rstrip("\n"))]
    return leaks


def suite_logs(base: Path) -> list[Path]:
    """Every log file the session's processes wrote under ``base``."""
    return sorted(p for p in base.rglob("*.log") if p.is_file() and p.name not in FOREIGN_LOGS)


@pytest.fixture(scope="module")
def pii_api(
    redis_server: Any, databases: Databases, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[ApiServer]:
    """An API process of this module's own, logging to its own file."""
    database_url = verified_database(redis_server.url, databases)
    env = api_env(redis_server.url, database_url, free_port())
    with running_api(env, tmp_path_factory.mktemp("pii") / "api.log") as server:
        yield server


async def _careless_requests(api: ApiServer) -> None:
    """Requests carrying personal data where a careless logger would write it."""
    account = uid("acct")
    headers = api.headers(account)
    operator = api.headers("ops", operator=True)
    async with aiohttp.ClientSession() as http:
        await register_patient(
            api,
            http,
            account,
            resident_id=ID_NUMBER,
            birth_date="1987-03-14",
            gender="female",
            phone=PHONE,
            name="王小明",
        )
        calls: list[tuple[str, str, dict[str, Any]]] = [
            # Invalid fields next to valid personal data: 422.
            ("POST", "/v1/patients", {"json": patient_body(resident_id=ID_NUMBER, gender="x")}),
            ("POST", "/v1/patients", {"json": patient_body(phone=f"+86 {PHONE}", birth_date=1)}),
            # Not JSON at all, personal data inside: 400.
            ("POST", "/v1/patients", {"data": f'{{"resident_id": "{OTHER_ID_NUMBER}", '}),
            # Personal data in paths, grouped and in full-width digits: 404/405.
            ("GET", f"/v1/patients/{ID_NUMBER}", {}),
            ("DELETE", f"/v1/holds/{PHONE}", {}),
            ("GET", "/138-1234-5678", {}),
            ("GET", "/" + quote("１３８１２３４５６７８"), {}),
            # ...in query strings: 422 / 404.
            ("GET", f"/api/doctor/schedule?deptId={ID_NUMBER}&date=2026-01-01", {}),
            ("GET", f"/v1/bookings?limit={PHONE}", {}),
            # A hold for somebody else's (made-up) patient: 404.
            ("POST", "/v1/holds", {"json": {"slot_id": PHONE, "patient_id": ID_NUMBER}}),
            # A failure inside Postgres (NUL in a name): answered 500 or 422.
            ("PUT", f"/v1/operator/hospitals/h-{PHONE}", {"json": {"name": f"{ID_NUMBER}\x00"}}),
        ]
        for method, path, kwargs in calls:
            call_headers = dict(operator if "/operator/" in path else headers)
            call_headers["Idempotency-Key"] = uid("k")
            if "data" in kwargs:
                call_headers["Content-Type"] = "application/json"
            async with http.request(method, api.url + path, headers=call_headers, **kwargs) as r:
                await r.read()
        # Personal data in headers: a request id and a token.
        for extra in ({"X-Request-Id": PHONE}, {"Authorization": f"Bearer {ID_NUMBER}"}):
            async with http.get(api.url + "/v1/patients", headers=extra) as answer:
                await answer.read()
        async with http.get(api.url + "/v1/hospitals", headers={"X-Request-Id": DONE}) as answer:
            await answer.read()


async def _log_settled(path: Path, marker: str) -> str:
    """The log once the line with ``marker`` was written."""
    text = ""
    for _ in range(100):
        text = await asyncio.to_thread(path.read_text, encoding="utf-8", errors="replace")
        if marker in text:
            return text
        await asyncio.sleep(0.05)
    raise AssertionError(f"{marker!r} never reached the log")


async def test_api_log_has_no_unmasked_personal_data(pii_api: ApiServer) -> None:
    """After requests full of ID numbers and phones, the API's log holds none unmasked,
    and holds their masked forms (the data did reach the logger)."""
    await _careless_requests(pii_api)
    text = await _log_settled(pii_api.log_path, DONE)
    assert scan(pii_api.log_path) == []
    assert ID_NUMBER[:3] + "*" * 13 + ID_NUMBER[-2:] in text
    assert "139******78" in text
    assert "138********78" in text


async def test_scanner_finds_planted_canaries(pii_api: ApiServer, tmp_path: Path) -> None:
    """Leaks planted in a copy of a clean log (raw, JSON-escaped full-width, grouped,
    in a key, as a number) are each found; the copy's original lines stay clean."""
    await _log_settled(pii_api.log_path, "serving on")
    copy = tmp_path / "api.log.canary"
    shutil.copy(pii_api.log_path, copy)
    clean_lines = len(copy.read_text(encoding="utf-8").splitlines())
    assert scan(copy) == []
    planted = [
        orjson.dumps({"event": "leak", "resident_id": ID_NUMBER}).decode(),
        json.dumps({"event": "leak", "phone": "１３９１２３４５６７８"}),  # \uff11 escapes
        "Traceback (most recent call last): ValueError: bad phone 139-1234-5678",
        orjson.dumps({"event": "leak", OTHER_ID_NUMBER: "as a key"}).decode(),
        orjson.dumps({"event": "leak", "n": int(PHONE)}).decode(),
    ]
    assert "\\uff11" in planted[1]
    with copy.open("a", encoding="utf-8") as out:
        out.write("\n".join(planted) + "\n")
    leaks = scan(copy)
    assert [number for number, _ in leaks] == [clean_lines + i for i in range(1, 6)], leaks
    assert leaks[0][1] == ID_NUMBER
    assert leaks[3][1] == OTHER_ID_NUMBER


def test_every_log_of_the_suite_is_clean(
    pii_api: ApiServer, tmp_path_factory: pytest.TempPathFactory
) -> None:
    """No log file written by this run's processes so far holds an unmasked ID number or
    mobile number."""
    base = tmp_path_factory.getbasetemp()
    if os.environ.get("PYTEST_XDIST_WORKER"):
        base = base.parent  # every worker's folder (popen-gw0, popen-gw1, ...), not ours alone
    logs = suite_logs(base)
    assert pii_api.log_path in logs
    leaks = {str(path): found for path in logs if (found := scan(path))}
    assert leaks == {}


def test_generated_request_ids_never_look_like_personal_data() -> None:
    """Request ids the API makes (logged unmasked) never contain what the scanner would
    call an ID number or a mobile number."""
    from inventory.api.observability import new_request_id

    ids = [new_request_id() for _ in range(20_000)]
    assert len(set(ids)) == len(ids)
    assert not [found for found in ids if find_pii(found)]
