"""pay-sim: a WeChat Pay API v3 simulator for tests and local runs, and the tools to sign
and encrypt notifications the way WeChat Pay does.

The simulator serves the v3 routes the provider calls (JSAPI and Native orders, query,
close, domestic refunds), checks every request's merchant signature, signs every answer
with its platform key, and keeps its orders in memory. Its own routes under ``/sim/``
play the payer and the faults:

- ``POST /sim/orders/{out_trade_no}/pay`` ``{"late": false, "notify": true}``: the payer
  pays (after ``time_expire`` only with ``late``); with ``notify`` the signed, encrypted
  notification is posted to the order's notify_url and its HTTP status reported;
- ``POST /sim/orders/{out_trade_no}/notify``: deliver the notification again (freshly
  signed, as WeChat Pay's retries are);
- ``GET /sim/orders``, ``GET /sim/refunds``: what happened;
- ``PUT /sim/faults`` ``{"refund": "succeed" | "fail" | "processing" | "error"}``;
- ``GET /sim/cashier?<wx.requestPayment's parameters>&redirect_url=``: a page where a
  browser pays a JSAPI order (inventory/simulators/cashier.py), standing in for WeChat's
  payment sheet.

Run it with ``python -m inventory.simulators.paysim serve --port 8090`` (keys from
``INVENTORY_PAYSIM_*``); ``python -m inventory.simulators.paysim keys`` prints a fresh set of
test keys as environment lines for both sides. Test keys only: never real merchant keys.
"""

from __future__ import annotations

import argparse
import base64
import re
import secrets
import sys
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import aiohttp
import orjson
from aiohttp import web
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.hazmat.primitives.asymmetric.rsa import RSAPrivateKey, RSAPublicKey

from inventory.payments.settings import load_private_key, parse_public_keys
from inventory.payments.wechat import (
    ALGORITHM,
    AUTH_SCHEME,
    SIGNATURE_TYPE,
    encrypt_resource,
    new_nonce,
    rfc3339,
    sign,
    signed_message,
    verify,
)
from inventory.simulators.cashier import Cashier

# -- keys -------------------------------------------------------------------------------------


def new_rsa_key() -> RSAPrivateKey:
    """A fresh 2048-bit RSA key (tests generate their own; none is ever checked in)."""
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


def private_key_text(key: RSAPrivateKey) -> str:
    """base64 PKCS#8 DER, the form the settings take."""
    der = key.private_bytes(
        serialization.Encoding.DER,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    return base64.b64encode(der).decode("ascii")


def public_key_text(key: RSAPrivateKey | RSAPublicKey) -> str:
    """base64 SubjectPublicKeyInfo DER of a key's public half."""
    public = key.public_key() if isinstance(key, RSAPrivateKey) else key
    der = public.public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return base64.b64encode(der).decode("ascii")


def new_serial() -> str:
    """A certificate-serial-like id (40 hex digits)."""
    return secrets.token_hex(20).upper()


@dataclass(frozen=True)
class KeySet:
    """Both sides' keys for one test merchant."""

    mchid: str
    appid: str
    apiv3_key: bytes = field(repr=False)
    platform_key: RSAPrivateKey = field(repr=False)
    platform_serial: str
    merchant_key: RSAPrivateKey = field(repr=False)
    merchant_serial: str

    @classmethod
    def generate(cls, *, mchid: str = "1900000109", appid: str = "wxd678efh567hg6787") -> KeySet:
        """Fresh keys: platform and merchant RSA pairs, serials and an APIv3 key."""
        return cls(
            mchid=mchid,
            appid=appid,
            apiv3_key=secrets.token_hex(16).encode(),
            platform_key=new_rsa_key(),
            platform_serial=new_serial(),
            merchant_key=new_rsa_key(),
            merchant_serial=new_serial(),
        )

    def service_env(self, *, api_url: str, notify_url: str) -> dict[str, str]:
        """``INVENTORY_WECHAT_*`` for the service talking to the simulator."""
        return {
            "INVENTORY_WECHAT_MCHID": self.mchid,
            "INVENTORY_WECHAT_APPID": self.appid,
            "INVENTORY_WECHAT_APIV3_KEY": self.apiv3_key.decode(),
            "INVENTORY_WECHAT_MERCHANT_KEY": private_key_text(self.merchant_key),
            "INVENTORY_WECHAT_MERCHANT_SERIAL": self.merchant_serial,
            "INVENTORY_WECHAT_PLATFORM_KEYS": (
                f"{self.platform_serial}:{public_key_text(self.platform_key)}"
            ),
            "INVENTORY_WECHAT_API_URL": api_url,
            "INVENTORY_WECHAT_NOTIFY_URL": notify_url,
        }

    def sim_env(self, *, port: int) -> dict[str, str]:
        """``INVENTORY_PAYSIM_*`` for the simulator."""
        return {
            "INVENTORY_PAYSIM_PORT": str(port),
            "INVENTORY_PAYSIM_MCHID": self.mchid,
            "INVENTORY_PAYSIM_APPID": self.appid,
            "INVENTORY_PAYSIM_APIV3_KEY": self.apiv3_key.decode(),
            "INVENTORY_PAYSIM_PLATFORM_KEY": private_key_text(self.platform_key),
            "INVENTORY_PAYSIM_PLATFORM_SERIAL": self.platform_serial,
            "INVENTORY_PAYSIM_MERCHANT_KEYS": (
                f"{self.merchant_serial}:{public_key_text(self.merchant_key)}"
            ),
        }


# -- notifications ----------------------------------------------------------------------------


def transaction_resource(
    *,
    mchid: str,
    appid: str,
    payment_id: str,
    transaction_id: str,
    amount_fen: int,
    currency: str = "CNY",
    trade_state: str = "SUCCESS",
    success_time: datetime | None = None,
    openid: str = "oUpF8uMuAJO_M2pxb1Q9zNjWeS6o",
) -> dict[str, Any]:
    """A transaction as WeChat Pay describes a paid order (the decrypted resource)."""
    return {
        "mchid": mchid,
        "appid": appid,
        "out_trade_no": payment_id,
        "transaction_id": transaction_id,
        "trade_type": "JSAPI",
        "trade_state": trade_state,
        "trade_state_desc": "支付成功" if trade_state == "SUCCESS" else trade_state,
        "bank_type": "OTHERS",
        "success_time": rfc3339(success_time or datetime.now(tz=UTC)),
        "payer": {"openid": openid},
        "amount": {
            "total": amount_fen,
            "payer_total": amount_fen,
            "currency": currency,
            "payer_currency": currency,
        },
    }


def notification_body(
    resource: Mapping[str, Any],
    apiv3_key: bytes,
    *,
    associated_data: str = "transaction",
    declared_associated_data: str | None = None,
    nonce: str | None = None,
    event_type: str = "TRANSACTION.SUCCESS",
    tamper: Callable[[bytes], bytes] | None = None,
) -> bytes:
    """The body WeChat Pay posts: the envelope with ``resource`` AES-256-GCM encrypted.

    For negative tests: ``declared_associated_data`` puts another AAD in the envelope than
    the one encrypted with; ``tamper`` alters the raw ciphertext bytes before encoding."""
    resource_nonce = nonce or secrets.token_hex(6)
    ciphertext = encrypt_resource(
        apiv3_key,
        orjson.dumps(dict(resource)),
        nonce=resource_nonce,
        associated_data=associated_data,
    )
    if tamper is not None:
        ciphertext = base64.b64encode(tamper(base64.b64decode(ciphertext))).decode("ascii")
    envelope = {
        "id": secrets.token_hex(18),
        "create_time": rfc3339(datetime.now(tz=UTC)),
        "resource_type": "encrypt-resource",
        "event_type": event_type,
        "summary": "支付成功",
        "resource": {
            "original_type": "transaction",
            "algorithm": ALGORITHM,
            "ciphertext": ciphertext,
            "associated_data": (
                associated_data if declared_associated_data is None else declared_associated_data
            ),
            "nonce": resource_nonce,
        },
    }
    return orjson.dumps(envelope)


def signature_headers(
    body: bytes,
    platform_key: RSAPrivateKey,
    serial: str,
    *,
    timestamp: int | None = None,
    nonce: str | None = None,
    signature: str | None = None,
) -> dict[str, str]:
    """The ``Wechatpay-*`` headers signing ``body`` (``signature`` overrides the real one)."""
    stamp = str(int(time.time()) if timestamp is None else timestamp)
    header_nonce = nonce or new_nonce()
    if signature is None:
        signature = sign(platform_key, signed_message(stamp.encode(), header_nonce.encode(), body))
    return {
        "Wechatpay-Timestamp": stamp,
        "Wechatpay-Nonce": header_nonce,
        "Wechatpay-Signature": signature,
        "Wechatpay-Serial": serial,
        "Wechatpay-Signature-Type": SIGNATURE_TYPE,
        "Content-Type": "application/json",
    }


# -- the simulator ----------------------------------------------------------------------------


@dataclass
class SimConfig:
    """The simulator's identity and keys."""

    mchid: str
    appid: str
    apiv3_key: bytes = field(repr=False)
    platform_key: RSAPrivateKey = field(repr=False)
    platform_serial: str
    merchant_keys: Mapping[str, RSAPublicKey]

    @classmethod
    def from_keys(cls, keys: KeySet) -> SimConfig:
        """The simulator side of a :class:`KeySet`."""
        return cls(
            mchid=keys.mchid,
            appid=keys.appid,
            apiv3_key=keys.apiv3_key,
            platform_key=keys.platform_key,
            platform_serial=keys.platform_serial,
            merchant_keys={keys.merchant_serial: keys.merchant_key.public_key()},
        )

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> SimConfig:
        """From ``INVENTORY_PAYSIM_*`` (KeyError / ValueError when incomplete)."""
        p = "INVENTORY_PAYSIM_"
        return cls(
            mchid=env[p + "MCHID"],
            appid=env[p + "APPID"],
            apiv3_key=env[p + "APIV3_KEY"].encode(),
            platform_key=load_private_key(env[p + "PLATFORM_KEY"]),
            platform_serial=env[p + "PLATFORM_SERIAL"],
            merchant_keys=parse_public_keys(env[p + "MERCHANT_KEYS"]),
        )


@dataclass
class SimOrder:
    """One order at the simulator."""

    payment_id: str
    method: str
    description: str
    amount_fen: int
    currency: str
    notify_url: str
    time_expire: datetime
    payer_openid: str
    prepay_id: str
    state: str = "NOTPAY"
    transaction_id: str | None = None
    success_time: datetime | None = None
    deliveries: list[int] = field(default_factory=list)
    #: Partner mode (服务商): the sub-merchant the order collects for ("": direct).
    sub_mchid: str = ""
    sub_appid: str = ""


@dataclass
class SimRefund:
    """One refund at the simulator."""

    refund_id: str
    payment_id: str
    amount_fen: int
    status: str
    provider_refund_id: str
    attempts: int = 1
    #: The sub-merchant the refund came from (partner mode; "": direct).
    sub_mchid: str = ""


_AUTH_RE = re.compile(r'(\w+)="([^"]*)"')


class PaySim:
    """The simulator's state and handlers."""

    def __init__(self, config: SimConfig) -> None:
        self.config = config
        self.orders: dict[str, SimOrder] = {}
        self.refunds: dict[str, SimRefund] = {}
        self.faults: dict[str, str] = {"refund": "succeed"}
        self._session: aiohttp.ClientSession | None = None

    # -- plumbing

    def _signed(self, status: int, data: Any | None) -> web.Response:
        body = orjson.dumps(data) if data is not None else b""
        headers = signature_headers(body, self.config.platform_key, self.config.platform_serial)
        if data is None:
            headers.pop("Content-Type")
        return web.Response(status=status, body=body, headers=headers)

    def _error(self, status: int, code: str, message: str) -> web.Response:
        return self._signed(status, {"code": code, "message": message})

    async def _authenticated(self, request: web.Request) -> bytes | None:
        """The body if the merchant signature verifies, else None."""
        body = await request.read()
        header = request.headers.get("Authorization", "")
        scheme, _, rest = header.partition(" ")
        fields = dict(_AUTH_RE.findall(rest))
        key = self.config.merchant_keys.get(fields.get("serial_no", ""))
        if scheme != AUTH_SCHEME or key is None or fields.get("mchid") != self.config.mchid:
            return None
        message = signed_message(
            request.method.encode(),
            request.raw_path.encode(),
            fields.get("timestamp", "").encode(),
            fields.get("nonce_str", "").encode(),
            body,
        )
        if not verify(key, message, fields.get("signature", "")):
            return None
        if abs(time.time() - int(fields.get("timestamp", "0") or 0)) > 300:
            return None
        return body

    def _transaction(self, order: SimOrder) -> dict[str, Any]:
        data = self._direct_transaction(order)
        if order.sub_mchid:
            # A partner order: the service provider as sp_*, the sub-merchant beside it.
            data["sp_mchid"] = data.pop("mchid")
            data["sp_appid"] = data.pop("appid")
            data["sub_mchid"] = order.sub_mchid
            if order.sub_appid:
                data["sub_appid"] = order.sub_appid
            if "payer" in data:
                openid = data["payer"]["openid"]
                data["payer"] = {("sub_openid" if order.sub_appid else "sp_openid"): openid}
        return data

    def _direct_transaction(self, order: SimOrder) -> dict[str, Any]:
        data = transaction_resource(
            mchid=self.config.mchid,
            appid=self.config.appid,
            payment_id=order.payment_id,
            transaction_id=order.transaction_id or "",
            amount_fen=order.amount_fen,
            currency=order.currency,
            trade_state=order.state,
            success_time=order.success_time,
        )
        if order.transaction_id is None:
            for name in ("transaction_id", "success_time", "payer"):
                data.pop(name)
        return data

    # -- WeChat Pay's routes

    async def create(self, request: web.Request) -> web.Response:
        """POST /v3/pay/transactions/{jsapi|native}, or the partner (服务商) form
        POST /v3/pay/partner/transactions/{jsapi|native} naming a sub-merchant."""
        body = await self._authenticated(request)
        if body is None:
            return self._error(401, "SIGN_ERROR", "signature verification failed")
        method = request.match_info["method"]
        partner = request.path.startswith("/v3/pay/partner/")
        sub_mchid = sub_appid = ""
        try:
            data = orjson.loads(body)
            payment_id = str(data["out_trade_no"])
            amount = int(data["amount"]["total"])
            currency = str(data["amount"].get("currency", "CNY"))
            expire = datetime.fromisoformat(str(data["time_expire"]))
            payer = data.get("payer", {})
            if partner:
                sub_mchid = str(data["sub_mchid"])
                sub_appid = str(data.get("sub_appid", ""))
                openid = str(payer.get("sub_openid" if sub_appid else "sp_openid", ""))
                mine = (data["sp_appid"], data["sp_mchid"]) == (
                    self.config.appid,
                    self.config.mchid,
                )
                if not mine or not re.fullmatch(r"[0-9]{8,32}", sub_mchid):
                    return self._error(
                        400, "APPID_MCHID_NOT_MATCH", "sp_appid, sp_mchid or sub_mchid"
                    )
            else:
                openid = str(payer.get("openid", ""))
                if data["appid"] != self.config.appid or data["mchid"] != self.config.mchid:
                    return self._error(400, "APPID_MCHID_NOT_MATCH", "appid and mchid do not match")
        except (KeyError, TypeError, ValueError, AttributeError, orjson.JSONDecodeError):
            return self._error(400, "PARAM_ERROR", "malformed order")
        if method == "jsapi" and not openid:
            return self._error(400, "PARAM_ERROR", "payer.openid is required")
        existing = self.orders.get(payment_id)
        if existing is not None:
            if existing.state == "SUCCESS":
                return self._error(400, "ORDERPAID", "the order is paid")
            if existing.state == "CLOSED":
                return self._error(400, "ORDER_CLOSED", "the order is closed")
            if (existing.amount_fen, existing.method, existing.sub_mchid) != (
                amount,
                method,
                sub_mchid,
            ):
                return self._error(400, "OUT_TRADE_NO_USED", "out_trade_no used for another order")
            order = existing
        else:
            prefix = "wx" if method == "jsapi" else "weixin://wxpay/bizpayurl?pr="
            order = SimOrder(
                payment_id=payment_id,
                method=method,
                description=str(data.get("description", "")),
                amount_fen=amount,
                currency=currency,
                notify_url=str(data.get("notify_url", "")),
                time_expire=expire,
                payer_openid=openid,
                prepay_id=prefix + secrets.token_hex(12),
                sub_mchid=sub_mchid,
                sub_appid=sub_appid,
            )
            self.orders[payment_id] = order
        if method == "native":
            return self._signed(200, {"code_url": order.prepay_id})
        return self._signed(200, {"prepay_id": order.prepay_id})

    def _order_of(self, request: web.Request, sub_mchid: str) -> SimOrder | None:
        """The order the path names, if it belongs to the sub-merchant the request
        names (partner paths) or is a direct order (direct paths)."""
        order = self.orders.get(request.match_info["payment_id"])
        partner = request.path.startswith("/v3/pay/partner/")
        if order is None or order.sub_mchid != (sub_mchid if partner else ""):
            return None
        return order

    async def query(self, request: web.Request) -> web.Response:
        """GET /v3/pay/[partner/]transactions/out-trade-no/{out_trade_no}."""
        if await self._authenticated(request) is None:
            return self._error(401, "SIGN_ERROR", "signature verification failed")
        order = self._order_of(request, request.query.get("sub_mchid", ""))
        if order is None:
            return self._error(404, "ORDER_NOT_EXIST", "no such order")
        return self._signed(200, self._transaction(order))

    async def close(self, request: web.Request) -> web.Response:
        """POST /v3/pay/[partner/]transactions/out-trade-no/{out_trade_no}/close."""
        body = await self._authenticated(request)
        if body is None:
            return self._error(401, "SIGN_ERROR", "signature verification failed")
        try:
            sub_mchid = str(orjson.loads(body or b"{}").get("sub_mchid", ""))
        except (orjson.JSONDecodeError, AttributeError):
            return self._error(400, "PARAM_ERROR", "malformed request")
        order = self._order_of(request, sub_mchid)
        if order is None:
            return self._error(404, "ORDER_NOT_EXIST", "no such order")
        if order.state in ("SUCCESS", "REFUND"):
            return self._error(400, "ORDERPAID", "the order is paid")
        order.state = "CLOSED"
        return self._signed(204, None)

    async def refund(self, request: web.Request) -> web.Response:
        """POST /v3/refund/domestic/refunds (the same out_refund_no is the same refund)."""
        body = await self._authenticated(request)
        if body is None:
            return self._error(401, "SIGN_ERROR", "signature verification failed")
        try:
            data = orjson.loads(body)
            payment_id = str(data["out_trade_no"])
            refund_id = str(data["out_refund_no"])
            amount = int(data["amount"]["refund"])
            sub_mchid = str(data.get("sub_mchid", ""))
        except (KeyError, TypeError, ValueError, orjson.JSONDecodeError):
            return self._error(400, "PARAM_ERROR", "malformed refund")
        order = self.orders.get(payment_id)
        if order is None or order.state not in ("SUCCESS", "REFUND"):
            return self._error(400, "TRADE_NOT_PAID", "the order is not paid")
        if sub_mchid != order.sub_mchid:
            # A partner order is refunded by the sub-merchant that collected it only.
            return self._error(400, "INVALID_REQUEST", "sub_mchid is not the order's")
        if amount > order.amount_fen:
            return self._error(400, "INVALID_REQUEST", "refund above the order's amount")
        fault = self.faults.get("refund", "succeed")
        if fault == "error":
            return self._error(500, "SYSTEM_ERROR", "system error, retry")
        existing = self.refunds.get(refund_id)
        if existing is not None and existing.status == "SUCCESS":
            return self._signed(200, self._refund_view(existing))
        if fault == "fail":
            if existing is not None:
                existing.attempts += 1
            return self._error(403, "NOT_ENOUGH", "基本账户余额不足")
        status = "PROCESSING" if fault == "processing" else "SUCCESS"
        if existing is None:
            existing = SimRefund(
                refund_id=refund_id,
                payment_id=payment_id,
                amount_fen=amount,
                status=status,
                provider_refund_id="50" + secrets.token_hex(14),
                sub_mchid=order.sub_mchid,
            )
            self.refunds[refund_id] = existing
        else:
            existing.attempts += 1
            existing.status = status
        if status == "SUCCESS":
            order.state = "REFUND"
        return self._signed(200, self._refund_view(existing))

    def _refund_view(self, refund: SimRefund) -> dict[str, Any]:
        return {
            "refund_id": refund.provider_refund_id,
            "out_refund_no": refund.refund_id,
            "out_trade_no": refund.payment_id,
            "status": refund.status,
            "amount": {"refund": refund.amount_fen, "currency": "CNY"},
        }

    # -- the payer and the faults

    async def pay(self, request: web.Request) -> web.Response:
        """POST /sim/orders/{id}/pay: the payer pays; the notification follows."""
        order = self.orders.get(request.match_info["payment_id"])
        if order is None:
            return web.json_response({"error": "no such order"}, status=404)
        options = orjson.loads(await request.read() or b"{}")
        if order.state == "CLOSED":
            return web.json_response({"error": "the order is closed"}, status=409)
        if order.state == "NOTPAY":
            if datetime.now(tz=UTC) > order.time_expire and not options.get("late", False):
                return web.json_response({"error": "the order expired"}, status=409)
            self.mark_paid(order)
        status = await self.deliver(order) if options.get("notify", True) else None
        return web.json_response({"transaction": self._transaction(order), "notify_status": status})

    def mark_paid(self, order: SimOrder) -> None:
        """The payer's money arrives: the order is paid (its notification not yet sent)."""
        order.state = "SUCCESS"
        order.transaction_id = "42000" + str(secrets.randbelow(10**22)).zfill(23)
        order.success_time = datetime.now(tz=UTC)

    def order_of_prepay(self, prepay_id: str) -> SimOrder | None:
        """The order a JSAPI ``prepay_id`` belongs to."""
        return next((o for o in self.orders.values() if o.prepay_id == prepay_id), None)

    async def notify(self, request: web.Request) -> web.Response:
        """POST /sim/orders/{id}/notify: deliver the notification again."""
        order = self.orders.get(request.match_info["payment_id"])
        if order is None or order.transaction_id is None:
            return web.json_response({"error": "no paid order"}, status=404)
        return web.json_response({"notify_status": await self.deliver(order)})

    async def deliver(self, order: SimOrder) -> int:
        """POST the signed, encrypted notification to the order's notify_url; its status
        (599 when it could not be delivered)."""
        resource = self._transaction(order)
        resource["trade_state"] = "SUCCESS"
        body = notification_body(resource, self.config.apiv3_key)
        headers = signature_headers(body, self.config.platform_key, self.config.platform_serial)
        if self._session is None:
            self._session = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=30))
        try:
            async with self._session.post(order.notify_url, data=body, headers=headers) as answer:
                await answer.read()
                status = answer.status
        except (aiohttp.ClientError, TimeoutError):
            status = 599
        order.deliveries.append(status)
        return status

    async def list_orders(self, request: web.Request) -> web.Response:
        """GET /sim/orders."""
        return web.json_response(
            {
                "items": [
                    {
                        "payment_id": o.payment_id,
                        "state": o.state,
                        "transaction_id": o.transaction_id,
                        "amount_fen": o.amount_fen,
                        "method": o.method,
                        "time_expire": o.time_expire.isoformat(),
                        "deliveries": o.deliveries,
                        "sub_mchid": o.sub_mchid,
                    }
                    for o in self.orders.values()
                ]
            }
        )

    async def list_refunds(self, request: web.Request) -> web.Response:
        """GET /sim/refunds."""
        return web.json_response(
            {
                "items": [
                    {
                        "refund_id": r.refund_id,
                        "payment_id": r.payment_id,
                        "amount_fen": r.amount_fen,
                        "status": r.status,
                        "attempts": r.attempts,
                        "sub_mchid": r.sub_mchid,
                    }
                    for r in self.refunds.values()
                ]
            }
        )

    async def set_faults(self, request: web.Request) -> web.Response:
        """PUT /sim/faults."""
        data = orjson.loads(await request.read() or b"{}")
        refund = data.get("refund", self.faults["refund"])
        if refund not in ("succeed", "fail", "processing", "error"):
            return web.json_response({"error": "refund: succeed|fail|processing|error"}, status=422)
        self.faults["refund"] = refund
        return web.json_response(self.faults)

    async def healthz(self, request: web.Request) -> web.Response:
        """GET /healthz."""
        return web.json_response({"status": "ok"})

    async def aclose(self) -> None:
        """Close the notification client."""
        if self._session is not None:
            await self._session.close()


SIM_STATE = web.AppKey("paysim_state", PaySim)


def create_sim_app(config: SimConfig) -> web.Application:
    """The simulator as an aiohttp application."""
    sim = PaySim(config)
    app = web.Application()
    app[SIM_STATE] = sim
    cashier = Cashier(sim, config.appid, config.merchant_keys)

    async def close(_: web.Application) -> None:
        await sim.aclose()

    app.on_cleanup.append(close)
    app.add_routes(
        [
            web.post("/v3/pay/transactions/{method:jsapi|native}", sim.create),
            web.get("/v3/pay/transactions/out-trade-no/{payment_id}", sim.query),
            web.post("/v3/pay/transactions/out-trade-no/{payment_id}/close", sim.close),
            web.post("/v3/pay/partner/transactions/{method:jsapi|native}", sim.create),
            web.get("/v3/pay/partner/transactions/out-trade-no/{payment_id}", sim.query),
            web.post("/v3/pay/partner/transactions/out-trade-no/{payment_id}/close", sim.close),
            web.post("/v3/refund/domestic/refunds", sim.refund),
            web.post("/sim/orders/{payment_id}/pay", sim.pay),
            web.post("/sim/orders/{payment_id}/notify", sim.notify),
            web.get("/sim/orders", sim.list_orders),
            web.get("/sim/refunds", sim.list_refunds),
            web.put("/sim/faults", sim.set_faults),
            web.get("/healthz", sim.healthz),
            web.get("/sim/cashier", cashier.page),
            web.post("/sim/cashier", cashier.submit),
        ]
    )
    return app


def main(argv: list[str] | None = None) -> int:
    """``python -m inventory.simulators.paysim serve | keys``."""
    import os

    parser = argparse.ArgumentParser(prog="python -m inventory.simulators.paysim")
    commands = parser.add_subparsers(dest="command", required=True)
    serve = commands.add_parser("serve", help="run the simulator (keys from INVENTORY_PAYSIM_*)")
    serve.add_argument("--host", default="127.0.0.1")
    serve.add_argument("--port", type=int, default=int(os.environ.get("INVENTORY_PAYSIM_PORT", 0)))
    keys = commands.add_parser("keys", help="print fresh test keys as environment lines")
    keys.add_argument("--sim-port", type=int, default=8090)
    keys.add_argument("--api-url", default="http://127.0.0.1:8080")
    args = parser.parse_args(argv)
    if args.command == "keys":
        found = KeySet.generate()
        service = found.service_env(
            api_url=f"http://127.0.0.1:{args.sim_port}",
            notify_url=args.api_url.rstrip("/") + "/v1/payments/wechat/notify",
        )
        for name, value in {**service, **found.sim_env(port=args.sim_port)}.items():
            print(f"{name}={value}")
        return 0
    try:
        config = SimConfig.from_env(os.environ)
    except (KeyError, ValueError) as error:
        print(f"paysim: incomplete INVENTORY_PAYSIM_* configuration: {error}", file=sys.stderr)
        return 2
    if not args.port:
        print("paysim: give --port or INVENTORY_PAYSIM_PORT", file=sys.stderr)
        return 2
    web.run_app(create_sim_app(config), host=args.host, port=args.port, print=None, access_log=None)
    return 0


if __name__ == "__main__":
    sys.exit(main())
