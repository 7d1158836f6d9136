// 选择就诊人: pick one of the account's patients (list_patients) or add one
// (create_patient), then take the chosen time window for them (create_hold).

import { h, fill } from "../../shared/dom.js";
import { clock, dayLabel, secondsUntil } from "../format.js";
import { t } from "../i18n.js";
import { holds, picked } from "../state.js";
import { newKey } from "../api.js";
import { heading, problem } from "../ui.js";
import { patientChoices } from "./patient_choice.js";
import { patientForm } from "./patient_form.js";

export async function render({ api, params, go }) {
  const [slotId] = params;
  const { items } = await api.patients();
  const chosen = picked.get();
  const slot = chosen.slot?.slot_id === slotId ? chosen.slot : null;
  const schedule = chosen.schedule;
  // The window's waiting room, when its release is queued (kept by the windows page).
  const room = slot ? chosen.room || null : null;
  const errors = h("div", { class: "errors" });
  const choices = patientChoices(items);
  // One key per attempt at this window for this patient: an automatic retry (429/503)
  // sends the same one, so it can only ever make one hold.
  let key = newKey();
  let keyFor = "";
  const book = h("button", { type: "button", class: "primary block" }, t("book_for"));
  book.addEventListener("click", async () => {
    fill(errors);
    const selected = choices.selected();
    if (!selected) return;
    if (room && secondsUntil(room.t0) > 0) {
      // A queued release before T0: nothing can be reserved yet; wait in its room (the
      // admission token it gives reserves this window).
      picked.set({ patient_id: selected });
      return go(`/room/${encodeURIComponent(room.release_id)}/${encodeURIComponent(slotId)}?patient=${encodeURIComponent(selected)}`);
    }
    if (keyFor !== selected) {
      key = newKey();
      keyFor = selected;
    }
    book.disabled = true;
    try {
      const hold = await api.hold(slotId, selected, key);
      const person = items.find((p) => p.patient_id === selected);
      holds.remember(hold.hold_id, {
        hospital: chosen.hospital?.name || "",
        department: chosen.department?.name || "",
        doctor: schedule ? `${schedule.doctor.name} ${schedule.doctor.title}` : "",
        location: schedule?.location || "",
        visit: slot ? `${slot.starts_at.slice(0, 10)} ${clock(slot.starts_at)}-${clock(slot.ends_at)}` : "",
        patient: person ? person.name : "",
      });
      go(`/hold/${encodeURIComponent(hold.hold_id)}`);
    } catch (error) {
      if (error.code === "admission_required" && error.problem.release_id) {
        // A queued release: wait in its room, then reserve with the admission token.
        picked.set({ patient_id: selected });
        const release = encodeURIComponent(error.problem.release_id);
        return go(`/room/${release}/${encodeURIComponent(slotId)}?patient=${encodeURIComponent(selected)}`);
      }
      fill(errors, problem(error));
      const scheduleId = slot ? chosen.slot_schedule_id : "";
      if (error.code === "sold_out" && scheduleId) {
        // Nothing left in this window: the schedule's waitlist is the way on.
        errors.append(h("a", { href: `#/waitlist/join/${encodeURIComponent(scheduleId)}`, class: "secondary block" }, t("join_waitlist")));
      }
      key = newKey(); // a refusal made nothing: the next try is a new request
    } finally {
      book.disabled = false;
    }
  });
  const form = patientForm(api, (created) => {
    items.push(created);
    choices.redraw(items, created.patient_id);
  });
  return h(
    "section",
    {},
    heading(t("pick_patient")),
    slot && schedule ? h("p", { class: "muted" }, `${schedule.doctor.name} · ${dayLabel(schedule.visit_date)} ${clock(slot.starts_at)}-${clock(slot.ends_at)}`) : null,
    choices.element,
    errors,
    book,
    h("details", { class: "add", open: !items.length }, h("summary", {}, t("add_patient")), form),
  );
}
