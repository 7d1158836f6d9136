// 放号日: a hospital's schedules of one day (get_hospital_day) with each one's units now
// (remaining, held, booked, waiting out the anti-scalping delay), the patients on its 候补
// waitlist, and the waiting rooms
// of its queued releases (joined, drawn, admitted, sold-out time). It follows the day
// live by asking again every LIVE_MS: the route reads Redis's counts directly and is
// cheap, and polling keeps working through proxies that buffer event streams.

import { h, fill } from "../../shared/dom.js";
import { clock, clockSeconds, dayTime, todayIn, addDays, yuan } from "../../shared/format.js";
import { t } from "../i18n.js";
import { heading, problem, setFields, table, updateRows } from "../ui.js";

/** How often the day is read again while the page is open (ms). */
export const LIVE_MS = 2000;

function usage(item) {
  // One bar per schedule: booked, held, waiting and remaining as shares of capacity.
  const total = Math.max(item.capacity, 1);
  const part = (name, value) => {
    const element = h("span", { class: `part ${name}` });
    // Set through the CSSOM: the policy refuses style attributes, not this.
    element.style.width = `${(value / total) * 100}%`;
    return element;
  };
  return h(
    "span",
    { class: "meter", role: "img", "aria-label": t("meter_label", { booked: item.booked, held: item.held, remaining: item.remaining, capacity: item.capacity }) },
    part("booked", item.booked),
    part("held", item.held),
    part("waiting", item.waiting),
  );
}

function statusCell(item) {
  if (item.status === "suspended") return h("span", { class: "tag off" }, t("suspended"));
  if (!item.released) return h("span", { class: "tag" }, t("releases_at", { time: dayTime(item.release_at) }));
  if (item.remaining === 0) return h("span", { class: "tag warn" }, t("sold_out"));
  return h("span", { class: "tag ok" }, t("open"));
}

function schedulesTable(items, date) {
  return table(
    t("schedules_caption"),
    [
      [t("department"), (s) => s.department_name],
      [t("doctor"), (s) => h("a", { href: `#/schedule/${encodeURIComponent(s.schedule_id)}?date=${date}` }, `${s.doctor_name} ${s.doctor_title}`)],
      [t("session"), (s) => `${t(`session_${s.session}`)} ${clock(s.starts_at)}-${clock(s.ends_at)}`],
      [t("status"), (s) => h("span", { dataset: { part: "status" } }, statusCell(s))],
      [t("capacity"), (s) => h("span", { dataset: { field: "capacity" } }, s.capacity)],
      [t("remaining"), (s) => h("strong", { dataset: { field: "remaining" } }, s.remaining)],
      [t("held"), (s) => h("span", { dataset: { field: "held" } }, s.held)],
      [t("booked"), (s) => h("span", { dataset: { field: "booked" } }, s.booked)],
      [t("waiting"), (s) => h("span", { dataset: { field: "waiting" } }, s.waiting)],
      [t("waitlisted"), (s) => h("span", { dataset: { field: "waitlisted" } }, s.waitlisted)],
      [t("usage"), (s) => h("span", { dataset: { part: "usage" } }, usage(s))],
      [t("fee"), (s) => yuan(s.fee_fen)],
    ],
    items,
    { rowAttrs: (s) => ({ dataset: { schedule: s.schedule_id } }) },
  );
}

const COUNTS = ["capacity", "remaining", "held", "booked", "waiting", "waitlisted"];

/** New figures into a schedule's row (the row and its link stay, with any focus). */
function refreshRow(row, item) {
  setFields(row, item, COUNTS);
  fill(row.querySelector('[data-part="status"]'), statusCell(item));
  fill(row.querySelector('[data-part="usage"]'), usage(item));
}

function roomsPanel(releases) {
  if (!releases.length) return null;
  return h(
    "section",
    { class: "panel", "aria-labelledby": "rooms-title" },
    h("h2", { id: "rooms-title" }, t("rooms_title")),
    table(
      t("rooms_title"),
      [
        [t("release"), (r) => r.release_id],
        [t("room_state"), (r) => h("span", { class: `tag room-${r.state}` }, t(`room_${r.state}`))],
        [t("t0"), (r) => dayTime(r.t0)],
        [t("joined"), (r) => h("span", { dataset: { field: "joined" } }, r.joined)],
        [t("drawn"), (r) => r.drawn],
        [t("admitted"), (r) => h("span", { dataset: { field: "admitted" } }, r.admitted)],
        [t("sold_out_at"), (r) => (r.sold_out_at ? clockSeconds(r.sold_out_at) : "–")],
      ],
      releases,
      { rowAttrs: (r) => ({ dataset: { release: r.release_id } }) },
    ),
  );
}

export async function render({ api, query, go, hospitalId, timeZone, every }) {
  const date = query.get("date") || todayIn(timeZone);
  const department = query.get("department") || "";
  const picked = h("input", { id: "day-date", type: "date", value: date, required: true });
  const departments = h("select", { id: "day-department" }, h("option", { value: "" }, t("all_departments")));
  const move = (to) => go(`/day?date=${to}${department ? `&department=${encodeURIComponent(department)}` : ""}`);
  picked.addEventListener("change", () => picked.value && move(picked.value));
  departments.addEventListener("change", () => go(`/day?date=${date}${departments.value ? `&department=${encodeURIComponent(departments.value)}` : ""}`));
  const updated = h("p", { class: "muted small", id: "day-updated" });
  const data = h("div", { id: "day-data" });
  const rooms = h("div", {});

  const draw = (view) => {
    const known = new Map(view.items.map((s) => [s.department_id, s.department_name]));
    if (departments.options.length !== known.size + 1) {
      fill(
        departments,
        h("option", { value: "" }, t("all_departments")),
        [...known].map(([id, name]) => h("option", { value: id, selected: id === department }, name)),
      );
    }
    const items = view.items.filter((s) => !department || s.department_id === department);
    if (!items.length || !updateRows(data, "schedule", items, (s) => s.schedule_id, refreshRow)) {
      fill(data, items.length ? schedulesTable(items, date) : h("p", { class: "muted" }, t("no_schedules")));
    }
    fill(rooms, roomsPanel(view.releases));
    updated.textContent = t("updated_at", { time: clockSeconds(view.generated_at) });
  };
  draw(await api.day(hospitalId, date));
  every(async () => {
    try {
      draw(await api.day(hospitalId, date));
    } catch (error) {
      fill(data, problem(error));
    }
  }, LIVE_MS);

  return h(
    "section",
    {},
    heading(t("day_title")),
    h(
      "div",
      { class: "toolbar" },
      h("div", { class: "field inline" }, h("label", { for: "day-date" }, t("visit_date")), picked),
      h("button", { type: "button", class: "secondary", onclick: () => move(addDays(date, -1)) }, t("previous_day")),
      h("button", { type: "button", class: "secondary", onclick: () => move(todayIn(timeZone)) }, t("today")),
      h("button", { type: "button", class: "secondary", onclick: () => move(addDays(date, 1)) }, t("next_day")),
      h("div", { class: "field inline" }, h("label", { for: "day-department" }, t("department")), departments),
      updated,
    ),
    data,
    rooms,
  );
}
