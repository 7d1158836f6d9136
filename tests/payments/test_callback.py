"""The payment callback matrix (G15) against the live API process: notifications signed and
encrypted here with the session's test keys, each wrong in one way, are refused with the
check that failed and change nothing; the same payment then settles with a correct one.
Duplicates are answered 2xx and settle once."""

from __future__ import annotations

import asyncio
import base64
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import aiohttp
import asyncpg
import pytest

from inventory.payments.wechat import encrypt_resource
from inventory.simulators.paysim import KeySet, new_rsa_key, signature_headers
from tests.api.conftest import ApiServer

from .helpers import (
    FEE,
    Patient,
    catalogue,
    notification,
    payment_row,
    post_notification,
)


@dataclass
class Paying:
    """A patient with a hold whose payment has started."""

    patient: Patient
    hold_id: str
    payment_id: str


@pytest.fixture(scope="module")
async def slot(pay_api: ApiServer) -> str:
    """A slot with room for every test of this module."""
    async with aiohttp.ClientSession() as http:
        return (await catalogue(pay_api, http, [500]))[0]


@pytest.fixture
async def paying(pay_api: ApiServer, http: aiohttp.ClientSession, slot: str) -> Paying:
    """A fresh patient, hold and started payment."""
    patient = await Patient(pay_api, http).register()
    hold = await patient.hold(slot)
    payment = await patient.start_payment(hold["hold_id"])
    assert payment["status"] == "pending"
    assert payment["amount_fen"] == FEE
    return Paying(patient, hold["hold_id"], payment["payment_id"])


async def assert_unchanged(db: asyncpg.Pool, paying: Paying) -> None:
    """No booking, no refund, the payment still pending, the hold still held."""
    row = await payment_row(db, paying.payment_id)
    assert (row["status"], row["provider_txn_id"], row["settled_at"], row["booking_id"]) == (
        "pending",
        None,
        None,
        None,
    )
    async with db.acquire() as c:
        assert await c.fetchval("SELECT count(*) FROM bookings WHERE id = $1", paying.hold_id) == 0
        refunds = await c.fetchval(
            "SELECT count(*) FROM refunds WHERE payment_id = $1", paying.payment_id
        )
        assert refunds == 0
    status, hold = await paying.patient.get(f"/v1/holds/{paying.hold_id}")
    assert (status, hold["state"]) == (200, "held")


async def assert_booked(db: asyncpg.Pool, paying: Paying) -> None:
    """The hold is a booking bought by this payment; one booking, no refund."""
    row = await payment_row(db, paying.payment_id)
    assert (row["status"], row["booking_id"]) == ("paid", paying.hold_id)
    assert row["settled_at"] is not None
    status, booking = await paying.patient.get(f"/v1/bookings/{paying.hold_id}")
    assert status == 200, booking
    assert (booking["status"], booking["payment_ref"]) == ("confirmed", paying.payment_id)
    async with db.acquire() as c:
        assert await c.fetchval("SELECT count(*) FROM bookings WHERE id = $1", paying.hold_id) == 1
        assert (
            await c.fetchval(
                "SELECT count(*) FROM refunds WHERE payment_id = $1", paying.payment_id
            )
            == 0
        )


def _flip_first(data: bytes) -> bytes:
    return bytes([data[0] ^ 0x01]) + data[1:]


def _flip_tag(data: bytes) -> bytes:
    return data[:-1] + bytes([data[-1] ^ 0x80])


_OTHER_KEY = new_rsa_key()

#: name -> (notification options, expected status, expected reason)
MATRIX: dict[str, tuple[Callable[[KeySet], dict[str, Any]], int, str]] = {
    "bad signature (another RSA key)": (
        lambda k: {"signing_key": _OTHER_KEY},
        401,
        "signature_invalid",
    ),
    "unknown certificate serial": (
        lambda k: {"serial": "5157F09EFDC096DE15EBE81A47057A7232F1B8E1"},
        401,
        "unknown_serial",
    ),
    "timestamp 301 s ahead": (
        lambda k: {"header_options": {"timestamp": int(time.time()) + 301}},
        401,
        "timestamp_outside_window",
    ),
    "timestamp 301 s behind": (
        lambda k: {"header_options": {"timestamp": int(time.time()) - 301}},
        401,
        "timestamp_outside_window",
    ),
    "SIGNTEST probe": (
        lambda k: {
            "header_options": {
                "signature": "WECHATPAY/SIGNTEST/"
                + base64.b64encode(secrets.token_bytes(256)).decode()
            }
        },
        401,
        "signature_invalid",
    ),
    "signature headers missing": (
        lambda k: {"header_options": {"signature": ""}},
        401,
        "signature_missing",
    ),
    "altered ciphertext": (
        lambda k: {"body_options": {"tamper": _flip_first}},
        400,
        "decrypt_failed",
    ),
    "altered GCM tag": (
        lambda k: {"body_options": {"tamper": _flip_tag}},
        400,
        "decrypt_failed",
    ),
    "wrong associated data": (
        lambda k: {"body_options": {"declared_associated_data": "certificate"}},
        400,
        "decrypt_failed",
    ),
    "wrong amount": (lambda k: {"amount_fen": FEE - 1}, 400, "amount_mismatch"),
    "wrong mchid": (lambda k: {"mchid": "1900000999"}, 400, "merchant_mismatch"),
    "wrong appid": (lambda k: {"appid": "wx0000000000000000"}, 400, "merchant_mismatch"),
    "not a payment success": (
        lambda k: {"body_options": {"event_type": "TRANSACTION.CLOSED"}},
        400,
        "not_paid",
    ),
}


@pytest.mark.parametrize("case", sorted(MATRIX))
async def test_refused_notification_changes_nothing(
    case: str,
    pay_api: ApiServer,
    pay_keys: KeySet,
    pay_db: asyncpg.Pool,
    http: aiohttp.ClientSession,
    paying: Paying,
) -> None:
    """Each defect gets FAIL and its reason, changes nothing; a correct one then books."""
    options, status, reason = MATRIX[case]
    body, headers = notification(pay_keys, paying.payment_id, **options(pay_keys))
    if case == "signature headers missing":
        headers.pop("Wechatpay-Signature")
    answer_status, answer = await post_notification(pay_api, http, body, headers)
    assert answer_status == status, (case, answer)
    assert (answer["code"], answer["reason"]) == ("FAIL", reason), answer
    assert answer["message"]
    await assert_unchanged(pay_db, paying)
    good_status, good = await post_notification(
        pay_api, http, *notification(pay_keys, paying.payment_id)
    )
    assert good_status == 204, good
    await assert_booked(pay_db, paying)


async def test_body_changed_after_signing_is_refused(
    pay_api: ApiServer,
    pay_keys: KeySet,
    pay_db: asyncpg.Pool,
    http: aiohttp.ClientSession,
    paying: Paying,
) -> None:
    """The signature covers the raw bytes: the same JSON re-spaced no longer verifies."""
    body, headers = notification(pay_keys, paying.payment_id)
    respaced = body.replace(b'":', b'": ')
    assert respaced != body
    status, answer = await post_notification(pay_api, http, respaced, headers)
    assert (status, answer["reason"]) == (401, "signature_invalid")
    await assert_unchanged(pay_db, paying)


async def test_unknown_order_is_refused(
    pay_api: ApiServer, pay_keys: KeySet, http: aiohttp.ClientSession
) -> None:
    """A verified notification naming no payment of ours answers 404 FAIL unknown_order."""
    status, answer = await post_notification(
        pay_api, http, *notification(pay_keys, "p" + secrets.token_hex(13))
    )
    assert (status, answer["code"], answer["reason"]) == (404, "FAIL", "unknown_order")


async def test_timestamp_inside_the_window_is_accepted(
    pay_api: ApiServer,
    pay_keys: KeySet,
    pay_db: asyncpg.Pool,
    http: aiohttp.ClientSession,
    paying: Paying,
) -> None:
    """A notification signed 290 s ago (inside the 5-minute window) is taken."""
    status, answer = await post_notification(
        pay_api,
        http,
        *notification(
            pay_keys,
            paying.payment_id,
            header_options={"timestamp": int(time.time()) - 290},
        ),
    )
    assert status == 204, answer
    await assert_booked(pay_db, paying)


async def test_replayed_nonce_is_refused(
    pay_api: ApiServer,
    pay_keys: KeySet,
    pay_db: asyncpg.Pool,
    http: aiohttp.ClientSession,
    paying: Paying,
) -> None:
    """The same delivery sent again (same nonce and signature) is refused as a replay."""
    body, headers = notification(pay_keys, paying.payment_id)
    assert (await post_notification(pay_api, http, body, headers))[0] == 204
    status, answer = await post_notification(pay_api, http, body, headers)
    assert (status, answer["code"], answer["reason"]) == (401, "FAIL", "nonce_replayed")
    await assert_booked(pay_db, paying)


async def test_duplicate_notifications_settle_once(
    pay_api: ApiServer,
    pay_keys: KeySet,
    pay_db: asyncpg.Pool,
    http: aiohttp.ClientSession,
    paying: Paying,
) -> None:
    """Six deliveries of one payment (five concurrent) all get 204 and make one booking."""
    transaction_id = "4200" + secrets.token_hex(12)
    deliveries = [
        notification(pay_keys, paying.payment_id, transaction_id=transaction_id) for _ in range(5)
    ]
    answers = await asyncio.gather(
        *(post_notification(pay_api, http, body, headers) for body, headers in deliveries)
    )
    assert [status for status, _ in answers] == [204] * 5, answers
    again = await post_notification(
        pay_api, http, *notification(pay_keys, paying.payment_id, transaction_id=transaction_id)
    )
    assert again[0] == 204
    await assert_booked(pay_db, paying)
    row = await payment_row(pay_db, paying.payment_id)
    assert row["provider_txn_id"] == transaction_id
    payment = await paying.patient.payment(paying.hold_id)
    assert (payment["status"], payment["booking_id"]) == ("paid", paying.hold_id)


async def test_another_transaction_for_a_settled_payment_is_refused(
    pay_api: ApiServer,
    pay_keys: KeySet,
    pay_db: asyncpg.Pool,
    http: aiohttp.ClientSession,
    paying: Paying,
) -> None:
    """Another transaction id for a settled order is refused (409); the settlement stays."""
    assert (await post_notification(pay_api, http, *notification(pay_keys, paying.payment_id)))[
        0
    ] == 204
    before = await payment_row(pay_db, paying.payment_id)
    status, answer = await post_notification(
        pay_api, http, *notification(pay_keys, paying.payment_id)
    )
    assert (status, answer["reason"]) == (409, "transaction_mismatch")
    after = await payment_row(pay_db, paying.payment_id)
    assert after["provider_txn_id"] == before["provider_txn_id"]
    await assert_booked(pay_db, paying)


async def test_malformed_notifications_are_refused_without_server_errors(
    pay_api: ApiServer,
    pay_keys: KeySet,
    pay_db: asyncpg.Pool,
    http: aiohttp.ClientSession,
    paying: Paying,
) -> None:
    """Signed but unusable or oversized bodies get 4xx FAIL, never 5xx, changing nothing."""
    ciphertext = encrypt_resource(
        pay_keys.apiv3_key, b"[1, 2]", nonce="abcdef012345", associated_data=""
    )
    bodies = {
        b"not json": "bad_notification",
        b"[]": "bad_notification",
        b'{"resource_type": "encrypt-resource"}': "bad_notification",
        (
            b'{"resource_type": "encrypt-resource", "resource": {"algorithm": "AES_128_CBC",'
            b' "ciphertext": "", "nonce": "x"}}'
        ): "bad_notification",
        (
            b'{"resource_type": "encrypt-resource", "event_type": "TRANSACTION.SUCCESS",'
            b' "resource": {"algorithm": "AEAD_AES_256_GCM", "ciphertext": "'
            + ciphertext.encode()
            + b'", "nonce": "abcdef012345", "associated_data": ""}}'
        ): "bad_notification",
        b'{"resource_type": "encrypt-resource", "resource": {"algorithm": "AEAD_AES_256_GCM",'
        b' "ciphertext": "%%%", "nonce": "abcdef012345"}}': "decrypt_failed",
    }
    for body, reason in bodies.items():
        headers = signature_headers(body, pay_keys.platform_key, pay_keys.platform_serial)
        status, answer = await post_notification(pay_api, http, body, headers)
        assert (status, answer["code"], answer["reason"]) == (400, "FAIL", reason), body
    huge = b"{" + b" " * 20_000 + b"}"
    headers = signature_headers(huge, pay_keys.platform_key, pay_keys.platform_serial)
    status, answer = await post_notification(pay_api, http, huge, headers)
    assert (status, answer["code"]) == (413, "FAIL"), answer
    for broken in ({"Wechatpay-Timestamp": "x" * 20}, {"Wechatpay-Nonce": "bad nonce"}):
        headers = signature_headers(b"{}", pay_keys.platform_key, pay_keys.platform_serial)
        status, answer = await post_notification(pay_api, http, b"{}", headers | broken)
        assert (status, answer["reason"]) == (401, "signature_missing"), (broken, answer)
    await assert_unchanged(pay_db, paying)
