// 确认挂号信息 and 支付: the hold (get_hold) with its fee, place, visit time and
// cancellation deadline, the time left to pay, and the payment (start_payment). Inside
// WeChat the JSAPI parameters go to WeChat's payment sheet; in dev, to the WeChat Pay
// simulator's cashier page, which sends the browser back to #/paid/<hold>.

import { h, fill } from "../../shared/dom.js";
import { dayTime, duration, secondsUntil, yuan } from "../format.js";
import { t } from "../i18n.js";
import { holds, session } from "../state.js";
import { newKey } from "../api.js";
import { ask, heading, problem } from "../ui.js";

/** The payer's openid under the service's appid. A WeChat sign-in gives the real one; a
 * dev token stands in with one made from the account. */
function openid() {
  return ("o-" + session.account()).replace(/[^A-Za-z0-9_-]/g, "_").slice(0, 128);
}

function simulatorUrl() {
  return document.querySelector('meta[name="pay-simulator"]')?.content || "";
}

/** Hand the JSAPI parameters to whoever shows the payment sheet. */
export function requestPayment(prepay, holdId) {
  const back = `${location.origin}/app/#/paid/${encodeURIComponent(holdId)}`;
  if (window.WeixinJSBridge) {
    // Inside WeChat's browser: its own sheet; the answer only says the sheet closed, the
    // payment's status comes from the service (#/paid polls it).
    window.WeixinJSBridge.invoke("getBrandWCPayRequest", prepay, (answer) => {
      const ok = answer && answer.err_msg === "get_brand_wcpay_request:ok";
      location.assign(back + (ok ? "?result=paid" : "?result=cancelled"));
    });
    return true;
  }
  const simulator = simulatorUrl();
  if (!simulator) return false;
  const query = new URLSearchParams({ ...prepay, redirect_url: back });
  location.assign(`${simulator}/sim/cashier?${query}`);
  return true;
}

function row(label, value) {
  return [h("dt", {}, label), h("dd", {}, value)];
}

export async function render({ api, params, go, every }) {
  const [holdId] = params;
  const hold = await api.getHold(holdId);
  if (hold.state === "confirmed") {
    go(`/paid/${encodeURIComponent(holdId)}`);
    return h("section", {});
  }
  const summary = holds.summary(holdId) || {};
  const errors = h("div", { class: "errors" });
  const active = hold.state === "held" && secondsUntil(hold.deadline) > 0;
  const left = h("p", { class: "timer", role: "timer", "aria-live": "off" });
  const tick = () => {
    const s = secondsUntil(hold.deadline);
    fill(left, s > 0 && hold.state === "held" ? t("pay_within", { left: duration(s) }) : t("hold_ended"));
  };
  tick();
  every(tick, 1000);
  const pay = h("button", { type: "button", class: "primary block", disabled: !active }, hold.amount_fen > 0 ? t("pay", { amount: yuan(hold.amount_fen) }) : t("free_confirm"));
  const payKey = newKey();
  pay.addEventListener("click", async () => {
    fill(errors);
    pay.disabled = true;
    try {
      if (hold.amount_fen === 0) {
        await api.confirm(holdId, `free-${holdId}`.slice(0, 64), payKey);
        return go(`/paid/${encodeURIComponent(holdId)}`);
      }
      const payment = await api.startPayment(holdId, openid(), payKey);
      if (payment.status === "paid" || !payment.prepay) return go(`/paid/${encodeURIComponent(holdId)}`);
      fill(errors, h("p", { role: "status" }, t("paying")));
      if (!requestPayment(payment.prepay, holdId)) fill(errors, problem({ title: t("no_wechat"), code: "no_wechat" }));
    } catch (error) {
      if (error.code === "payments_disabled") {
        // Payments off (dev's --no-payments): any reference books the hold.
        try {
          await api.confirm(holdId, `dev-${payKey}`.slice(0, 64), payKey);
          return go(`/paid/${encodeURIComponent(holdId)}`);
        } catch (again) {
          fill(errors, problem(again));
        }
      } else fill(errors, problem(error));
    } finally {
      pay.disabled = !active;
    }
  });
  const release = h("button", { type: "button", class: "secondary block", disabled: !active }, t("give_back"));
  release.addEventListener("click", async () => {
    if (!(await ask(t("give_back") + "?"))) return;
    try {
      await api.releaseHold(holdId, newKey());
      holds.forget(holdId);
      go("/holds");
    } catch (error) {
      fill(errors, problem(error));
    }
  });
  return h(
    "section",
    {},
    heading(t("confirm_title")),
    h(
      "dl",
      { class: "sheet" },
      summary.hospital ? row(t("hospital"), summary.hospital) : null,
      summary.department ? row(t("department"), summary.department) : null,
      summary.doctor ? row(t("doctor"), summary.doctor) : null,
      summary.patient ? row(t("patient"), summary.patient) : null,
      row(t("visit"), summary.visit || holdId.split(".")[1] || ""),
      summary.location ? row(t("place"), summary.location) : null,
      row(t("fee"), h("span", { class: "fee" }, yuan(hold.amount_fen))),
      row(t("cancel_deadline"), hold.cancellable ? dayTime(hold.cancel_deadline) : t("not_cancellable")),
    ),
    left,
    errors,
    pay,
    release,
  );
}
