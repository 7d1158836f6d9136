// 选择医生: the department's doctors (department_doctors) with title 职称 and specialty
// 擅长; the fee is per schedule and shows once a date is chosen.

import { h } from "../../shared/dom.js";
import { t } from "../i18n.js";
import { picked } from "../state.js";
import { heading } from "../ui.js";

export async function render({ api, params }) {
  const [departmentId] = params;
  const { items } = await api.doctors(departmentId);
  const department = picked.get().department;
  return h(
    "section",
    {},
    heading(t("pick_doctor")),
    department && department.department_id === departmentId ? h("p", { class: "muted" }, department.name) : null,
    items.length
      ? h(
          "ul",
          { class: "list" },
          items.map((doctor) =>
            h(
              "li",
              {},
              h(
                "a",
                {
                  href: `#/doctor/${encodeURIComponent(departmentId)}/${encodeURIComponent(doctor.doctor_id)}`,
                  onclick: () => picked.set({ doctor }),
                  class: "doctor",
                },
                h("span", { class: "name" }, doctor.name, " ", h("span", { class: "tag" }, doctor.title)),
                doctor.specialty ? h("span", { class: "muted small" }, `${t("specialty")}：${doctor.specialty}`) : null,
              ),
            ),
          ),
        )
      : h("p", { class: "muted" }, t("no_doctors")),
  );
}
