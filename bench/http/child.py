"""The http benchmark's child processes, ``python -m bench.http.child <role>``: ``bare``
(the bare server), ``floor`` (the floor server) and ``load`` (the Python generator,
which prints its figures as one JSON line). Their arguments are parsed in bench/cli.py
with every other benchmark's."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Sequence
from pathlib import Path

from bench.cli import build_child_parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run one child role until it is done (load) or stopped (the servers)."""
    args = build_child_parser().parse_args(argv)
    if args.role == "bare":
        from bench.http.bare_server import serve_bare

        serve_bare(args.host, args.port, reuse_port=args.reuse_port)
        return 0
    if args.role == "floor":
        from bench.http.floor import serve_floor

        serve_floor(args.host, args.port, reuse_port=args.reuse_port)
        return 0
    import uvloop

    from bench.http.loadgen import run_load

    load = run_load(
        Path(args.plan),
        host=args.host,
        port=args.port,
        mode=args.mode,
        connections=args.connections,
        seconds=args.seconds,
        rate=args.rate,
        start=args.start,
    )
    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        result = runner.run(load)
    print(json.dumps(result), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
