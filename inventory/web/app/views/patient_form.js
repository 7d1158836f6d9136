// The 就诊人 form (create_patient). It checks what it can before sending, as the API
// does (the ID number's GB 11643 check digit, birth date and gender agreeing with it, a
// mainland mobile), fills birth date and gender from the ID number, and shows the API's
// own refusal, field by field, for everything else.

import { h, fill } from "../../shared/dom.js";
import { t } from "../i18n.js";
import { newKey } from "../api.js";
import { problem } from "../ui.js";

const WEIGHTS = [7, 9, 10, 5, 8, 4, 2, 1, 6, 3, 7, 9, 10, 5, 8, 4, 2];
const CHECK = "10X98765432";

/** The canonical ID number (full-width digits folded, x upper-cased), or "". */
export function canonicalId(text) {
  const folded = text.trim().replace(/[０-９]/g, (c) => String.fromCharCode(c.charCodeAt(0) - 0xfee0)).replace(/[xｘＸ]/g, "X");
  return /^\d{17}[\dX]$/.test(folded) ? folded : "";
}

/** Whether the 18th character is the GB 11643 check digit of the first 17. */
export function checkDigitOk(id) {
  const sum = WEIGHTS.reduce((acc, w, i) => acc + w * Number(id[i]), 0);
  return CHECK[sum % 11] === id[17];
}

function field(name, label, input, hint) {
  const id = `f-${name}`;
  input.id = id;
  input.name = name;
  const error = h("span", { class: "field-error", id: `${id}-error`, "aria-live": "polite" });
  input.setAttribute("aria-describedby", `${id}-error`);
  return { row: h("div", { class: "field" }, h("label", { for: id }, label), input, hint || null, error), error, input };
}

export function patientForm(api, onCreated) {
  const fields = {
    name: field("name", t("name"), h("input", { type: "text", autocomplete: "name", maxlength: "50", required: true })),
    resident_id: field("resident_id", t("resident_id"), h("input", { type: "text", inputmode: "text", autocomplete: "off", maxlength: "24", required: true })),
    gender: field(
      "gender",
      t("gender"),
      h("select", { required: true }, h("option", { value: "male" }, t("male")), h("option", { value: "female" }, t("female"))),
    ),
    birth_date: field("birth_date", t("birth_date"), h("input", { type: "date", required: true })),
    phone: field("phone", t("phone"), h("input", { type: "tel", autocomplete: "tel", inputmode: "tel", maxlength: "20", required: true })),
    relation: field(
      "relation",
      t("relation"),
      h("select", {}, ["self", "child", "parent", "spouse", "other"].map((r) => h("option", { value: r }, t(`rel_${r}`)))),
    ),
  };
  const errors = h("div", { class: "errors" });
  fields.resident_id.input.addEventListener("change", () => {
    const id = canonicalId(fields.resident_id.input.value);
    if (id && checkDigitOk(id)) {
      fields.birth_date.input.value = `${id.slice(6, 10)}-${id.slice(10, 12)}-${id.slice(12, 14)}`;
      fields.gender.input.value = Number(id[16]) % 2 ? "male" : "female";
    }
  });
  let key = newKey();
  const submit = h("button", { type: "submit", class: "secondary block" }, t("save"));
  const form = h("form", { novalidate: true, class: "patient-form" }, Object.values(fields).map((f) => f.row), errors, submit);
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    fill(errors);
    for (const f of Object.values(fields)) {
      fill(f.error);
      f.input.removeAttribute("aria-invalid");
    }
    const body = Object.fromEntries(Object.entries(fields).map(([name, f]) => [name, f.input.value.trim()]));
    const local = {};
    const id = canonicalId(body.resident_id);
    if (!body.name) local.name = t("check_name");
    if (!id || !checkDigitOk(id)) local.resident_id = t("check_id");
    else {
      if (body.birth_date !== `${id.slice(6, 10)}-${id.slice(10, 12)}-${id.slice(12, 14)}`) local.birth_date = t("check_birth");
      if (body.gender !== (Number(id[16]) % 2 ? "male" : "female")) local.gender = t("check_gender");
    }
    if (!/^(?:\+?86)?1[3-9]\d{9}$/.test(body.phone.replace(/[\s-]/g, ""))) local.phone = t("check_phone");
    if (Object.keys(local).length) {
      for (const [name, text] of Object.entries(local)) {
        fill(fields[name].error, text);
        fields[name].input.setAttribute("aria-invalid", "true");
      }
      fields[Object.keys(local)[0]].input.focus();
      return;
    }
    submit.disabled = true;
    try {
      const created = await api.addPatient(body, key);
      key = newKey();
      form.reset();
      onCreated(created);
    } catch (error) {
      fill(errors, problem(error));
      for (const item of error.errors || []) {
        const name = String(item.field || "").split(".").pop();
        if (fields[name]) {
          fill(fields[name].error, item.reason || error.title);
          fields[name].input.setAttribute("aria-invalid", "true");
        }
      }
      key = newKey();
    } finally {
      submit.disabled = false;
    }
  });
  return form;
}
