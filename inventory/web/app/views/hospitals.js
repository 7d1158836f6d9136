// 选择医院: the hospitals (list_hospitals).

import { h } from "../../shared/dom.js";
import { t } from "../i18n.js";
import { picked } from "../state.js";
import { heading } from "../ui.js";

export async function render({ api, go }) {
  const { items } = await api.hospitals();
  return h(
    "section",
    {},
    heading(t("pick_hospital")),
    h(
      "ul",
      { class: "list" },
      items.map((hospital) =>
        h(
          "li",
          {},
          h(
            "a",
            {
              href: `#/hospital/${encodeURIComponent(hospital.hospital_id)}`,
              onclick: () => picked.set({ hospital }),
            },
            h("span", { class: "name" }, hospital.name),
          ),
        ),
      ),
    ),
  );
}
