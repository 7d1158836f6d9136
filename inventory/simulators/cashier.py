"""The pay simulator's cashier: a page where a browser pays a JSAPI order.

Inside WeChat, a front end pays with ``wx.requestPayment`` (or, in a web page,
``WeixinJSBridge.invoke("getBrandWCPayRequest", ...)``) and WeChat shows its payment
sheet. A browser in dev has neither, so the patient app sends the payer here with the
same parameters (``appId``, ``timeStamp``, ``nonceStr``, ``package``, ``signType``,
``paySign``) and a ``redirect_url``. The page checks ``paySign`` with the merchant's
public key, as WeChat does, shows the order, and on "pay" marks it paid and posts the
signed notification to the service before sending the browser back.

``redirect_url`` must be on the order's own service (the origin of its notify_url), so
the page cannot be used to send a browser anywhere else. The browser comes back with
``result=paid`` or ``result=cancelled`` added to the URL's fragment (the app's route).
"""

from __future__ import annotations

import html
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any, Final, Protocol
from urllib.parse import urlsplit

from aiohttp import web
from cryptography.hazmat.primitives.asymmetric.rsa import RSAPublicKey

from inventory.payments.wechat import signed_message, verify


class Order(Protocol):
    """What the cashier reads and changes of one of the simulator's orders."""

    payment_id: str
    description: str
    amount_fen: int
    notify_url: str
    time_expire: datetime
    state: str


class Orders(Protocol):
    """The simulator as the cashier uses it (inventory/simulators/paysim.py's PaySim)."""

    def order_of_prepay(self, prepay_id: str) -> Order | None: ...

    def mark_paid(self, order: Any) -> None: ...

    async def deliver(self, order: Any) -> int: ...


#: What wx.requestPayment takes, in the order they are signed (appId, timeStamp,
#: nonceStr, package), then the signature's fields.
PARAMS: Final = ("appId", "timeStamp", "nonceStr", "package", "signType", "paySign")
HEADERS: Final = {
    # No script at all; its own inline styles; framing refused.
    "Content-Security-Policy": (
        "default-src 'none'; style-src 'unsafe-inline'; base-uri 'none'; frame-ancestors 'none'"
    ),
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-store",
}

STYLE: Final = """
body{font:16px/1.5 system-ui,sans-serif;margin:0;background:#ededed;color:#111}
main{max-width:420px;margin:0 auto;padding:24px 16px}
h1{font-size:17px;text-align:center;margin:0 0 24px}
.amount{font-size:36px;font-weight:600;text-align:center;margin:8px 0 24px}
dl{background:#fff;border-radius:8px;padding:12px 16px;margin:0 0 24px}
dt{color:#666;font-size:14px}dd{margin:0 0 8px;word-break:break-all}
button{display:block;width:100%;font-size:17px;padding:12px;border-radius:8px;border:0;
margin:0 0 12px}
.pay{background:#07c160;color:#fff}.cancel{background:#fff;color:#111}
.note{color:#666;font-size:13px;text-align:center}
"""


class Cashier:
    """The cashier's two routes over the simulator's orders."""

    def __init__(self, sim: Orders, appid: str, merchant_keys: Mapping[str, RSAPublicKey]) -> None:
        self.sim = sim
        self.appid = appid
        self.merchant_keys = merchant_keys

    def _order(self, params: Mapping[str, str]) -> Order | str:
        """The order the parameters pay, or why they do not."""
        if any(not params.get(name) for name in PARAMS):
            return "缺少支付参数"
        if params["appId"] != self.appid or params["signType"] != "RSA":
            return "appId 或 signType 不符"
        message = signed_message(
            *(params[name].encode() for name in ("appId", "timeStamp", "nonceStr", "package"))
        )
        keys = self.merchant_keys.values()
        if not any(verify(key, message, params["paySign"]) for key in keys):
            return "paySign 验签失败"
        prefix, _, prepay_id = params["package"].partition("=")
        order = self.sim.order_of_prepay(prepay_id) if prefix == "prepay_id" else None
        if order is None:
            return "订单不存在"
        return order

    @staticmethod
    def _redirect(order: Order, url: str) -> str | None:
        """``url`` when it is on the order's service, else None."""
        target, service = urlsplit(url), urlsplit(order.notify_url)
        if target.scheme not in ("http", "https"):
            return None
        if (target.scheme, target.port) != (service.scheme, service.port):
            return None
        if target.hostname == service.hostname:
            return url
        # dev's service notifies on 127.0.0.1; a browser may have opened it as localhost.
        loopback = {"127.0.0.1", "localhost", "::1"}
        return url if {target.hostname, service.hostname} <= loopback else None

    @staticmethod
    def _refuse(reason: str, status: int = 400) -> web.Response:
        body = (
            f"<!doctype html><html lang=zh-CN><meta charset=utf-8><title>支付失败</title>"
            f"<style>{STYLE}</style><main><h1>无法支付</h1>"
            f'<p class="note" role="alert">{html.escape(reason)}</p></main>'
        )
        return web.Response(status=status, text=body, content_type="text/html", headers=HEADERS)

    async def page(self, request: web.Request) -> web.Response:
        """GET /sim/cashier: the order and a pay button."""
        params = request.query
        order = self._order(params)
        if isinstance(order, str):
            return self._refuse(order)
        redirect = self._redirect(order, params.get("redirect_url", ""))
        if redirect is None:
            return self._refuse("redirect_url 不在下单的服务上")
        hidden = "".join(
            f'<input type="hidden" name="{name}" value="{html.escape(params[name])}">'
            for name in (*PARAMS, "redirect_url")
        )
        state = {"NOTPAY": "待支付", "SUCCESS": "已支付", "CLOSED": "已关闭"}.get(
            order.state, order.state
        )
        body = f"""<!doctype html>
<html lang="zh-CN"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>微信支付（模拟）</title><style>{STYLE}</style></head>
<body><main>
<h1>微信支付（开发环境模拟收银台）</h1>
<p class="amount" data-amount-fen="{order.amount_fen}">¥{order.amount_fen / 100:.2f}</p>
<dl><dt>商品</dt><dd>{html.escape(order.description or "挂号费")}</dd>
<dt>商户订单号</dt><dd>{html.escape(order.payment_id)}</dd>
<dt>状态</dt><dd>{state}</dd></dl>
<form method="post" action="/sim/cashier">{hidden}
<button class="pay" name="action" value="pay" type="submit">确认支付</button>
<button class="cancel" name="action" value="cancel" type="submit">取消</button>
</form>
<p class="note">仅用于开发与测试：不会产生真实扣款。</p>
</main></body></html>"""
        return web.Response(text=body, content_type="text/html", headers=HEADERS)

    async def submit(self, request: web.Request) -> web.Response:
        """POST /sim/cashier: pay (and notify the service) or cancel, then go back."""
        form = await request.post()
        params = {name: str(form.get(name, "")) for name in (*PARAMS, "redirect_url")}
        order = self._order(params)
        if isinstance(order, str):
            return self._refuse(order)
        redirect = self._redirect(order, params["redirect_url"])
        if redirect is None:
            return self._refuse("redirect_url 不在下单的服务上")
        result = "cancelled"
        if form.get("action") == "pay":
            if order.state == "CLOSED":
                return self._refuse("订单已关闭", 409)
            if order.state == "NOTPAY":
                if datetime.now(tz=UTC) > order.time_expire:
                    return self._refuse("订单已过期", 409)
                self.sim.mark_paid(order)
            await self.sim.deliver(order)
            result = "paid"
        joiner = "&" if "?" in urlsplit(redirect).fragment else "?"
        if "#" not in redirect:
            joiner = "#?"
        raise web.HTTPSeeOther(redirect + joiner + "result=" + result, headers=HEADERS)
