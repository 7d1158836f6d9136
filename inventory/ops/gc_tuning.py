"""The garbage collector of a serving process, tuned once start-up is over.

Both ``inventory serve`` and the benchmarks' floor server call this, so the API and the
floor it is measured against collect alike.
"""

from __future__ import annotations

import gc

#: Container allocations (net of frees) between young-generation collections; CPython's
#: default is 700. A reserve allocates a few hundred short-lived containers that reference
#: counting frees anyway, so the default ran a collection every few requests.
GC_YOUNG_THRESHOLD = 20_000


def tune_garbage_collector() -> None:
    """After start-up: freeze what start-up allocated (modules, the app, pools) so that
    full collections stop rescanning it (their pauses under load showed in the API's p99:
    docs/benchmarks.md), and collect the young generation less often. Cycles are still
    collected."""
    gc.collect()
    gc.freeze()
    _, middle, old = gc.get_threshold()
    gc.set_threshold(GC_YOUNG_THRESHOLD, middle, old)
