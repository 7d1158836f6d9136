// 医生主页: the doctor (title, specialty), a date strip over the booking window, and the
// doctor's sessions on the chosen date (department_schedules, filtered to the doctor)
// with fee, place and remaining count; before release, the release time and a countdown.

import { h } from "../../shared/dom.js";
import { addDays, clock, dayLabel, duration, secondsUntil, todayIn, yuan } from "../format.js";
import { t } from "../i18n.js";
import { picked } from "../state.js";
import { heading } from "../ui.js";

/** Days the strip offers, from today (the HIS sync covers two weeks ahead). */
export const WINDOW_DAYS = 14;

function strip(departmentId, doctorId, today, chosen) {
  const days = Array.from({ length: WINDOW_DAYS }, (_, i) => addDays(today, i));
  return h(
    "nav",
    { class: "dates", "aria-label": t("dates") },
    days.map((date) =>
      h(
        "a",
        {
          href: `#/doctor/${encodeURIComponent(departmentId)}/${encodeURIComponent(doctorId)}?date=${date}`,
          "aria-current": date === chosen ? "date" : null,
          class: "date",
        },
        date === today ? t("today") : dayLabel(date).split(" ").pop(),
        h("span", { class: "small" }, date.slice(5)),
      ),
    ),
  );
}

function sessionCard(schedule, every) {
  const label = t(`session_${schedule.session}`);
  const time = `${clock(schedule.starts_at)}-${clock(schedule.ends_at)}`;
  let state;
  if (schedule.status === "suspended") state = h("span", { class: "tag off" }, t("suspended"));
  else if (!schedule.released) {
    const left = h("span", { class: "tag", role: "timer" }, t("countdown", { left: duration(secondsUntil(schedule.release_at)) }));
    every(() => {
      left.textContent = t("countdown", { left: duration(secondsUntil(schedule.release_at)) });
    }, 1000);
    state = h("span", {}, h("span", { class: "small muted" }, t("releases_at", { time: schedule.release_at.slice(5, 16).replace("T", " ") })), " ", left);
  } else if (schedule.remaining <= 0) state = h("span", { class: "tag off" }, t("sold_out"));
  else state = h("span", { class: "tag ok" }, `${t("remaining")} ${schedule.remaining}`);
  // A queued release opens its windows before T0: they lead to its waiting room.
  const open = schedule.status === "open" && (schedule.released || Boolean(schedule.waiting_room));
  if (schedule.waiting_room && !schedule.released && schedule.status === "open") {
    state = h("span", {}, state, " ", h("span", { class: "tag ok" }, t("room_badge")));
  }
  const body = [
    h("span", { class: "name" }, `${label} ${time}`),
    h("span", { class: "muted small" }, schedule.location),
    h("span", { class: "row" }, h("span", { class: "fee" }, `${t("fee")} ${yuan(schedule.fee_fen)}`), state),
  ];
  return h(
    "li",
    {},
    open
      ? h("a", { href: `#/schedule/${encodeURIComponent(schedule.schedule_id)}`, class: "card", onclick: () => picked.set({ schedule }) }, body)
      : h("div", { class: "card disabled", "aria-disabled": "true" }, body),
  );
}

export async function render({ api, params, query, every }) {
  const [departmentId, doctorId] = params;
  const chosen = picked.get();
  const zone = chosen.hospital?.timezone || "Asia/Shanghai";
  const today = todayIn(zone);
  const date = /^\d{4}-\d{2}-\d{2}$/.test(query.get("date") || "") ? query.get("date") : today;
  const day = await api.schedules(departmentId, date);
  const mine = day.items.filter((s) => s.doctor.doctor_id === doctorId);
  const doctor = mine[0]?.doctor || (chosen.doctor?.doctor_id === doctorId ? chosen.doctor : null);
  if (doctor) picked.set({ doctor });
  return h(
    "section",
    {},
    heading(doctor ? `${doctor.name} ${doctor.title}` : t("pick_doctor")),
    doctor?.specialty ? h("p", { class: "muted" }, `${t("specialty")}：${doctor.specialty}`) : null,
    strip(departmentId, doctorId, today, date),
    h("h2", {}, dayLabel(date)),
    mine.length ? h("ul", { class: "list cards" }, mine.map((s) => sessionCard(s, every))) : h("p", { class: "muted" }, t("no_schedules")),
  );
}
