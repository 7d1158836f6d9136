// Pieces every view uses: the refusal box (the API's own message), the busy notice of an
// automatic retry, a confirmation dialog, and page headings.

import { h, fill } from "../shared/dom.js";
import { t } from "./i18n.js";

/** The API's refusal as the patient reads it: its title, its detail, and for a 422 the
 * fields it names. `role="alert"` so a screen reader says it at once. */
export function problem(error) {
  const lines = [];
  if (error.detail && error.detail !== error.title) lines.push(h("p", {}, error.detail));
  for (const item of error.errors || []) {
    if (item && item.field) lines.push(h("p", { class: "field-error" }, `${item.field}: ${item.reason || item.code || ""}`));
  }
  return h(
    "div",
    { class: "problem", role: "alert", dataset: { code: error.code || "", status: String(error.status ?? "") } },
    h("strong", {}, error.status === 0 ? t("network_error") : error.title || error.message),
    lines,
  );
}

/** A page's heading (the first focus after navigation). */
export function heading(text) {
  return h("h1", { tabindex: "-1" }, text);
}

export function loading() {
  return h("p", { class: "muted", role: "status" }, t("loading"));
}

/** Tell the patient the service asked to wait, counting down; resolves when it is over. */
export function waitNotice(seconds) {
  const region = document.getElementById("notice");
  return new Promise((resolve) => {
    let left = Math.ceil(seconds);
    const tick = () => {
      if (left <= 0) {
        fill(region);
        region.hidden = true;
        resolve();
        return;
      }
      region.hidden = false;
      fill(region, t("waiting_retry", { s: left }));
      left -= 1;
      setTimeout(tick, 1000);
    };
    tick();
  });
}

/** A short message in the live region (read out, then gone). */
export function toast(text) {
  const region = document.getElementById("toast");
  fill(region, text);
  region.hidden = false;
  clearTimeout(toast.timer);
  toast.timer = setTimeout(() => {
    region.hidden = true;
  }, 3000);
}

/** Ask before something that changes money or a booking; resolves true or false. */
export function ask(question) {
  const dialog = document.getElementById("ask");
  fill(dialog.querySelector("p"), question);
  dialog.showModal();
  return new Promise((resolve) => {
    dialog.addEventListener("close", () => resolve(dialog.returnValue === "yes"), { once: true });
  });
}
