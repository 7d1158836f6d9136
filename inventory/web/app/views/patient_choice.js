// The account's patients (就诊人) as radio choices: the booking page and the waitlist page
// both pick one. `choices.selected()` is the picked patient's id ("" when there is none).

import { h, fill } from "../../shared/dom.js";
import { t } from "../i18n.js";

export function patientChoices(items) {
  let selected = items[0]?.patient_id || "";
  const list = h("fieldset", { class: "choices" });
  const draw = (patients) => {
    fill(list, h("legend", { class: "visually-hidden" }, t("pick_patient")));
    for (const p of patients) {
      const id = `p-${p.patient_id}`;
      list.append(
        h(
          "div",
          { class: "choice" },
          h("input", {
            type: "radio",
            name: "patient",
            id,
            value: p.patient_id,
            checked: p.patient_id === selected,
            onchange: () => {
              selected = p.patient_id;
            },
          }),
          h("label", { for: id }, `${p.name}（${t(`rel_${p.relation}`)}）`, h("span", { class: "muted small" }, ` ${p.resident_id} · ${p.phone}`)),
        ),
      );
    }
    if (!patients.length) list.append(h("p", { class: "muted" }, t("no_patients")));
  };
  draw(items);
  return {
    element: list,
    selected: () => selected,
    /** Draw again with `patients`, picking `patientId`. */
    redraw(patients, patientId) {
      selected = patientId;
      draw(patients);
    },
  };
}
