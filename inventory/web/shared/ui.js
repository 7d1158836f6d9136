// Pieces both front ends' views use: the refusal box (the API's own message), page
// headings and the short message of the live region.

import { h, fill } from "./dom.js";

/** The API's refusal as a person reads it: its title (`networkText` when no answer came),
 * its detail, and for a 422 the fields it names. An alert, so a screen reader says it at
 * once; `data-code` carries the stable code. */
export function problemBox(error, networkText) {
  const lines = [];
  if (error.detail && error.detail !== error.title) lines.push(h("p", {}, error.detail));
  for (const item of error.errors || []) {
    if (item && item.field) lines.push(h("p", { class: "field-error" }, `${item.field}: ${item.reason || item.code || ""}`));
  }
  return h(
    "div",
    { class: "problem", role: "alert", dataset: { code: error.code || "", status: String(error.status ?? "") } },
    h("strong", {}, error.status === 0 ? networkText : error.title || error.message),
    lines,
  );
}

/** A page's heading (focused after navigation, for screen readers). */
export function heading(text) {
  return h("h1", { tabindex: "-1" }, text);
}

/** `text` in the live region #toast (read out, then gone after `ms`). */
export function showToast(text, ms) {
  const region = document.getElementById("toast");
  fill(region, text);
  region.hidden = false;
  clearTimeout(showToast.timer);
  showToast.timer = setTimeout(() => {
    region.hidden = true;
  }, ms);
}
