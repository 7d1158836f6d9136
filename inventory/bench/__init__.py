"""Benchmarks run from the command line (``inventory bench ...``), not by the tests.

Each benchmark measures the project's code against a bare stand-in in the same run and
reports ratios taken inside each round, as docs/benchmarks.md explains.
"""

from __future__ import annotations
