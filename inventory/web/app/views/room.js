// 候诊室: a queued release's waiting room. The patient joins (join_release) from the
// room's opening, waits for the draw at the release instant T0 (a random order anyone can
// verify from the seed published afterwards), then follows their place live
// (stream_ticket, Server-Sent Events; get_ticket long-polls when the stream breaks).
// Once admitted, the admission token reserves the chosen window (create_hold) and the
// patient goes on to confirm and pay. Sold out ends it (the release names its waitlist).

import { h, fill } from "../../shared/dom.js";
import { clock, duration, secondsUntil } from "../format.js";
import { t } from "../i18n.js";
import { holds, picked } from "../state.js";
import { newKey } from "../api.js";
import { heading, problem } from "../ui.js";

/** How long one long-poll waits for a change (the API allows up to 30 s). */
const POLL_WAIT_S = 20;

function sleep(ms) {
  return new Promise((resolve) => setTimeout(resolve, ms));
}

export async function render({ api, params, query, go, every }) {
  const [releaseId, slotId] = params;
  const patientId = query.get("patient") || picked.get().patient_id || "";
  const here = location.hash;
  const stillHere = () => location.hash === here;
  const release = await api.release(releaseId);
  const status = h("div", { class: "room", "aria-live": "polite" });
  const clockLine = h("p", { class: "timer", role: "timer" });
  const errors = h("div", { class: "errors" });
  const seed = h("p", { class: "muted small seed" }, `${t("room_seed_hash")} ${release.seed_hash.slice(0, 16)}…`);
  const section = h("section", {}, heading(t("room_title")), clockLine, status, errors, seed);
  const tick = () => {
    const left = secondsUntil(release.t0);
    fill(clockLine, left > 0 ? t("room_t0_in", { left: duration(left), time: clock(release.t0) }) : t("room_t0_past", { time: clock(release.t0) }));
  };
  tick();
  every(tick, 1000);

  const show = (ticket) => {
    const lines = [];
    if (ticket.outcome === "waiting" && ticket.state === "open") lines.push(h("p", { class: "big" }, t("room_joined")), h("p", {}, t("room_draw_note")));
    else if (ticket.outcome === "waiting")
      lines.push(
        h("p", { class: "big" }, t("room_position", { n: ticket.position ?? "-" })),
        h("p", {}, t("room_ahead", { n: ticket.ahead ?? "-" })),
        ticket.eta_s != null ? h("p", { class: "muted" }, t("room_eta", { s: Math.ceil(ticket.eta_s) })) : null,
      );
    else if (ticket.outcome === "admitted") lines.push(h("p", { class: "big" }, t("room_admitted")));
    else if (ticket.outcome === "sold_out")
      lines.push(
        h("p", { class: "big" }, t("room_sold_out")),
        ticket.waitlist?.available ? h("p", {}, t("room_waitlist")) : null,
        ticket.waitlist?.available && ticket.waitlist.schedule_ids.length
          ? h("a", { href: `#/waitlist/join/${encodeURIComponent(ticket.waitlist.schedule_ids[0])}`, class: "primary block" }, t("join_waitlist"))
          : null,
      );
    else if (ticket.outcome === "expired") lines.push(h("p", { class: "big" }, t("room_expired")));
    else if (ticket.outcome === "reserved") lines.push(h("p", { class: "big" }, t("room_reserved")));
    fill(status, h("div", { class: "room-card", dataset: { outcome: ticket.outcome, state: ticket.state } }, lines));
  };

  const reserve = async (ticket) => {
    try {
      const hold = await api.hold(slotId, patientId, newKey(), ticket.admission_token);
      const chosen = picked.get();
      holds.remember(hold.hold_id, {
        hospital: chosen.hospital?.name || "",
        department: chosen.department?.name || "",
        doctor: chosen.schedule ? `${chosen.schedule.doctor.name} ${chosen.schedule.doctor.title}` : "",
        location: chosen.schedule?.location || "",
        visit: chosen.slot?.slot_id === slotId ? `${chosen.slot.starts_at.slice(0, 10)} ${clock(chosen.slot.starts_at)}-${clock(chosen.slot.ends_at)}` : "",
        patient: "",
      });
      if (stillHere()) go(`/hold/${encodeURIComponent(hold.hold_id)}`);
    } catch (error) {
      fill(errors, problem(error));
    }
  };

  (async () => {
    let ticket = null;
    // Join, waiting for the room to open when it is not open yet.
    while (stillHere() && !ticket) {
      try {
        ticket = await api.joinRelease(releaseId, patientId);
      } catch (error) {
        fill(errors, problem(error));
        if (error.code !== "room_not_open") return;
        await sleep(Math.min(Math.max(1000, (error.problem.opens_ms || 0) - Date.now()), 5000));
        fill(errors);
      }
    }
    while (stillHere() && ticket) {
      show(ticket);
      if (ticket.outcome === "admitted") return reserve(ticket);
      if (["sold_out", "expired", "reserved"].includes(ticket.outcome)) return;
      const abort = new AbortController();
      const leave = () => {
        if (!stillHere()) abort.abort();
      };
      window.addEventListener("hashchange", leave);
      try {
        await api.ticketEvents(releaseId, ticket.ticket_id, (next) => {
          ticket = next;
          show(next);
        }, abort.signal);
        if (ticket.outcome === "waiting") {
          // The stream ended without news: ask once, at once.
          ticket = await api.ticket(releaseId, ticket.ticket_id);
        }
      } catch (error) {
        if (!stillHere()) return;
        // The stream broke: one long-poll instead, then the stream again.
        try {
          ticket = await api.ticket(releaseId, ticket.ticket_id, ticket.version, POLL_WAIT_S);
        } catch (again) {
          fill(errors, problem(again));
          await sleep(2000);
        }
      } finally {
        window.removeEventListener("hashchange", leave);
      }
    }
  })();
  return section;
}
