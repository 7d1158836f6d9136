// 待支付: holds made from this browser that are still waiting for payment (get_hold for
// each remembered id; the API lists bookings, not holds), with the time left to pay.

import { h } from "../dom.js";
import { duration, secondsUntil, yuan } from "../format.js";
import { t } from "../i18n.js";
import { holds } from "../state.js";
import { heading } from "../ui.js";

export async function render({ api, every }) {
  const found = [];
  for (const { hold_id: holdId, summary } of holds.list()) {
    try {
      const hold = await api.getHold(holdId);
      if (hold.state === "held" && secondsUntil(hold.deadline) > 0) found.push({ hold, summary });
      else if (hold.state !== "held") holds.forget(holdId);
    } catch (error) {
      if (error.status === 404) holds.forget(holdId);
      else throw error;
    }
  }
  const timers = [];
  const list = h(
    "ul",
    { class: "list cards" },
    found.map(({ hold, summary }) => {
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
          h("span", { class: "name" }, summary?.doctor || hold.hold_id),
          h("span", { class: "muted small" }, `${summary?.patient || ""} · ${summary?.visit || ""}`),
          h("span", { class: "row" }, h("span", { class: "fee" }, yuan(hold.amount_fen)), left),
        ),
      );
    }),
  );
  every(() => timers.forEach((fn) => fn()), 1000);
  return h("section", {}, heading(t("my_holds")), found.length ? list : h("p", { class: "muted" }, t("no_holds")));
}
