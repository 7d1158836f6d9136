// 加入候补: put one of the account's patients on a sold-out schedule's waitlist
// (join_waitlist). A freed unit is then offered in order: a hold to pay before its
// deadline, found under 待支付 and on the waitlist page.

import { h, fill } from "../../shared/dom.js";
import { t } from "../i18n.js";
import { newKey } from "../api.js";
import { heading, problem } from "../ui.js";
import { patientChoices } from "./patient_choice.js";

export async function render({ api, params, go }) {
  const [scheduleId] = params;
  const { items } = await api.patients();
  const choices = patientChoices(items);
  const errors = h("div", { class: "errors" });
  // One key per patient: a retry (429/503) or a second tap joins once.
  const keys = new Map();
  const join = h("button", { type: "button", class: "primary block" }, t("join_waitlist"));
  join.addEventListener("click", async () => {
    fill(errors);
    const patientId = choices.selected();
    if (!patientId) return;
    if (!keys.has(patientId)) keys.set(patientId, newKey());
    join.disabled = true;
    try {
      const entry = await api.joinWaitlist(scheduleId, patientId, keys.get(patientId));
      go(`/waitlist?entry=${encodeURIComponent(entry.entry_id)}`);
    } catch (error) {
      fill(errors, problem(error));
      keys.delete(patientId); // a refusal made nothing: the next try is a new request
    } finally {
      join.disabled = false;
    }
  });
  return h(
    "section",
    {},
    heading(t("join_waitlist")),
    h("p", { class: "muted" }, t("waitlist_how")),
    choices.element,
    errors,
    join,
    items.length ? null : h("p", {}, h("a", { href: "#/patients" }, t("add_patient"))),
  );
}
