// 选择科室: the hospital's department tree (department_tree); a department with
// sub-departments opens and closes (a <details>), a leaf leads to its doctors.

import { h } from "../../shared/dom.js";
import { t } from "../i18n.js";
import { picked } from "../state.js";
import { heading } from "../ui.js";

function node(department) {
  const link = h(
    "a",
    {
      href: `#/department/${encodeURIComponent(department.department_id)}`,
      onclick: () => picked.set({ department: { department_id: department.department_id, name: department.name } }),
    },
    department.name,
  );
  if (!department.children.length) return h("li", {}, link);
  return h(
    "li",
    {},
    h("details", { open: true }, h("summary", {}, department.name), h("ul", { class: "tree" }, h("li", {}, link), department.children.map(node))),
  );
}

export async function render({ api, params }) {
  const [hospitalId] = params;
  const tree = await api.departments(hospitalId);
  const hospital = picked.get().hospital;
  return h(
    "section",
    {},
    heading(t("pick_department")),
    hospital && hospital.hospital_id === hospitalId ? h("p", { class: "muted" }, hospital.name) : null,
    h("ul", { class: "list tree" }, tree.departments.map(node)),
  );
}
