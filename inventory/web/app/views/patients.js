// 我的就诊人: the account's patients (list_patients, masked) and the form to add one.

import { h, fill } from "../../shared/dom.js";
import { t } from "../i18n.js";
import { heading } from "../ui.js";
import { patientForm } from "./patient_form.js";

function item(p) {
  return h("li", { class: "card" }, h("span", { class: "name" }, `${p.name}（${t(`rel_${p.relation}`)}）`), h("span", { class: "muted small" }, `${p.resident_id} · ${p.phone}`));
}

export async function render({ api }) {
  const { items } = await api.patients();
  const list = h("ul", { class: "list cards" });
  const draw = () => fill(list, items.length ? items.map(item) : h("li", { class: "muted" }, t("no_patients")));
  draw();
  const form = patientForm(api, (created) => {
    if (!items.some((p) => p.patient_id === created.patient_id)) items.push(created);
    draw();
  });
  return h("section", {}, heading(t("my_patients")), list, h("h2", {}, t("add_patient")), form);
}
