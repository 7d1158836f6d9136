// 黑名单: the patients banned at the hospital now (list_hospital_bans): until when, why,
// who decided and the no-shows counted; each one's history (get_patient_bans) on demand,
// and lifting a ban with a reason (lift_patient_ban), after a confirmation.

import { h, fill } from "../../shared/dom.js";
import { dayTime } from "../../shared/format.js";
import { t } from "../i18n.js";
import { newKey } from "../api.js";
import { ask, heading, problem, table, toast } from "../ui.js";

function history(entries) {
  return h(
    "ul",
    { class: "history" },
    entries.map((e) =>
      h("li", {}, `${dayTime(e.at)} · ${t(`ban_${e.action}`)}${e.banned_until ? " → " + dayTime(e.banned_until) : ""} · ${e.reason} · ${e.decided_by}`),
    ),
  );
}

export async function render({ api, hospitalId, refresh }) {
  const errors = h("div", { class: "errors" });
  const { items } = await api.bans(hospitalId);

  const lift = async (ban) => {
    const answer = await ask(t("lift_ask", { patient: `${ban.patient_name} ${ban.patient_phone}` }), {
      fields: [{ name: "reason", label: t("lift_reason"), required: true, maxlength: "200" }],
      confirm: t("lift"),
    });
    if (!answer) return;
    fill(errors);
    try {
      const done = await api.liftBan(hospitalId, ban.patient_id, answer.reason, newKey());
      toast(done.lifted ? t("lifted_ok") : t("not_banned"));
      refresh();
    } catch (error) {
      fill(errors, problem(error));
    }
  };

  const showHistory = async (ban, cell) => {
    try {
      const found = await api.banHistory(hospitalId, ban.patient_id);
      fill(cell, history(found.history));
    } catch (error) {
      fill(cell, problem(error));
    }
  };

  const rows = items.length
    ? table(
        t("bans_caption"),
        [
          [t("patient"), (b) => `${b.patient_name} ${b.patient_phone}`],
          [t("banned_until"), (b) => dayTime(b.banned_until)],
          [t("ban_scope"), (b) => (b.hospital_id === "*" ? t("every_hospital") : t("this_hospital"))],
          [t("reason"), (b) => b.reason],
          [t("decided_by"), (b) => b.decided_by || "–"],
          [t("no_shows"), (b) => String(b.no_shows.length)],
          [
            t("actions"),
            (b) => {
              const cell = h("div", {});
              return h(
                "div",
                { class: "row start" },
                b.hospital_id === "*"
                  ? null
                  : h("button", { type: "button", class: "secondary small", "aria-label": `${t("lift")} ${b.patient_name}`, onclick: () => lift(b) }, t("lift")),
                h("button", { type: "button", class: "link", "aria-label": `${t("history")} ${b.patient_name}`, onclick: () => showHistory(b, cell) }, t("history")),
                cell,
              );
            },
          ],
        ],
        items,
        { rowAttrs: (b) => ({ dataset: { patient: b.patient_id } }) },
      )
    : h("p", { class: "muted" }, t("no_bans"));
  return h("section", {}, heading(t("bans_title")), h("p", { class: "muted" }, t("bans_note")), errors, rows);
}
