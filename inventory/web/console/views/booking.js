// 预约详情: one booking as the desk sees it (find_hospital_bookings by booking id): the
// patient (masked), its payment, refund, HIS state and visit; and what the desk does
// with it, each after a confirmation: 签到 (check_in_booking), 标记爽约 (mark_no_show),
// 取消并退款 (operator_cancel_booking). A refund in progress is followed until it
// succeeds.

import { h, fill } from "../../shared/dom.js";
import { dayTime, yuan } from "../../shared/format.js";
import { t } from "../i18n.js";
import { newKey } from "../api.js";
import { ask, heading, problem, sheet, toast } from "../ui.js";

const OPEN = new Set(["confirmed", "submitted", "his_confirmed"]);

async function load(api, hospitalId, bookingId) {
  const found = await api.findBookings(hospitalId, { booking_id: bookingId });
  if (!found.items.length) throw { status: 404, code: "not_found", title: t("no_such_booking") };
  return found.items[0];
}

function refundText(refund) {
  return `${yuan(refund.amount_fen)} · ${t(`refund_${refund.status}`)} · ${t(`refund_reason_${refund.reason}`, {}, refund.reason)}`;
}

function details(b) {
  return [
    h("h2", {}, t("booking_section")),
    sheet([
      [t("status"), h("span", { class: `status s-${b.status}`, dataset: { status: b.status } }, t(`status_${b.status}`))],
      [t("booking_id"), h("code", {}, b.booking_id)],
      [t("patient"), `${b.patient_name} · ${b.patient_phone}`],
      [t("doctor"), `${b.department_name} · ${b.doctor_name} ${b.doctor_title}`],
      [t("visit_time"), b.visit_time ? dayTime(b.visit_time) : `${dayTime(b.slot_starts_at)}-${b.slot_ends_at.slice(11, 16)}`],
      [t("place"), b.place || b.location],
      [t("his_no"), b.his_appointment_no ? h("strong", { class: "his-no" }, b.his_appointment_no) : t("his_pending")],
      [t("cancel_deadline"), dayTime(b.cancel_deadline)],
      b.cancel_reason ? [t("cancel_reason"), b.cancel_reason] : null,
    ]),
    h("h2", {}, t("payment_section")),
    sheet([
      [t("fee"), yuan(b.amount_fen)],
      [t("payment"), b.payment ? `${t(`payment_${b.payment.status}`)}${b.payment.paid_at ? " · " + dayTime(b.payment.paid_at) : ""}` : t("no_payment")],
      [t("refund"), b.refund ? h("span", { class: "refund", dataset: { status: b.refund.status } }, refundText(b.refund)) : t("no_refund")],
    ]),
    h("h2", {}, t("his_section")),
    sheet([
      [t("his_appointment"), b.his.appointment_id || "–"],
      [t("his_submitted"), b.his.submitted_at ? dayTime(b.his.submitted_at) : "–"],
      [t("his_confirmed"), b.his.confirmed_at ? dayTime(b.his.confirmed_at) : "–"],
      [t("his_cancelled"), b.his.cancelled_at ? dayTime(b.his.cancelled_at) : "–"],
      [t("his_attempts"), String(b.his.attempts)],
      b.his.last_error ? [t("his_error"), b.his.last_error] : null,
    ]),
    h("h2", {}, t("visit_section")),
    sheet([
      [t("checked_in"), b.visit.checked_in_at ? `${dayTime(b.visit.checked_in_at)} · ${t(`by_${b.visit.checked_in_by}`)}` : "–"],
      [t("no_show"), b.visit.no_show_at ? dayTime(b.visit.no_show_at) : "–"],
    ]),
  ];
}

export async function render({ api, params, hospitalId, every }) {
  const [bookingId] = params;
  let booking = await load(api, hospitalId, bookingId);
  const errors = h("div", { class: "errors" });
  const actions = h("div", { class: "row start actions" });
  const body = h("div", {});

  const act = async (run, done) => {
    fill(errors);
    for (const button of actions.querySelectorAll("button")) button.disabled = true;
    try {
      await run();
      toast(done);
      booking = await load(api, hospitalId, bookingId);
      draw();
    } catch (error) {
      fill(errors, problem(error));
      draw();
    }
  };

  const cancel = async () => {
    const paid = booking.payment && booking.payment.status === "paid";
    const answer = await ask(t("cancel_ask"), {
      details: h("p", {}, paid ? t("cancel_refund_note", { amount: yuan(booking.payment.amount_fen) }) : t("cancel_no_refund_note")),
      fields: [{ name: "reason", label: t("cancel_reason_label"), required: true, maxlength: "200" }],
      confirm: t("cancel_refund"),
    });
    if (answer) await act(() => api.cancelBooking(bookingId, answer.reason, newKey()), t("cancelled_ok"));
  };
  const checkIn = async () => {
    if (await ask(t("check_in_ask", { patient: booking.patient_name }), { confirm: t("check_in") })) {
      await act(() => api.checkIn(bookingId, newKey()), t("checked_in_ok"));
    }
  };
  const noShow = async () => {
    if (await ask(t("no_show_ask", { patient: booking.patient_name }), { confirm: t("mark_no_show") })) {
      await act(() => api.markNoShow(bookingId, newKey()), t("no_show_ok"));
    }
  };

  const draw = () => {
    const open = OPEN.has(booking.status);
    fill(
      actions,
      open || booking.status === "no_show" ? h("button", { type: "button", class: "primary", onclick: checkIn }, t("check_in")) : null,
      open ? h("button", { type: "button", class: "secondary", onclick: noShow }, t("mark_no_show")) : null,
      open ? h("button", { type: "button", class: "danger", onclick: cancel }, t("cancel_refund")) : null,
    );
    fill(body, details(booking));
  };
  draw();
  // A refund settles within seconds (the payment loop): follow it while the page is open.
  every(async () => {
    const pending = booking.refund ? booking.refund.status !== "succeeded" : booking.status === "cancelled" && booking.payment?.status === "paid";
    if (!pending) return;
    try {
      booking = await load(api, hospitalId, bookingId);
      fill(body, details(booking));
    } catch (error) {
      fill(errors, problem(error));
    }
  }, 2000);

  return h("section", {}, heading(t("booking_title")), actions, errors, body);
}
