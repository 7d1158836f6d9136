// 预约查询: find the hospital's bookings (find_hospital_bookings) by booking id, the
// HIS's appointment number (就诊序号, on the patient's slip), or the patient's phone,
// full or masked as shown to patients (138****5678), on a visit date. The search is
// kept in the address (#/bookings?his_no=...), so the browser's back button returns to
// the results.

import { h, fill } from "../../shared/dom.js";
import { dayTime, todayIn, yuan } from "../../shared/format.js";
import { t } from "../i18n.js";
import { heading, problem, table } from "../ui.js";

const FIELDS = ["booking_id", "his_no", "phone", "date"];

/** Bookings as a table, each leading to its page. */
export function bookingsTable(items) {
  return table(
    t("bookings_caption"),
    [
      [t("visit_time"), (b) => dayTime(b.slot_starts_at)],
      [t("patient"), (b) => `${b.patient_name} ${b.patient_phone}`],
      [t("doctor"), (b) => `${b.department_name} · ${b.doctor_name}`],
      [t("status"), (b) => h("span", { class: `status s-${b.status}` }, t(`status_${b.status}`))],
      [t("his_no"), (b) => b.his_appointment_no || "–"],
      [t("fee"), (b) => yuan(b.amount_fen)],
      [t("booking"), (b) => h("a", { href: `#/booking/${encodeURIComponent(b.booking_id)}` }, t("open_booking"))],
    ],
    items,
    { rowAttrs: (b) => ({ dataset: { booking: b.booking_id } }) },
  );
}

function input(name, value, attrs = {}) {
  return h("input", { id: `find-${name}`, name, value: value || "", autocomplete: "off", ...attrs });
}

export async function render({ api, query, go, hospitalId, timeZone }) {
  const given = Object.fromEntries(FIELDS.map((name) => [name, query.get(name) || ""]));
  const fields = {
    booking_id: input("booking_id", given.booking_id, { spellcheck: "false" }),
    his_no: input("his_no", given.his_no, { spellcheck: "false" }),
    phone: input("phone", given.phone, { inputmode: "tel", placeholder: "138****5678", "aria-describedby": "phone-note" }),
    date: input("date", given.date || (given.phone ? todayIn(timeZone) : ""), { type: "date" }),
  };
  const form = h(
    "form",
    { class: "panel search", role: "search" },
    h("div", { class: "field" }, h("label", { for: "find-booking_id" }, t("booking_id")), fields.booking_id),
    h("div", { class: "field" }, h("label", { for: "find-his_no" }, t("his_no")), fields.his_no),
    h(
      "div",
      { class: "field" },
      h("label", { for: "find-phone" }, t("phone")),
      fields.phone,
      h("span", { id: "phone-note", class: "muted small" }, t("phone_note")),
    ),
    h("div", { class: "field" }, h("label", { for: "find-date" }, t("visit_date")), fields.date),
    h("button", { type: "submit", class: "primary" }, t("search")),
  );
  form.addEventListener("submit", (event) => {
    event.preventDefault();
    const search = new URLSearchParams();
    for (const name of FIELDS) if (fields[name].value.trim()) search.set(name, fields[name].value.trim());
    go(`/bookings?${search.toString()}`);
  });
  const results = h("div", { id: "results", "aria-live": "polite" });
  const filters = Object.fromEntries(Object.entries(given).filter(([, v]) => v));
  if (Object.keys(filters).length) {
    try {
      const found = await api.findBookings(hospitalId, filters);
      fill(
        results,
        found.items.length ? bookingsTable(found.items) : h("p", { class: "muted" }, t("no_match")),
        found.truncated ? h("p", { class: "muted small" }, t("truncated")) : null,
      );
    } catch (error) {
      fill(results, problem(error));
    }
  }
  return h("section", {}, heading(t("bookings_title")), form, results);
}
