// 我的候补: the account's waitlist entries (list_waitlist): the place in line while
// waiting, the offer to pay when a unit was freed for the patient, and leaving
// (leave_waitlist; an unpaid offer then passes to the next patient).

import { h, fill } from "../../shared/dom.js";
import { dayTime, duration, secondsUntil, yuan } from "../format.js";
import { t } from "../i18n.js";
import { newKey } from "../api.js";
import { ask, heading, problem, toast } from "../ui.js";

function entryCard(api, entry, refresh) {
  const errors = h("div", { class: "errors" });
  const lines = [
    h("span", { class: "name" }, t(`wl_${entry.state}`)),
    h("span", { class: "muted small" }, `${t("wl_joined")} ${dayTime(entry.joined_at)} · ${entry.schedule_id}`),
  ];
  if (entry.state === "waiting" && entry.position) lines.push(h("span", { class: "tag" }, t("wl_position", { n: entry.position })));
  const offer = entry.offer;
  if (entry.state === "offered" && offer) {
    lines.push(
      h(
        "span",
        { class: "row" },
        h("span", { class: "fee" }, yuan(offer.amount_fen)),
        h("span", { class: "tag", role: "timer" }, t("hold_left", { left: duration(secondsUntil(offer.deadline)) })),
      ),
      h("a", { href: `#/hold/${encodeURIComponent(offer.hold_id)}`, class: "primary block" }, t("wl_pay_offer")),
    );
  }
  if (entry.state === "waiting" || entry.state === "offered") {
    const key = newKey();
    const leave = h("button", { type: "button", class: "secondary block" }, t("wl_leave"));
    leave.addEventListener("click", async () => {
      if (!(await ask(t("wl_leave_ask")))) return;
      leave.disabled = true;
      try {
        await api.leaveWaitlist(entry.entry_id, key);
        toast(t("wl_left"));
        refresh();
      } catch (error) {
        fill(errors, problem(error));
        leave.disabled = false;
      }
    });
    lines.push(leave);
  }
  lines.push(errors);
  return h("li", { dataset: { entry: entry.entry_id, state: entry.state } }, h("div", { class: "card" }, lines));
}

export async function render({ api, query, refresh }) {
  const { items } = await api.waitlist();
  // An entry just joined: the list comes from the record, which the worker writes a
  // moment after the join; the entry itself is read from the waitlist at once.
  const joined = query.get("entry");
  if (joined && !items.some((entry) => entry.entry_id === joined)) {
    items.unshift(await api.waitlistEntry(joined));
  }
  return h(
    "section",
    {},
    heading(t("my_waitlist")),
    items.length ? h("ul", { class: "list cards" }, items.map((entry) => entryCard(api, entry, refresh))) : h("p", { class: "muted" }, t("no_waitlist")),
  );
}
