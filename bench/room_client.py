"""One client process of ``python -m bench room``: its share of the patients join the
release's waiting room before T0 and each then waits on its ticket's Server-Sent Events
stream for its outcome; the admitted reserve with their tokens. Run in several
processes at once, so the client side is not one event loop's limit.

Every patient joins first, a bounded number at once (as a crowd spread over the room's
window would), then opens its stream (again a bounded number at once: a stream's first
answer is work in flight) and waits on it with nothing in flight: that is what the room
asks of a front end. A stream refused or dropped (a process at its open-file limit
closes connections it cannot take) is opened again after a short pause. Each patient has its own
address (``X-Forwarded-For``), as behind the service's ingress. The streams are read over
a bare asyncio protocol (bench/room_stream.py): these processes share the API's cores,
and aiohttp's client cost them more at the sell-out than the API's answers cost it.
"""

from __future__ import annotations

import asyncio
import contextlib
import resource
import time
import urllib.parse
import uuid
from dataclasses import dataclass, field
from typing import Any

import aiohttp
import orjson

from bench import room_stream
from bench.crowd_client import address_of

#: Back-off after an answer that says "come back later" (429, 503) or a dropped stream.
RETRY_S = 0.2
#: Patients joining (and opening their stream) at once per client process.
JOINING_AT_ONCE = 24


@dataclass
class PatientResult:
    """One patient's run."""

    outcome: str = ""
    #: time.time() of the final answer (a hold, sold out, expired), 0 = none.
    final_at: float = 0.0
    joined_at: float = 0.0
    #: time.time() when its stream's first event came (the last opening's, 0 = none).
    streaming_at: float = 0.0
    #: time.time() when its stream said "admitted" (0 = never).
    admitted_at: float = 0.0
    #: time.time() when its stream said "sold_out" (0 = never).
    sold_out_seen_at: float = 0.0
    #: Requests after joining besides the stream: reserves and their retries.
    requests_after_join: int = 0
    #: Stream requests (1 unless a stream was refused or dropped and opened again).
    streams: int = 0
    #: Status events the stream delivered.
    events: int = 0
    statuses: dict[str, int] = field(default_factory=dict)
    #: A 5xx answer's problem code ("overloaded", ...), counted.
    codes_5xx: dict[str, int] = field(default_factory=dict)


def _count(result: PatientResult, status: int | str, body: Any = None) -> None:
    key = str(status)
    result.statuses[key] = result.statuses.get(key, 0) + 1
    if key.startswith("5"):
        code = str(body.get("code")) if isinstance(body, dict) else "-"
        result.codes_5xx[code] = result.codes_5xx.get(code, 0) + 1


async def _join(
    http: aiohttp.ClientSession,
    args: dict[str, Any],
    headers: dict[str, str],
    patient: str,
    joining: asyncio.Semaphore,
) -> tuple[PatientResult, str | None]:
    """Join the room (again on 429/503): the result so far and the stream's path
    (None when the join was refused for good)."""
    result = PatientResult()
    url, release_id = args["url"], args["release_id"]
    async with joining:
        while True:
            try:
                async with http.post(
                    f"{url}/v1/releases/{release_id}/tickets",
                    json={"patient_id": patient},
                    headers=headers,
                ) as answer:
                    _count(result, answer.status)
                    body = orjson.loads(await answer.read())
            except (TimeoutError, aiohttp.ClientError):
                _count(result, "connection_error")
                await asyncio.sleep(RETRY_S)
                continue
            if answer.status in (429, 503):
                await asyncio.sleep(RETRY_S)
                continue
            break
    result.joined_at = time.time()
    if answer.status not in (200, 201):
        result.outcome = str(body.get("code", answer.status))
        result.final_at = time.time()
        return result, None
    return result, f"/v1/releases/{release_id}/tickets/{body['ticket_id']}/events"


async def _follow(
    http: aiohttp.ClientSession,
    args: dict[str, Any],
    headers: dict[str, str],
    patient: str,
    result: PatientResult,
    stream_path: str,
    opening: asyncio.Semaphore,
) -> None:
    """Wait on the ticket's stream for the outcome; reserve once admitted."""
    deadline = args["deadline"]
    address = urllib.parse.urlsplit(args["url"])
    host, port = address.hostname or "127.0.0.1", address.port or 80
    view: dict[str, Any] = {"outcome": "waiting"}
    kept: room_stream.Kept | None = None
    while time.time() < deadline:
        # At most JOINING_AT_ONCE streams wait for their first answer at once (it is
        # work in flight for the API); waiting after it is not.
        await opening.acquire()
        released = False

        def on_view(got: dict[str, Any]) -> bool:
            nonlocal view, released
            if not released:
                released = True
                opening.release()
                result.streaming_at = time.time()
            result.events += 1
            view = got
            return bool(got["outcome"] != "waiting")

        result.streams += 1
        try:
            kept = await room_stream.follow(
                host,
                port,
                stream_path,
                headers,
                on_view,
                keep=lambda: view["outcome"] == "admitted",
            )
            _count(result, 200)
            break
        except room_stream.StreamEnded as ended:
            if ended.status:
                _count(result, ended.status)
            if ended.status in (0, 200):
                _count(result, "connection_error" if not ended.status else "stream_dropped")
        finally:
            if not released:
                opening.release()
        if view["outcome"] != "waiting":
            break
        await asyncio.sleep(RETRY_S)
    now = time.time()
    if view["outcome"] == "sold_out":
        result.sold_out_seen_at = now
    if view["outcome"] != "admitted":
        result.outcome = view["outcome"]
        result.final_at = now if view["outcome"] != "waiting" else 0.0
        return
    result.admitted_at = now
    key = uuid.uuid4().hex
    body = {
        "slot_id": args["slot_id"],
        "patient_id": patient,
        "channel": "app",
        "admission_token": view["admission_token"],
    }
    if kept is not None:
        # The first try on the stream's own connection (the API may be at its limit
        # of open connections); a retry on a new one.
        result.requests_after_join += 1
        try:
            status, answer = await kept.post("/v1/holds", headers | {"Idempotency-Key": key}, body)
        except room_stream.StreamEnded:
            _count(result, "connection_error")
        else:
            _count(result, status, answer)
            if status not in (429, 503):
                result.outcome = "held" if status == 201 else str((answer or {}).get("code"))
                result.final_at = time.time()
                return
        await asyncio.sleep(RETRY_S)
    while time.time() < deadline:
        result.requests_after_join += 1
        try:
            async with http.post(
                f"{args['url']}/v1/holds",
                json=body,
                # The connection goes with the answer: the API's open files are the
                # waiting crowd's, not idle kept-alive connections'.
                headers=headers | {"Idempotency-Key": key, "Connection": "close"},
            ) as reply:
                answered = orjson.loads(await reply.read())
                _count(result, reply.status, answered)
        except (TimeoutError, aiohttp.ClientError):
            _count(result, "connection_error")
            await asyncio.sleep(RETRY_S)
            continue
        if reply.status in (429, 503):
            await asyncio.sleep(RETRY_S)
            continue
        result.outcome = "held" if reply.status == 201 else str(answered.get("code"))
        result.final_at = time.time()
        return


async def _run(args: dict[str, Any]) -> list[dict[str, Any]]:
    connector = aiohttp.TCPConnector(limit=0, force_close=False)
    timeout = aiohttp.ClientTimeout(total=None, sock_connect=30)
    joining = asyncio.Semaphore(JOINING_AT_ONCE)
    headers = [
        {"Authorization": f"Bearer {token}", "X-Forwarded-For": address_of(index)}
        for index, token, _ in args["accounts"]
    ]
    patients = [patient for _, _, patient in args["accounts"]]
    async with aiohttp.ClientSession(connector=connector, timeout=timeout) as http:
        # Everyone joins first (a pooled connection each for a moment), then everyone
        # waits on a stream: a process serves as many streams as it may open files.
        joined = await asyncio.gather(
            *(_join(http, args, h, p, joining) for h, p in zip(headers, patients, strict=True))
        )
        await asyncio.gather(
            *(
                _follow(http, args, h, p, result, stream_path, joining)
                for h, p, (result, stream_path) in zip(headers, patients, joined, strict=True)
                if stream_path is not None
            )
        )
    return [vars(result) for result, _ in joined]


def run_client(args: dict[str, Any]) -> list[dict[str, Any]]:
    """One client process: ``args`` = url, release_id, slot_id, accounts [(index, token,
    patient)], deadline (time.time()); each patient's result as a dict."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    try:
        import uvloop
    except ImportError:  # pragma: no cover - uvloop is a dependency of the service
        return asyncio.run(_run(args))
    with contextlib.closing(uvloop.new_event_loop()) as loop:
        return loop.run_until_complete(_run(args))
