// 预约详情: one booking (get_booking) with its status, the HIS's appointment number,
// visit time and place, cancel while allowed (cancel_booking, after a confirmation) and
// the refund's status (get_booking_refund).

import { h, fill } from "../../shared/dom.js";
import { dayTime, yuan } from "../format.js";
import { t } from "../i18n.js";
import { newKey } from "../api.js";
import { ask, heading, problem, toast } from "../ui.js";

export function statusText(status) {
  return t(`status_${status}`);
}

export function refundText(refund) {
  return `${t("refund")} ${yuan(refund.amount_fen)} · ${t(`refund_${refund.status}`)}`;
}

function row(label, value) {
  return [h("dt", {}, label), h("dd", {}, value)];
}

export async function render({ api, params, every }) {
  const [bookingId] = params;
  let booking = await api.booking(bookingId);
  const section = h("section", {}, heading(booking.doctor_name ? `${booking.department_name} · ${booking.doctor_name}` : t("my_bookings")));
  const body = h("div", {});
  const errors = h("div", { class: "errors" });
  const refundLine = h("p", { class: "refund", role: "status" });
  section.append(body, refundLine, errors);
  const showRefund = async () => {
    try {
      const refund = await api.refund(bookingId);
      fill(refundLine, refundText(refund));
      return refund;
    } catch (error) {
      if (error.status !== 404) fill(refundLine, problem(error));
      return null;
    }
  };
  const draw = () => {
    const cancel = h("button", { type: "button", class: "danger block" }, t("cancel"));
    cancel.addEventListener("click", async () => {
      if (!(await ask(t("cancel_ask")))) return;
      fill(errors);
      cancel.disabled = true;
      try {
        booking = await api.cancel(bookingId, newKey());
        toast(t("cancelled_ok"));
        draw();
        await showRefund();
      } catch (error) {
        fill(errors, problem(error));
        cancel.disabled = false;
      }
    });
    fill(
      body,
      h(
        "dl",
        { class: "sheet" },
        row(t("status"), h("span", { class: `status s-${booking.status}` }, statusText(booking.status))),
        booking.his_appointment_no ? row(t("his_no"), h("strong", { class: "his-no" }, booking.his_appointment_no)) : null,
        row(t("hospital"), booking.hospital_name),
        row(t("doctor"), `${booking.doctor_name} ${booking.doctor_title}`),
        row(t("visit_time"), booking.visit_time ? dayTime(booking.visit_time) : `${dayTime(booking.slot_starts_at)}-${booking.slot_ends_at.slice(11, 16)}`),
        row(t("place"), booking.place || booking.location),
        row(t("fee"), yuan(booking.amount_fen)),
        row(t("cancel_deadline"), booking.cancellable ? dayTime(booking.cancel_deadline) : t("not_cancellable")),
      ),
      booking.cancellable ? cancel : null,
    );
  };
  draw();
  const refund = await showRefund();
  // A refund in progress settles within seconds: follow it while the page is open.
  if (refund?.status !== "succeeded") {
    every(async () => {
      if (booking.status === "cancelled" || booking.status === "rejected") await showRefund();
    }, 2000);
  }
  return section;
}
