"""Reserves through the real HTTP API against a bare aiohttp JSON POST handler, same run.

``python -m bench http`` answers: what fraction of a bare aiohttp handler's throughput
does ``POST /v1/holds`` keep, and how much worse is its p99 at the same offered rate?

Both servers run side by side for the whole run, as the same number of processes, on
uvloop with orjson, and get byte-for-byte the same kind of request (bearer token,
Idempotency-Key, an ~80-byte JSON body) from the same generator:

- **api**: ``inventory serve --workers N`` on a freshly migrated database: JWT check,
  Idempotency-Key, body validation, the slot's location and the patient's ownership
  (both cached after first use), ``SlotStore.reserve`` with the rate-limit buckets in
  the same script call;
- **bare**: N aiohttp processes whose ``POST /v1/holds`` parses the JSON body with
  orjson and answers 201 with a JSON object of about the API's size; nothing else;
- **floor** (with ``--floor``): the bare handler plus the API's own ``SlotStore.reserve``
  and nothing else (:mod:`bench.http.floor`): what any handler reserving through
  this store can reach here; measured closed loop only, right after the two maxima.

The load is realistic rather than a single hot key: a hospital with ``departments`` x
``days`` department-days of released schedules (slots of capacity 10**9: nothing sells
out), ``patients`` accounts with one real-name patient each (registered through
:class:`~inventory.record.patients.PatientRegistry`), pre-minted tokens, rate limits set far
above the load (but still checked). Request ``i`` books patient ``i mod P`` on
department-day ``(i div P) mod D``: every patient appears once per P requests (so the
warm-up fills the API's caches) and no patient asks twice for the same department-day
(the one-open-hold-per-day rule) until ``P x D`` requests, which the run stays under.

Each round runs, sides interleaved (api first in odd rounds, bare first in even ones):

1. **max**: closed loop, ``connections`` keep-alive connections, each sending its next
   request as soon as the answer arrives (wrk when installed, else the Python generator);
2. **paced**: open loop at ``paced_fraction`` of the bare side's max of *this* round, for
   both sides (the Python generator: each connection sends at exponential intervals and
   catches up at once when an answer came late; latency is measured from the write);
   this p99 ratio is the one the target is stated in;
3. **paced_api**: the same at ``paced_fraction`` of the *api's* max of this round, a rate
   both sides sustain: the latency the API adds when it is not queueing (informational,
   since the api cannot keep up with phase 2 while its throughput ratio is below 0.5).

Ratios (api/bare) are taken inside each round and reported as median [min-max]. A
non-2xx answer or socket error counts as an error, not as throughput.

``--sweep`` (or ``--plot PATH``) runs, on the same servers, data and generator, both sides
at a series of offered rates instead of rounds, and draws throughput and latency against
offered load (:mod:`bench.http.sweep`).

The generator is a separate process; it must never be the bottleneck: its CPU per
request is reported, and a generator above 90 % of a core is flagged. With one server
process on a machine of at least two CPUs, the servers are pinned to the last CPU and
the generator, Redis, Postgres and this process to the others (``--pin``).

Nothing outside the run is touched: Redis and Postgres are private (temporary folders)
unless URLs are given; with URLs, a fresh database is created on that Postgres server
and dropped at the end, the benchmark's Redis keys (its own department-day tags) are
deleted, and the API runs with the verified-store gate off instead of marking a server
verified that only the benchmark compared.

The package, one concern a module: :mod:`~bench.http.config` (what a run is),
:mod:`~bench.http.report` (what it measured), :mod:`~bench.http.plan` (the request
stream), :mod:`~bench.http.loadgen` (the Python generator), :mod:`~bench.http.bare_server`
and :mod:`~bench.http.floor` (the stand-ins), :mod:`~bench.http.cpu` (/proc accounting),
:mod:`~bench.http.processes` (starting, pinning and stopping servers),
:mod:`~bench.http.seeding` (database, catalogue, patients, tokens),
:mod:`~bench.http.live` (timed phases and rounds), :mod:`~bench.http.run` (a whole run),
:mod:`~bench.http.sweep` (the offered-load sweep) and :mod:`~bench.http.child` (the
child processes' entry point). The command line is bench/cli.py.
"""

from __future__ import annotations
