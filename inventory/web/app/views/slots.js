// 选择就诊时段: the schedule's time windows with remaining counts (schedule_slots).

import { h } from "../dom.js";
import { clock, dayLabel, yuan } from "../format.js";
import { t } from "../i18n.js";
import { picked } from "../state.js";
import { heading } from "../ui.js";

export async function render({ api, params }) {
  const [scheduleId] = params;
  const availability = await api.slots(scheduleId);
  const schedule = picked.get().schedule?.schedule_id === scheduleId ? picked.get().schedule : null;
  return h(
    "section",
    {},
    heading(t("pick_window")),
    schedule
      ? h(
          "p",
          { class: "muted" },
          `${schedule.doctor.name} · ${dayLabel(schedule.visit_date)} ${t(`session_${schedule.session}`)} · ${t("fee")} ${yuan(schedule.fee_fen)}`,
        )
      : null,
    h(
      "ul",
      { class: "grid" },
      availability.items.map((slot) => {
        const label = `${clock(slot.starts_at)}-${clock(slot.ends_at)}`;
        const left = slot.remaining > 0 ? t("window_left", { n: slot.remaining }) : t("sold_out");
        return h(
          "li",
          {},
          h(
            "button",
            {
              type: "button",
              class: slot.remaining > 0 ? "slot" : "slot off",
              "aria-label": `${label} ${left}`,
              dataset: { slot: slot.slot_id },
              onclick: () => {
                picked.set({ slot });
                location.hash = `#/slot/${encodeURIComponent(slot.slot_id)}`;
              },
            },
            h("span", {}, label),
            h("span", { class: "small" }, left),
          ),
        );
      }),
    ),
  );
}
