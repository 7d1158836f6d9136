"""Benchmarks run from a checkout (``python -m bench <benchmark> ...``), not shipped with
the service and not run by the tests beyond a smoke test each.

Each benchmark measures the project's code against a bare stand-in in the same run and
reports ratios taken inside each round, as docs/benchmarks.md explains. The crowd
(``python -m bench.crowd``, :mod:`bench.crowd`) is the exception: a release crowd
against a real API process and worker, compared build against build, run after run.
"""

from __future__ import annotations
