"""The bare side: ``POST /v1/holds`` parsed with orjson and answered with a JSON object of
about the API's size, nothing else (``python -m bench.http.child bare``)."""

from __future__ import annotations

import asyncio
import signal

from bench.http.plan import PATH


def serve_bare(host: str, port: int, *, reuse_port: bool) -> None:
    """Serve the bare ``POST /v1/holds`` (and ``GET /healthz``) until SIGTERM or SIGINT."""
    import orjson
    import uvloop
    from aiohttp import web

    async def hold(request: web.Request) -> web.Response:
        body = orjson.loads(await request.read())
        # About the size of the API's answer (a hold view).
        answer = {
            "hold_id": "bench-department-0000.20261126.abcdefghijklmnopqrstuvwx",
            "slot_id": body["slot_id"],
            "schedule_id": "bench-doctor-00-20261126-morning",
            "patient_id": body["patient_id"],
            "channel": body["channel"],
            "state": "held",
            "amount_fen": 5000,
            "created_at": "2026-11-25T08:00:00.123000Z",
            "deadline": "2026-11-25T08:15:00.123000Z",
            "extended": False,
        }
        return web.Response(status=201, body=orjson.dumps(answer), content_type="application/json")

    async def healthz(request: web.Request) -> web.Response:
        return web.Response(body=b'{"status":"ok"}', content_type="application/json")

    async def main() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        app = web.Application()
        app.router.add_post(PATH, hold)
        app.router.add_get("/healthz", healthz)
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        await web.TCPSite(runner, host, port, reuse_port=reuse_port, backlog=4096).start()
        await stop.wait()
        await runner.cleanup()

    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        runner.run(main())
