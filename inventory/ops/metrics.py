"""Every Prometheus metric object, and how each process exposes them.

Names start with ``inventory_``. Labels are bounded: a route template, a method, a status,
a refusal code, an event type, a rate-limit bucket; never a slot, patient, account or
hold id (tests/test_metrics.py checks a real scrape). docs/metrics.md describes each one.

Three kinds of process export them, each only its own families:

* **api**: every ``inventory serve`` process. With ``--workers N`` the processes share
  a prometheus-client multiprocess directory (``PROMETHEUS_MULTIPROC_DIR``, set up by
  ``inventory serve``) and each one's ``/metrics`` aggregates all of them.
* **worker**: ``inventory worker`` on its own small HTTP port
  (``INVENTORY_WORKER_METRICS_PORT``), its own process only.
* **check**: ``inventory check --metrics-file PATH`` writes its findings for node
  exporter's textfile collector.

prometheus-client decides between single- and multi-process values when it is first
imported, from ``PROMETHEUS_MULTIPROC_DIR``: the environment must be set before then.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable, Iterable, Iterator, Mapping
from typing import Any, Final, Protocol

from prometheus_client import (
    REGISTRY,
    Counter,
    Gauge,
    Histogram,
    disable_created_metrics,
    generate_latest,
    write_to_textfile,
)
from prometheus_client.exposition import CONTENT_TYPE_PLAIN_0_0_4
from prometheus_client.metrics_core import Metric
from prometheus_client.multiprocess import MultiProcessCollector
from prometheus_client.registry import Collector

# ``*_created`` series double the series count for a value Prometheus already knows from
# the first scrape, and multiprocess mode has none: leave them out everywhere.
disable_created_metrics()  # type: ignore[no-untyped-call]  # untyped upstream

#: The scrape output's content type (the text format the body is written in).
CONTENT_TYPE: Final = CONTENT_TYPE_PLAIN_0_0_4
MULTIPROC_ENV: Final = "PROMETHEUS_MULTIPROC_DIR"

#: The route label of a request no route matched (404, 405 on an unknown path).
UNMATCHED: Final = "unmatched"
#: Every other label value outside a known set becomes this.
OTHER: Final = "other"
HTTP_METHODS: Final = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})

_LATENCY_BUCKETS_S = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
_HOLD_AGE_BUCKETS_S = (5.0, 15.0, 30.0, 60.0, 120.0, 300.0, 600.0, 900.0, 1200.0, 1800.0, 3600.0)
_BATCH_SIZE_BUCKETS = (1.0, 2.0, 5.0, 10.0, 25.0, 50.0, 100.0, 250.0, 500.0, 1000.0)
_HIS_BUCKETS_S = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)

# -- api: requests ---------------------------------------------------------------------

HTTP_REQUEST_SECONDS: Final = Histogram(
    "inventory_http_request_duration_seconds",
    "Time from a request's arrival to its answer, by route template, method and status.",
    ["route", "method", "status"],
    buckets=_LATENCY_BUCKETS_S,
)
HTTP_IN_FLIGHT: Final = Gauge(
    "inventory_http_requests_in_flight",
    "Requests being handled (the admission gate's count), summed over live API processes.",
    multiprocess_mode="livesum",
)
RESERVE_OUTCOMES: Final = Counter(
    "inventory_reserve_outcomes_total",
    "Answers to POST /v1/holds by outcome: ok, replay (idempotent retry) or the error code.",
    ["outcome"],
)
ADMISSION_SHED: Final = Counter(
    "inventory_admission_shed_total",
    "Requests refused at once with 503 overloaded because too many were in flight.",
)
CONNECTIONS_REFUSED: Final = Counter(
    "inventory_connections_refused_total",
    "Connections closed as soon as accepted because the process had its cap open"
    " (INVENTORY_MAX_CONNECTIONS): files kept for its own Redis and Postgres connections.",
)
RATE_LIMITED: Final = Counter(
    "inventory_rate_limited_total",
    "Reserve rate-limit refusals by bucket (account or client address).",
    ["bucket"],
)
RATE_LIMIT_UNAVAILABLE: Final = Counter(
    "inventory_rate_limit_unavailable_total",
    "Reserves let through without a rate-limit bucket whose Redis Cluster node was out of "
    "reach (fail-open), by bucket.",
    ["bucket"],
)
STORE_VERIFIED: Final = Gauge(
    "inventory_store_verified",
    "1 when every live API process's Redis server was verified by the fence, else 0.",
    multiprocess_mode="livemin",
)

# -- api and worker: release day's waiting rooms (never a release or patient id) ---------

ROOM_JOINED: Final = Counter(
    "inventory_room_joined_total",
    "Tickets joined to queued releases' waiting rooms (a repeated join is not counted).",
)
ROOM_ADMITTED: Final = Counter(
    "inventory_room_admitted_total",
    "Tickets admitted (given an admission token), counted by the process whose room step "
    "admitted them (API processes and the worker both step rooms).",
)
ROOM_UNUSED: Final = Counter(
    "inventory_room_admissions_unused_total",
    "Admission tokens that lapsed unused (the next ticket was admitted instead).",
)
ROOM_WAITING: Final = Gauge(
    "inventory_room_waiting",
    "Tickets still waiting for admission over every room not sold out, sampled by the "
    "worker's room ticker.",
    multiprocess_mode="mostrecent",
)
ROOM_TAKEABLE: Final = Gauge(
    "inventory_room_takeable",
    "Units the admitting rooms could still admit for (free, or coming back within a "
    "token's life), at the worker's last tick.",
    multiprocess_mode="mostrecent",
)
ROOM_SOLD_OUT_SECONDS: Final = Histogram(
    "inventory_room_sold_out_seconds",
    "Time from a release's T0 to its room selling out, one sample per release.",
    buckets=(0.5, 1.0, 2.0, 3.0, 5.0, 10.0, 30.0, 60.0, 300.0, 1800.0, 3600.0),
)


def observe_room_joined() -> None:
    """A ticket joined a room."""
    ROOM_JOINED.inc()


def observe_room_step(admitted: int, lapsed: int) -> None:
    """What one room step did."""
    if admitted:
        ROOM_ADMITTED.inc(admitted)
    if lapsed:
        ROOM_UNUSED.inc(lapsed)


def observe_rooms(waiting: int, takeable: int) -> None:
    """The worker's tick: tickets waiting and units takeable over the active rooms."""
    ROOM_WAITING.set(waiting)
    ROOM_TAKEABLE.set(takeable)


def observe_room_sold_out(seconds_after_t0: float) -> None:
    """A release sold out this long after its T0 (observed once per release)."""
    ROOM_SOLD_OUT_SECONDS.observe(max(0.0, seconds_after_t0))


# -- worker: the store, sampled ----------------------------------------------------------

HOLDS_ACTIVE: Final = Gauge(
    "inventory_holds_active",
    "Units held (reserved, not yet paid) over every tag, sampled from Redis.",
    multiprocess_mode="mostrecent",
)
UNITS_WAITING: Final = Gauge(
    "inventory_units_waiting",
    "Freed units waiting out the anti-scalping delay over every tag, sampled from Redis.",
    multiprocess_mode="mostrecent",
)
TAGS: Final = Gauge(
    "inventory_tags",
    "Department-day tags registered in Redis.",
    multiprocess_mode="mostrecent",
)
FENCED_TAGS: Final = Gauge(
    "inventory_fenced_tags",
    "Tags fenced because Redis was behind Postgres (they refuse changes until rebuilt).",
    multiprocess_mode="mostrecent",
)
INVARIANT_VIOLATING_SLOTS: Final = Gauge(
    "inventory_invariant_violating_slots",
    "Slots breaking remaining + held + booked + waiting == capacity (or negative) "
    "at the last sample.",
    multiprocess_mode="mostrecent",
)
INVARIANT_VIOLATIONS: Final = Counter(
    "inventory_invariant_violations_total",
    "Slots found breaking the conservation invariant, per sample or check run.",
    ["source"],
)
SAMPLE_FAILURES: Final = Counter(
    "inventory_sampler_failures_total",
    "Store samples that failed (Redis unavailable); the sampled gauges keep old values.",
)
LAST_SAMPLE: Final = Gauge(
    "inventory_sampler_last_success_timestamp_seconds",
    "Unix time of the last successful store sample.",
    multiprocess_mode="mostrecent",
)

# -- worker: the expirer and events ------------------------------------------------------

EXPIRER_SWEEPS: Final = Counter(
    "inventory_expirer_sweeps_total", "Expirer sweeps over every tag by result.", ["result"]
)
EXPIRER_CHANGES: Final = Counter(
    "inventory_expirer_changes_total",
    "State changes made by expirer sweeps (holds expired plus waiting units returned).",
)
EXPIRER_DUE: Final = Gauge(
    "inventory_expirer_due",
    "Timers still due after the last sweep (non-zero for long: the expirer falls behind).",
    multiprocess_mode="mostrecent",
)
EVENTS: Final = Counter(
    "inventory_events_total",
    "Outbox events newly recorded in Postgres by type.",
    ["type"],
)
HOLD_EXPIRIES: Final = Counter(
    "inventory_hold_expiries_total",
    "Holds that expired unpaid (by the expirer or by a reserve reclaiming its slot).",
)
UNITS_RERELEASED: Final = Counter(
    "inventory_units_rereleased_total",
    "Units freed for sale again by an ended hold or booking, by why it ended.",
    ["reason"],
)
WAITLIST_EVENTS: Final = Counter(
    "inventory_waitlist_events_total",
    "候补 waitlist entries by what happened: joined, offered (a freed unit held for the "
    "first waiting patient), taken (the offer paid), lapsed (unpaid by its deadline), "
    "declined, refused (a patient rule), left.",
    ["event"],
)
UNITS_RETURNED: Final = Counter(
    "inventory_units_returned_total",
    "Freed units back in the pool after the anti-scalping delay.",
)
HOLD_AGE_SECONDS: Final = Histogram(
    "inventory_hold_age_seconds",
    "Age of a hold when it ended, by outcome (confirmed, expired, released).",
    ["outcome"],
    buckets=_HOLD_AGE_BUCKETS_S,
)

# -- worker: the persister -------------------------------------------------------------

OUTBOX_STREAMS: Final = Gauge(
    "inventory_outbox_streams", "Outbox streams the persister reads.", multiprocess_mode="max"
)
OUTBOX_LAG: Final = Gauge(
    "inventory_outbox_lag_entries",
    "Outbox entries not yet delivered to the persister, over every stream.",
    multiprocess_mode="max",
)
OUTBOX_PENDING: Final = Gauge(
    "inventory_outbox_pending_entries",
    "Outbox entries delivered but not yet acknowledged, over every stream.",
    multiprocess_mode="max",
)
PERSIST_BATCHES: Final = Counter(
    "inventory_persist_batches_total", "Batches committed to Postgres by the persister."
)
PERSIST_BATCH_SIZE: Final = Histogram(
    "inventory_persist_batch_size",
    "Events per committed persister batch.",
    buckets=_BATCH_SIZE_BUCKETS,
)
PERSIST_BATCH_SECONDS: Final = Histogram(
    "inventory_persist_batch_duration_seconds",
    "Time to commit one persister batch (retries while Postgres is down included).",
    buckets=_LATENCY_BUCKETS_S,
)
PERSIST_EVENTS: Final = Counter(
    "inventory_persist_events_total",
    "Events the persister recorded, by result: applied, duplicate (a redelivery) or "
    "diverged (Redis's history differs from Postgres's; the tag is fenced).",
    ["result"],
)
PERSIST_DEAD_LETTERS: Final = Counter(
    "inventory_persist_dead_letters_total",
    "Outbox entries written to dead_letters after failing max_attempts times.",
)
PERSIST_LOST: Final = Counter(
    "inventory_persist_lost_events_total",
    "Outbox entries found deleted before they were acknowledged: lost events, an incident.",
)
PERSIST_AUTOCLAIMED: Final = Counter(
    "inventory_persist_autoclaimed_total",
    "Outbox entries taken over from a persister that stopped answering.",
)
PERSIST_FAILURES: Final = Counter(
    "inventory_persist_failures_total",
    "Persister attempts that failed and are retried, by what failed (postgres or redis).",
    ["dependency"],
)
PERSIST_DB_AVAILABLE: Final = Gauge(
    "inventory_persist_postgres_available",
    "1 while the persister's last Postgres write succeeded, 0 while it retries.",
    multiprocess_mode="min",
)
PERSIST_LAST_COMMIT: Final = Gauge(
    "inventory_persist_last_commit_timestamp_seconds",
    "Unix time of the persister's last committed batch (0: none yet).",
    multiprocess_mode="max",
)

# -- worker: the HIS ---------------------------------------------------------------------

HIS_REQUEST_SECONDS: Final = Histogram(
    "inventory_his_request_duration_seconds",
    "HIS (FHIR) call attempts' latency by HIS connection, operation and outcome.",
    ["connection", "operation", "outcome"],
    buckets=_HIS_BUCKETS_S,
)
HIS_ERRORS: Final = Counter(
    "inventory_his_errors_total",
    "Failed HIS call attempts by operation and kind: unavailable (timeout, connection, "
    "5xx, 408, 429), protocol (an answer that is not valid FHIR, or credentials refused) or "
    "circuit_open; by HIS connection.",
    ["connection", "operation", "kind"],
)
HIS_CIRCUIT_STATE: Final = Gauge(
    "inventory_his_circuit_state",
    "Each HIS connection's circuit breaker: 0 closed, 1 half-open, 2 open.",
    ["connection"],
    multiprocess_mode="max",
)
HIS_CIRCUIT_TRANSITIONS: Final = Counter(
    "inventory_his_circuit_transitions_total",
    "Circuit breaker state changes by HIS connection and the state entered.",
    ["connection", "state"],
)
RECONCILIATION_DRIFT: Final = Gauge(
    "inventory_reconciliation_drift",
    "Differences between HIS, Postgres and Redis found by the last reconciliation, by HIS "
    "connection and kind.",
    ["connection", "kind"],
    multiprocess_mode="mostrecent",
)
RECONCILIATION_LAST_RUN: Final = Gauge(
    "inventory_reconciliation_last_run_timestamp_seconds",
    "Unix time of the last completed reconciliation.",
    multiprocess_mode="max",
)

# -- api: payments -----------------------------------------------------------------------

PAYMENT_NOTIFICATIONS_REFUSED: Final = Counter(
    "inventory_payment_notifications_refused_total",
    "WeChat Pay notifications answered non-2xx (the provider notifies again), by reason: "
    "the check that failed, or not_settled when Redis or Postgres could not settle it.",
    ["reason"],
)

# -- worker: money and the HIS queue, sampled from Postgres -----------------------------

PAYMENTS_PENDING: Final = Gauge(
    "inventory_payments_pending",
    "Payments started and not yet paid, closed or failed, at the last sample.",
    multiprocess_mode="mostrecent",
)
PAYMENT_OLDEST_PENDING_AGE: Final = Gauge(
    "inventory_payment_oldest_pending_age_seconds",
    "Age of the oldest pending payment (0: none).",
    multiprocess_mode="mostrecent",
)
REFUNDS_OPEN: Final = Gauge(
    "inventory_refunds_open",
    "Refunds not yet succeeded, by status: pending (not tried or in progress) or failed "
    "(the last attempt failed; retried with back-off).",
    ["status"],
    multiprocess_mode="mostrecent",
)
REFUND_OLDEST_OPEN_AGE: Final = Gauge(
    "inventory_refund_oldest_open_age_seconds",
    "Age of the oldest refund not yet succeeded (0: none): how long a patient has waited.",
    multiprocess_mode="mostrecent",
)
HIS_SUBMISSION_QUEUE: Final = Gauge(
    "inventory_his_submission_queue",
    "Bookings not yet accepted by the HIS, by status: confirmed (not sent) or submitted "
    "(sent, no answer yet). Exported when the worker runs the HIS flows.",
    ["status"],
    multiprocess_mode="mostrecent",
)
HIS_SUBMISSION_OLDEST_AGE: Final = Gauge(
    "inventory_his_submission_oldest_age_seconds",
    "Seconds since the oldest booking waiting for the HIS last changed (0: none).",
    multiprocess_mode="mostrecent",
)
HIS_CONNECTION_QUEUE: Final = Gauge(
    "inventory_his_connection_queue",
    "Bookings not yet accepted by the HIS by HIS connection (the one serving their "
    "hospital) and status: confirmed (not sent) or submitted (sent, no answer yet).",
    ["connection", "status"],
    multiprocess_mode="mostrecent",
)
HIS_CONNECTION_OLDEST_AGE: Final = Gauge(
    "inventory_his_connection_oldest_age_seconds",
    "Seconds since the oldest booking waiting for a HIS connection last changed (0: none).",
    ["connection"],
    multiprocess_mode="mostrecent",
)

# -- worker: notifications (inventory/notify/) -------------------------------------------

NOTIFICATIONS: Final = Counter(
    "inventory_notifications_total",
    "Notification delivery attempts by outcome: sent (the provider took it), failed (an "
    "attempt failed), retried (a failed attempt was scheduled again after a back-off), "
    "dead_lettered (given up: the operator's dead-letter view), skipped (nothing to send "
    "to any more, e.g. the account unsubscribed); by channel and kind.",
    ["outcome", "channel", "kind"],
)
NOTIFICATIONS_PENDING: Final = Gauge(
    "inventory_notifications_pending",
    "Deliveries not yet sent (first attempt or waiting to retry), by channel and kind, at "
    "the last sample.",
    ["channel", "kind"],
    multiprocess_mode="mostrecent",
)
NOTIFICATION_OLDEST_UNSENT_AGE: Final = Gauge(
    "inventory_notification_oldest_unsent_age_seconds",
    "Age of the oldest delivery not yet sent, by channel and kind (0: none); channel and "
    'kind "planning" for facts not yet turned into deliveries.',
    ["channel", "kind"],
    multiprocess_mode="mostrecent",
)
NOTIFICATION_DEAD_LETTERS: Final = Gauge(
    "inventory_notification_dead_letters",
    "Dead-lettered deliveries no operator has retried yet, by channel and kind.",
    ["channel", "kind"],
    multiprocess_mode="mostrecent",
)

# -- visits (inventory/visits/, the HIS read-back) ----------------------------------------

VISIT_OUTCOMES: Final = Counter(
    "inventory_visit_outcomes_total",
    "Visits recorded, by outcome (visited, no_show) and who decided it: a kiosk or the "
    "front desk (kiosk, staff: the API), the HIS read back (his) or the session ended "
    "without a check-in (session_ended: the worker's visits loop).",
    ["outcome", "source"],
)
PATIENT_BANS: Final = Counter(
    "inventory_patient_bans_total",
    "Bans by action: applied by the no-show rule (the worker's visits loop), lifted by an "
    "operator (the API).",
    ["action"],
)
VISITS_LAST_ROUND: Final = Gauge(
    "inventory_visits_last_round_timestamp_seconds",
    "Unix time of the worker's last completed visits round (no-shows marked, the no-show "
    "rule applied).",
    multiprocess_mode="max",
)
VISIT_READBACK_LAST: Final = Gauge(
    "inventory_visit_readback_last_success_timestamp_seconds",
    "Unix time of the last completed read-back of visits from a HIS connection (arrived, "
    "fulfilled, noshow); time() minus it is how far the HIS's word on visits lags.",
    ["connection"],
    multiprocess_mode="max",
)

# -- check: `inventory check` ------------------------------------------------------------

CHECK_DRIFT: Final = Gauge(
    "inventory_check_drift",
    "Differences between Redis and Postgres found by the last `inventory check`, by kind.",
    ["kind"],
    multiprocess_mode="mostrecent",
)
CHECK_LAGGING_TAGS: Final = Gauge(
    "inventory_check_lagging_tags",
    "Tags `inventory check` skipped because the persister had not caught up.",
    multiprocess_mode="mostrecent",
)
CHECK_FENCED_TAGS: Final = Gauge(
    "inventory_check_fenced_tags",
    "Fenced tags found by the last `inventory check`.",
    multiprocess_mode="mostrecent",
)
CHECK_LAST_RUN: Final = Gauge(
    "inventory_check_last_run_timestamp_seconds",
    "Unix time of the last `inventory check`.",
    multiprocess_mode="max",
)

# Label values known in advance start at 0, so rates and alerts see them before the first
# event (families of other roles are not exported, whatever they hold).
for _bucket in ("account", "ip"):
    RATE_LIMITED.labels(bucket=_bucket)
    RATE_LIMIT_UNAVAILABLE.labels(bucket=_bucket)
for _outcome in ("ok", "replay"):
    RESERVE_OUTCOMES.labels(outcome=_outcome)
for _result in ("ok", "failed"):
    EXPIRER_SWEEPS.labels(result=_result)
for _waitlist_event in ("joined", "offered", "taken", "lapsed", "declined", "refused", "left"):
    WAITLIST_EVENTS.labels(event=_waitlist_event)
#: Who may decide each visit outcome (inventory/visits/outcomes.py's sources).
VISIT_SOURCES: Final = {
    "visited": ("kiosk", "staff", "his"),
    "no_show": ("session_ended", "staff", "his"),
}
BAN_ACTIONS: Final = ("applied", "lifted")
for _outcome, _sources in VISIT_SOURCES.items():
    for _source in _sources:
        VISIT_OUTCOMES.labels(outcome=_outcome, source=_source)
for _action in BAN_ACTIONS:
    PATIENT_BANS.labels(action=_action)

# -- bounded label values ----------------------------------------------------------------

#: Event types the scripts emit (lua/); anything else counts as "other".
EVENT_TYPES: Final = frozenset(
    {
        "hold_created",
        "hold_extended",
        "hold_released",
        "hold_expired",
        "booking_confirmed",
        "booking_cancelled",
        "unit_returned",
        "schedule_loaded",
        "schedule_suspended",
        "schedule_reopened",
        "capacity_adjusted",
        "store_rebuilt",
        "waitlist_joined",
        "waitlist_offered",
        "waitlist_taken",
        "waitlist_lapsed",
        "waitlist_declined",
        "waitlist_refused",
        "waitlist_left",
    }
)
#: What happened on a waitlist, by the entry's event (waitlist_<what>).
WAITLIST_OUTCOMES: Final = frozenset(
    {"joined", "offered", "taken", "lapsed", "declined", "refused", "left"}
)
#: How an ended hold's unit came free, by the ending event.
_RERELEASE_REASONS: Final = {
    "hold_expired": "expired",
    "hold_released": "released",
    "booking_cancelled": "cancelled",
}
#: The HIS client's operations (inventory/his/client.py, its ``op=`` names).
HIS_OPERATIONS: Final = frozenset(
    {
        "catalogue",
        "list_schedules",
        "get_schedule",
        "create_appointment",
        "get_appointment",
        "find_appointment",
        "search_appointments",
        "cancel_appointment",
    }
)
#: Outcomes of one HIS call attempt (inventory.his.client.HisCallObserver).
HIS_OUTCOMES: Final = frozenset(
    {"ok", "not_found", "refused", "unavailable", "protocol", "circuit_open", "abandoned"}
)
#: The outcomes that are failures of the HIS (a refusal is a valid answer).
HIS_ERROR_KINDS: Final = frozenset({"unavailable", "protocol", "circuit_open"})
HIS_CIRCUIT_STATES: Final = {"closed": 0, "half_open": 1, "open": 2}
#: The HIS connections' names, the ``connection`` label's values: ``default`` and the
#: hospitals of the connections file, registered by the worker at start
#: (:func:`register_his_connections`), so the label has no more values than the
#: configuration has connections; any other name is counted as "other".
HIS_CONNECTIONS: Final[set[str]] = {"default"}
#: Kinds of reconciliation drift (inventory/his/reconcile.py); unknown kinds count as
#: "other".
RECONCILIATION_KINDS: Final = frozenset(
    {
        "missing_in_his",
        "missing_in_postgres",
        "missing_in_redis",
        "status_mismatch",
        "capacity_changed",
        "schedule_suspended",
        "schedule_resumed",
        "new_schedule",
        "other_channel",
        "visit_outcome",
    }
)
#: Why a payment notification was refused (inventory/payments/wechat.py and service.py);
#: anything else (Redis or Postgres down, a fenced tag) is "not_settled".
NOTIFICATION_REFUSALS: Final = frozenset(
    {
        "signature_missing",
        "signature_type",
        "unknown_serial",
        "timestamp_outside_window",
        "signature_invalid",
        "nonce_replayed",
        "replay_check_unavailable",
        "bad_notification",
        "decrypt_failed",
        "merchant_mismatch",
        "not_paid",
        "payments_disabled",
        "unknown_order",
        "transaction_mismatch",
        "amount_mismatch",
        "body_too_large",
    }
)
NOT_SETTLED: Final = "not_settled"
REFUND_OPEN_STATUSES: Final = ("pending", "failed")
HIS_WAITING_STATUSES: Final = ("confirmed", "submitted")
for _reason in (*NOTIFICATION_REFUSALS, NOT_SETTLED):  # at 0, so increase() sees the first
    PAYMENT_NOTIFICATIONS_REFUSED.labels(reason=_reason)

#: Kinds of `inventory check` drift (inventory/recovery/check.py) as labels.
CHECK_KINDS: Final = frozenset({"capacity", "held", "booked", "hold_state", "slot_missing"})

#: A stable error code: what RESERVE_OUTCOMES accepts as a label value.
_CODE_RE: Final = re.compile(r"[a-z][a-z0-9_]{0,47}", re.ASCII)


def bounded(value: str, allowed: Iterable[str]) -> str:
    """``value`` if it is one of ``allowed``, else ``"other"``."""
    return value if value in allowed else OTHER


# -- observing ---------------------------------------------------------------------------


#: Labelled children looked up before, by their raw inputs: ``labels()`` takes a lock and
#: builds its key on every call, and every request would pay that (docs/benchmarks.md).
#: Bounded, because a raw input (an unknown HTTP method) can come from outside.
_CHILDREN_CACHE_MAX: Final = 4096
_request_children: dict[tuple[str, str, int], Any] = {}
_reserve_children: dict[str, Any] = {}


def _child(cache: dict[Any, Any], key: Any, make: Callable[[], Any]) -> Any:
    """``cache[key]``, made by ``make()`` (and kept, while the cache has room) if new."""
    child = cache.get(key)
    if child is None:
        child = make()
        if len(cache) < _CHILDREN_CACHE_MAX:
            cache[key] = child
    return child


def observe_request(method: str, route: str, status: int, seconds: float) -> None:
    """One answered request; ``route`` must be a route template or ``UNMATCHED``."""
    _child(
        _request_children,
        (method, route, status),
        lambda: HTTP_REQUEST_SECONDS.labels(
            route=route, method=bounded(method, HTTP_METHODS), status=str(status)
        ),
    ).observe(seconds)


def observe_reserve(outcome: str) -> None:
    """One answer to a reserve: ``ok``, ``replay`` or an error's stable code."""
    _child(
        _reserve_children,
        outcome,
        lambda: RESERVE_OUTCOMES.labels(outcome=outcome if _CODE_RE.fullmatch(outcome) else OTHER),
    ).inc()


def observe_expire_sweep(changed: int, still_due: int) -> None:
    """One expirer sweep that ran."""
    EXPIRER_SWEEPS.labels(result="ok").inc()
    EXPIRER_CHANGES.inc(changed)
    EXPIRER_DUE.set(still_due)


def observe_expire_failure() -> None:
    """One expirer sweep that failed (Redis unavailable)."""
    EXPIRER_SWEEPS.labels(result="failed").inc()


class HoldRecord(Protocol):
    """What :func:`observe_events` reads of a hold (inventory.domain.Hold)."""

    @property
    def created_ms(self) -> int: ...
    @property
    def confirmed_ms(self) -> int: ...
    @property
    def ended_ms(self) -> int: ...


class HoldEvent(Protocol):
    """What :func:`observe_events` reads of an event (inventory.record.projection.TagEvent)."""

    @property
    def type(self) -> str: ...
    @property
    def hold(self) -> HoldRecord | None: ...


def observe_events(events: Iterable[HoldEvent]) -> None:
    """Count events newly recorded in Postgres (``BatchOutcome.applied``): every event
    once, whichever process or path (expirer sweep, reserve's reclaim) made it."""
    for event in events:
        EVENTS.labels(type=bounded(event.type, EVENT_TYPES)).inc()
        reason = _RERELEASE_REASONS.get(event.type)
        if reason is not None:
            UNITS_RERELEASED.labels(reason=reason).inc()
        if event.type.startswith("waitlist_"):
            WAITLIST_EVENTS.labels(
                event=bounded(event.type.removeprefix("waitlist_"), WAITLIST_OUTCOMES)
            ).inc()
        if event.type == "hold_expired":
            HOLD_EXPIRIES.inc()
        elif event.type == "unit_returned":
            UNITS_RETURNED.inc()
        hold = event.hold
        if hold is None or hold.created_ms <= 0:
            continue
        if event.type == "booking_confirmed" and hold.confirmed_ms:
            HOLD_AGE_SECONDS.labels(outcome="confirmed").observe(
                max(0, hold.confirmed_ms - hold.created_ms) / 1000
            )
        elif event.type in ("hold_expired", "hold_released") and hold.ended_ms:
            outcome = "expired" if event.type == "hold_expired" else "released"
            HOLD_AGE_SECONDS.labels(outcome=outcome).observe(
                max(0, hold.ended_ms - hold.created_ms) / 1000
            )


class PersisterStats(Protocol):
    """What :func:`observe_persister` reads (inventory.record.persister.PersisterStats)."""

    streams: int
    total_lag: int
    total_pending: int
    batches: int
    events_persisted: int
    duplicates: int
    diverged: int
    dead_letters: int
    autoclaimed: int
    autoclaim_deleted: int
    pending_deleted: int
    db_failures: int
    redis_failures: int
    db_available: bool
    last_commit_at: float


#: Counter -> the stats fields (totals since the persister started) it follows.
_PERSISTER_COUNTERS: Final[tuple[tuple[Any, tuple[str, ...]], ...]] = (
    (PERSIST_EVENTS.labels(result="applied"), ("events_persisted",)),
    (PERSIST_EVENTS.labels(result="duplicate"), ("duplicates",)),
    (PERSIST_EVENTS.labels(result="diverged"), ("diverged",)),
    (PERSIST_DEAD_LETTERS, ("dead_letters",)),
    (PERSIST_LOST, ("autoclaim_deleted", "pending_deleted")),
    (PERSIST_AUTOCLAIMED, ("autoclaimed",)),
    (PERSIST_FAILURES.labels(dependency="postgres"), ("db_failures",)),
    (PERSIST_FAILURES.labels(dependency="redis"), ("redis_failures",)),
)
#: Last totals seen per stats object, so each call adds only what is new.
_persister_seen: dict[int, dict[str, int]] = {}


def observe_persister(stats: PersisterStats) -> None:
    """Map the persister's stats (updated in place by it) to the metrics; call it
    periodically. Counters advance by what the totals gained since the last call;
    batch size and latency are observed per batch by
    :class:`inventory.ops.sampler.MeteredPersisterStats`."""
    OUTBOX_STREAMS.set(stats.streams)
    OUTBOX_LAG.set(stats.total_lag)
    OUTBOX_PENDING.set(stats.total_pending)
    PERSIST_DB_AVAILABLE.set(1 if stats.db_available else 0)
    PERSIST_LAST_COMMIT.set(stats.last_commit_at)
    seen = _persister_seen.setdefault(id(stats), {})
    for counter, fields in _PERSISTER_COUNTERS:
        for name in fields:
            total = int(getattr(stats, name))
            gained = total - seen.get(name, 0)
            if gained > 0:
                counter.inc(gained)
            seen[name] = total


def observe_batch(size: int, seconds: float) -> None:
    """One committed persister batch."""
    PERSIST_BATCHES.inc()
    PERSIST_BATCH_SIZE.observe(size)
    PERSIST_BATCH_SECONDS.observe(seconds)


def register_his_connections(names: Iterable[str]) -> None:
    """The HIS connections of the configuration (their names become label values); each
    breaker reads closed until it changes, so the series exists from the start."""
    for name in names:
        if name not in _HIS_BREAKERS_SHOWN:
            _HIS_BREAKERS_SHOWN.add(name)
            HIS_CONNECTIONS.add(name)
            HIS_CIRCUIT_STATE.labels(connection=name).set(0)


#: Connections whose breaker gauge was set at registration.
_HIS_BREAKERS_SHOWN: set[str] = set()


def observe_his_call(
    operation: str, seconds: float, outcome: str, *, connection: str = "default"
) -> None:
    """One HIS call attempt: pass as the HIS client's ``observer``
    (inventory.his.client.HisCallObserver), with the connection bound."""
    operation = bounded(operation, HIS_OPERATIONS)
    outcome = bounded(outcome, HIS_OUTCOMES)
    connection = bounded(connection, HIS_CONNECTIONS)
    HIS_REQUEST_SECONDS.labels(connection=connection, operation=operation, outcome=outcome).observe(
        seconds
    )
    if outcome in HIS_ERROR_KINDS:
        HIS_ERRORS.labels(connection=connection, operation=operation, kind=outcome).inc()


def observe_his_breaker(old: object, new: object, *, connection: str = "default") -> None:
    """A circuit breaker change: pass as the HIS client's ``on_breaker_change``, with
    the connection bound (states are inventory.his.resilience.BreakerState, str enums)."""
    state = str(new)
    connection = bounded(connection, HIS_CONNECTIONS)
    if state in HIS_CIRCUIT_STATES:
        HIS_CIRCUIT_STATE.labels(connection=connection).set(HIS_CIRCUIT_STATES[state])
        HIS_CIRCUIT_TRANSITIONS.labels(connection=connection, state=state).inc()


def observe_reconciliation(
    drift_by_kind: Mapping[str, int], *, at: float, connection: str = "default"
) -> None:
    """One completed reconciliation of a HIS connection: the differences it found by
    kind (a kind not named is set to 0, so fixed drift leaves the gauge)."""
    counts = dict.fromkeys((*sorted(RECONCILIATION_KINDS), OTHER), 0)
    for kind, count in drift_by_kind.items():
        counts[bounded(kind, RECONCILIATION_KINDS)] += count
    connection = bounded(connection, HIS_CONNECTIONS)
    for kind, count in counts.items():
        RECONCILIATION_DRIFT.labels(connection=connection, kind=kind).set(count)
    RECONCILIATION_LAST_RUN.set(at)


def observe_visit_outcome(outcome: str, source: str) -> None:
    """One visit recorded (a change, not a repeat): ``visited`` or ``no_show``, by its
    source; an unknown pair counts as "other"."""
    known = source in VISIT_SOURCES.get(outcome, ())
    VISIT_OUTCOMES.labels(
        outcome=outcome if known else OTHER, source=source if known else OTHER
    ).inc()


def observe_ban(action: str) -> None:
    """A ban applied by the no-show rule or lifted by an operator."""
    PATIENT_BANS.labels(action=bounded(action, BAN_ACTIONS)).inc()


def observe_visits_round(at: float) -> None:
    """The worker's visits loop completed a round at ``at`` (Unix time)."""
    VISITS_LAST_ROUND.set(at)


def observe_visit_readback(at: float, *, connection: str = "default") -> None:
    """A HIS connection's visits were read back at ``at`` (Unix time)."""
    VISIT_READBACK_LAST.labels(connection=bounded(connection, HIS_CONNECTIONS)).set(at)


def observe_notification_refused(reason: str) -> None:
    """A payment notification answered non-2xx, by the refusal's reason."""
    label = reason if reason in NOTIFICATION_REFUSALS else NOT_SETTLED
    PAYMENT_NOTIFICATIONS_REFUSED.labels(reason=label).inc()


def observe_open_money_and_his_queue(row: Mapping[str, Any], *, his_queue: bool) -> None:
    """One sample of ``sample_open_money_and_his_queue`` (the HIS queue only when the
    worker runs the HIS flows: without them every booking stays confirmed)."""
    PAYMENTS_PENDING.set(row["payments_pending"])
    PAYMENT_OLDEST_PENDING_AGE.set(row["payment_oldest_pending_s"] or 0.0)
    for status in REFUND_OPEN_STATUSES:
        REFUNDS_OPEN.labels(status=status).set(row[f"refunds_{status}"])
    REFUND_OLDEST_OPEN_AGE.set(row["refund_oldest_open_s"] or 0.0)
    if his_queue:
        for status in HIS_WAITING_STATUSES:
            HIS_SUBMISSION_QUEUE.labels(status=status).set(row[f"his_{status}_waiting"])
        HIS_SUBMISSION_OLDEST_AGE.set(row["his_oldest_waiting_s"] or 0.0)


def observe_his_connection_queues(
    rows: Iterable[Mapping[str, Any]], connection_of: Callable[[str], str]
) -> None:
    """One sample of ``sample_his_queue_by_hospital``: each hospital's waiting bookings
    added to the connection serving it (``connection_of``); every registered
    connection with none reads 0."""
    counts = {name: dict.fromkeys(HIS_WAITING_STATUSES, 0) for name in HIS_CONNECTIONS}
    oldest = dict.fromkeys(HIS_CONNECTIONS, 0.0)
    for row in rows:
        name = bounded(connection_of(row["hospital_id"]), HIS_CONNECTIONS)
        counts.setdefault(name, dict.fromkeys(HIS_WAITING_STATUSES, 0))
        for status in HIS_WAITING_STATUSES:
            counts[name][status] += int(row[status])
        oldest[name] = max(oldest.get(name, 0.0), float(row["oldest_s"] or 0.0))
    for name, by_status in counts.items():
        for status, count in by_status.items():
            HIS_CONNECTION_QUEUE.labels(connection=name, status=status).set(count)
        HIS_CONNECTION_OLDEST_AGE.labels(connection=name).set(oldest[name])


#: Notification outcomes and channels as labels; kinds are the code's own names
#: (inventory/notify/kinds.py), checked for shape.
NOTIFICATION_OUTCOMES: Final = ("sent", "failed", "retried", "dead_lettered", "skipped")
NOTIFICATION_CHANNELS: Final = ("wechat", "sms")
PLANNING: Final = "planning"
_KIND_RE: Final = re.compile(r"[a-z][a-z_]{0,39}", re.ASCII)
_notification_kinds: set[str] = set()


def _notification_labels(channel: str, kind: str) -> tuple[str, str]:
    return (
        bounded(channel, NOTIFICATION_CHANNELS),
        kind if _KIND_RE.fullmatch(kind) else OTHER,
    )


def declare_notification_kinds(kinds: Iterable[str]) -> None:
    """Every series of the notifier's families at 0 for these kinds (so that rate() and
    increase() see the first message, and a gauge of a drained queue reads 0)."""
    for kind in kinds:
        channel_kind = [_notification_labels(c, kind) for c in NOTIFICATION_CHANNELS]
        _notification_kinds.add(channel_kind[0][1])
        for channel, label in channel_kind:
            for outcome in NOTIFICATION_OUTCOMES:
                NOTIFICATIONS.labels(outcome=outcome, channel=channel, kind=label)
            NOTIFICATIONS_PENDING.labels(channel=channel, kind=label).set(0)
            NOTIFICATION_OLDEST_UNSENT_AGE.labels(channel=channel, kind=label).set(0)
            NOTIFICATION_DEAD_LETTERS.labels(channel=channel, kind=label).set(0)
    NOTIFICATION_OLDEST_UNSENT_AGE.labels(channel=PLANNING, kind=PLANNING).set(0)


def observe_notification(outcome: str, channel: str, kind: str) -> None:
    """One attempt's outcome (one of :data:`NOTIFICATION_OUTCOMES`)."""
    channel_label, kind_label = _notification_labels(channel, kind)
    NOTIFICATIONS.labels(
        outcome=bounded(outcome, NOTIFICATION_OUTCOMES), channel=channel_label, kind=kind_label
    ).inc()


def observe_notification_backlog(
    pending: Iterable[tuple[str, str, int, float]],
    *,
    unplanned: tuple[int, float],
    dead: Iterable[tuple[str, str, int]],
) -> None:
    """One sample of the notifier's tables: (channel, kind, waiting, oldest age) of the
    pending deliveries, (count, oldest age) of the facts not yet planned, (channel, kind,
    open) of the dead letters. A series not in the sample is set to 0."""
    waiting: dict[tuple[str, str], int] = {}
    oldest: dict[tuple[str, str], float] = {}
    letters: dict[tuple[str, str], int] = {}
    for channel, kind, count, age in pending:
        key = _notification_labels(channel, kind)
        waiting[key] = waiting.get(key, 0) + count
        oldest[key] = max(oldest.get(key, 0.0), age or 0.0)
    for channel, kind, count in dead:
        key = _notification_labels(channel, kind)
        letters[key] = letters.get(key, 0) + count
    for kind in _notification_kinds | {OTHER}:
        for channel in NOTIFICATION_CHANNELS:
            key = (channel, kind)
            if kind == OTHER and key not in waiting and key not in letters:
                continue
            NOTIFICATIONS_PENDING.labels(channel=channel, kind=kind).set(waiting.get(key, 0))
            NOTIFICATION_OLDEST_UNSENT_AGE.labels(channel=channel, kind=kind).set(
                oldest.get(key, 0.0)
            )
            NOTIFICATION_DEAD_LETTERS.labels(channel=channel, kind=kind).set(letters.get(key, 0))
    NOTIFICATION_OLDEST_UNSENT_AGE.labels(channel=PLANNING, kind=PLANNING).set(
        unplanned[1] if unplanned[0] else 0.0
    )


def check_kind(kind: str) -> str:
    """The label of an `inventory check` drift kind (hold drift names the hold: cut it)."""
    if kind.startswith("hold "):
        return "hold_state"
    if kind == "slot missing in redis":
        return "slot_missing"
    return bounded(kind, CHECK_KINDS)


def observe_check(
    *, violations: int, drift_kinds: Iterable[str], lagging: int, fenced: int, at: float
) -> None:
    """One `inventory check` run."""
    INVARIANT_VIOLATIONS.labels(source="check").inc(violations)
    counts = dict.fromkeys((*sorted(CHECK_KINDS), OTHER), 0)
    for kind in drift_kinds:
        counts[check_kind(kind)] += 1
    for kind, count in counts.items():
        CHECK_DRIFT.labels(kind=kind).set(count)
    CHECK_LAGGING_TAGS.set(lagging)
    CHECK_FENCED_TAGS.set(fenced)
    CHECK_LAST_RUN.set(at)


# -- exposing ----------------------------------------------------------------------------

API_METRICS: Final = (
    HTTP_REQUEST_SECONDS,
    HTTP_IN_FLIGHT,
    RESERVE_OUTCOMES,
    ADMISSION_SHED,
    CONNECTIONS_REFUSED,
    RATE_LIMITED,
    RATE_LIMIT_UNAVAILABLE,
    STORE_VERIFIED,
    PAYMENT_NOTIFICATIONS_REFUSED,
    ROOM_JOINED,
    ROOM_ADMITTED,
    ROOM_UNUSED,
    # Check-ins, an operator's no-show and ban lifts happen in the API.
    VISIT_OUTCOMES,
    PATIENT_BANS,
)
WORKER_METRICS: Final = (
    ROOM_ADMITTED,
    ROOM_UNUSED,
    ROOM_WAITING,
    ROOM_TAKEABLE,
    ROOM_SOLD_OUT_SECONDS,
    HOLDS_ACTIVE,
    UNITS_WAITING,
    TAGS,
    FENCED_TAGS,
    INVARIANT_VIOLATING_SLOTS,
    INVARIANT_VIOLATIONS,
    SAMPLE_FAILURES,
    LAST_SAMPLE,
    EXPIRER_SWEEPS,
    EXPIRER_CHANGES,
    EXPIRER_DUE,
    EVENTS,
    HOLD_EXPIRIES,
    UNITS_RERELEASED,
    UNITS_RETURNED,
    WAITLIST_EVENTS,
    HOLD_AGE_SECONDS,
    OUTBOX_STREAMS,
    OUTBOX_LAG,
    OUTBOX_PENDING,
    PERSIST_BATCHES,
    PERSIST_BATCH_SIZE,
    PERSIST_BATCH_SECONDS,
    PERSIST_EVENTS,
    PERSIST_DEAD_LETTERS,
    PERSIST_LOST,
    PERSIST_AUTOCLAIMED,
    PERSIST_FAILURES,
    PERSIST_DB_AVAILABLE,
    PERSIST_LAST_COMMIT,
    HIS_REQUEST_SECONDS,
    HIS_ERRORS,
    HIS_CIRCUIT_STATE,
    HIS_CIRCUIT_TRANSITIONS,
    RECONCILIATION_DRIFT,
    RECONCILIATION_LAST_RUN,
    PAYMENTS_PENDING,
    PAYMENT_OLDEST_PENDING_AGE,
    REFUNDS_OPEN,
    REFUND_OLDEST_OPEN_AGE,
    HIS_SUBMISSION_QUEUE,
    HIS_SUBMISSION_OLDEST_AGE,
    HIS_CONNECTION_QUEUE,
    HIS_CONNECTION_OLDEST_AGE,
    NOTIFICATIONS,
    NOTIFICATIONS_PENDING,
    NOTIFICATION_OLDEST_UNSENT_AGE,
    NOTIFICATION_DEAD_LETTERS,
    VISIT_OUTCOMES,
    PATIENT_BANS,
    VISITS_LAST_ROUND,
    VISIT_READBACK_LAST,
)
CHECK_METRICS: Final = (
    INVARIANT_VIOLATIONS,
    CHECK_DRIFT,
    CHECK_LAGGING_TAGS,
    CHECK_FENCED_TAGS,
    CHECK_LAST_RUN,
)
ROLES: Final = {"api": API_METRICS, "worker": WORKER_METRICS, "check": CHECK_METRICS}


def _family_names(metrics: Iterable[Collector]) -> frozenset[str]:
    names: set[str] = set()
    for metric in metrics:
        describe = getattr(metric, "describe", None)
        if describe is not None:
            names.update(family.name for family in describe())
    return frozenset(names)


#: The metric families each role exports.
FAMILIES: Final = {role: _family_names(metrics) for role, metrics in ROLES.items()}


def multiprocess_dir() -> str | None:
    """The multiprocess directory this process writes its values to, if any."""
    return os.environ.get(MULTIPROC_ENV) or None


class RoleCollector(Collector):
    """The families of one role, from every process sharing the multiprocess directory
    when ``aggregate`` (the API's ``--workers N``), else from this process only (plus
    the standard ``process_*`` and ``python_*`` families)."""

    def __init__(self, role: str, *, aggregate: bool) -> None:
        self.families = FAMILIES[role]
        self.aggregate = aggregate

    def collect(self) -> Iterator[Metric]:
        if self.aggregate:
            path = multiprocess_dir()
            if path is None:
                raise ValueError(f"{MULTIPROC_ENV} is not set")
            collector = MultiProcessCollector(None, path=path)  # type: ignore[no-untyped-call]
            source: Iterable[Metric] = collector.collect()  # type: ignore[no-untyped-call]
        else:
            source = REGISTRY.collect()
        for family in source:
            if family.name in self.families or (
                not self.aggregate and family.name.startswith(("process_", "python_"))
            ):
                yield family


def exposition(role: str) -> bytes:
    """The scrape body of ``role``: every process of the multiprocess directory for the
    API, this process for the others."""
    aggregate = role == "api" and multiprocess_dir() is not None
    return generate_latest(RoleCollector(role, aggregate=aggregate))


def write_textfile(role: str, path: str) -> None:
    """Write this process's ``role`` families for node exporter's textfile collector
    (atomically: a temporary file renamed over ``path``)."""
    write_to_textfile(path, RoleCollector(role, aggregate=False))
