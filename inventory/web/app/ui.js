// Pieces every view uses: the refusal box (the API's own message), the busy notice of an
// automatic retry, a confirmation dialog, and page headings.

import { h, fill } from "../shared/dom.js";
import { heading, problemBox, showToast } from "../shared/ui.js";
import { t } from "./i18n.js";

export { heading };

/** The API's refusal, with this front end's words for "no answer came". */
export function problem(error) {
  return problemBox(error, t("network_error"));
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
  showToast(text, 3000);
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
