"""The named SQL queries, loaded from ``queries.sql`` into a typed mapping.

The SQL lives in ``inventory/record/queries.sql`` (shipped in the package), one statement per
``-- name: <name>`` header, with a ``-- params: a, b`` line naming ``$1``, ``$2`` in order.
:data:`QUERIES` is a :class:`Queries` TypedDict, so a misspelt query name is a type error;
the loader checks at import that the file and the TypedDict name the same queries and that
every placeholder is named. Use it as::

    rows = await connection.fetch(QUERIES["list_schedule_slots"], schedule_id)
    row = await connection.fetchrow(*bind("get_slot_location", slot_id=slot_id))

Parameter names and result columns of each query are listed in docs/schema.md.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from importlib.resources import files
from types import MappingProxyType
from typing import Any, Final, TypedDict, cast

from inventory.record.errors import QueryLoadError

__all__ = ["NAMED_QUERIES", "QUERIES", "NamedQuery", "Queries", "bind", "parse_queries"]


class Queries(TypedDict):
    """Every named query's SQL, by name (see queries.sql for each one's parameters)."""

    # catalogue reads
    list_hospitals: str
    get_hospital: str
    get_department: str
    get_doctor: str
    list_department_tree: str
    list_department_doctors: str
    list_department_schedules: str
    list_schedule_rooms: str
    get_schedule: str
    list_schedule_slots: str
    list_tag_slots: str
    get_slot_location: str
    list_slot_locations: str
    # catalogue writes
    upsert_hospital: str
    upsert_department: str
    upsert_doctor: str
    upsert_schedule: str
    set_schedule_status: str
    upsert_slot: str
    # patients
    insert_patient: str
    get_patient: str
    get_patient_by_blind_index: str
    link_account_patient: str
    unlink_account_patient: str
    account_has_patient: str
    list_account_patients: str
    list_account_patient_links: str
    get_account_patient: str
    upsert_patient_ban: str
    list_patient_bans: str
    lock_patients_to_reencrypt: str
    update_patient_ciphertexts: str
    count_patients_by_key: str
    # holds and bookings
    upsert_hold: str
    get_hold: str
    list_account_holds: str
    list_account_open_holds: str
    # the waitlist
    upsert_waitlist_entry: str
    list_account_waitlist: str
    insert_booking: str
    cancel_booking: str
    add_status_history: str
    list_status_history: str
    get_booking: str
    get_account_booking: str
    list_account_bookings: str
    # event log and fence
    record_event: str
    record_events: str
    get_tag_sequence: str
    get_tag_event_span: str
    raise_slot_capacity: str
    list_tag_sequences: str
    list_all_tag_sequences: str
    list_bookings_without_confirm_event: str
    list_tag_open_holds: str
    list_tag_live_waitlist: str
    list_live_waitlist_by_patient: str
    get_tag_waitlist_seq: str
    list_open_patient_holds: str
    list_current_bans: str
    list_tag_events: str
    record_dead_letter: str
    # idempotency keys
    claim_idempotency_key: str
    get_idempotency_key: str
    complete_idempotency_key: str
    release_idempotency_key: str
    take_over_idempotency_key: str
    prune_idempotency_keys: str
    # HIS flows: sync, submitter, reconciler
    list_window_schedules: str
    list_window_slots: str
    upsert_his_slots: str
    record_visit: str
    record_no_show: str
    get_booking_visit: str
    list_visit_bookings: str
    list_no_show_candidates: str
    list_unchecked_no_shows: str
    list_patient_no_shows: str
    mark_ban_checked: str
    last_ban_decision: str
    add_ban_history: str
    list_patient_ban_history: str
    add_patient_event: str
    list_suspensions_to_finish: str
    add_booking_event: str
    list_lifecycle_events: str
    list_schedule_open_bookings: str
    claim_his_submissions: str
    record_his_appointment: str
    defer_his_submission: str
    reject_booking: str
    claim_his_cancellations: str
    mark_his_cancelled: str
    list_unreleased_bookings: str
    list_window_bookings: str
    requeue_his_submission: str
    list_department_booking_outcomes: str
    start_reconciliation_run: str
    finish_reconciliation_run: str
    add_reconciliation_items: str
    sample_open_money_and_his_queue: str
    sample_his_queue_by_hospital: str
    # payments and refunds
    insert_payment: str
    get_payment: str
    lock_payment: str
    set_payment_prepay: str
    settle_payment: str
    close_payment: str
    claim_due_payments: str
    list_payments_to_refund: str
    get_booking_payment: str
    insert_refund: str
    get_payment_refund: str
    refunded_parts_fen: str
    list_booking_payments: str
    list_account_booking_refunds: str
    claim_due_refunds: str
    finish_refund: str
    # hospital merchants
    get_hospital_merchant: str
    upsert_hospital_merchant: str
    # hospital reports
    list_schedule_outcomes: str
    list_cancellation_leads: str
    # operator audit
    begin_operator_audit: str
    finish_operator_audit: str
    list_operator_audit: str
    # release day's waiting rooms (projected from their events)
    insert_room_release: str
    set_room_drawn: str
    set_room_seed_hash: str
    set_room_sold_out: str
    insert_room_ticket: str
    admit_room_ticket: str
    use_room_ticket: str
    lapse_room_ticket: str
    list_tag_live_rooms: str
    list_room_tickets: str
    # reschedules
    insert_reschedule: str
    lock_reschedule: str
    finish_reschedule: str
    claim_pending_reschedules: str
    set_reschedule_charge: str
    move_booking_payment: str
    # accounts and login sessions
    get_account_by_wechat_unionid: str
    touch_wechat_account: str
    upsert_wechat_account: str
    upsert_phone_account: str
    insert_login_session: str
    insert_refresh_token: str
    lock_refresh_token: str
    use_refresh_token: str
    revoke_login_session: str
    lock_accounts_to_reencrypt: str
    update_account_phone: str
    count_accounts_by_key: str
    # substitution offers
    offer_substitutions: str
    get_substitution_offer: str
    start_substitution_answer: str
    close_substitution_offer: str
    list_schedule_kept_bookings: str
    # operators' desk reads (the staff console)
    list_hospital_day_schedules: str
    list_schedules_releases: str
    find_hospital_bookings: str
    list_hospital_bans: str
    # staff accounts (the console's sign-in)
    insert_staff_account: str
    get_staff_account: str
    list_staff_accounts: str
    set_staff_password: str
    disable_staff_account: str
    record_staff_login_failure: str
    record_staff_login: str


@dataclass(frozen=True, slots=True)
class NamedQuery:
    """One query of the file: its SQL, the names of ``$1..$n`` in order, its description."""

    name: str
    sql: str
    params: tuple[str, ...]
    doc: str


_NAME_RE: Final = re.compile(r"^-- name: ([a-z][a-z0-9_]*)\s*$")
_PARAMS_RE: Final = re.compile(r"^-- params:(.*)$")
_IDENTIFIER_RE: Final = re.compile(r"[a-z][a-z0-9_]*")
_PLACEHOLDER_RE: Final = re.compile(r"\$([0-9]+)")


def _parse_block(name: str, lines: list[str], line_no: int) -> NamedQuery:
    doc: list[str] = []
    params: tuple[str, ...] | None = None
    index = 0
    while index < len(lines) and lines[index].startswith("--"):
        match = _PARAMS_RE.match(lines[index])
        if match is not None:
            if params is not None:
                raise QueryLoadError(f"query {name!r} (line {line_no}) has two params lines")
            names = [part.strip() for part in match.group(1).split(",") if part.strip()]
            for param in names:
                if not _IDENTIFIER_RE.fullmatch(param):
                    raise QueryLoadError(f"query {name!r}: bad parameter name {param!r}")
            if len(set(names)) != len(names):
                raise QueryLoadError(f"query {name!r}: a parameter is named twice")
            params = tuple(names)
        else:
            doc.append(lines[index][2:].strip())
        index += 1
    if params is None:
        raise QueryLoadError(f"query {name!r} (line {line_no}) has no '-- params:' line")
    body = lines[index:]
    # Comment and blank lines after the statement belong to what follows (section rules).
    while body and (not body[-1].strip() or body[-1].lstrip().startswith("--")):
        body.pop()
    sql = "\n".join(body).strip().removesuffix(";").rstrip()
    if not sql:
        raise QueryLoadError(f"query {name!r} (line {line_no}) has no statement")
    used = {int(number) for number in _PLACEHOLDER_RE.findall(sql)}
    if used != set(range(1, len(params) + 1)):
        raise QueryLoadError(
            f"query {name!r}: placeholders {sorted(used)} do not match params {list(params)}"
        )
    return NamedQuery(name=name, sql=sql, params=params, doc=" ".join(doc))


def parse_queries(text: str) -> dict[str, NamedQuery]:
    """Parse a named-query file; QueryLoadError names the first problem found."""
    lines = text.splitlines()
    starts = [
        (number, match.group(1))
        for number, line in enumerate(lines)
        if (match := _NAME_RE.match(line))
    ]
    for line in lines[: starts[0][0] if starts else len(lines)]:
        if line.strip() and not line.startswith("--"):
            raise QueryLoadError("SQL before the first '-- name:' header")
    queries: dict[str, NamedQuery] = {}
    for position, (number, name) in enumerate(starts):
        end = starts[position + 1][0] if position + 1 < len(starts) else len(lines)
        if name in queries:
            raise QueryLoadError(f"query {name!r} is defined twice (line {number + 1})")
        queries[name] = _parse_block(name, lines[number + 1 : end], number + 1)
    return queries


def _load() -> dict[str, NamedQuery]:
    text = (files("inventory.record") / "queries.sql").read_text(encoding="utf-8")
    queries = parse_queries(text)
    expected = set(Queries.__required_keys__)
    if set(queries) != expected:
        missing = sorted(expected - set(queries))
        extra = sorted(set(queries) - expected)
        raise QueryLoadError(
            f"queries.sql and Queries disagree: missing {missing}, not declared {extra}"
        )
    return queries


NAMED_QUERIES: Final[Mapping[str, NamedQuery]] = MappingProxyType(_load())
"""Every query with its parameter names and description, by name."""

QUERIES: Final[Queries] = cast(Queries, {name: q.sql for name, q in NAMED_QUERIES.items()})
"""Every query's SQL, by name: ``connection.fetch(QUERIES["get_hold"], hold_id)``."""


def bind(name: str, /, **values: Any) -> tuple[Any, ...]:
    """``(sql, $1, $2, ...)`` for a query, its arguments given by parameter name.

    ``await connection.fetch(*bind("list_schedule_slots", schedule_id=sid))``. A missing
    or unknown argument name is a TypeError (a programming error), as for a function call.
    """
    try:
        query = NAMED_QUERIES[name]
    except KeyError:
        raise TypeError(f"no query named {name!r}") from None
    missing = [param for param in query.params if param not in values]
    unknown = sorted(set(values) - set(query.params))
    if missing or unknown:
        raise TypeError(f"query {name!r}: missing {missing}, unexpected {unknown}")
    return (query.sql, *(values[param] for param in query.params))
