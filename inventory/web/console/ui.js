// Pieces every view uses: the refusal box (the API's own message), headings, a toast,
// the confirmation dialog every action that changes money or bookings goes through,
// and small tables.

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

/** A short message in the live region (read out, then gone). */
export function toast(text) {
  showToast(text, 4000);
}

/** A labelled form field of the dialog: {name, label, type, value, options, required,
 * min, max, maxlength}. */
function field(spec) {
  const id = `ask-${spec.name}`;
  const attrs = { id, name: spec.name, required: spec.required, min: spec.min, max: spec.max, maxlength: spec.maxlength };
  const control =
    spec.type === "select"
      ? h("select", attrs, spec.options.map(([value, label]) => h("option", { value, selected: value === spec.value }, label)))
      : h("input", { ...attrs, type: spec.type || "text", value: spec.value ?? "", autocomplete: "off" });
  return h("div", { class: "field" }, h("label", { for: id }, spec.label), control);
}

/** Ask before an action: `question`, `details` (elements shown under it: what the action
 * will change) and `fields` to fill in. Resolves null when cancelled, else the fields'
 * values by name ({} without fields). The dialog is modal and keyboard-operable (Esc
 * cancels). */
export function ask(question, { details = null, fields = [], confirm = null } = {}) {
  const dialog = document.getElementById("ask");
  const form = dialog.querySelector("form");
  fill(dialog.querySelector("#ask-text"), question);
  fill(dialog.querySelector("#ask-body"), details, fields.map(field));
  dialog.querySelector('[value="yes"]').textContent = confirm || t("yes");
  dialog.querySelector('[value="no"]').textContent = t("no");
  dialog.returnValue = "";
  dialog.showModal();
  const first = dialog.querySelector("#ask-body input, #ask-body select");
  if (first) first.focus();
  return new Promise((resolve) => {
    // "确定" submits only with valid fields (the browser's own validation, naming the
    // field); "取消" (formnovalidate) and Esc close without them.
    dialog.addEventListener(
      "close",
      () => {
        if (dialog.returnValue !== "yes") return resolve(null);
        const values = {};
        for (const spec of fields) values[spec.name] = form.elements[spec.name].value.trim();
        resolve(values);
      },
      { once: true },
    );
  });
}

/** A definition list of [label, value] rows. */
export function sheet(rows) {
  return h(
    "dl",
    { class: "sheet" },
    rows.filter(Boolean).map(([label, value]) => [h("dt", {}, label), h("dd", {}, value ?? "–")]),
  );
}

/** A table: `columns` are [label, cell(item)]; `caption` names it for screen readers. A
 * narrow screen scrolls the table sideways rather than the page. */
export function table(caption, columns, items, { rowAttrs = () => ({}) } = {}) {
  const rows = items.map((item) => h("tr", rowAttrs(item), columns.map(([, cell]) => h("td", {}, cell(item)))));
  return h(
    "div",
    { class: "scroll" },
    h(
      "table",
      { class: "grid" },
      h("caption", { class: "visually-hidden" }, caption),
      h("thead", {}, h("tr", {}, columns.map(([label]) => h("th", { scope: "col" }, label)))),
      h("tbody", {}, rows),
    ),
  );
}

/** Update a live table in place when it shows the same rows in the same order (each
 * `tr[data-<key>]`), so the focus and the reading position of someone working in it stay
 * put: `refresh(row, item)` writes the new figures. Returns false when the rows differ
 * (draw the table again then). */
export function updateRows(container, key, items, idOf, refresh) {
  const rows = [...container.querySelectorAll(`tr[data-${key}]`)];
  if (rows.length !== items.length || rows.some((row, i) => row.dataset[key] !== idOf(items[i]))) return false;
  rows.forEach((row, i) => refresh(row, items[i]));
  return true;
}

/** Set the text of each `[data-field=name]` in `row` from `values[name]`. */
export function setFields(row, values, names) {
  for (const name of names) {
    const element = row.querySelector(`[data-field="${name}"]`);
    if (element) element.textContent = String(values[name]);
  }
}
