// 我的预约: the account's bookings (list_bookings) with status, HIS number and time.

import { h } from "../../shared/dom.js";
import { dayTime } from "../format.js";
import { t } from "../i18n.js";
import { heading } from "../ui.js";
import { statusText } from "./booking.js";

export async function render({ api }) {
  const { items } = await api.bookings();
  return h(
    "section",
    {},
    heading(t("my_bookings")),
    items.length
      ? h(
          "ul",
          { class: "list cards" },
          items.map((b) =>
            h(
              "li",
              {},
              h(
                "a",
                { href: `#/booking/${encodeURIComponent(b.booking_id)}`, class: "card" },
                h("span", { class: "name" }, `${b.department_name} · ${b.doctor_name}`),
                h("span", { class: "muted small" }, `${b.hospital_name} · ${dayTime(b.slot_starts_at)}`),
                h(
                  "span",
                  { class: "row" },
                  h("span", { class: `status s-${b.status}` }, statusText(b.status)),
                  b.his_appointment_no ? h("span", { class: "small" }, `${t("his_no")} ${b.his_appointment_no}`) : null,
                ),
              ),
            ),
          ),
        )
      : h("p", { class: "muted" }, t("no_bookings")),
  );
}
