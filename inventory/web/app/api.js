// The API client: every call the app makes, one function per operation of the service's
// OpenAPI document (/openapi.json; the operationId is named above each). It is also the
// reference a mini-program team reads to learn the flow: same paths, same bodies, same
// problem+json refusals; only `fetch` would become `wx.request`.
//
// Conventions it follows (docs/api.md):
// - `Authorization: Bearer <token>`; `Accept-Language` picks zh-CN or English messages.
// - Mutating calls send an `Idempotency-Key`; a retry of the same action sends the same key,
//   so it can never book twice.
// - A refusal is RFC 9457 problem+json: thrown as ApiError with its stable `code`, the
//   `title` to show, the `detail`, the 422 `errors` by field and `retryAfter` seconds.
// - 429 and 503 carry Retry-After: the call waits that long (telling the view through
//   `onWait`) and tries once more by itself before giving up.

import { ApiError, newKey } from "../shared/http.js";

export { ApiError, newKey };

const RETRY_STATUSES = new Set([429, 503]);
const MAX_WAIT_S = 30;

/** The client: `token()` and `language()` are read at each call; `onWait(seconds, error)`
 * is told before an automatic retry. */
export class Api {
  constructor({ token, language, onWait, onUnauthorized }) {
    this.token = token;
    this.language = language;
    this.onWait = onWait || (() => Promise.resolve());
    this.onUnauthorized = onUnauthorized || (() => Promise.resolve(false));
  }

  async call(method, path, { body, key, query } = {}) {
    let url = path;
    if (query) url += "?" + new URLSearchParams(query).toString();
    let refreshed = false;
    for (let attempt = 0; ; attempt += 1) {
      const headers = {
        Accept: "application/json, application/problem+json",
        "Accept-Language": this.language() === "en" ? "en" : "zh-CN",
      };
      const token = this.token();
      if (token) headers.Authorization = `Bearer ${token}`;
      if (body !== undefined) headers["Content-Type"] = "application/json";
      if (key) headers["Idempotency-Key"] = key;
      const init = { method, headers, body: body === undefined ? undefined : JSON.stringify(body) };
      let answer;
      try {
        answer = await fetch(url, init);
      } catch (error) {
        throw new ApiError(0, { code: "network", title: String(error.message || error) }, null);
      }
      if (answer.ok) return answer.status === 204 ? null : answer.json();
      const problem = await answer.json().catch(() => ({}));
      const header = Number(answer.headers.get("Retry-After"));
      const retryAfter = Number.isFinite(header) && header > 0 ? header : problem.retry_after_s || null;
      const error = new ApiError(answer.status, problem, retryAfter);
      // An expired access token: one refresh (when the session has a refresh token), then
      // the same request again.
      if (answer.status === 401 && token && !refreshed && !path.startsWith("/v1/auth/")) {
        refreshed = true;
        if (await this.onUnauthorized()) continue;
      }
      if (attempt === 0 && RETRY_STATUSES.has(answer.status) && retryAfter) {
        const wait = Math.min(retryAfter, MAX_WAIT_S);
        await this.onWait(wait, error);
        continue;
      }
      throw error;
    }
  }

  // -- the contract itself, and signing in

  /** openapi: the document (the app reads which sign-in routes the service has). */
  document() {
    return this.call("GET", "/openapi.json");
  }

  /** send_sms_code: a login code to this phone (the same answer for every phone). */
  sendSmsCode(phone) {
    return this.call("POST", "/v1/auth/sms/code", { body: { phone } });
  }

  /** login_sms: the phone and its code -> the login's tokens. */
  smsLogin(phone, code) {
    return this.call("POST", "/v1/auth/sms/verify", { body: { phone, code } });
  }

  /** refresh_login: a refresh token (once) -> new tokens. */
  refresh(refreshToken) {
    return this.call("POST", "/v1/auth/refresh", { body: { refresh_token: refreshToken } });
  }

  /** logout: ends the login the refresh token belongs to. */
  logout(refreshToken) {
    return this.call("POST", "/v1/auth/logout", { body: { refresh_token: refreshToken } });
  }

  // -- catalogue (no token needed)

  /** list_hospitals */
  hospitals() {
    return this.call("GET", "/v1/hospitals");
  }

  /** department_tree */
  departments(hospitalId) {
    return this.call("GET", `/v1/hospitals/${encodeURIComponent(hospitalId)}/departments`);
  }

  /** department_doctors */
  doctors(departmentId) {
    return this.call("GET", `/v1/departments/${encodeURIComponent(departmentId)}/doctors`);
  }

  /** department_schedules: each doctor's schedules on a date, with fee and remaining. */
  schedules(departmentId, date) {
    return this.call("GET", `/v1/departments/${encodeURIComponent(departmentId)}/schedules`, {
      query: { date },
    });
  }

  /** schedule_slots: the time windows with remaining counts. */
  slots(scheduleId) {
    return this.call("GET", `/v1/schedules/${encodeURIComponent(scheduleId)}/slots`);
  }

  // -- the account's patients (就诊人)

  /** list_patients */
  patients() {
    return this.call("GET", "/v1/patients");
  }

  /** create_patient */
  addPatient(body, key) {
    return this.call("POST", "/v1/patients", { body, key });
  }

  // -- holds, payments, bookings

  /** create_hold: takes a unit for the patient until its deadline (key required). On a
   * queued release it needs the admission token its waiting room gave the patient. */
  hold(slotId, patientId, key, admissionToken) {
    const body = { slot_id: slotId, patient_id: patientId, channel: "web" };
    if (admissionToken) body.admission_token = admissionToken;
    return this.call("POST", "/v1/holds", { body, key });
  }

  // -- a queued release's waiting room (a reserve refused `admission_required` names it)

  /** get_release: T0, the room's state, the draw's seed hash (and seed once drawn). */
  release(releaseId) {
    return this.call("GET", `/v1/releases/${encodeURIComponent(releaseId)}`);
  }

  /** join_release: the patient's ticket (joining again answers the same ticket). */
  joinRelease(releaseId, patientId) {
    return this.call("POST", `/v1/releases/${encodeURIComponent(releaseId)}/tickets`, {
      body: { patient_id: patientId },
    });
  }

  /** get_ticket: at once, or (with `after`, the last answer's version) once it changed. */
  ticket(releaseId, ticketId, after = "", waitS = 0) {
    const query = after ? { after, wait_s: String(waitS) } : undefined;
    return this.call("GET", `/v1/releases/${encodeURIComponent(releaseId)}/tickets/${encodeURIComponent(ticketId)}`, { query });
  }

  /** stream_ticket: the ticket's status as Server-Sent Events, each given to `onStatus`,
   * until the stream ends (admitted or final) or `signal` aborts. Read with fetch, since
   * EventSource cannot send the Authorization header. */
  async ticketEvents(releaseId, ticketId, onStatus, signal) {
    const answer = await this.stream("GET", `/v1/releases/${encodeURIComponent(releaseId)}/tickets/${encodeURIComponent(ticketId)}/events`, signal);
    const reader = answer.body.pipeThrough(new TextDecoderStream()).getReader();
    let buffer = "";
    for (;;) {
      const { value, done } = await reader.read();
      if (done) return;
      buffer += value;
      let end;
      while ((end = buffer.indexOf("\n\n")) >= 0) {
        const block = buffer.slice(0, end);
        buffer = buffer.slice(end + 2);
        const data = block
          .split("\n")
          .filter((line) => line.startsWith("data: "))
          .map((line) => line.slice(6))
          .join("\n");
        if (data) onStatus(JSON.parse(data));
      }
    }
  }

  /** An answer whose body is read as it arrives; refusals are thrown as ApiError. */
  async stream(method, path, signal) {
    const headers = { Accept: "text/event-stream", "Accept-Language": this.language() === "en" ? "en" : "zh-CN" };
    const token = this.token();
    if (token) headers.Authorization = `Bearer ${token}`;
    let answer;
    try {
      answer = await fetch(path, { method, headers, signal });
    } catch (error) {
      throw new ApiError(0, { code: "network", title: String(error.message || error) }, null);
    }
    if (!answer.ok) throw new ApiError(answer.status, await answer.json().catch(() => ({})), null);
    return answer;
  }

  /** list_holds: the account's holds still waiting for payment, newest first (a hold
   * appears about a second after its reserve; a waitlist offer is one too). */
  openHolds() {
    return this.call("GET", "/v1/holds");
  }

  /** get_hold */
  getHold(holdId) {
    return this.call("GET", `/v1/holds/${encodeURIComponent(holdId)}`);
  }

  /** release_hold: gives an unpaid hold back. */
  releaseHold(holdId, key) {
    return this.call("DELETE", `/v1/holds/${encodeURIComponent(holdId)}`, { key });
  }

  /** start_payment: the JSAPI parameters of wx.requestPayment (extends the hold once). */
  startPayment(holdId, openid, key) {
    return this.call("POST", `/v1/holds/${encodeURIComponent(holdId)}/payments`, {
      body: { method: "jsapi", openid },
      key,
    });
  }

  /** list_hold_payments: the hold's payment, its status and the booking it bought. */
  payments(holdId) {
    return this.call("GET", `/v1/holds/${encodeURIComponent(holdId)}/payments`);
  }

  /** confirm_hold: books a hold without a fee (payments on) or with a reference (off). */
  confirm(holdId, paymentRef, key) {
    return this.call("POST", `/v1/holds/${encodeURIComponent(holdId)}/confirm`, {
      body: { payment_ref: paymentRef },
      key,
    });
  }

  /** list_bookings */
  bookings() {
    return this.call("GET", "/v1/bookings");
  }

  /** get_booking: status, and the HIS's appointment number, visit time and place. */
  booking(bookingId) {
    return this.call("GET", `/v1/bookings/${encodeURIComponent(bookingId)}`);
  }

  /** cancel_booking: until its cancel_deadline; a paid booking's fee is refunded. */
  cancel(bookingId, key) {
    return this.call("POST", `/v1/bookings/${encodeURIComponent(bookingId)}/cancel`, {
      body: { reason: "patient_cancelled" },
      key,
    });
  }

  // -- the 候补 waitlist of a sold-out schedule

  /** join_waitlist: puts a patient on a schedule's waitlist (key required); a freed unit
   * is then offered in order, as a hold of the account's to pay before its deadline. */
  joinWaitlist(scheduleId, patientId, key) {
    return this.call("POST", `/v1/schedules/${encodeURIComponent(scheduleId)}/waitlist`, {
      body: { patient_id: patientId, channel: "web" },
      key,
    });
  }

  /** list_waitlist: the account's entries, newest first (position while waiting). */
  waitlist() {
    return this.call("GET", "/v1/waitlist");
  }

  /** get_waitlist_entry: one entry as the waitlist has it now. */
  waitlistEntry(entryId) {
    return this.call("GET", `/v1/waitlist/${encodeURIComponent(entryId)}`);
  }

  /** leave_waitlist: an unpaid offer passes to the next patient. */
  leaveWaitlist(entryId, key) {
    return this.call("DELETE", `/v1/waitlist/${encodeURIComponent(entryId)}`, { key });
  }

  /** get_booking_refund: 404 (ApiError not_found) when there is none. */
  refund(bookingId) {
    return this.call("GET", `/v1/bookings/${encodeURIComponent(bookingId)}/refund`);
  }
}
