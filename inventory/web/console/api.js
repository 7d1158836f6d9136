// The console's API client: every call the staff console makes, one function per
// operation of the service's OpenAPI document (/openapi.json; the operationId is named
// above each). The console has no side door: it calls the same operator routes any
// operator's tool would, with the operator's token.
//
// Conventions (docs/api.md):
// - `Authorization: Bearer <operator token>`; `Accept-Language` picks zh-CN or English
//   messages for refusals.
// - Calls that change something send an `Idempotency-Key` (a retry of the same action
//   sends the same key, so a click repeated by a flaky network acts once) and are written
//   to the operator audit log by the service.
// - A refusal is RFC 9457 problem+json, thrown as ApiError with its stable `code`, the
//   `title` to show, the `detail`, and the 422 `errors` by field.
// - 429 and 503 carry Retry-After: the call waits (at most 30 s) and tries once more.

import { ApiError, newKey } from "../shared/http.js";

export { ApiError, newKey };

const RETRY_STATUSES = new Set([429, 503]);
const MAX_WAIT_S = 30;
const enc = encodeURIComponent;

export class Api {
  /** `token()` and `language()` are read at each call; `onUnauthorized()` is told of a
   * 401 (the token expired or was refused) before the error is thrown. */
  constructor({ token, language, onUnauthorized }) {
    this.token = token;
    this.language = language;
    this.onUnauthorized = onUnauthorized || (() => {});
  }

  /** One request; `as` is "json" (default) or "blob" for an image. */
  async call(method, path, { body, key, query, as = "json", retry = true } = {}) {
    let url = path;
    if (query) {
      const given = Object.entries(query).filter(([, v]) => v !== undefined && v !== null && v !== "");
      if (given.length) url += "?" + new URLSearchParams(given).toString();
    }
    for (let attempt = 0; ; attempt += 1) {
      const headers = {
        Accept: as === "blob" ? "image/png, application/problem+json" : "application/json, application/problem+json",
        "Accept-Language": this.language() === "en" ? "en" : "zh-CN",
      };
      const token = this.token();
      if (token) headers.Authorization = `Bearer ${token}`;
      if (body !== undefined) headers["Content-Type"] = "application/json";
      if (key) headers["Idempotency-Key"] = key;
      let answer;
      try {
        answer = await fetch(url, { method, headers, body: body === undefined ? undefined : JSON.stringify(body) });
      } catch (error) {
        throw new ApiError(0, { code: "network", title: String(error.message || error) });
      }
      if (answer.ok) {
        if (answer.status === 204) return null;
        return as === "blob" ? answer.blob() : answer.json();
      }
      const problem = await answer.json().catch(() => ({}));
      const wait = Number(answer.headers.get("Retry-After"));
      if (retry && attempt === 0 && RETRY_STATUSES.has(answer.status) && wait > 0) {
        await new Promise((resolve) => setTimeout(resolve, Math.min(wait, MAX_WAIT_S) * 1000));
        continue;
      }
      if (answer.status === 401 && token) this.onUnauthorized();
      throw new ApiError(answer.status, problem);
    }
  }

  // -- sign-in

  /** login_staff: a staff account's username and password for an operator token. Not
   * retried: a locked account's 429 says how long to wait, and a person decides. */
  staffLogin(username, password) {
    return this.call("POST", "/v1/auth/staff/login", { body: { username, password }, retry: false });
  }

  // -- the catalogue (public)

  /** list_hospitals: the hospitals to choose from (a hospital operator's token names its own). */
  hospitals() {
    return this.call("GET", "/v1/hospitals");
  }

  // -- release day

  /** get_hospital_day: every schedule of the day with its units now, and the waiting rooms. */
  day(hospitalId, date) {
    return this.call("GET", `/v1/operator/hospitals/${enc(hospitalId)}/day`, { query: { date } });
  }

  /** schedule_slots: a schedule's slots (time windows) with their remaining counts. */
  slots(scheduleId) {
    return this.call("GET", `/v1/schedules/${enc(scheduleId)}/slots`);
  }

  /** put_capacity: a slot's new capacity (加号 raises it; never below what is taken). */
  setCapacity(slotId, capacity, key) {
    return this.call("PUT", `/v1/operator/slots/${enc(slotId)}/capacity`, { body: { capacity }, key });
  }

  /** preview_suspension: the bookings and holds a suspension would end now. */
  suspensionPreview(scheduleId) {
    return this.call("GET", `/v1/operator/schedules/${enc(scheduleId)}/suspension-preview`);
  }

  /** suspend_schedule: 停诊 (the worker then cancels and refunds its bookings). */
  suspend(scheduleId, reason, key) {
    return this.call("POST", `/v1/operator/schedules/${enc(scheduleId)}/suspend`, { body: { reason }, key });
  }

  /** reopen_schedule: a suspended schedule takes reserves again. */
  reopen(scheduleId, reason, key) {
    return this.call("POST", `/v1/operator/schedules/${enc(scheduleId)}/reopen`, { body: { reason }, key });
  }

  // -- bookings

  /** find_hospital_bookings: by booking_id, his_no, phone (full or 138****5678), date, schedule_id. */
  findBookings(hospitalId, filters) {
    return this.call("GET", `/v1/operator/hospitals/${enc(hospitalId)}/bookings`, { query: filters });
  }

  /** operator_cancel_booking: cancel with refund, whatever the patient's deadline. */
  cancelBooking(bookingId, reason, key) {
    return this.call("POST", `/v1/operator/bookings/${enc(bookingId)}/cancel`, { body: { reason }, key });
  }

  /** check_in_booking: 签到 at the desk (an operator token works for its hospitals). */
  checkIn(bookingId, key) {
    return this.call("POST", `/v1/staff/bookings/${enc(bookingId)}/check-in`, { body: { source: "staff" }, key });
  }

  /** mark_no_show: 爽约, once the session has begun. */
  markNoShow(bookingId, key) {
    return this.call("POST", `/v1/operator/bookings/${enc(bookingId)}/no-show`, { key });
  }

  // -- the blacklist

  /** list_hospital_bans: the patients banned at the hospital now. */
  bans(hospitalId) {
    return this.call("GET", `/v1/operator/hospitals/${enc(hospitalId)}/bans`);
  }

  /** get_patient_bans: one patient's ban and its whole history there. */
  banHistory(hospitalId, patientId) {
    return this.call("GET", `/v1/operator/hospitals/${enc(hospitalId)}/patients/${enc(patientId)}/bans`);
  }

  /** lift_patient_ban: reserves are taken again at once; the reason goes to the history. */
  liftBan(hospitalId, patientId, reason, key) {
    return this.call("POST", `/v1/operator/hospitals/${enc(hospitalId)}/patients/${enc(patientId)}/bans/lift`, {
      body: { reason },
      key,
    });
  }

  // -- the report

  /** get_hospital_report: figures per department over visit dates. */
  report(hospitalId, from, to) {
    return this.call("GET", `/v1/operator/hospitals/${enc(hospitalId)}/report`, { query: { from, to } });
  }

  /** get_hospital_report_plot: the report drawn (PNG), as a Blob. */
  reportPlot(hospitalId, from, to, kind) {
    return this.call("GET", `/v1/operator/hospitals/${enc(hospitalId)}/report/plot`, {
      query: { from, to, kind, image: "png" },
      as: "blob",
    });
  }
}
