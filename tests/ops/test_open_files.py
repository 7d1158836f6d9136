"""The API raises its soft open-file limit to the hard one at start-up: a waiting
room's crowd holds one connection (a file) per patient."""

from __future__ import annotations

import resource
import subprocess
import sys

import pytest


def _lowered() -> None:
    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (min(256, hard), hard))


def test_a_process_started_with_a_low_soft_limit_raises_it_to_the_hard_one() -> None:
    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard <= 256:
        pytest.skip(f"the hard open-file limit here is {hard}: nothing to raise")
    code = (
        "import resource; from inventory.ops.open_files import raise_soft_limit;"
        "before = resource.getrlimit(resource.RLIMIT_NOFILE)[0];"
        "after = raise_soft_limit();"
        "print(before, *after, resource.getrlimit(resource.RLIMIT_NOFILE)[0])"
    )
    done = subprocess.run(
        [sys.executable, "-c", code],
        preexec_fn=_lowered,
        capture_output=True,
        text=True,
        check=True,
    )
    before, soft, reported_hard, now = (int(v) for v in done.stdout.split())
    assert before == 256
    assert (soft, reported_hard, now) == (hard, hard, hard)
