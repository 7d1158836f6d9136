// 支付结果 and 预约成功: after the payment sheet, the hold's payment (list_hold_payments)
// until it has booked the hold, then the booking (get_booking) until the HIS has answered
// with its appointment number (就诊序号), visit time and place. Both are polled with
// back-off (0.5 s doubling to 5 s); the page shows the pending state meanwhile.

import { h, fill } from "../../shared/dom.js";
import { dayTime, yuan } from "../format.js";
import { t } from "../i18n.js";
import { holds } from "../state.js";
import { heading, problem } from "../ui.js";
import { statusText } from "./booking.js";

const FIRST_S = 0.5;
const MAX_S = 5;

function sleep(s) {
  return new Promise((resolve) => setTimeout(resolve, s * 1000));
}

function done(booking) {
  return Boolean(booking.his_appointment_no) || ["rejected", "cancelled", "visited", "no_show"].includes(booking.status);
}

function successView(booking) {
  const pending = !booking.his_appointment_no && !["rejected", "cancelled"].includes(booking.status);
  return [
    h(
      "div",
      { class: `result ${booking.status === "rejected" ? "bad" : "good"}` },
      h("p", { class: "big" }, booking.status === "rejected" ? t("status_rejected") : t("success_title")),
      booking.his_appointment_no
        ? h("p", {}, t("his_no"), h("strong", { class: "his-no", "data-his-no": booking.his_appointment_no }, booking.his_appointment_no))
        : null,
      pending ? h("p", { class: "pending", role: "status" }, t("his_pending")) : null,
      booking.status === "rejected" ? h("p", {}, t("his_rejected")) : null,
    ),
    h(
      "dl",
      { class: "sheet" },
      h("dt", {}, t("hospital")),
      h("dd", {}, booking.hospital_name),
      h("dt", {}, t("department")),
      h("dd", {}, booking.department_name),
      h("dt", {}, t("doctor")),
      h("dd", {}, `${booking.doctor_name} ${booking.doctor_title}`),
      h("dt", {}, t("visit_time")),
      h("dd", {}, booking.visit_time ? dayTime(booking.visit_time) : `${dayTime(booking.slot_starts_at)}-${booking.slot_ends_at.slice(11, 16)}`),
      h("dt", {}, t("place")),
      h("dd", {}, booking.place || booking.location),
      h("dt", {}, t("fee")),
      h("dd", {}, yuan(booking.amount_fen)),
      h("dt", {}, t("status")),
      h("dd", {}, statusText(booking.status)),
    ),
    h("a", { href: `#/booking/${encodeURIComponent(booking.booking_id)}`, class: "button secondary block" }, t("view_bookings")),
  ];
}

export async function render({ api, params, query }) {
  const [holdId] = params;
  const here = location.hash;
  const section = h("section", {}, heading(t("pay_result")));
  const body = h("div", { "aria-live": "polite" });
  section.append(body);
  if (query.get("result") === "cancelled") {
    fill(body, h("p", { role: "status" }, t("pay_cancelled")), h("a", { href: `#/hold/${encodeURIComponent(holdId)}`, class: "button primary block" }, t("go_pay")));
    return section;
  }
  fill(body, h("p", { class: "pending", role: "status" }, t("pay_waiting")));
  (async () => {
    let wait = FIRST_S;
    let bookingId = null;
    while (location.hash === here) {
      try {
        if (!bookingId) {
          const { items } = await api.payments(holdId);
          const payment = items[0];
          const hold = payment ? null : await api.getHold(holdId);
          if (payment?.booking_id && payment.status === "paid") bookingId = payment.booking_id;
          else if (hold?.state === "confirmed") bookingId = holdId; // booked without a payment
          else if (payment?.status === "closed" || (hold && hold.state !== "held")) {
            fill(body, problem({ title: t("hold_ended"), code: "hold_ended" }));
            return;
          }
        }
        if (bookingId) {
          const booking = await api.booking(bookingId);
          holds.forget(holdId);
          if (location.hash !== here) return;
          fill(body, successView(booking));
          if (done(booking)) return;
        }
      } catch (error) {
        if (error.status !== 404) {
          fill(body, problem(error));
          return;
        }
      }
      await sleep(wait);
      wait = Math.min(wait * 2, MAX_S);
    }
  })();
  return section;
}
