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

/** A refusal of the API (problem+json), or a network failure (status 0). */
export class ApiError extends Error {
  constructor(status, problem, retryAfter) {
    super(problem.title || `HTTP ${status}`);
    this.status = status;
    this.code = problem.code || "network";
    this.title = problem.title || "";
    this.detail = problem.detail || "";
    this.errors = Array.isArray(problem.errors) ? problem.errors : [];
    this.rule = problem.rule || null;
    this.retryAfter = retryAfter;
    this.problem = problem;
  }
}

/** A fresh Idempotency-Key (printable ASCII, at most 64). */
export function newKey() {
  const bytes = new Uint8Array(16);
  crypto.getRandomValues(bytes);
  return Array.from(bytes, (b) => b.toString(16).padStart(2, "0")).join("");
}

const RETRY_STATUSES = new Set([429, 503]);
const MAX_WAIT_S = 30;

/** The client: `token()` and `language()` are read at each call; `onWait(seconds, error)`
 * is told before an automatic retry. */
export class Api {
  constructor({ token, language, onWait }) {
    this.token = token;
    this.language = language;
    this.onWait = onWait || (() => Promise.resolve());
  }

  async call(method, path, { body, key, query } = {}) {
    let url = path;
    if (query) url += "?" + new URLSearchParams(query).toString();
    const headers = {
      Accept: "application/json, application/problem+json",
      "Accept-Language": this.language() === "en" ? "en" : "zh-CN",
    };
    const token = this.token();
    if (token) headers.Authorization = `Bearer ${token}`;
    if (body !== undefined) headers["Content-Type"] = "application/json";
    if (key) headers["Idempotency-Key"] = key;
    const init = { method, headers, body: body === undefined ? undefined : JSON.stringify(body) };
    for (let attempt = 0; ; attempt += 1) {
      let answer;
      try {
        answer = await fetch(url, init);
      } catch (error) {
        throw new ApiError(0, { code: "network", title: String(error.message || error) }, null);
      }
      if (answer.ok) {
        if (answer.status === 204) return null;
        return answer.json();
      }
      const problem = await answer.json().catch(() => ({}));
      const header = Number(answer.headers.get("Retry-After"));
      const retryAfter = Number.isFinite(header) && header > 0 ? header : problem.retry_after_s || null;
      const error = new ApiError(answer.status, problem, retryAfter);
      if (attempt === 0 && RETRY_STATUSES.has(answer.status) && retryAfter) {
        const wait = Math.min(retryAfter, MAX_WAIT_S);
        await this.onWait(wait, error);
        continue;
      }
      throw error;
    }
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

  /** create_hold: takes a unit for the patient until its deadline (key required). */
  hold(slotId, patientId, key) {
    return this.call("POST", "/v1/holds", {
      body: { slot_id: slotId, patient_id: patientId, channel: "web" },
      key,
    });
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

  /** get_booking_refund: 404 (ApiError not_found) when there is none. */
  refund(bookingId) {
    return this.call("GET", `/v1/bookings/${encodeURIComponent(bookingId)}/refund`);
  }
}
