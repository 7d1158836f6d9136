"""What a person reads in an error answer: the code table has every code in Chinese and
English, answers are Chinese unless ``Accept-Language`` prefers English, codes never
change with the language, and every 404 is ``not_found`` (docs/api.md says the same)."""

from __future__ import annotations

import importlib
import pkgutil
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import aiohttp
import orjson
import pytest

import inventory
from inventory.api import problems
from inventory.errors import (
    DETAILS,
    MESSAGES,
    HoldNotFoundError,
    InventoryError,
    NotOwnerError,
    ScheduleNotFoundError,
    SlotNotFoundError,
    detail_in,
    language_of,
    title_in,
)

from .conftest import ApiServer

CJK = re.compile(r"[\u4e00-\u9fff]")
DOCS = Path(__file__).resolve().parents[2] / "docs" / "api.md"


def _every_error_class() -> Iterator[type[InventoryError]]:
    """Every InventoryError subclass of the package (its modules imported first)."""
    for module in pkgutil.walk_packages(inventory.__path__, "inventory."):
        importlib.import_module(module.name)
    todo: list[type[InventoryError]] = [InventoryError]
    while todo:
        cls = todo.pop()
        yield cls
        todo.extend(cls.__subclasses__())


def test_every_code_has_a_chinese_and_an_english_title() -> None:
    """Walk the error classes and the edge's codes: each has both messages in the table."""
    missing = []
    codes = {cls.code: cls for cls in _every_error_class()}
    for code in [*codes, *problems._HTTP_CODES.values(), "internal_error", "http_error"]:
        message = MESSAGES.get(code)
        if message is None or not CJK.search(message.zh) or not message.en.strip():
            missing.append(code)
            continue
        assert not CJK.search(message.en.replace("(停诊)", "")), (code, message.en)
    assert not missing, f"codes without both messages in inventory.errors.MESSAGES: {missing}"


def test_a_class_title_is_its_english_message() -> None:
    """A class's own title is the table's English (the two cannot drift)."""
    for cls in _every_error_class():
        if "title" in vars(cls):
            assert cls.title == MESSAGES[cls.code].en, cls


def test_every_chinese_detail_is_chinese() -> None:
    """Every detail translation is Chinese and keeps the number placeholder."""
    for english, chinese in DETAILS.items():
        assert CJK.search(chinese), english
        assert ("{n}" in english) == ("{n}" in chinese), english


@pytest.mark.parametrize(
    ("header", "language"),
    [
        (None, "zh"),
        ("", "zh"),
        ("zh-CN", "zh"),
        ("en", "en"),
        ("en-US,en;q=0.9", "en"),
        ("zh-CN,zh;q=0.9,en;q=0.8", "zh"),
        ("zh;q=0.5, en;q=0.8", "en"),
        ("en;q=0, zh;q=0.1", "zh"),
        ("EN-gb;Q=0.7", "en"),
        ("fr-FR, de;q=0.9", "zh"),
        ("fr, en;q=0.3", "en"),
        ("*", "zh"),
        ("en;q=abc", "zh"),
        ("en;q=0.5, zh;q=0.5", "en"),
        ("en;q=2", "zh"),
    ],
)
def test_accept_language_picks_the_answer_language(header: str | None, language: str) -> None:
    """Accept-Language with q-values: English only when preferred; Chinese by default."""
    assert language_of(header) == language


def test_details_are_translated_with_their_numbers() -> None:
    """A known detail is Chinese (numbers kept); an unknown one is English-only."""
    assert detail_in("no such hold", "zh") == "锁号不存在"
    assert detail_in("the body is larger than 16384 bytes", "zh") == "请求体超过 16384 字节"
    assert detail_in("the body is larger than 16384 bytes", "en") == (
        "the body is larger than 16384 bytes"
    )
    assert detail_in("something nobody translated", "zh") is None
    assert title_in("no_such_code", "en") == MESSAGES["http_error"].en


@pytest.mark.parametrize(
    "error", [HoldNotFoundError, NotOwnerError, SlotNotFoundError, ScheduleNotFoundError]
)
def test_every_404_is_not_found(error: type[InventoryError]) -> None:
    """The store's own 404 refusals are answered not_found like every other 404."""
    body = orjson.loads(problems.error_response(error()).body)  # type: ignore[arg-type]
    assert body["code"] == "not_found"
    assert body["type"].endswith("/not_found")
    assert body["title"] == MESSAGES["not_found"].zh


def test_docs_list_only_not_found_for_404() -> None:
    """docs/api.md's status table lists the one 404 code the API sends."""
    row = next(line for line in DOCS.read_text().splitlines() if line.startswith("| 404 |"))
    assert re.findall(r"`([a-z_]+)`", row) == ["not_found"], row


async def _problem(
    http: aiohttp.ClientSession, url: str, headers: dict[str, str]
) -> tuple[int, dict[str, Any], aiohttp.typedefs.LooseHeaders]:
    async with http.get(url, headers=headers) as answer:
        return answer.status, orjson.loads(await answer.read()), answer.headers


async def test_problems_are_chinese_by_default_and_english_on_request(
    api_server: ApiServer, http: aiohttp.ClientSession
) -> None:
    """Same code in both languages; title and detail follow Accept-Language."""
    url = api_server.url + "/v1/holds/d-none.20300101." + "a" * 24
    account = api_server.headers("acc-lang")
    status, zh, headers = await _problem(http, url, account)
    assert status == 404
    assert zh["code"] == "not_found"
    assert zh["title"] == "未找到"
    assert zh["detail"] == "锁号不存在"
    assert headers["Content-Language"] == "zh-CN"
    status, en, headers = await _problem(
        http, url, {**account, "Accept-Language": "zh;q=0.3, en-US;q=0.9"}
    )
    assert status == 404
    assert en["code"] == "not_found"
    assert en["title"] == "Not found"
    assert en["detail"] == "no such hold"
    assert headers["Content-Language"] == "en"
    status, unauth, _ = await _problem(http, url, {"Accept-Language": "en"})
    assert (status, unauth["code"], unauth["title"]) == (
        401,
        "unauthenticated",
        "A valid bearer token is required",
    )
    status, legacy, _ = await _problem(
        http, api_server.url + "/api/appointment/available?scheduleId=s-none", {}
    )
    assert (status, legacy["error"], legacy["message"]) == (404, "not_found", "未找到")
