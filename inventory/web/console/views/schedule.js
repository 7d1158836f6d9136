// 排班管理: one schedule of the release day: its slots' units (live), 加号 on a slot
// (put_capacity), 停诊 with a preview of what it ends (preview_suspension, then
// suspend_schedule), 恢复出诊 (reopen_schedule), and its bookings (find_hospital_bookings
// by schedule) leading to each booking's page.

import { h, fill } from "../../shared/dom.js";
import { clock, dayTime, todayIn, yuan } from "../../shared/format.js";
import { t } from "../i18n.js";
import { newKey } from "../api.js";
import { ask, heading, problem, setFields, sheet, table, toast, updateRows } from "../ui.js";
import { LIVE_MS } from "./day.js";
import { bookingsTable } from "./bookings.js";

/** The reasons a schedule is suspended or reopened for (stable codes the API keeps). */
const SUSPEND_REASONS = ["doctor_ill", "doctor_away", "emergency", "hospital_arrangement"];

async function findSchedule(api, hospitalId, scheduleId, date) {
  const view = await api.day(hospitalId, date);
  return view.items.find((s) => s.schedule_id === scheduleId) || null;
}

function previewDetails(preview) {
  const shown = preview.bookings.slice(0, 8);
  return h(
    "div",
    { class: "preview", dataset: { bookings: String(preview.bookings.length) } },
    h(
      "ul",
      { class: "facts" },
      h("li", {}, t("preview_bookings", { n: preview.bookings.length })),
      h("li", {}, t("preview_refunds", { amount: yuan(preview.refunds_fen) })),
      h("li", {}, t("preview_holds", { n: preview.holds })),
      preview.kept ? h("li", {}, t("preview_kept", { n: preview.kept })) : null,
    ),
    shown.length
      ? h(
          "ul",
          { class: "preview-list" },
          shown.map((b) => h("li", {}, `${clock(b.slot_starts_at)} ${b.patient_name} ${b.patient_phone} · ${t(`status_${b.status}`)}`)),
        )
      : null,
    preview.bookings.length > shown.length ? h("p", { class: "muted small" }, t("and_more", { n: preview.bookings.length - shown.length })) : null,
  );
}

export async function render({ api, params, query, hospitalId, timeZone, refresh, every }) {
  const [scheduleId] = params;
  const date = query.get("date") || todayIn(timeZone);
  let schedule = await findSchedule(api, hospitalId, scheduleId, date);
  if (!schedule) {
    return h("section", {}, heading(t("schedule_title")), problem({ title: t("schedule_not_on_day", { date }), code: "not_found" }));
  }
  const errors = h("div", { class: "errors" });
  const facts = h("div", {});
  const slots = h("div", {});
  const actions = h("div", { class: "row start" });
  const bookings = h("div", {});

  const addCapacity = async (slot) => {
    const answer = await ask(t("add_capacity_ask", { window: `${clock(slot.starts_at)}-${clock(slot.ends_at)}` }), {
      fields: [{ name: "capacity", label: t("new_capacity"), type: "number", value: String(slot.capacity + 1), min: String(slot.capacity - slot.remaining), max: "10000", required: true }],
      confirm: t("add_capacity"),
    });
    if (!answer) return;
    fill(errors);
    try {
      await api.setCapacity(slot.slot_id, Number(answer.capacity), newKey());
      toast(t("capacity_set", { n: answer.capacity }));
      await redraw();
    } catch (error) {
      fill(errors, problem(error));
    }
  };

  const suspend = async () => {
    fill(errors);
    let preview;
    try {
      preview = await api.suspensionPreview(scheduleId);
    } catch (error) {
      return fill(errors, problem(error));
    }
    const answer = await ask(t("suspend_ask", { doctor: schedule.doctor_name }), {
      details: previewDetails(preview),
      fields: [{ name: "reason", label: t("suspend_reason"), type: "select", value: SUSPEND_REASONS[0], options: SUSPEND_REASONS.map((r) => [r, t(`reason_${r}`)]) }],
      confirm: t("suspend_confirm"),
    });
    if (!answer) return;
    try {
      await api.suspend(scheduleId, answer.reason, newKey());
      toast(t("suspended_ok", { n: preview.bookings.length }));
      refresh();
    } catch (error) {
      fill(errors, problem(error));
    }
  };

  const reopen = async () => {
    if (!(await ask(t("reopen_ask"), { confirm: t("reopen") }))) return;
    fill(errors);
    try {
      await api.reopen(scheduleId, "reopened", newKey());
      toast(t("reopened_ok"));
      refresh();
    } catch (error) {
      fill(errors, problem(error));
    }
  };

  const drawActions = () => {
    const shown = actions.dataset.status;
    if (shown === schedule.status) return; // the button stays, with its focus
    actions.dataset.status = schedule.status;
    fill(
      actions,
      schedule.status === "open"
        ? h("button", { type: "button", class: "danger", onclick: suspend }, t("suspend"))
        : h("button", { type: "button", class: "secondary", onclick: reopen }, t("reopen")),
    );
  };

  const draw = () => {
    drawActions();
    fill(
      facts,
      sheet([
        [t("status"), schedule.status === "suspended" ? t("suspended") : t("open")],
        [t("session"), `${schedule.starts_at.slice(0, 10)} ${t(`session_${schedule.session}`)} ${clock(schedule.starts_at)}-${clock(schedule.ends_at)}`],
        [t("release_at"), dayTime(schedule.release_at)],
        [t("place"), schedule.location],
        [t("fee"), yuan(schedule.fee_fen)],
        [t("units"), t("units_line", schedule)],
      ]),
    );
    const counts = ["capacity", "remaining", "held", "booked", "waiting"];
    if (updateRows(slots, "slot", schedule.slots, (s) => s.slot_id, (row, s) => setFields(row, s, counts))) return;
    fill(
      slots,
      table(
        t("slots_caption"),
        [
          [t("window"), (s) => `${clock(s.starts_at)}-${clock(s.ends_at)}`],
          [t("capacity"), (s) => h("span", { dataset: { field: "capacity" } }, s.capacity)],
          [t("remaining"), (s) => h("strong", { dataset: { field: "remaining" } }, s.remaining)],
          [t("held"), (s) => h("span", { dataset: { field: "held" } }, s.held)],
          [t("booked"), (s) => h("span", { dataset: { field: "booked" } }, s.booked)],
          [t("waiting"), (s) => h("span", { dataset: { field: "waiting" } }, s.waiting)],
          [
            t("actions"),
            (s) =>
              h(
                "button",
                {
                  type: "button",
                  class: "secondary small",
                  "aria-label": `${t("add_capacity")} ${clock(s.starts_at)}-${clock(s.ends_at)}`,
                  // The slot as it is now (the row's figures are updated in place).
                  onclick: () => addCapacity(schedule.slots.find((x) => x.slot_id === s.slot_id) || s),
                },
                t("add_capacity"),
              ),
          ],
        ],
        schedule.slots,
        { rowAttrs: (s) => ({ dataset: { slot: s.slot_id } }) },
      ),
    );
  };

  const redraw = async () => {
    const found = await findSchedule(api, hospitalId, scheduleId, date);
    if (found) schedule = found;
    draw();
  };

  const drawBookings = async () => {
    try {
      const found = await api.findBookings(hospitalId, { schedule_id: scheduleId, limit: "200" });
      fill(bookings, found.items.length ? bookingsTable(found.items) : h("p", { class: "muted" }, t("no_bookings")));
    } catch (error) {
      fill(bookings, problem(error));
    }
  };

  draw();
  await drawBookings();
  every(async () => {
    try {
      await redraw();
    } catch (error) {
      fill(errors, problem(error));
    }
  }, LIVE_MS);

  return h(
    "section",
    {},
    heading(`${schedule.department_name} · ${schedule.doctor_name} ${schedule.doctor_title}`),
    h("p", {}, h("a", { href: `#/day?date=${date}` }, t("back_to_day"))),
    facts,
    actions,
    errors,
    h("h2", {}, t("slots_caption")),
    slots,
    h("h2", {}, t("schedule_bookings")),
    bookings,
  );
}
