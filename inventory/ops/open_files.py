"""The process's open-file limit: a waiting room holds one connection per patient.

Each patient following a ticket keeps one connection (a file) open until its answer,
so an API process serving a crowd needs a file per patient. Linux starts processes
with a low soft limit (often 1,024) under a higher hard one; the soft limit may be
raised to the hard one by anyone, which :func:`raise_soft_limit` does at start-up (as
Go's runtime does for every program since 1.19). Raising the hard limit is the
deployment's part (systemd's ``LimitNOFILE``, Docker's ``--ulimit nofile``,
``ulimit -Hn``; the bundled compose file sets 65,536): see docs/release-day.md,
"Limits".
"""

from __future__ import annotations

import resource


def raise_soft_limit() -> tuple[int, int]:
    """Raise the soft open-file limit to the hard one; returns (soft, hard) after."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard == resource.RLIM_INFINITY or soft == hard:
        return soft, hard
    try:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    except (ValueError, OSError):
        return soft, hard
    return hard, hard
