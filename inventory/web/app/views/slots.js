// 选择就诊时段: the schedule's time windows with remaining counts (schedule_slots). A
// queued release names its waiting room (the windows can be picked before T0: the room
// gives the way in); a released schedule with nothing left offers its 候补 waitlist.

import { h } from "../../shared/dom.js";
import { clock, dayLabel, dayTime, secondsUntil, yuan } from "../format.js";
import { t } from "../i18n.js";
import { picked } from "../state.js";
import { heading } from "../ui.js";

function roomNote(room) {
  const opens = secondsUntil(room.opens_at) > 0 ? t("room_opens_at", { time: dayTime(room.opens_at) }) : t("room_open_now");
  return h("p", { class: "notice room-note" }, `${opens} · ${t("room_t0_at", { time: dayTime(room.t0) })}`);
}

export async function render({ api, params }) {
  const [scheduleId] = params;
  const availability = await api.slots(scheduleId);
  const schedule = picked.get().schedule?.schedule_id === scheduleId ? picked.get().schedule : null;
  const room = availability.waiting_room;
  const queued = room && secondsUntil(room.t0) > 0;
  const released = secondsUntil(availability.release_at) <= 0;
  const soldOut = released && availability.status === "open" && availability.items.every((slot) => slot.remaining <= 0);
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
    room ? roomNote(room) : null,
    h(
      "ul",
      { class: "grid" },
      availability.items.map((slot) => {
        const label = `${clock(slot.starts_at)}-${clock(slot.ends_at)}`;
        const open = queued || slot.remaining > 0;
        const left = queued ? t("window_capacity", { n: slot.capacity }) : slot.remaining > 0 ? t("window_left", { n: slot.remaining }) : t("sold_out");
        return h(
          "li",
          {},
          h(
            "button",
            {
              type: "button",
              class: open ? "slot" : "slot off",
              "aria-label": `${label} ${left}`,
              dataset: { slot: slot.slot_id },
              onclick: () => {
                picked.set({ slot, slot_schedule_id: scheduleId, room: room ? { ...room, schedule_id: scheduleId } : null });
                location.hash = `#/slot/${encodeURIComponent(slot.slot_id)}`;
              },
            },
            h("span", {}, label),
            h("span", { class: "small" }, left),
          ),
        );
      }),
    ),
    soldOut
      ? h(
          "div",
          { class: "waitlist-offer" },
          h("p", {}, t("waitlist_pitch")),
          h("a", { href: `#/waitlist/join/${encodeURIComponent(scheduleId)}`, class: "button primary block" }, t("join_waitlist")),
        )
      : null,
  );
}
