// What both API clients (the app's and the console's) share: the refusal they throw and
// the Idempotency-Key they send with every call that changes something.

/** A refusal of the API (RFC 9457 problem+json), or a network failure (status 0): its
 * stable `code`, the `title` to show, the `detail`, the 422 `errors` by field, the
 * patient rule that refused (`rule`), and the seconds Retry-After asked for. */
export class ApiError extends Error {
  constructor(status, problem, retryAfter = null) {
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

/** A fresh Idempotency-Key (32 hex characters, within the API's 64 printable ASCII). */
export function newKey() {
  const bytes = new Uint8Array(16);
  crypto.getRandomValues(bytes);
  return Array.from(bytes, (b) => b.toString(16).padStart(2, "0")).join("");
}
