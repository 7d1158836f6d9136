"""WeChat Pay API v3: signatures, notification verification and decryption, and the
provider over its HTTP API (the real one, or the pay simulator in tests and dev).

Notifications (research/reliability.md §3.3), checked in this order, each failure refused
with its own reason and nothing changed:

1. ``Wechatpay-Timestamp``, ``-Nonce``, ``-Signature``, ``-Serial`` and
   ``-Signature-Type: WECHATPAY2-SHA256-RSA2048`` are present and well-formed;
2. the serial names a platform key we hold (``unknown_serial``);
3. the timestamp is within ``window_s`` of our clock, either way (``timestamp_outside_window``);
4. the signature verifies: SHA256withRSA (PKCS#1 v1.5) over
   ``timestamp + "\\n" + nonce + "\\n" + body + "\\n"``, with the **raw body bytes as
   received** (never parsed and re-serialised first). A ``WECHATPAY/SIGNTEST/`` probe fails
   here like any other bad signature: nothing special-cases it (``signature_invalid``);
5. the nonce was not seen before for this serial (``SET NX EX`` in Redis: ``nonce_replayed``);
6. the body is an ``encrypt-resource`` with ``AEAD_AES_256_GCM``, and the resource
   decrypts with the APIv3 key, ``resource.nonce`` and ``resource.associated_data``
   (``decrypt_failed`` on a tag failure: altered ciphertext, wrong AAD, wrong key);
7. the transaction is ours (``mchid``, ``appid``: ``merchant_mismatch``) and paid
   (``trade_state`` SUCCESS: ``not_paid``).

The amount and the order itself are checked against our payment row by the settlement
(inventory/payments/service.py).
"""

from __future__ import annotations

import base64
import binascii
import re
import secrets
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from typing import Any, Protocol
from urllib.parse import quote

import aiohttp
import orjson
import structlog
from cryptography.exceptions import InvalidSignature, InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import padding
from cryptography.hazmat.primitives.asymmetric.rsa import RSAPrivateKey, RSAPublicKey
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from multidict import CIMultiDict

from inventory.payments.errors import (
    NotificationRefusedError,
    ProviderRefusedError,
    ProviderUnavailableError,
)
from inventory.payments.provider import (
    CloseOutcome,
    Notification,
    PaymentOrder,
    Prepay,
    RefundOrder,
    RefundResult,
    RefundState,
    TradeState,
    Transaction,
)
from inventory.store.connection import RedisClient

log = structlog.get_logger(__name__)

SIGNATURE_TYPE = "WECHATPAY2-SHA256-RSA2048"
AUTH_SCHEME = "WECHATPAY2-SHA256-RSA2048"
ALGORITHM = "AEAD_AES_256_GCM"
#: WeChat Pay's notion of local time (RFC 3339 with +08:00 in its payloads).
CHINA = timezone(timedelta(hours=8))

#: Header values we accept before looking further (bounded, printable, no separators).
_NONCE_RE = re.compile(r"[A-Za-z0-9_-]{1,64}")
_SERIAL_RE = re.compile(r"[A-Za-z0-9_-]{1,64}")
_TIMESTAMP_RE = re.compile(r"[0-9]{1,12}")
_SIGNATURE_MAX = 1024


# -- primitives (shared with the pay simulator) -----------------------------------------------


def signed_message(*parts: bytes) -> bytes:
    """The signed text: every part followed by ``\\n`` (bytes as given, never re-encoded)."""
    return b"".join(part + b"\n" for part in parts)


def sign(private_key: RSAPrivateKey, message: bytes) -> str:
    """SHA256withRSA (PKCS#1 v1.5) of ``message``, base64."""
    signature = private_key.sign(message, padding.PKCS1v15(), hashes.SHA256())
    return base64.b64encode(signature).decode("ascii")


def verify(public_key: RSAPublicKey, message: bytes, signature_b64: str) -> bool:
    """Whether ``signature_b64`` is a valid SHA256withRSA signature of ``message``.

    Anything that is not a valid signature, including undecodable base64 and the
    ``WECHATPAY/SIGNTEST/`` probes, is simply False."""
    try:
        signature = base64.b64decode(signature_b64, validate=True)
        public_key.verify(signature, message, padding.PKCS1v15(), hashes.SHA256())
    except (InvalidSignature, binascii.Error, ValueError):
        return False
    return True


def encrypt_resource(key: bytes, plaintext: bytes, *, nonce: str, associated_data: str) -> str:
    """AES-256-GCM of ``plaintext`` (tag appended), base64: a notification's ciphertext."""
    return base64.b64encode(
        AESGCM(key).encrypt(nonce.encode(), plaintext, associated_data.encode())
    ).decode("ascii")


def decrypt_resource(key: bytes, ciphertext_b64: str, *, nonce: str, associated_data: str) -> bytes:
    """Open a notification resource; InvalidTag (or ValueError) when it is not authentic."""
    ciphertext = base64.b64decode(ciphertext_b64, validate=True)
    return AESGCM(key).decrypt(nonce.encode(), ciphertext, associated_data.encode())


def new_nonce() -> str:
    """A 32-character random nonce, as WeChat Pay uses."""
    return secrets.token_hex(16).upper()


def rfc3339(moment: datetime) -> str:
    """``2027-03-01T09:00:00+08:00``: WeChat Pay's time format."""
    return moment.astimezone(CHINA).isoformat(timespec="seconds")


def parse_transaction(data: Any) -> Transaction:
    """A transaction object (notification resource or query answer); ValueError if the
    fields we rely on are missing or of the wrong type."""
    if not isinstance(data, dict):
        raise ValueError("the transaction is not an object")
    amount = data.get("amount")
    if not isinstance(amount, dict):
        raise ValueError("amount is missing")
    total = amount.get("total")
    if not isinstance(total, int) or isinstance(total, bool):
        raise ValueError("amount.total is not an integer")
    fields = {}
    # A partner (服务商) order names the service provider as sp_mchid and sp_appid, and
    # the sub-merchant that collected it; a direct one, the merchant as mchid and appid.
    partner = "sp_mchid" in data
    for name in ("out_trade_no", "mchid", "appid", "trade_state"):
        source = ("sp_" + name) if partner and name in ("mchid", "appid") else name
        value = data.get(source)
        if not isinstance(value, str) or not value:
            raise ValueError(f"{source} is missing")
        fields[name] = value
    sub_mchid = data.get("sub_mchid", "") if partner else ""
    if not isinstance(sub_mchid, str) or (partner and not sub_mchid):
        raise ValueError("sub_mchid is missing")
    try:
        state = TradeState(fields["trade_state"])
    except ValueError:
        raise ValueError("unknown trade_state") from None
    transaction_id = data.get("transaction_id")
    if transaction_id is not None and not isinstance(transaction_id, str):
        raise ValueError("transaction_id is not a string")
    success_time = None
    raw_time = data.get("success_time")
    if isinstance(raw_time, str) and raw_time:
        success_time = datetime.fromisoformat(raw_time)
        if success_time.tzinfo is None:
            raise ValueError("success_time has no offset")
    currency = amount.get("currency", "CNY")
    if not isinstance(currency, str):
        raise ValueError("amount.currency is not a string")
    if state.paid and not transaction_id:
        raise ValueError("a paid transaction needs its transaction_id")
    return Transaction(
        payment_id=fields["out_trade_no"],
        trade_state=state,
        mchid=fields["mchid"],
        appid=fields["appid"],
        amount_fen=total,
        currency=currency,
        transaction_id=transaction_id or None,
        success_time=success_time,
        trade_state_desc=str(data.get("trade_state_desc", "")),
        sub_mchid=sub_mchid,
    )


# -- notifications ----------------------------------------------------------------------------


class ReplayGuard(Protocol):
    """Remembers nonces: ``first_use`` is True exactly once per (serial, nonce)."""

    async def first_use(self, serial: str, nonce: str, ttl_s: int) -> bool:
        """Record the nonce; False when it was recorded before (a replay)."""
        ...


class RedisReplayGuard:
    """Nonces in Redis, one key per (serial, nonce), set with NX and an expiry."""

    def __init__(self, client: RedisClient, *, prefix: str = "inv:pay:nonce") -> None:
        self._client = client
        self._prefix = prefix

    async def first_use(self, serial: str, nonce: str, ttl_s: int) -> bool:
        """SET NX EX: True when the key was new."""
        import redis.exceptions

        try:
            created = await self._client.set(
                f"{self._prefix}:{serial}:{nonce}", "1", nx=True, ex=ttl_s
            )
        except (redis.exceptions.RedisError, OSError) as error:
            raise NotificationRefusedError(
                "replay_check_unavailable",
                "the replay check is unavailable; notify again",
                http_status=503,
            ) from error
        return bool(created)


def _refuse(reason: str, message: str, status: int = 401) -> NotificationRefusedError:
    return NotificationRefusedError(reason, message, http_status=status)


@dataclass
class NotificationVerifier:
    """Verifies and opens WeChat Pay notifications (see the module docstring)."""

    platform_keys: Mapping[str, RSAPublicKey]
    apiv3_key: bytes = field(repr=False)
    mchid: str
    appid: str
    replay_guard: ReplayGuard
    window_s: int = 300
    clock: Callable[[], float] = time.time

    async def open(self, headers: Mapping[str, str], body: bytes) -> Notification:
        """The notification, verified and decrypted, or NotificationRefusedError."""
        timestamp = headers.get("Wechatpay-Timestamp", "")
        nonce = headers.get("Wechatpay-Nonce", "")
        signature = headers.get("Wechatpay-Signature", "")
        serial = headers.get("Wechatpay-Serial", "")
        signature_type = headers.get("Wechatpay-Signature-Type", "")
        if not (
            _TIMESTAMP_RE.fullmatch(timestamp)
            and _NONCE_RE.fullmatch(nonce)
            and _SERIAL_RE.fullmatch(serial)
            and 0 < len(signature) <= _SIGNATURE_MAX
            and signature.isascii()
        ):
            raise _refuse("signature_missing", "the Wechatpay-* signature headers are incomplete")
        if signature_type != SIGNATURE_TYPE:
            raise _refuse("signature_type", f"Wechatpay-Signature-Type must be {SIGNATURE_TYPE}")
        key = self.platform_keys.get(serial)
        if key is None:
            raise _refuse("unknown_serial", "Wechatpay-Serial names no platform key we hold")
        if abs(self.clock() - int(timestamp)) > self.window_s:
            raise _refuse("timestamp_outside_window", "Wechatpay-Timestamp is too far off")
        message = signed_message(timestamp.encode(), nonce.encode(), body)
        if not verify(key, message, signature):
            raise _refuse("signature_invalid", "the signature does not verify")
        # Only a signed nonce is recorded (an unsigned one could not be replayed anyway),
        # for as long as its timestamp could still pass the window check.
        if not await self.replay_guard.first_use(serial, nonce, 2 * self.window_s + 60):
            raise _refuse("nonce_replayed", "this notification was delivered before")
        return self._decrypt(body, serial)

    def _decrypt(self, body: bytes, serial: str) -> Notification:
        try:
            envelope = orjson.loads(body)
        except orjson.JSONDecodeError:
            raise _refuse("bad_notification", "the body is not JSON", 400) from None
        resource = envelope.get("resource") if isinstance(envelope, dict) else None
        if not isinstance(resource, dict) or envelope.get("resource_type") != "encrypt-resource":
            raise _refuse("bad_notification", "no encrypted resource", 400)
        if resource.get("algorithm") != ALGORITHM:
            raise _refuse("bad_notification", f"the resource is not {ALGORITHM}", 400)
        ciphertext = resource.get("ciphertext")
        nonce = resource.get("nonce")
        associated_data = resource.get("associated_data", "")
        if not (
            isinstance(ciphertext, str)
            and isinstance(nonce, str)
            and isinstance(associated_data, str)
            and nonce
        ):
            raise _refuse("bad_notification", "the resource is incomplete", 400)
        try:
            plaintext = decrypt_resource(
                self.apiv3_key, ciphertext, nonce=nonce, associated_data=associated_data
            )
        except (InvalidTag, ValueError, binascii.Error):
            raise _refuse("decrypt_failed", "the resource does not decrypt", 400) from None
        try:
            transaction = parse_transaction(orjson.loads(plaintext))
        except (orjson.JSONDecodeError, ValueError) as error:
            raise _refuse("bad_notification", f"malformed transaction: {error}", 400) from None
        if (transaction.mchid, transaction.appid) != (self.mchid, self.appid):
            raise _refuse("merchant_mismatch", "the transaction is not for our merchant id", 400)
        event_type = envelope.get("event_type")
        if event_type != "TRANSACTION.SUCCESS" or transaction.trade_state is not TradeState.SUCCESS:
            raise _refuse("not_paid", "only TRANSACTION.SUCCESS notifications are taken", 400)
        return Notification(
            notification_id=str(envelope.get("id", "")),
            event_type=event_type,
            transaction=transaction,
            serial=serial,
        )


# -- the API client ---------------------------------------------------------------------------


@dataclass
class WeChatPayConfig:
    """What the provider needs (from :class:`~inventory.payments.settings.PaymentSettings`)."""

    mchid: str
    appid: str
    apiv3_key: bytes = field(repr=False)
    merchant_key: RSAPrivateKey = field(repr=False)
    merchant_serial: str
    platform_keys: Mapping[str, RSAPublicKey]
    api_url: str
    notify_url: str
    window_s: int = 300
    timeout_s: float = 10.0
    #: Partner mode (服务商): ``mchid`` and ``appid`` are the service provider's
    #: (sp_mchid, sp_appid) and every order names the hospital's sub-merchant.
    partner: bool = False


class WeChatPay:
    """The WeChat Pay API v3 provider: signed requests (our merchant key), verified answers
    (the platform keys), and notifications through :class:`NotificationVerifier`."""

    name = "wechat"

    def __init__(self, config: WeChatPayConfig, replay_guard: ReplayGuard) -> None:
        self.config = config
        self.verifier = NotificationVerifier(
            platform_keys=config.platform_keys,
            apiv3_key=config.apiv3_key,
            mchid=config.mchid,
            appid=config.appid,
            replay_guard=replay_guard,
            window_s=config.window_s,
        )
        self._session: aiohttp.ClientSession | None = None

    async def close(self) -> None:
        """Close the HTTP session."""
        if self._session is not None:
            await self._session.close()
            self._session = None

    def _http(self) -> aiohttp.ClientSession:
        if self._session is None:
            self._session = aiohttp.ClientSession(
                timeout=aiohttp.ClientTimeout(total=self.config.timeout_s)
            )
        return self._session

    def authorization(self, method: str, path: str, body: bytes) -> str:
        """The ``Authorization`` header of one request (path with its query string)."""
        timestamp = str(int(time.time()))
        nonce = new_nonce()
        message = signed_message(
            method.encode(), path.encode(), timestamp.encode(), nonce.encode(), body
        )
        signature = sign(self.config.merchant_key, message)
        return (
            f'{AUTH_SCHEME} mchid="{self.config.mchid}",nonce_str="{nonce}",'
            f'signature="{signature}",timestamp="{timestamp}",'
            f'serial_no="{self.config.merchant_serial}"'
        )

    async def _call(
        self, method: str, path: str, payload: dict[str, Any] | None = None
    ) -> tuple[int, Any]:
        """One signed request; (status, parsed JSON or None). Server errors and transport
        failures are ProviderUnavailableError; a 2xx whose signature does not verify too."""
        body = orjson.dumps(payload) if payload is not None else b""
        headers = {
            "Authorization": self.authorization(method, path, body),
            "Accept": "application/json",
        }
        if payload is not None:
            headers["Content-Type"] = "application/json"
        try:
            async with self._http().request(
                method, self.config.api_url.rstrip("/") + path, data=body or None, headers=headers
            ) as answer:
                raw = await answer.read()
                status = answer.status
                answer_headers = CIMultiDict(answer.headers)
        except (aiohttp.ClientError, TimeoutError) as error:
            raise ProviderUnavailableError(f"WeChat Pay unreachable: {error!r}") from error
        if status >= 500:
            raise ProviderUnavailableError(f"WeChat Pay answered {status}")
        if 200 <= status < 300:
            self._check_answer(answer_headers, raw)
        try:
            data = orjson.loads(raw) if raw else None
        except orjson.JSONDecodeError:
            raise ProviderUnavailableError("WeChat Pay answered something else than JSON") from None
        return status, data

    def _check_answer(self, headers: Mapping[str, str], raw: bytes) -> None:
        """Answers are signed by the platform key like notifications (no replay check:
        they answer our own request)."""
        key = self.config.platform_keys.get(headers.get("Wechatpay-Serial", ""))
        timestamp = headers.get("Wechatpay-Timestamp", "")
        nonce = headers.get("Wechatpay-Nonce", "")
        signature = headers.get("Wechatpay-Signature", "")
        if key is None or not _TIMESTAMP_RE.fullmatch(timestamp):
            raise ProviderUnavailableError("WeChat Pay's answer is not signed by a known key")
        if abs(time.time() - int(timestamp)) > self.config.window_s:
            raise ProviderUnavailableError("WeChat Pay's answer is too old")
        if not verify(key, signed_message(timestamp.encode(), nonce.encode(), raw), signature):
            raise ProviderUnavailableError("WeChat Pay's answer signature does not verify")

    @staticmethod
    def _refusal(status: int, data: Any) -> ProviderRefusedError:
        code = str(data.get("code", "")) if isinstance(data, dict) else ""
        message = str(data.get("message", "")) if isinstance(data, dict) else ""
        return ProviderRefusedError(
            f"WeChat Pay refused ({status} {code}): {message}", provider_code=code
        )

    def _sub_mchid(self, sub_mchid: str | None) -> str:
        """The sub-merchant of a partner-mode call (a programming error without one)."""
        if not sub_mchid:
            raise ValueError("a partner-mode order needs the hospital's sub_mchid")
        return sub_mchid

    async def create_payment(self, order: PaymentOrder) -> Prepay:
        """JSAPI or Native order; JSAPI answers are turned into wx.requestPayment params."""
        payload: dict[str, Any] = {
            "description": order.description,
            "out_trade_no": order.payment_id,
            "time_expire": rfc3339(order.expires_at),
            "notify_url": self.config.notify_url,
            "amount": {"total": order.amount_fen, "currency": order.currency},
        }
        if self.config.partner:
            payload |= {
                "sp_appid": self.config.appid,
                "sp_mchid": self.config.mchid,
                "sub_mchid": self._sub_mchid(order.sub_mchid),
            }
            if order.sub_appid:
                payload["sub_appid"] = order.sub_appid
            if order.method == "jsapi":
                # The payer's openid under the app they pay in (ours, or the hospital's).
                openid_field = "sub_openid" if order.sub_appid else "sp_openid"
                payload["payer"] = {openid_field: order.payer_openid}
            path = f"/v3/pay/partner/transactions/{order.method}"
        else:
            payload |= {"appid": self.config.appid, "mchid": self.config.mchid}
            if order.method == "jsapi":
                payload["payer"] = {"openid": order.payer_openid}
            path = f"/v3/pay/transactions/{order.method}"
        status, data = await self._call("POST", path, payload)
        if status != 200 or not isinstance(data, dict):
            raise self._refusal(status, data)
        if order.method == "native":
            code_url = data.get("code_url")
            if not isinstance(code_url, str):
                raise ProviderUnavailableError("no code_url in WeChat Pay's answer")
            return Prepay(prepay_id=code_url, params={"code_url": code_url})
        prepay_id = data.get("prepay_id")
        if not isinstance(prepay_id, str):
            raise ProviderUnavailableError("no prepay_id in WeChat Pay's answer")
        return Prepay(prepay_id=prepay_id, params=self.jsapi_params(prepay_id))

    def jsapi_params(self, prepay_id: str) -> dict[str, str]:
        """The parameters of ``wx.requestPayment``, signed with our merchant key."""
        timestamp = str(int(time.time()))
        nonce = new_nonce()
        package = f"prepay_id={prepay_id}"
        message = signed_message(
            self.config.appid.encode(), timestamp.encode(), nonce.encode(), package.encode()
        )
        return {
            "appId": self.config.appid,
            "timeStamp": timestamp,
            "nonceStr": nonce,
            "package": package,
            "signType": "RSA",
            "paySign": sign(self.config.merchant_key, message),
        }

    async def query_payment(self, payment_id: str, sub_mchid: str | None = None) -> Transaction:
        """GET the order by out_trade_no."""
        if self.config.partner:
            path = (
                f"/v3/pay/partner/transactions/out-trade-no/{quote(payment_id, safe='')}"
                f"?sp_mchid={quote(self.config.mchid, safe='')}"
                f"&sub_mchid={quote(self._sub_mchid(sub_mchid), safe='')}"
            )
        else:
            path = (
                f"/v3/pay/transactions/out-trade-no/{quote(payment_id, safe='')}"
                f"?mchid={quote(self.config.mchid, safe='')}"
            )
        status, data = await self._call("GET", path)
        if status != 200:
            raise self._refusal(status, data)
        try:
            return parse_transaction(data)
        except ValueError as error:
            raise ProviderUnavailableError(f"WeChat Pay's order is malformed: {error}") from None

    async def close_payment(self, payment_id: str, sub_mchid: str | None = None) -> CloseOutcome:
        """POST .../close: 204 closed; ORDERPAID means it was paid first."""
        order = quote(payment_id, safe="")
        if self.config.partner:
            path = f"/v3/pay/partner/transactions/out-trade-no/{order}/close"
            payload = {"sp_mchid": self.config.mchid, "sub_mchid": self._sub_mchid(sub_mchid)}
        else:
            path = f"/v3/pay/transactions/out-trade-no/{order}/close"
            payload = {"mchid": self.config.mchid}
        status, data = await self._call("POST", path, payload)
        if status in (200, 204):
            return CloseOutcome.CLOSED
        refusal = self._refusal(status, data)
        if refusal.provider_code == "ORDERPAID":
            return CloseOutcome.ALREADY_PAID
        if refusal.provider_code in ("ORDER_CLOSED", "ORDERCLOSED"):
            return CloseOutcome.CLOSED
        raise refusal

    async def refund(self, order: RefundOrder) -> RefundResult:
        """POST /v3/refund/domestic/refunds (the same out_refund_no is de-duplicated)."""
        payload: dict[str, Any] = {
            "out_trade_no": order.payment_id,
            "out_refund_no": order.refund_id,
            "reason": order.reason,
            "amount": {
                "refund": order.amount_fen,
                "total": order.total_fen,
                "currency": order.currency,
            },
        }
        if self.config.partner:
            # The refund comes from the sub-merchant that collected the payment.
            payload["sub_mchid"] = self._sub_mchid(order.sub_mchid)
        status, data = await self._call("POST", "/v3/refund/domestic/refunds", payload)
        if status != 200 or not isinstance(data, dict):
            refusal = self._refusal(status, data)
            return RefundResult(order.refund_id, RefundState.FAILED, detail=str(refusal))
        state = {
            "SUCCESS": RefundState.SUCCEEDED,
            "PROCESSING": RefundState.PROCESSING,
        }.get(str(data.get("status")), RefundState.FAILED)
        provider_refund_id = data.get("refund_id")
        return RefundResult(
            order.refund_id,
            state,
            provider_refund_id=provider_refund_id if isinstance(provider_refund_id, str) else None,
            detail="" if state is not RefundState.FAILED else f"status {data.get('status')}",
        )

    async def parse_notification(self, headers: Mapping[str, str], body: bytes) -> Notification:
        """Verify, then decrypt (:class:`NotificationVerifier`)."""
        return await self.verifier.open(headers, body)
