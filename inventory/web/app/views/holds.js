// 待支付: the account's holds still waiting for payment (list_holds), with the time left
// to pay; the words the app showed when it made a hold (doctor, patient, time) are kept
// in this browser, and a hold made elsewhere (another device, a waitlist offer) shows
// its fee and deadline. A link leads to the waitlist entries.

import { h } from "../../shared/dom.js";
import { dayTime, duration, secondsUntil, yuan } from "../format.js";
import { t } from "../i18n.js";
import { holds } from "../state.js";
import { heading } from "../ui.js";

export async function render({ api, every }) {
  const { items } = await api.openHolds();
  const timers = [];
  const list = h(
    "ul",
    { class: "list cards" },
    items.map((hold) => {
      const summary = holds.summary(hold.hold_id);
      const left = h("span", { class: "tag", role: "timer" }, t("hold_left", { left: duration(secondsUntil(hold.deadline)) }));
      timers.push(() => {
        left.textContent = t("hold_left", { left: duration(secondsUntil(hold.deadline)) });
      });
      return h(
        "li",
        {},
        h(
          "a",
          { href: `#/hold/${encodeURIComponent(hold.hold_id)}`, class: "card" },
          h("span", { class: "name" }, summary?.doctor || t("hold_elsewhere")),
          h("span", { class: "muted small" }, summary ? `${summary.patient || ""} · ${summary.visit || ""}` : `${t("hold_made")} ${dayTime(hold.created_at)}`),
          h("span", { class: "row" }, h("span", { class: "fee" }, yuan(hold.amount_fen)), left),
        ),
      );
    }),
  );
  every(() => timers.forEach((fn) => fn()), 1000);
  return h(
    "section",
    {},
    heading(t("my_holds")),
    items.length ? list : h("p", { class: "muted" }, t("no_holds")),
    h("p", {}, h("a", { href: "#/waitlist" }, t("my_waitlist"))),
  );
}
