// Money and time as a patient reads them: the shared helpers (../shared/format.js), and
// the date label of the app's date strip in the language chosen.

import { t } from "./i18n.js";

export { addDays, clock, day, dayTime, duration, secondsUntil, todayIn, yuan } from "../shared/format.js";

/** "12月9日 周三" (or "Wed 12-09") of a YYYY-MM-DD date. */
export function dayLabel(date) {
  const [y, m, d] = date.split("-").map(Number);
  const weekday = t("weekdays").split(",")[new Date(Date.UTC(y, m - 1, d)).getUTCDay()];
  return t("week_prefix") ? `${m}月${d}日 ${t("week_prefix")}${weekday}` : `${weekday} ${date.slice(5)}`;
}
