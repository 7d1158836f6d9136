"""Benchmarks run from a checkout (``python -m bench <benchmark> ...``), not shipped with
the service and not run by the tests beyond a smoke test each.

Each benchmark measures the project's code against a bare stand-in in the same run and
reports ratios taken inside each round, as docs/benchmarks.md explains.
"""

from __future__ import annotations
