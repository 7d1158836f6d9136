"""One client process of ``python -m bench room``: its share of the patients join the
release's waiting room before T0, each follows its ticket by Server-Sent Events, and
the admitted reserve with their tokens. Run in several processes at once, so the client
side is not one event loop's limit."""

from __future__ import annotations

import asyncio
import time
import uuid
from dataclasses import dataclass, field
from typing import Any

import aiohttp
import orjson

#: Back-off after an answer that says "come back later" (429, 503) or a dropped stream.
RETRY_S = 0.2


@dataclass
class PatientResult:
    """One patient's run."""

    outcome: str = ""
    #: time.time() of the final answer (a hold, sold out, expired), 0 = none.
    final_at: float = 0.0
    joined_at: float = 0.0
    late: bool = False
    requests_after_join: int = 0
    statuses: dict[str, int] = field(default_factory=dict)


def _count(result: PatientResult, status: int) -> None:
    key = str(status)
    result.statuses[key] = result.statuses.get(key, 0) + 1


async def _join(
    http: aiohttp.ClientSession, url: str, release_id: str, token: str, patient: str
) -> tuple[PatientResult, dict[str, Any] | None]:
    result = PatientResult()
    headers = {"Authorization": f"Bearer {token}"}
    while True:
        async with http.post(
            f"{url}/v1/releases/{release_id}/tickets",
            json={"patient_id": patient},
            headers=headers,
        ) as answer:
            _count(result, answer.status)
            body = orjson.loads(await answer.read())
            if answer.status in (429, 503):
                await asyncio.sleep(RETRY_S)
                continue
            result.joined_at = time.time()
            if answer.status not in (200, 201):
                result.outcome = str(body.get("code", answer.status))
                result.final_at = time.time()
                return result, None
            return result, body


async def _follow(
    http: aiohttp.ClientSession,
    url: str,
    release_id: str,
    token: str,
    patient: str,
    slot_id: str,
    result: PatientResult,
    view: dict[str, Any],
    deadline: float,
) -> None:
    headers = {"Authorization": f"Bearer {token}"}
    ticket = view["ticket_id"]
    result.late = view.get("position") is not None and view["state"] != "open"
    while time.time() < deadline and view["outcome"] == "waiting":
        result.requests_after_join += 1
        try:
            async with http.get(
                f"{url}/v1/releases/{release_id}/tickets/{ticket}/events", headers=headers
            ) as answer:
                _count(result, answer.status)
                if answer.status != 200:
                    await asyncio.sleep(RETRY_S)
                    continue
                async for line in answer.content:
                    if line.startswith(b"data: "):
                        view = orjson.loads(line[6:])
        except (TimeoutError, aiohttp.ClientError):
            await asyncio.sleep(RETRY_S)
    if view["outcome"] != "admitted":
        result.outcome = view["outcome"]
        result.final_at = time.time() if view["outcome"] != "waiting" else 0.0
        return
    key = uuid.uuid4().hex
    while time.time() < deadline:
        result.requests_after_join += 1
        async with http.post(
            f"{url}/v1/holds",
            json={
                "slot_id": slot_id,
                "patient_id": patient,
                "channel": "app",
                "admission_token": view["admission_token"],
            },
            headers=headers | {"Idempotency-Key": key},
        ) as answer:
            _count(result, answer.status)
            body = orjson.loads(await answer.read())
            if answer.status in (429, 503):
                await asyncio.sleep(RETRY_S)
                continue
            result.outcome = "held" if answer.status == 201 else str(body.get("code"))
            result.final_at = time.time()
            return


async def _run(args: dict[str, Any]) -> list[dict[str, Any]]:
    connector = aiohttp.TCPConnector(limit=0, force_close=False)
    timeout = aiohttp.ClientTimeout(total=None, sock_connect=30)
    async with aiohttp.ClientSession(connector=connector, timeout=timeout) as http:
        joined = await asyncio.gather(
            *(
                _join(http, args["url"], args["release_id"], token, patient)
                for token, patient in args["accounts"]
            )
        )
        await asyncio.gather(
            *(
                _follow(
                    http,
                    args["url"],
                    args["release_id"],
                    token,
                    patient,
                    args["slot_id"],
                    result,
                    view,
                    args["deadline"],
                )
                for (token, patient), (result, view) in zip(args["accounts"], joined, strict=True)
                if view is not None
            )
        )
    return [vars(result) for result, _ in joined]


def run_client(args: dict[str, Any]) -> list[dict[str, Any]]:
    """One client process: ``args`` = url, release_id, slot_id, accounts [(token,
    patient)], deadline (time.time()); each patient's result as a dict."""
    return asyncio.run(_run(args))
