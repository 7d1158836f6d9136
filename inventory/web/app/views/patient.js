// 选择就诊人: pick one of the account's patients (list_patients) or add one
// (create_patient), then take the chosen time window for them (create_hold).

import { h, fill } from "../dom.js";
import { clock, dayLabel } from "../format.js";
import { t } from "../i18n.js";
import { holds, picked } from "../state.js";
import { newKey } from "../api.js";
import { heading, problem } from "../ui.js";
import { patientForm } from "./patient_form.js";

export async function render({ api, params, go }) {
  const [slotId] = params;
  const { items } = await api.patients();
  const chosen = picked.get();
  const slot = chosen.slot?.slot_id === slotId ? chosen.slot : null;
  const schedule = chosen.schedule;
  const errors = h("div", { class: "errors" });
  const list = h("fieldset", { class: "choices" }, h("legend", { class: "visually-hidden" }, t("pick_patient")));
  let selected = items[0]?.patient_id || "";
  const drawList = (patients) => {
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
  drawList(items);
  // One key per attempt at this window for this patient: an automatic retry (429/503)
  // sends the same one, so it can only ever make one hold.
  let key = newKey();
  let keyFor = "";
  const book = h("button", { type: "button", class: "primary block" }, t("book_for"));
  book.addEventListener("click", async () => {
    fill(errors);
    if (!selected) return;
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
      key = newKey(); // a refusal made nothing: the next try is a new request
    } finally {
      book.disabled = false;
    }
  });
  const form = patientForm(api, (created) => {
    items.push(created);
    selected = created.patient_id;
    drawList(items);
  });
  return h(
    "section",
    {},
    heading(t("pick_patient")),
    slot && schedule ? h("p", { class: "muted" }, `${schedule.doctor.name} · ${dayLabel(schedule.visit_date)} ${clock(slot.starts_at)}-${clock(slot.ends_at)}`) : null,
    list,
    errors,
    book,
    h("details", { class: "add", open: !items.length }, h("summary", {}, t("add_patient")), form),
  );
}
