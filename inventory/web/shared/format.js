// Money and time as the patient app and the staff console show them. Instants from the
// API are RFC 3339 in the hospital's time zone with its offset
// (2026-12-09T08:00:00+08:00): the wall time shown is the one written there, whatever
// zone the phone or the desk computer is set to. Only durations (time left to pay, to
// release) are computed from the instant itself.

/** Fen as yuan: 5000 -> "¥50.00". */
export function yuan(fen) {
  return "¥" + (Number(fen) / 100).toFixed(2);
}

/** "08:00" of an instant, in the zone it is written in. */
export function clock(instant) {
  return instant ? instant.slice(11, 16) : "";
}

/** "08:00:05" of an instant, in the zone it is written in. */
export function clockSeconds(instant) {
  return instant ? instant.slice(11, 19) : "";
}

/** "2026-12-09" of an instant, in the zone it is written in. */
export function day(instant) {
  return instant ? instant.slice(0, 10) : "";
}

/** "12-09 08:00" of an instant, in the zone it is written in. */
export function dayTime(instant) {
  return instant ? `${instant.slice(5, 10)} ${clock(instant)}` : "";
}

/** Today's date (YYYY-MM-DD) in a time zone (the hospital's; China's by default). */
export function todayIn(timeZone = "Asia/Shanghai") {
  try {
    return new Intl.DateTimeFormat("en-CA", { timeZone }).format(new Date());
  } catch {
    return new Date().toISOString().slice(0, 10);
  }
}

/** The date `n` days after `date` (YYYY-MM-DD). */
export function addDays(date, n) {
  const [y, m, d] = date.split("-").map(Number);
  return new Date(Date.UTC(y, m - 1, d + n)).toISOString().slice(0, 10);
}

/** Seconds from now until an instant (negative once past). */
export function secondsUntil(instant) {
  return Math.floor((Date.parse(instant) - Date.now()) / 1000);
}

/** A duration as "14:05" or "2:14:05". */
export function duration(seconds) {
  const s = Math.max(0, Math.floor(seconds));
  const hh = Math.floor(s / 3600);
  const mm = String(Math.floor((s % 3600) / 60)).padStart(2, "0");
  const ss = String(s % 60).padStart(2, "0");
  return hh ? `${hh}:${mm}:${ss}` : `${mm}:${ss}`;
}

/** A share (0.853) as a percentage ("85.3%"); "–" when there is none. */
export function percent(value) {
  return value === null || value === undefined ? "–" : `${(value * 100).toFixed(1)}%`;
}
