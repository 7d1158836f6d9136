// Money and time as staff read them. Instants from the API are RFC 3339 in the
// hospital's time zone with its offset (2026-12-09T08:00:00+08:00): the wall time shown
// is the one written there, whatever zone the desk computer is set to.

/** Fen as yuan: 5000 -> "¥50.00". */
export function yuan(fen) {
  return "¥" + (Number(fen) / 100).toFixed(2);
}

/** "08:00" of an instant. */
export function clock(instant) {
  return instant ? instant.slice(11, 16) : "";
}

/** "08:00:05" of an instant. */
export function clockSeconds(instant) {
  return instant ? instant.slice(11, 19) : "";
}

/** "12-09 08:00" of an instant. */
export function dayTime(instant) {
  return instant ? `${instant.slice(5, 10)} ${clock(instant)}` : "";
}

/** Today's date (YYYY-MM-DD) in a time zone (the hospital's; the desk's by default). */
export function today(timeZone = "Asia/Shanghai") {
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

/** A share (0.853) as a percentage ("85.3%"); "–" when there is none. */
export function percent(value) {
  return value === null || value === undefined ? "–" : `${(value * 100).toFixed(1)}%`;
}
