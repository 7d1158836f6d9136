"""`python -m bench <benchmark> ...` (see bench/cli.py and docs/benchmarks.md)."""

from __future__ import annotations

from bench.cli import main

if __name__ == "__main__":
    raise SystemExit(main())
