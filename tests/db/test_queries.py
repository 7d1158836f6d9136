"""The named queries against the migrated schema with realistic rows."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import asyncpg
import pytest

from inventory.record.errors import QueryLoadError
from inventory.record.queries import NAMED_QUERIES, QUERIES, bind, parse_queries
from inventory.store import keys
from tests.db.conftest import rolled_back
from tests.db.seed import (
    NEXT_DAY,
    POLICY,
    VISIT,
    Seed,
    at,
    blind_index,
    booked,
    hold_values,
    one,
    run,
)

MARCH_1 = date(2027, 3, 1)
#: A staff password's hash as argon2-cffi writes it (PHC string).
STAFF_HASH = "$argon2id$v=19$m=65536,t=3,p=4$c2FsdHNhbHRzYWx0$aGFzaGhhc2hoYXNoaGFzaA"


def new_hold_id(seed: Seed, key: str, account: str | None = None) -> str:
    """A hold id of the seeded tag, as the store derives it."""
    return keys.hold_id_for(account or seed.account, key, seed.tag)


#: Realistic arguments for every named query, by name (seed -> arguments).
SAMPLES: dict[str, Callable[[Seed], dict[str, Any]]] = {
    "list_hospitals": lambda s: {},
    "get_hospital": lambda s: {"hospital_id": s.hospital},
    "get_department": lambda s: {"department_id": s.cardio},
    "get_doctor": lambda s: {"doctor_id": "no-such-doctor"},
    "list_department_tree": lambda s: {"hospital_id": s.hospital},
    "list_department_doctors": lambda s: {"department_id": s.cardio},
    "list_department_schedules": lambda s: {"department_id": s.cardio, "visit_date": VISIT},
    "get_schedule": lambda s: {"schedule_id": s.morning},
    "list_schedule_slots": lambda s: {"schedule_id": s.morning},
    "list_tag_slots": lambda s: {"department_id": s.cardio, "visit_date": VISIT},
    "get_slot_location": lambda s: {"slot_id": s.slot_early},
    "list_slot_locations": lambda s: {"after_slot_id": "", "limit": 100},
    "upsert_hospital": lambda s: {
        "hospital_id": "h-new",
        "name": "新医院",
        "timezone": "Asia/Urumqi",
        "policy": {"hold_ttl_s": 600},
    },
    "upsert_department": lambda s: {
        "department_id": "dept-new",
        "hospital_id": s.hospital,
        "parent_id": s.internal,
        "name": "呼吸内科",
        "sort_order": 3,
    },
    "upsert_doctor": lambda s: {
        "doctor_id": "doc-new",
        "hospital_id": s.hospital,
        "department_id": s.gastro,
        "name": "赵六",
        "title": "主治医师",
        "specialty": "胃镜",
    },
    "upsert_schedule": lambda s: {
        "schedule_id": s.morning,
        "hospital_id": s.hospital,
        "department_id": s.cardio,
        "doctor_id": s.doctor_zhang,
        "visit_date": VISIT,
        "session": "morning",
        "starts_at": at(VISIT, 8),
        "ends_at": at(VISIT, 11, 30),
        "release_at": at(VISIT - timedelta(days=7), 15),
        "cancel_deadline": at(VISIT - timedelta(days=1), 16),
        "fee_fen": 10000,
        "location": "新门诊楼",
        "status": "open",
    },
    "set_schedule_status": lambda s: {
        "schedule_id": s.afternoon,
        "status": "suspended",
        "reason": "doctor_unavailable",
        "source": "operator",
    },
    "raise_slot_capacity": lambda s: {"slot_id": s.slot_late, "capacity": 9},
    "upsert_slot": lambda s: {
        "slot_id": s.slot_late,
        "schedule_id": s.morning,
        "starts_at": at(VISIT, 9),
        "ends_at": at(VISIT, 9, 30),
        "capacity": 4,
    },
    "insert_patient": lambda s: {
        "patient_id": "pat-new",
        "account_id": s.other_account,
        "blind_index": blind_index("110105201501010011"),
        "key_id": "k2027-01",
        "name_enc": b"n",
        "phone_enc": None,
        "resident_id_enc": b"r",
        "gender": "male",
        "birth_date": date(2015, 1, 1),
    },
    "get_patient": lambda s: {"patient_id": s.patient},
    "get_patient_by_blind_index": lambda s: {"blind_index": blind_index(s.resident_id)},
    "link_account_patient": lambda s: {
        "account_id": "acct-grandma",
        "patient_id": s.patient,
        "relation": "other",
    },
    "unlink_account_patient": lambda s: {"account_id": s.other_account, "patient_id": s.patient},
    "account_has_patient": lambda s: {"account_id": s.account, "patient_id": s.patient},
    "list_account_patients": lambda s: {"account_id": s.account},
    "list_account_patient_links": lambda s: {
        "after_patient_id": "",
        "after_account_id": "",
        "limit": 100,
    },
    "get_account_patient": lambda s: {"account_id": s.account, "patient_id": s.patient},
    "upsert_patient_ban": lambda s: {
        "patient_id": s.patient,
        "hospital_id": s.hospital,
        "banned_until": at(date(2027, 6, 1), 0),
        "reason": "three_no_shows",
        "decided_at": at(MARCH_1, 10),
    },
    "list_patient_bans": lambda s: {"patient_id": s.patient},
    "lock_patients_to_reencrypt": lambda s: {
        "current_key_id": "k2027-02",
        "after_id": "",
        "batch": 500,
    },
    "update_patient_ciphertexts": lambda s: {
        "patient_id": s.patient,
        "key_id": "k2027-02",
        "name_enc": b"n2",
        "phone_enc": None,
        "resident_id_enc": b"r2",
    },
    "count_patients_by_key": lambda s: {},
    "upsert_hold": lambda s: hold_values(s, new_hold_id(s, "sample")),
    "get_hold": lambda s: {"hold_id": s.booking},
    "list_account_holds": lambda s: {"account_id": s.account, "limit": 10},
    "list_schedule_rooms": lambda s: {"schedule_ids": [s.morning]},
    "list_account_open_holds": lambda s: {"account_id": s.account, "limit": 10},
    "upsert_waitlist_entry": lambda s: {
        "entry_id": keys.waitlist_entry_id_for(s.account, "wl-1", s.tag),
        "tag": s.tag,
        "schedule_id": s.morning,
        "account_id": s.account,
        "patient_id": s.patient,
        "channel": "wechat",
        "join_seq": 1,
        "state": "waiting",
        "offer_hold_id": keys.offer_hold_id_for(
            keys.waitlist_entry_id_for(s.account, "wl-1", s.tag)
        ),
        "slot_id": None,
        "joined_at": at(MARCH_1, 9),
        "offered_at": None,
        "ended_at": None,
        "end_reason": "",
        "last_seq": 3,
        "doctor_id": "dr-1",
        "day_schedule_ids": [s.morning, s.afternoon],
    },
    "list_account_waitlist": lambda s: {"account_id": s.account, "limit": 10},
    "insert_booking": lambda s: {"hold_id": s.booking},
    "cancel_booking": lambda s: {
        "booking_id": s.booking,
        "cancelled_at": at(MARCH_1, 12),
        "reason": "patient_cancelled",
    },
    "add_status_history": lambda s: {
        "hold_id": s.booking,
        "from_status": "held",
        "to_status": "booked",
        "reason": "",
        "at": at(MARCH_1, 9, 5),
        "event_key": f"{s.tag}#2",
    },
    "list_status_history": lambda s: {"hold_id": s.booking},
    "get_booking": lambda s: {"booking_id": s.booking},
    "get_account_booking": lambda s: {"account_id": s.account, "booking_id": s.booking},
    "list_account_bookings": lambda s: {
        "account_id": s.account,
        "before_confirmed_at": None,
        "before_booking_id": None,
        "limit": 20,
    },
    "record_event": lambda s: {
        "tag": s.tag,
        "seq": 1,
        "type": "hold_created",
        "at": at(MARCH_1, 9),
        "payload": {"hold": s.booking, "rem": "2"},
        "stream_id": "1803862800000-0",
    },
    "record_events": lambda s: {
        "tags": [s.tag, s.tag],
        "seqs": [1, 2],
        "types": ["hold_created", "booking_confirmed"],
        "ats": [at(MARCH_1, 9), at(MARCH_1, 9, 5)],
        "payloads": [{"hold": s.booking}, {"hold": s.booking, "payment_ref": "wx-1"}],
        "stream_ids": ["1803862800000-0", "1803863100000-0"],
    },
    "get_tag_sequence": lambda s: {"tag": s.tag},
    "get_tag_event_span": lambda s: {"tag": s.tag},
    "list_tag_sequences": lambda s: {"tags": [s.tag, "dept-x:20270308"]},
    "list_all_tag_sequences": lambda s: {},
    "list_bookings_without_confirm_event": lambda s: {"since": at(VISIT, 0) - timedelta(days=400)},
    "list_tag_open_holds": lambda s: {"tag": s.tag},
    "list_tag_live_waitlist": lambda s: {"tag": s.tag},
    "get_tag_waitlist_seq": lambda s: {"tag": s.tag},
    "list_live_waitlist_by_patient": lambda s: {},
    "list_open_patient_holds": lambda s: {},
    "list_current_bans": lambda s: {},
    "list_tag_events": lambda s: {"tag": s.tag, "after_seq": 0, "limit": 100},
    "record_dead_letter": lambda s: {
        "stream": f"inv:{{{s.tag}}}:outbox",
        "entry_id": "1803862800000-1",
        "tag": s.tag,
        "seq": 9,
        "payload": {"type": "mystery"},
        "error": "unknown event type",
    },
    "claim_idempotency_key": lambda s: {
        "account_id": s.account,
        "key": "8c3f2a4e-2f0b-4d43-9a7c-6f4b5c1d2e3f",
        "operation": "POST /v1/patients",
        "fingerprint": "sha256:abc",
    },
    "get_idempotency_key": lambda s: {"account_id": s.account, "key": "k"},
    "complete_idempotency_key": lambda s: {
        "account_id": s.account,
        "key": "k",
        "response_status": 201,
        "response_body": {"id": "pat-1"},
    },
    "release_idempotency_key": lambda s: {"account_id": s.account, "key": "k"},
    "prune_idempotency_keys": lambda s: {"retention_s": 86400},
    "take_over_idempotency_key": lambda s: {
        "account_id": s.account,
        "key": "k",
        "created_at": datetime(2027, 3, 1, tzinfo=UTC),
        "abandoned_s": 120.0,
    },
    "insert_payment": lambda s: {
        "payment_id": "pay-sample-0001",
        "hold_id": new_hold_id(s, "pay"),
        "account_id": s.account,
        "provider": "wechat",
        "amount_fen": 5000,
        "currency": "CNY",
        "method": "jsapi",
        "slot_id": s.slot_early,
        "patient_id": s.patient,
        "channel": "wechat",
        "hold_deadline": at(MARCH_1, 9, 25),
        "next_check_at": at(MARCH_1, 9, 25),
        "sub_mchid": "1900000201",
    },
    "get_hospital_merchant": lambda s: {"hospital_id": s.hospital},
    "upsert_hospital_merchant": lambda s: {
        "hospital_id": s.hospital,
        "sub_mchid": "1900000201",
        "sub_appid": "",
    },
    "get_payment": lambda s: {"payment_id": "pay-sample-0001"},
    "lock_payment": lambda s: {"payment_id": "pay-sample-0001"},
    "set_payment_prepay": lambda s: {"payment_id": "pay-sample-0001", "prepay_id": "wx2711"},
    "settle_payment": lambda s: {
        "payment_id": "pay-sample-0001",
        "provider_txn_id": "4200001234202703011234567890",
        "paid_at": at(MARCH_1, 9, 10),
        "booking_id": s.booking,
    },
    "close_payment": lambda s: {"payment_id": "pay-sample-0001"},
    "claim_due_payments": lambda s: {"limit": 50, "lease_s": 30.0},
    "list_payments_to_refund": lambda s: {"limit": 50},
    "get_booking_payment": lambda s: {"booking_id": s.booking},
    "insert_refund": lambda s: {
        "refund_id": "ref-sample-0001",
        "payment_id": "pay-sample-0001",
        "hold_id": s.booking,
        "amount_fen": 5000,
        "reason": "patient_cancelled",
        "request_key": f"cancel:{s.booking}",
        "part": 0,
    },
    "get_payment_refund": lambda s: {"payment_id": "pay-sample-0001", "part": 0},
    "refunded_parts_fen": lambda s: {"payment_id": "pay-sample-0001"},
    "list_booking_payments": lambda s: {"booking_id": s.booking},
    "list_account_booking_refunds": lambda s: {"account_id": s.account, "booking_id": s.booking},
    "claim_due_refunds": lambda s: {"limit": 50, "lease_s": 30.0},
    "insert_reschedule": lambda s: {
        "reschedule_id": s.booking.replace(s.booking.split(".")[-1], "m" * 24),
        "booking_id": s.booking,
        "account_id": s.account,
        "patient_id": "p-sample",
        "slot_id": "sl-sample",
        "kind": "patient",
        "old_amount_fen": 5000,
        "moving_until": at(MARCH_1, 9, 30),
        "charge_fen": 0,
    },
    "lock_reschedule": lambda s: {"reschedule_id": s.booking},
    "finish_reschedule": lambda s: {
        "reschedule_id": s.booking,
        "status": "aborted",
        "new_amount_fen": None,
        "refund_fen": 0,
        "error": "sold_out",
    },
    "set_reschedule_charge": lambda s: {
        "reschedule_id": s.booking.replace(s.booking.split(".")[-1], "m" * 24),
        "charge_fen": 100,
    },
    "claim_pending_reschedules": lambda s: {"margin_s": 2.0, "limit": 50, "lease_s": 30.0},
    "offer_substitutions": lambda s: {
        "schedule_id": s.morning,
        "target_schedule_id": s.morning,
        "respond_by": at(MARCH_1, 10, 0),
    },
    "get_substitution_offer": lambda s: {"booking_id": s.booking, "account_id": s.account},
    "start_substitution_answer": lambda s: {
        "booking_id": s.booking,
        "account_id": s.account,
        "status": "declined",
    },
    "close_substitution_offer": lambda s: {
        "booking_id": s.booking,
        "status": "offered",
        "new_booking_id": None,
    },
    "list_schedule_kept_bookings": lambda s: {"schedule_id": s.morning},
    "list_hospital_day_schedules": lambda s: {"hospital_id": s.hospital, "visit_date": VISIT},
    "list_schedules_releases": lambda s: {"hospital_id": s.hospital, "schedule_ids": [s.morning]},
    "find_hospital_bookings": lambda s: {
        "hospital_id": s.hospital,
        "booking_id": s.booking,
        "his_appointment_no": None,
        "visit_date": VISIT,
        "schedule_id": None,
        "limit": 20,
    },
    "list_hospital_bans": lambda s: {"hospital_id": s.hospital, "limit": 50},
    "insert_staff_account": lambda s: {
        "username": "li-ops",
        "password_hash": STAFF_HASH,
        "platform": False,
        "hospitals": [s.hospital],
    },
    "get_staff_account": lambda s: {"username": "li-ops"},
    "list_staff_accounts": lambda s: {},
    "set_staff_password": lambda s: {"username": "li-ops", "password_hash": STAFF_HASH},
    "disable_staff_account": lambda s: {"username": "li-ops"},
    "record_staff_login_failure": lambda s: {
        "username": "li-ops",
        "max_failures": 5,
        "lock_s": 900,
    },
    "record_staff_login": lambda s: {"username": "li-ops", "password_hash": None},
    "move_booking_payment": lambda s: {
        "old_booking_id": s.booking,
        "new_booking_id": s.booking,
    },
    "get_account_by_wechat_unionid": lambda s: {"unionid": "u-sample"},
    "touch_wechat_account": lambda s: {"account_id": s.account, "openid": "o-sample"},
    "upsert_wechat_account": lambda s: {
        "account_id": "acct-new",
        "openid": "o-seed-parent-a",
        "unionid": "u-sample",
    },
    "upsert_phone_account": lambda s: {
        "account_id": "acct-phone",
        "phone_index": b"\x02" * 32,
        "key_id": "f1",
        "phone_enc": b"\x01\x02f1" + b"\x00" * 40,
    },
    "insert_login_session": lambda s: {
        "session_id": "sess-sample",
        "account_id": s.account,
        "method": "sms",
        "max_s": 3600.0,
    },
    "insert_refresh_token": lambda s: {
        "token_hash": b"\x03" * 32,
        "session_id": s.login_session,
        "ttl_s": 60.0,
    },
    "lock_refresh_token": lambda s: {"token_hash": s.refresh_hash},
    "use_refresh_token": lambda s: {"token_hash": s.refresh_hash},
    "revoke_login_session": lambda s: {"session_id": s.login_session, "reason": "logout"},
    "lock_accounts_to_reencrypt": lambda s: {"current_key_id": "k9", "after_id": "", "batch": 10},
    "update_account_phone": lambda s: {
        "account_id": "acct-without-a-row",
        "key_id": "k9",
        "phone_enc": b"\x01\x02k9" + b"\x00" * 40,
    },
    "count_accounts_by_key": lambda s: {},
    "finish_refund": lambda s: {
        "refund_id": "ref-sample-0001",
        "status": "failed",
        "provider_refund_id": None,
        "last_error": "provider timeout",
        "next_attempt_at": at(MARCH_1, 9, 20),
    },
    "list_window_schedules": lambda s: {
        "first_day": VISIT,
        "last_day": NEXT_DAY,
        "only_hospitals": None,
        "but_hospitals": [],
    },
    "list_window_slots": lambda s: {
        "first_day": VISIT,
        "last_day": NEXT_DAY,
        "only_hospitals": None,
        "but_hospitals": [],
    },
    "upsert_his_slots": lambda s: {
        "slot_ids": [s.slot_early, s.slot_mid],
        "his_capacities": [4, 2],
        "other_channels": [1, 0],
    },
    "list_schedule_open_bookings": lambda s: {"schedule_id": s.morning},
    "list_suspensions_to_finish": lambda s: {"since_date": VISIT, "limit": 20},
    "add_booking_event": lambda s: {
        "event_key": f"booking_cancelled_by_suspension:{s.booking}",
        "type": "booking_cancelled_by_suspension",
        "booking_id": s.booking,
        "at": at(VISIT, 7, 0),
        "payload": {"code": "suspended", "refund_id": None},
    },
    "list_lifecycle_events": lambda s: {"after_id": 0, "limit": 100},
    "record_visit": lambda s: {
        "booking_id": s.booking,
        "checked_in_at": at(VISIT, 8, 5),
        "checked_in_by": "kiosk",
        "consultation_started_at": at(VISIT, 8, 20),
        "consultation_ended_at": at(VISIT, 8, 31),
    },
    "record_no_show": lambda s: {"booking_id": s.booking, "no_show_at": at(VISIT, 12, 30)},
    "get_booking_visit": lambda s: {"booking_id": s.booking},
    "list_visit_bookings": lambda s: {"booking_ids": [s.booking]},
    "list_no_show_candidates": lambda s: {
        "statuses": ["his_confirmed"],
        "default_grace_s": 1800.0,
        "max_age_days": 7,
        "limit": 100,
    },
    "list_unchecked_no_shows": lambda s: {"limit": 100},
    "list_patient_no_shows": lambda s: {
        "patient_id": s.patient,
        "hospital_id": s.hospital,
        "since": at(VISIT, 0, 0) - timedelta(days=90),
        "until": at(VISIT, 23, 0),
    },
    "mark_ban_checked": lambda s: {"booking_id": s.booking},
    "last_ban_decision": lambda s: {"patient_id": s.patient, "hospital_id": s.hospital},
    "add_ban_history": lambda s: {
        "event_key": f"patient_banned:{s.booking}",
        "patient_id": s.patient,
        "hospital_id": s.hospital,
        "action": "banned",
        "banned_until": at(VISIT, 12, 30) + timedelta(days=90),
        "reason": "no_show_rule",
        "decided_by": "no_show_rule",
        "no_shows": [s.booking],
        "at": at(VISIT, 12, 30),
    },
    "list_patient_ban_history": lambda s: {"patient_id": s.patient},
    "add_patient_event": lambda s: {
        "event_key": f"patient_banned:{s.booking}",
        "type": "patient_banned",
        "patient_id": s.patient,
        "hospital_id": s.hospital,
        "at": at(VISIT, 12, 30),
        "payload": {"reason": "no_show_rule"},
    },
    "claim_his_submissions": lambda s: {
        "limit": 10,
        "lease_s": 60.0,
        "only_hospitals": None,
        "but_hospitals": [],
    },
    "record_his_appointment": lambda s: {
        "booking_id": s.booking,
        "appointment_id": "appt-17",
        "appointment_no": "3",
        "visit_time": at(VISIT, 8, 20),
        "place": "门诊楼3层 心内科诊区",
    },
    "defer_his_submission": lambda s: {
        "booking_id": s.booking,
        "delay_s": 5.0,
        "error": "his_unavailable",
        "counted": True,
    },
    "reject_booking": lambda s: {"booking_id": s.booking, "reason": "his_rejected: full"},
    "claim_his_cancellations": lambda s: {
        "limit": 10,
        "lease_s": 60.0,
        "only_hospitals": None,
        "but_hospitals": [],
    },
    "mark_his_cancelled": lambda s: {"booking_id": s.booking, "error": ""},
    "list_unreleased_bookings": lambda s: {
        "older_than_s": 30.0,
        "limit": 100,
        "only_hospitals": None,
        "but_hospitals": [],
    },
    "list_window_bookings": lambda s: {
        "first_day": VISIT,
        "last_day": NEXT_DAY,
        "only_hospitals": None,
        "but_hospitals": [],
    },
    "requeue_his_submission": lambda s: {"booking_id": s.booking},
    "list_department_booking_outcomes": lambda s: {
        "department_id": s.cardio,
        "from_date": VISIT,
        "to_date": NEXT_DAY,
    },
    "start_reconciliation_run": lambda s: {
        "first_day": VISIT,
        "last_day": NEXT_DAY,
        "mode": "fix",
        "policy": ["missing_in_his", "capacity_changed"],
    },
    "finish_reconciliation_run": lambda s: {
        "run_id": 1,
        "status": "completed",
        "found": {"missing_in_his": 1},
        "fixed": {"missing_in_his": 1},
        "error": "",
    },
    "sample_open_money_and_his_queue": lambda s: {},
    "sample_his_queue_by_hospital": lambda s: {},
    "add_reconciliation_items": lambda s: {
        "run_id": 1,
        "kinds": ["missing_in_his"],
        "subjects": [s.booking],
        "details": [{"status": "his_confirmed"}],
        "actions": ["fixed"],
        "errors": [""],
    },
    "list_schedule_outcomes": lambda s: {
        "hospital_id": s.hospital,
        "from_date": VISIT,
        "to_date": NEXT_DAY,
    },
    "list_cancellation_leads": lambda s: {
        "hospital_id": s.hospital,
        "from_date": VISIT,
        "to_date": NEXT_DAY,
    },
    "begin_operator_audit": lambda s: {
        "actor": "ops-1",
        "role": "hospital",
        "scope": [s.hospital],
        "method": "POST",
        "route": "/v1/operator/schedules/{schedule_id}/suspend",
        "object": {"schedule_id": s.morning},
        "request_id": "req-sample",
    },
    "finish_operator_audit": lambda s: {
        "id": 1,
        "status": 200,
        "hospital_id": s.hospital,
        "before": {"status": "open"},
        "after": {"status": "suspended"},
    },
    "list_operator_audit": lambda s: {
        "hospitals": [s.hospital],
        "since": at(MARCH_1, 0, 0),
        "until": at(NEXT_DAY, 0, 0),
        "after_id": 0,
        "limit": 100,
    },
    "insert_room_release": lambda s: {
        "release_id": f"{s.cardio}.{VISIT:%Y%m%d}.am",
        "tag": s.tag,
        "hospital_id": s.hospital,
        "schedule_ids": [s.morning],
        "t0": at(MARCH_1, 8),
        "opens_at": at(MARCH_1, 7, 30),
        "seed_hash": "ab" * 32,
        "factor": 1.2,
        "token_s": 60,
        "opened_at": at(MARCH_1, 7),
    },
    "set_room_drawn": lambda s: {
        "release_id": f"{s.cardio}.{VISIT:%Y%m%d}.am",
        "seed": "cd" * 32,
        "drawn": 2000,
        "drawn_at": at(MARCH_1, 8),
    },
    "set_room_seed_hash": lambda s: {
        "release_id": f"{s.cardio}.{VISIT:%Y%m%d}.am",
        "seed_hash": "ab" * 32,
    },
    "set_room_sold_out": lambda s: {
        "release_id": f"{s.cardio}.{VISIT:%Y%m%d}.am",
        "sold_out_at": at(MARCH_1, 8, 1),
    },
    "insert_room_ticket": lambda s: {
        "ticket_id": "abcdefghijklmnopqrstuvwx",
        "release_id": f"{s.cardio}.{VISIT:%Y%m%d}.am",
        "account_id": s.account,
        "patient_id": s.patient,
        "joined_at": at(MARCH_1, 7, 45),
        "late_seq": 0,
    },
    "admit_room_ticket": lambda s: {
        "ticket_id": "abcdefghijklmnopqrstuvwx",
        "position": 1,
        "admitted_at": at(MARCH_1, 8),
        "token_expires_at": at(MARCH_1, 8, 1),
    },
    "use_room_ticket": lambda s: {"ticket_id": "abcdefghijklmnopqrstuvwx", "hold_id": s.booking},
    "lapse_room_ticket": lambda s: {"ticket_id": "abcdefghijklmnopqrstuvwx"},
    "list_tag_live_rooms": lambda s: {"tag": s.tag},
    "list_room_tickets": lambda s: {"release_id": f"{s.cardio}.{VISIT:%Y%m%d}.am"},
}


def test_every_named_query_has_a_sample() -> None:
    """The parametrized test below covers every query of queries.sql."""
    assert set(SAMPLES) == set(NAMED_QUERIES) == set(QUERIES)


@pytest.mark.parametrize("name", sorted(SAMPLES))
async def test_every_named_query_executes(name: str, pool: asyncpg.Pool, seeded: Seed) -> None:
    """Each named query runs against the migrated schema with realistic arguments."""
    async with rolled_back(pool) as connection:
        await run(connection, name, **SAMPLES[name](seeded))


async def test_catalogue_reads_follow_the_patients_path(pool: asyncpg.Pool, seeded: Seed) -> None:
    """Hospital -> department tree -> doctors -> schedules of a day -> slots, as seeded."""
    async with rolled_back(pool) as c:
        hospitals = {row["id"]: row for row in await run(c, "list_hospitals")}
        assert set(hospitals) == {seeded.hospital, seeded.other_hospital}
        assert hospitals[seeded.hospital]["policy"] == POLICY
        assert hospitals[seeded.hospital]["timezone"] == "Asia/Shanghai"
        assert await one(c, "get_hospital", hospital_id="no-such") is None

        tree = await run(c, "list_department_tree", hospital_id=seeded.hospital)
        assert [(r["id"], r["depth"]) for r in tree] == [
            (seeded.internal, 0),
            (seeded.gastro, 1),
            (seeded.cardio, 1),
            (seeded.surgery, 0),
            (seeded.ortho, 1),
        ]
        cardio = next(r for r in tree if r["id"] == seeded.cardio)
        assert cardio["path"] == [seeded.internal, seeded.cardio]
        assert cardio["parent_id"] == seeded.internal
        assert cardio["name"] == "心内科"

        doctors = await run(c, "list_department_doctors", department_id=seeded.cardio)
        assert {(d["name"], d["title"], d["specialty"]) for d in doctors} == {
            ("张三", "主任医师", "冠心病介入治疗"),
            ("李四", "副主任医师", "高血压、心律失常"),
        }

        day = await run(
            c, "list_department_schedules", department_id=seeded.cardio, visit_date=VISIT
        )
        assert [r["id"] for r in day] == [seeded.morning, seeded.afternoon]
        morning, afternoon = day
        assert (morning["doctor_name"], morning["doctor_title"]) == ("张三", "主任医师")
        assert morning["doctor_specialty"] == "冠心病介入治疗"
        assert (morning["slot_count"], morning["capacity"]) == (3, 5)
        assert (afternoon["slot_count"], afternoon["capacity"]) == (0, 0)
        assert morning["session"] == "morning"
        assert morning["starts_at"] == at(VISIT, 8)
        assert morning["fee_fen"] == 5000
        assert morning["status"] == "open"
        next_day = await run(
            c, "list_department_schedules", department_id=seeded.cardio, visit_date=NEXT_DAY
        )
        assert [r["id"] for r in next_day] == [seeded.next_day]

        slots = await run(c, "list_schedule_slots", schedule_id=seeded.morning)
        assert [(s["id"], s["capacity"]) for s in slots] == [
            (seeded.slot_early, 3),
            (seeded.slot_mid, 2),
            (seeded.slot_late, 0),
        ]
        tag_slots = await run(c, "list_tag_slots", department_id=seeded.cardio, visit_date=VISIT)
        assert {s["id"] for s in tag_slots} == {s["id"] for s in slots}

        location = await one(c, "get_slot_location", slot_id=seeded.slot_mid)
        assert location is not None
        assert dict(location) == {
            "slot_id": seeded.slot_mid,
            "schedule_id": seeded.morning,
            "hospital_id": seeded.hospital,
            "department_id": seeded.cardio,
            "visit_date": VISIT,
            "schedule_status": "open",
            "capacity": 2,
        }
        assert await one(c, "get_slot_location", slot_id="slot-nope") is None

        schedule = await one(c, "get_schedule", schedule_id=seeded.morning)
        assert schedule is not None
        assert schedule["hospital_policy"] == POLICY
        assert schedule["department_name"] == "心内科"
        assert schedule["hospital_name"] == "北京协和医院"


async def test_upserts_update_in_place_and_say_so(pool: asyncpg.Pool, seeded: Seed) -> None:
    """A second upsert of the same id updates the row and reports inserted = false."""
    async with rolled_back(pool) as c:
        row = await one(
            c,
            "upsert_hospital",
            hospital_id=seeded.hospital,
            name="北京协和医院（东院）",
            timezone="Asia/Shanghai",
            policy={"hold_ttl_s": 600},
        )
        assert row is not None
        assert row["inserted"] is False
        assert row["policy"] == {"hold_ttl_s": 600}
        new = await one(c, "upsert_slot", **SAMPLES["upsert_slot"](seeded) | {"slot_id": "s-x"})
        assert new is not None
        assert new["inserted"] is True
        again = await one(c, "upsert_slot", **SAMPLES["upsert_slot"](seeded) | {"capacity": 9})
        assert again is not None
        assert (again["inserted"], again["capacity"]) == (False, 9)
        status = await one(
            c,
            "set_schedule_status",
            schedule_id=seeded.morning,
            status="suspended",
            reason="x",
            source="operator",
        )
        assert status is not None
        assert status["status"] == "suspended"


async def test_schedule_and_slot_keep_their_tag(pool: asyncpg.Pool, seeded: Seed) -> None:
    """A schedule cannot move to another date and a slot cannot move to another schedule."""
    async with rolled_back(pool) as c:
        moved = SAMPLES["upsert_schedule"](seeded) | {"visit_date": NEXT_DAY}
        moved |= {
            "starts_at": at(NEXT_DAY, 8),
            "ends_at": at(NEXT_DAY, 12),
            "session": "evening",
        }
        with pytest.raises(asyncpg.CheckViolationError, match="cannot move"):
            async with c.transaction():
                await run(c, "upsert_schedule", **moved)
        slot = SAMPLES["upsert_slot"](seeded) | {"schedule_id": seeded.afternoon}
        with pytest.raises(asyncpg.CheckViolationError, match="cannot move"):
            async with c.transaction():
                await run(c, "upsert_slot", **slot)


async def test_department_parent_must_be_in_the_same_hospital(
    pool: asyncpg.Pool, seeded: Seed
) -> None:
    """A sub-department of another hospital's department is refused (checked at commit)."""
    async with rolled_back(pool) as c:
        await run(
            c,
            "upsert_department",
            department_id="dept-stray",
            hospital_id=seeded.hospital,
            parent_id=seeded.other_department,
            name="走错了",
            sort_order=0,
        )
        with pytest.raises(asyncpg.ForeignKeyViolationError):
            await c.execute("SET CONSTRAINTS ALL IMMEDIATE")


async def test_one_resident_id_is_one_patient_for_every_account(
    pool: asyncpg.Pool, seeded: Seed
) -> None:
    """Registering a known ID number adds no patient; accounts link to the existing one."""
    async with rolled_back(pool) as c:
        again = SAMPLES["insert_patient"](seeded) | {
            "patient_id": "pat-dupe",
            "blind_index": blind_index(seeded.resident_id),
        }
        assert await one(c, "insert_patient", **again) is None
        found = await one(
            c, "get_patient_by_blind_index", blind_index=blind_index(seeded.resident_id)
        )
        assert found is not None
        assert found["id"] == seeded.patient
        assert found["name_enc"] == b"\x01ciphertext-of-name"
        assert found["birth_date"] == date(1949, 12, 31)

        for account in (seeded.account, seeded.other_account):
            rows = await run(c, "list_account_patients", account_id=account)
            assert [(r["id"], r["relation"]) for r in rows] == [(seeded.patient, "child")]
        assert (
            await one(
                c,
                "link_account_patient",
                account_id=seeded.account,
                patient_id=seeded.patient,
                relation="self",
            )
            is None
        )
        linked = await one(
            c, "account_has_patient", account_id="acct-stranger", patient_id=seeded.patient
        )
        assert linked is not None
        assert linked["linked"] is False
        assert (
            await one(
                c, "get_account_patient", account_id="acct-stranger", patient_id=seeded.patient
            )
            is None
        )
        assert (
            await one(
                c,
                "unlink_account_patient",
                account_id=seeded.other_account,
                patient_id=seeded.patient,
            )
            is not None
        )
        assert await run(c, "list_account_patients", account_id=seeded.other_account) == []
        assert await one(c, "get_patient", patient_id=seeded.patient) is not None


async def test_hold_rows_only_move_forward(pool: asyncpg.Pool, seeded: Seed) -> None:
    """Reordered, redelivered or stale writes of a hold never move it backwards."""
    hold_id = new_hold_id(seeded, "forward")
    async with rolled_back(pool) as c:
        created = await one(c, "upsert_hold", **hold_values(seeded, hold_id, last_seq=3))
        assert created is not None
        assert created["inserted"] is True
        extended = hold_values(
            seeded, hold_id, last_seq=4, extended=True, deadline=at(MARCH_1, 9, 25)
        )
        assert await one(c, "upsert_hold", **extended) is not None
        # The confirm path writes the booked hold from the store's reply, without a seq.
        paid = booked(
            seeded, hold_id, at(MARCH_1, 9, 20), extended=True, deadline=at(MARCH_1, 9, 25)
        )
        assert await one(c, "upsert_hold", **paid) is not None
        # A redelivered hold_created (seq 3) and a stale reply change nothing.
        assert await one(c, "upsert_hold", **hold_values(seeded, hold_id, last_seq=3)) is None
        assert await one(c, "upsert_hold", **paid) is None
        # The persister's booking_confirmed (seq 5) catches up: same state, newer seq.
        caught_up = await one(c, "upsert_hold", **paid | {"last_seq": 5})
        assert caught_up is not None
        assert (caught_up["state"], caught_up["last_seq"]) == ("booked", 5)
        cancelled = paid | {
            "state": "cancelled",
            "ended_at": at(MARCH_1, 11),
            "end_reason": "patient_cancelled",
            "last_seq": 6,
        }
        assert await one(c, "upsert_hold", **cancelled) is not None
        assert await one(c, "upsert_hold", **paid | {"last_seq": 5}) is None
        row = await one(c, "get_hold", hold_id=hold_id)
        assert row is not None
        assert (row["state"], row["extended"], row["deadline"]) == (
            "cancelled",
            True,
            at(MARCH_1, 9, 25),
        )
        assert row["payment_ref"] == paid["payment_ref"]
        holds = await run(c, "list_account_holds", account_id=seeded.account, limit=10)
        assert hold_id in {h["hold_id"] for h in holds}


async def test_open_holds_are_held_with_their_deadline_ahead(
    pool: asyncpg.Pool, seeded: Seed
) -> None:
    """The account's open holds: held and not past their deadline, newest first; not a
    lapsed one, not a booking, not another account's."""
    later = datetime.now(UTC) + timedelta(minutes=10)
    async with rolled_back(pool) as c:
        ids = {name: new_hold_id(seeded, f"open-{name}") for name in ("old", "new", "lapsed")}
        await run(c, "upsert_hold", **hold_values(seeded, ids["old"], deadline=later))
        newer = hold_values(seeded, ids["new"], deadline=later)
        newer["created_at"] += timedelta(minutes=1)
        await run(c, "upsert_hold", **newer)
        earlier = datetime.now(UTC) - timedelta(minutes=1)
        await run(c, "upsert_hold", **hold_values(seeded, ids["lapsed"], deadline=earlier))
        paid = new_hold_id(seeded, "open-paid")
        await run(c, "upsert_hold", **booked(seeded, paid, at(MARCH_1, 9, 5), deadline=later))
        other = hold_values(seeded, new_hold_id(seeded, "open-x", "acct-other"), deadline=later)
        await run(c, "upsert_hold", **other | {"account_id": "acct-other"})
        rows = await run(c, "list_account_open_holds", account_id=seeded.account, limit=10)
        assert [r["hold_id"] for r in rows] == [ids["new"], ids["old"]]
        rows = await run(c, "list_account_open_holds", account_id=seeded.account, limit=1)
        assert [r["hold_id"] for r in rows] == [ids["new"]]


async def test_bookings_by_account_and_id(pool: asyncpg.Pool, seeded: Seed) -> None:
    """An account pages through its own bookings; another account's look missing."""
    async with rolled_back(pool) as c:
        ids = []
        for minute in (10, 20, 30):
            hold_id = new_hold_id(seeded, f"page-{minute}")
            await run(c, "upsert_hold", **booked(seeded, hold_id, at(MARCH_1, 9, minute)))
            assert await one(c, "insert_booking", hold_id=hold_id) is not None
            ids.append(hold_id)
        assert await one(c, "insert_booking", hold_id=ids[0]) is None  # already recorded
        first = await run(
            c,
            "list_account_bookings",
            account_id=seeded.account,
            before_confirmed_at=None,
            before_booking_id=None,
            limit=2,
        )
        assert [b["booking_id"] for b in first] == [ids[2], ids[1]]
        rest = await run(
            c,
            "list_account_bookings",
            account_id=seeded.account,
            before_confirmed_at=first[-1]["confirmed_at"],
            before_booking_id=first[-1]["booking_id"],
            limit=10,
        )
        assert [b["booking_id"] for b in rest] == [ids[0], seeded.booking]
        assert (
            await run(
                c,
                "list_account_bookings",
                account_id=seeded.other_account,
                before_confirmed_at=None,
                before_booking_id=None,
                limit=10,
            )
            == []
        )

        mine = await one(c, "get_account_booking", account_id=seeded.account, booking_id=ids[0])
        assert mine is not None
        assert mine["status"] == "confirmed"
        assert mine["hold_id"] == mine["booking_id"] == ids[0]
        assert (mine["doctor_name"], mine["doctor_title"]) == ("张三", "主任医师")
        assert (mine["department_name"], mine["hospital_name"]) == ("心内科", "北京协和医院")
        assert mine["slot_starts_at"] == at(VISIT, 8)
        assert mine["visit_date"] == VISIT
        assert mine["amount_fen"] == 5000
        assert (
            await one(c, "get_account_booking", account_id=seeded.other_account, booking_id=ids[0])
            is None
        )

        cancelled = await one(
            c,
            "cancel_booking",
            booking_id=ids[0],
            cancelled_at=at(MARCH_1, 12),
            reason="patient_cancelled",
        )
        assert cancelled is not None
        assert cancelled["status"] == "cancelled"
        assert (
            await one(
                c, "cancel_booking", booking_id=ids[0], cancelled_at=at(MARCH_1, 13), reason="again"
            )
            is None
        )
        row = await one(c, "get_booking", booking_id=ids[0])
        assert row is not None
        assert (row["status"], row["cancel_reason"]) == ("cancelled", "patient_cancelled")


async def test_a_held_hold_is_not_a_booking(pool: asyncpg.Pool, seeded: Seed) -> None:
    """insert_booking copies only booked holds."""
    hold_id = new_hold_id(seeded, "unpaid")
    async with rolled_back(pool) as c:
        await run(c, "upsert_hold", **hold_values(seeded, hold_id))
        assert await one(c, "insert_booking", hold_id=hold_id) is None


async def test_status_history_records_each_change_once(pool: asyncpg.Pool, seeded: Seed) -> None:
    """A redelivered change (same event key) adds no second history row."""
    async with rolled_back(pool) as c:
        sample = SAMPLES["add_status_history"](seeded)
        assert await one(c, "add_status_history", **sample) is not None
        assert await one(c, "add_status_history", **sample) is None
        submitted = sample | {
            "from_status": "confirmed",
            "to_status": "submitted",
            "at": at(MARCH_1, 9, 6),
            "event_key": f"his:{seeded.booking}:submitted",
        }
        await run(c, "add_status_history", **submitted)
        history = await run(c, "list_status_history", hold_id=seeded.booking)
        assert [(h["from_status"], h["to_status"]) for h in history] == [
            ("held", "booked"),
            ("confirmed", "submitted"),
        ]


async def test_event_log_is_idempotent_and_advances_the_tag_sequence(
    pool: asyncpg.Pool, seeded: Seed
) -> None:
    """(tag, seq) is recorded once; tag_sequences holds the highest seq and never goes down."""
    tag = keys.department_day_tag("dept-events", VISIT)
    event = {
        "tag": tag,
        "seq": 7,
        "type": "hold_created",
        "at": at(MARCH_1, 9),
        "payload": {"hold": "h", "rem": "4"},
        "stream_id": "1803862800000-0",
    }
    async with rolled_back(pool) as c:
        assert await one(c, "get_tag_sequence", tag=tag) is None
        first = await one(c, "record_event", **event)
        assert first is not None
        assert (first["inserted"], first["stored_stream_id"]) == (True, None)
        redelivered = await one(c, "record_event", **event)
        assert redelivered is not None
        assert (redelivered["inserted"], redelivered["stored_stream_id"]) == (
            False,
            event["stream_id"],
        )
        diverged = await one(c, "record_event", **event | {"stream_id": "1803869999999-0"})
        assert diverged is not None
        assert diverged["inserted"] is False
        assert diverged["stored_stream_id"] == event["stream_id"]

        sequence = await one(c, "get_tag_sequence", tag=tag)
        assert sequence is not None
        assert sequence["last_seq"] == 7
        await run(c, "record_event", **event | {"seq": 3, "stream_id": "1803862700000-0"})
        sequence = await one(c, "get_tag_sequence", tag=tag)
        assert sequence is not None
        assert sequence["last_seq"] == 7  # an older event arriving late does not lower it

        events = await run(c, "list_tag_events", tag=tag, after_seq=0, limit=10)
        assert [(e["seq"], e["payload"]) for e in events] == [
            (3, {"hold": "h", "rem": "4"}),
            (7, {"hold": "h", "rem": "4"}),
        ]


async def test_record_events_writes_a_batch_and_reports_each_event(
    pool: asyncpg.Pool, seeded: Seed
) -> None:
    """A batch with new, redelivered and colliding events reports each, and advances per tag."""
    a = keys.department_day_tag("dept-batch-a", VISIT)
    b = keys.department_day_tag("dept-batch-b", VISIT)
    async with rolled_back(pool) as c:
        await run(
            c,
            "record_event",
            tag=a,
            seq=1,
            type="hold_created",
            at=at(MARCH_1, 9),
            payload={},
            stream_id="1-0",
        )
        await run(
            c,
            "record_event",
            tag=a,
            seq=2,
            type="hold_created",
            at=at(MARCH_1, 9),
            payload={},
            stream_id="2-0",
        )
        rows = await run(
            c,
            "record_events",
            tags=[b, a, a, a],
            seqs=[5, 1, 2, 3],
            types=["hold_created", "hold_created", "hold_expired", "booking_confirmed"],
            ats=[at(MARCH_1, 9)] * 4,
            payloads=[{"n": 1}, {}, {}, {"payment_ref": "wx"}],
            stream_ids=["9-0", "1-0", "2-1", "3-0"],
        )
        assert [(r["tag"], r["seq"], r["inserted"], r["stored_stream_id"]) for r in rows] == [
            (a, 1, False, "1-0"),  # redelivery
            (a, 2, False, "2-0"),  # collision: stored under another stream id
            (a, 3, True, None),
            (b, 5, True, None),
        ]
        sequences = await run(c, "list_tag_sequences", tags=[a, b, "dept-none:20270308"])
        assert [(s["tag"], s["last_seq"]) for s in sequences] == [(a, 3), (b, 5)]


async def test_dead_letters_count_attempts(pool: asyncpg.Pool, seeded: Seed) -> None:
    """The same failing entry is one row whose attempts go up and error is the latest."""
    async with rolled_back(pool) as c:
        sample = SAMPLES["record_dead_letter"](seeded)
        first = await one(c, "record_dead_letter", **sample)
        again = await one(c, "record_dead_letter", **sample | {"error": "still unknown"})
        assert first is not None
        assert again is not None
        assert (first["id"], first["attempts"]) == (again["id"], 1)
        assert again["attempts"] == 2
        error = await c.fetchval("SELECT error FROM dead_letters WHERE id = $1", again["id"])
        assert error == "still unknown"


async def test_patient_bans_keep_the_newest_decision(pool: asyncpg.Pool, seeded: Seed) -> None:
    """A ban decided earlier than the stored one, redelivered late, changes nothing."""
    async with rolled_back(pool) as c:
        ban = SAMPLES["upsert_patient_ban"](seeded)
        assert await one(c, "upsert_patient_ban", **ban) is not None
        lifted = ban | {
            "banned_until": at(MARCH_1, 11),
            "reason": "lifted",
            "decided_at": at(MARCH_1, 11),
        }
        assert await one(c, "upsert_patient_ban", **lifted) is not None
        assert await one(c, "upsert_patient_ban", **ban) is None
        bans = await run(c, "list_patient_bans", patient_id=seeded.patient)
        assert [(b["hospital_id"], b["reason"]) for b in bans] == [(seeded.hospital, "lifted")]


async def test_idempotency_keys_claim_complete_release_and_prune(
    pool: asyncpg.Pool, seeded: Seed
) -> None:
    """One claim per (account, key); the response is stored once; pruning keeps 24 hours."""
    async with rolled_back(pool) as c:
        claim = SAMPLES["claim_idempotency_key"](seeded)
        key = claim["key"]
        assert await one(c, "claim_idempotency_key", **claim) is not None
        assert await one(c, "claim_idempotency_key", **claim) is None
        other = claim | {"account_id": seeded.other_account}
        assert await one(c, "claim_idempotency_key", **other) is not None  # keys are per account
        done = await one(
            c,
            "complete_idempotency_key",
            account_id=seeded.account,
            key=key,
            response_status=201,
            response_body={"patient_id": "pat-9"},
        )
        assert done is not None
        assert (
            await one(
                c,
                "complete_idempotency_key",
                account_id=seeded.account,
                key=key,
                response_status=500,
                response_body=None,
            )
            is None
        )
        stored = await one(c, "get_idempotency_key", account_id=seeded.account, key=key)
        assert stored is not None
        assert (stored["response_status"], stored["response_body"]) == (
            201,
            {"patient_id": "pat-9"},
        )
        assert stored["fingerprint"] == claim["fingerprint"]
        # Completed keys stay; an unfinished claim can be released for a retry.
        assert await one(c, "release_idempotency_key", account_id=seeded.account, key=key) is None
        released = await one(c, "release_idempotency_key", account_id=seeded.other_account, key=key)
        assert released is not None

        # retention 0 still keeps everything younger than 24 hours
        pruned = await one(c, "prune_idempotency_keys", retention_s=0)
        assert pruned is not None
        assert pruned["deleted"] == 0
        await c.execute(
            "UPDATE idempotency_keys SET created_at = now() - interval '25 hours'"
            " WHERE account_id = $1 AND key = $2",
            seeded.account,
            key,
        )
        pruned = await one(c, "prune_idempotency_keys", retention_s=0)
        assert pruned is not None
        assert pruned["deleted"] == 1


def test_bind_orders_arguments_and_checks_names() -> None:
    """bind() puts arguments in $n order and refuses missing or unknown names."""
    sql, *args = bind("get_account_booking", booking_id="b", account_id="a")
    assert sql == QUERIES["get_account_booking"]
    assert args == ["a", "b"]
    with pytest.raises(TypeError, match="missing"):
        bind("get_account_booking", account_id="a")
    with pytest.raises(TypeError, match="unexpected"):
        bind("get_hold", hold_id="h", extra=1)
    with pytest.raises(TypeError, match="no query"):
        bind("no_such_query")


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        ("-- name: a\nSELECT 1", "no '-- params:' line"),
        ("-- name: a\n-- params: x\nSELECT 1", "do not match"),
        ("-- name: a\n-- params:\nSELECT $1", "do not match"),
        ("-- name: a\n-- params:\nSELECT 1;\n-- name: a\n-- params:\nSELECT 2", "twice"),
        ("SELECT 0;\n-- name: a\n-- params:\nSELECT 1", "before the first"),
        ("-- name: a\n-- params:\n-- only a comment\n", "no statement"),
        ("-- name: a\n-- params: x, x\nSELECT $1, $2", "named twice"),
    ],
)
def test_malformed_query_files_are_refused(text: str, problem: str) -> None:
    """The loader names what is wrong with a query file instead of shipping a broken query."""
    with pytest.raises(QueryLoadError, match=problem):
        parse_queries(text)


def test_query_parser_keeps_description_and_drops_trailing_comments() -> None:
    """Description lines become doc; section comments after a statement are not its SQL."""
    parsed = parse_queries(
        "-- name: a\n-- What a does.\n-- params: x\nSELECT $1;\n\n-- ==== next section\n"
    )
    assert parsed["a"].doc == "What a does."
    assert parsed["a"].sql == "SELECT $1"
    assert parsed["a"].params == ("x",)


def test_schema_doc_lists_every_query_with_its_parameters() -> None:
    """docs/schema.md has a row for every named query naming its parameters in order."""
    doc = (Path(__file__).resolve().parents[2] / "docs" / "schema.md").read_text()
    for query in NAMED_QUERIES.values():
        line = next((x for x in doc.splitlines() if x.startswith(f"| `{query.name}` |")), None)
        assert line is not None, query.name
        named = [part.split(":")[0].strip() for part in line.split("|")[2].split(",")]
        assert [n for n in named if n != "—"] == list(query.params), query.name
